"""OpenAI request bodies, validated strictly (unknown fields are refused, as OpenAI does)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from concierge.assistants.definitions import AssistantConfig
from concierge.errors import InvalidRequest
from concierge.models.base import (
    GenerationRequest,
    Message,
    ResponseFormat,
    ToolCall,
    ToolSpec,
)
from concierge.orgs import SLUG_PATTERN


def check_text(value: Any) -> None:
    """Every string in a request body, keys included, must be storable: valid Unicode and no
    NUL character (PostgreSQL text cannot hold one)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text contains invalid Unicode (a lone surrogate)") from None
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k)
            check_text(v)
    elif isinstance(value, list):
        for item in value:
            check_text(item)


# A row id in a path or query: larger values cannot be ids and would overflow SQLite's integers.
MAX_ID = 2**62
RowId = Annotated[int, Path(ge=0, le=MAX_ID)]

# A name that is stored, logged or echoed back (``Strict`` refuses NUL and lone surrogates).
Name = Annotated[str, Field(min_length=1, max_length=200)]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN.pattern)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        check_text(data)
        return data


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Content = str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]


def message_text(content: Content | None, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if any(isinstance(part, ImagePart) for part in content):
        raise InvalidRequest("image inputs are not supported by this gateway yet", param=where)
    return "".join(part.text for part in content if isinstance(part, TextPart))


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCallIn(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(Strict):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(Strict):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(Strict):
    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None


class ToolMessage(Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDef(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self


class StreamOptions(Strict):
    include_usage: bool = False


Stop = (
    Annotated[str, Field(min_length=1)]
    | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)]
)


class _Sampling(Strict):
    model: Name
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="Only n=1 is supported.")
    stop: Stop | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    logit_bias: dict[str, float] | None = None

    def _stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatIn | None = None
    logprobs: Literal[False] | None = Field(
        None, description="Log probabilities are not supported."
    )
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    def to_generation(self, priority_key: str) -> GenerationRequest:
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise InvalidRequest("tool_choice is set but no tools were given", param="tool_choice")
        messages = [_message(m, i) for i, m in enumerate(self.messages)]
        choice: str | None
        if isinstance(self.tool_choice, NamedToolChoice):
            choice = self.tool_choice.function.name
        else:
            choice = self.tool_choice
        fmt = None
        if self.response_format is not None and self.response_format.type != "text":
            js = self.response_format.json_schema
            fmt = ResponseFormat(
                self.response_format.type,
                schema=js.schema_ if js else None,
                name=js.name if js else None,
            )
        extra: dict[str, Any] = {}
        if self.logit_bias:
            extra["logit_bias"] = self.logit_bias
        if self.parallel_tool_calls is not None and self.tools:
            extra["parallel_tool_calls"] = self.parallel_tool_calls
        return GenerationRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self._stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            tools=[
                ToolSpec(t.function.name, t.function.description, t.function.parameters)
                for t in self.tools or []
            ],
            tool_choice=choice,
            response_format=fmt,
            user=self.user,
            stream=self.stream,
            extra=extra,
            priority_key=priority_key,
        )


def _message(m: SystemMessage | UserMessage | AssistantMessage | ToolMessage, i: int) -> Message:
    where = f"messages.{i}.content"
    if isinstance(m, SystemMessage):
        return Message("system", message_text(m.content, where), name=m.name)
    if isinstance(m, UserMessage):
        return Message("user", message_text(m.content, where), name=m.name)
    if isinstance(m, ToolMessage):
        return Message("tool", message_text(m.content, where), tool_call_id=m.tool_call_id)
    calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or [])
    return Message("assistant", message_text(m.content, where), tool_calls=calls, name=m.name)


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(16, ge=1)
    echo: Literal[False] = False
    best_of: Literal[1] | None = None
    logprobs: None = Field(None, description="Log probabilities are not supported.")
    suffix: None = Field(None, description="Insertion (suffix) is not supported.")

    def to_generation(self, priority_key: str) -> GenerationRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        extra: dict[str, Any] = {"logit_bias": self.logit_bias} if self.logit_bias else {}
        return GenerationRequest(
            model=self.model,
            prompt=prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self._stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            user=self.user,
            stream=self.stream,
            extra=extra,
            priority_key=priority_key,
        )


