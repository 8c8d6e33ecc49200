"""Answering an HTTP request with an assistant's reply: whole, or streamed as Server-Sent Events.

Shared by ``/v1/assistants/.../messages``, ``model="assistant:<name>"`` on
``/v1/chat/completions`` and the web widget; each says how its events are spelled through a
:class:`Format`. The rules of the response (wait for the first event, SSE errors after it, 499
when the client goes away, metered once) are :func:`concierge.gateway.streaming.respond`'s,
shared with the plain gateway.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from concierge.assistants.events import Completed, Delta, ReplyEvent
from concierge.errors import ConciergeError
from concierge.gateway import streaming
from concierge.gateway.responses import AI_HEADERS
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.models.base import TokenCount, Usage, total


class Format(Protocol):
    """How one entry point spells a reply."""

    def whole(self, completed: Completed) -> dict[str, Any]:
        """The JSON body of a non-streamed reply."""

    def event(self, event: ReplyEvent) -> bytes:
        """One SSE event (b"" to send nothing)."""

    def error(self, exc: ConciergeError) -> bytes:
        """The SSE event for a failure after the stream began."""


class _ReplyAnswer:
    """A reply's events as :class:`streaming.Answer` takes them."""

    def __init__(self, fmt: Format, spent: list[TokenCount]) -> None:
        self.fmt = fmt
        self.spent = spent
        self.completed: Completed | None = None

    @property
    def model(self) -> str | None:
        reply = self.completed.reply if self.completed else None
        return reply.model if reply else None

    @property
    def headers(self) -> Mapping[str, str] | None:
        # A stream is labelled from its start; a whole reply when a model wrote it.
        return AI_HEADERS if self.completed is None or self.completed.label else None

    def add(self, item: ReplyEvent) -> bool:
        if isinstance(item, Completed):
            self.completed = item
        return isinstance(item, Delta)

    def usage(self) -> Usage:
        """As stored, or, for a reply that never completed (the client left, the model broke
        off), the tokens its model calls had read and written by then."""
        if self.completed is not None and self.completed.reply is not None:
            reply = self.completed.reply
            return Usage(reply.prompt_tokens, reply.completion_tokens)
        return total(self.spent)

    def body(self) -> dict[str, Any]:
        if self.completed is None:
            raise AssertionError("the pipeline ended without a Completed event")
        return self.fmt.whole(self.completed)

    def encode(self, item: ReplyEvent) -> bytes:
        return self.fmt.event(item)

    def opening(self) -> bytes:
        return b""

    def closing(self) -> bytes:
        return b""

    def error(self, exc: ConciergeError) -> bytes:
        return self.fmt.error(exc)


async def respond(
    request: Request,
    key: ApiKey,
    endpoint: str,
    events: AsyncGenerator[ReplyEvent, None],
    fmt: Format,
    *,
    stream: bool,
    spent: list[TokenCount],
) -> Response:
    """``spent``: the list the pipeline reports its model calls' token counts in (the one
    given to ``Runtime.reply``)."""
    meter = await concierge(request).metering.begin(key, endpoint, None)
    return await streaming.respond(request, meter, events, _ReplyAnswer(fmt, spent), stream=stream)
