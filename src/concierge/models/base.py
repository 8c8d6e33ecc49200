"""The model backend contract: typed messages in, a stream of typed events out.

A backend implements one abstract method, :meth:`Model.execute`, an async generator of
:data:`Event` values. Capabilities are class flags. Closing the generator early (the client went
away) must stop generation. Non-streaming replies are the same stream, collected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from concierge.models.admission import QueueStats

if TYPE_CHECKING:
    from concierge.egress import Egress

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


ToolChoice = Literal["auto", "none", "required"] | str  # a str other than those names a tool


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None


@dataclass(slots=True)
class TokenCount:
    """The tokens one generation has used so far. The backend keeps it current while it
    works (prompt tokens once the prompt is read, each completion token as it is made), so a
    request cut short (the client hung up) is metered for what it really cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def set(self, usage: Usage) -> None:
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)


def total(counts: Iterable[TokenCount]) -> Usage:
    """The tokens of several generations (a reply's model calls) together."""
    prompt = completion = 0
    for count in counts:
        prompt += count.prompt_tokens
        completion += count.completion_tokens
    return Usage(prompt, completion)


@dataclass(slots=True)
class GenerationRequest:
    """A chat (``messages``) or text-completion (``prompt``) request, backend-neutral."""

    model: str
    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    stream: bool = True  # a hint: the caller will stream (upstreams may answer in one piece)
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to upstreams as-is
    priority_key: str = "anonymous"  # who is asking, for fair queueing
    tokens: TokenCount = field(default_factory=TokenCount)  # kept current by the backend

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage


Event = TextDelta | ToolCallDelta | Finish


class Backend(ABC):
    """What every backend shares: its id, and weights it may hold in this process.

    A backend that keeps weights in memory sets ``holds_weights`` and overrides :meth:`load`
    and :attr:`loaded`: the server loads it in a thread at start and ``/readyz`` reports it
    "loading" until it is. A remote backend has nothing to load."""

    model_id: str
    owned_by: str = "concierge"
    holds_weights: bool = False

    def load(self) -> None:
        """Read the weights (blocking, idempotent; the server calls it in a thread)."""

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has finished (always, for a backend with nothing to load)."""
        return True

    def use_http(self, sessions: Egress) -> None:
        """Take the server's HTTP session factory (a backend that calls out over HTTP makes
        its connections through it)."""

    async def aclose(self) -> None:
        """Release resources (threads, connections) at shutdown."""


class Model(Backend):
    """A chat / completion backend. Subclasses set ``model_id`` and the capability flags."""

    owned_by: str = "concierge"
    can_stream: bool = True
    supports_chat: bool = True
    supports_completion: bool = True
    supports_tools: bool = False
    supports_json: bool = False
    context_length: int | None = None
    # Runs inside this server's process (nothing leaves the machine): personal data need not be
    # masked before it reaches the model.
    runs_locally: bool = False

    @abstractmethod
    def execute(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """Generate for ``request``; yield deltas, then exactly one :class:`Finish` last."""

    async def execute_batches(
        self, request: GenerationRequest
    ) -> AsyncGenerator[list[Event], None]:
        """The events of :meth:`execute`, grouped as they became available.

        A backend that receives several events at once (one network read of a busy upstream)
        yields them together, so that a consumer writing to a network can send them in one
        write. Nothing waits to fill a batch. The default: one event per batch.
        """
        stream = self.execute(request)
        try:
            async for event in stream:
                yield [event]
        finally:
            await stream.aclose()

    def count_tokens(self, text: str) -> int:
        """About how many tokens ``text`` is for this model, erring high (prompts are planned
        with it): a backend with its tokenizer at hand counts exactly. The estimate takes the
        larger of 4 tokens per 3 words and one per 3 characters (text without spaces, such as
        Chinese, is about a token a character)."""
        return max((len(text.split()) * 4 + 2) // 3, (len(text) + 2) // 3)

    def queue_depth(self) -> int:
        """Requests waiting for this backend (0 where it does not queue)."""
        return 0

    def queue_stats(self) -> QueueStats | None:
        """How long requests waited and how many were turned away (None: it does not queue)."""
        return None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: NDArray[np.float32]  # one row per input, in input order
    prompt_tokens: int


class EmbeddingModel(Backend):
    """An embedding backend: texts in, one unit-length vector per text out."""

    dimensions: int
    max_input_tokens: int | None = None

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embed ``texts`` in order."""

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model, to size chunks (thread-safe). This
        default estimates from words; models with a tokenizer count exactly."""
        return (len(text.split()) * 4 + 2) // 3