class EmbeddingRequest(Strict):
    model: Name
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: Annotated[str, Field(max_length=256)] | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class OrganizationIn(Strict):
    slug: Slug
    name: Name | None = None


class KeyIn(Strict):
    org: Slug = Field(description="Slug of the key's organisation.")
    name: Name
    scopes: list[Literal["platform", "admin", "inference", "knowledge", "inbox", "widget"]] = Field(
        default=["inference"], min_length=1, max_length=6
    )
    # Per-minute limits are 32-bit columns: larger values are refused here, not by the database.
    requests_per_minute: int | None = Field(None, ge=1, le=10**9)
    tokens_per_minute: int | None = Field(None, ge=1, le=2**31 - 1)
    tokens_per_day: int | None = Field(None, ge=1, le=10**15)
    tokens_per_month: int | None = Field(None, ge=1, le=10**15)


# -- assistants ------------------------------------------------------------------------------


class AssistantIn(AssistantConfig):
    """An assistant: its name and its definition."""

    name: Name

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        check_text(data)
        return data


def _optional(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s fields, each optional (its constraints are checked on the merged result)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        fields[name] = (annotation | None, None)
    return fields


# Any subset of an assistant's fields; what is left out keeps its value.
AssistantUpdate: type[BaseModel] = create_model(
    "AssistantUpdate",
    __base__=Strict,
    **{"name": (Name | None, None), **_optional(AssistantConfig)},
)


# -- conversations ---------------------------------------------------------------------------

ExternalId = Annotated[str, Field(min_length=1, max_length=256)]
MessageText = Annotated[str, Field(min_length=1, max_length=16_000)]


class ConversationIn(Strict):
    """Start a conversation for an end user (their id in your system)."""

    user: ExternalId


class MessageIn(Strict):
    """A user message; the reply streams as Server-Sent Events when ``stream`` is true."""

    content: MessageText
    stream: bool = False


class TemplateIn(Strict):
    """An approved message template of the conversation's channel, with its variables."""

    name: Annotated[str, Field(min_length=1, max_length=512)]
    variables: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=20)] = []


class HumanMessageIn(Strict):
    """A human operator's reply; the conversation stays with people until handed back. On a
    messaging channel whose window has closed, send ``template`` instead of ``content``."""

    content: MessageText | None = None
    template: TemplateIn | None = None
    author: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> HumanMessageIn:
        if (self.content is None) == (self.template is None):
            raise ValueError("send either 'content' or 'template'")
        return self


class HandoffIn(Strict):
    reason: Annotated[str, Field(max_length=500)] | None = None


# -- governance ------------------------------------------------------------------------------


class ReportIn(Strict):
    """An end user's complaint about an answer."""

    category: Literal["harmful", "illegal", "inaccurate", "offensive", "privacy", "other"]
    reason: Annotated[str, Field(max_length=2000)] | None = None


class ResolveIn(Strict):
    """An operator's decision on a report. ``content_removed`` also withdraws the answer's
    text from the conversation."""

    resolution: Literal["dismissed", "upheld", "content_removed"]
    note: Annotated[str, Field(max_length=4000)] | None = None


class ConsentIn(Strict):
    """An end user's decision on one purpose."""

    purpose: Literal["terms", "personalization", "marketing"]
    granted: Annotated[bool, Field(strict=True)]
    text_version: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="The version of the text the user saw; default the current one."
    )


class ApiConsentIn(ConsentIn):
    """A consent decision for an end user of the API (their id in your system)."""

    user: ExternalId
    channel: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")] = (
        "api"
    )


class HoldIn(Strict):
    """A legal hold on a data subject (all their conversations) or on one conversation."""

    subject: ExternalId | None = None
    conversation_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _one_target(self) -> HoldIn:
        if (self.subject is None) == (self.conversation_id is None):
            raise ValueError("give either subject or conversation_id")
        return self


class LabelCheckIn(Strict):
    """Generated content and the label that came with it."""

    content: Annotated[str, Field(max_length=1_000_000)]
    aigc: dict[str, Any]
