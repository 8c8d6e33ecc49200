"""What a channel adapter is: the typed events a platform delivers, the messages sent back, and
the contract every adapter (WhatsApp, Messenger, Instagram, Telegram, a plugin's own) fulfils.

An adapter knows one platform's wire format and nothing of the reply pipeline, the queue or
the database: it checks a webhook's authenticity, turns a body into :class:`Event` records,
and sends one :class:`Outbound` through the platform's HTTP API, raising :class:`SendFailed`
with what the outbox needs to decide (retry when, or give up). Adapters are registered
through the ``register_channels`` hook; the built-in ones use it too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from concierge.errors import InvalidRequest


class EventKind(StrEnum):
    MESSAGE = "message"  # the customer wrote, sent media, a location, or chose a button
    STATUS = "status"  # what became of a message sent: sent, delivered, read, failed
    OTHER = "other"  # anything else the platform sent (a reaction, an edit): kept, not answered


@dataclass(frozen=True)
class Media:
    """A file the customer sent: how to fetch it from the platform."""

    kind: str  # image | audio | voice | video | document | sticker
    ref: str  # the platform's media id (Graph API), file_id (Telegram) or URL (Messenger)
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None


@dataclass(frozen=True)
class Event:
    """One thing a platform told us, normalised. ``key`` is the platform's own id (``wamid``,
    ``mid``, ``update_id``; for a status, the message's id and the status), so a delivery
    repeated by the platform is stored once."""

    key: str
    kind: EventKind
    sender: str  # the end user's identity on the platform: phone number, PSID, user id
    text: str = ""
    choice: str | None = None  # the id of a button or list row the customer chose
    media: Media | None = None
    location: Mapping[str, Any] | None = None
    status: str | None = None  # STATUS: sent | delivered | read | failed
    ref: str | None = None  # STATUS: the platform id of the message it is about
    tag: str | None = None  # STATUS: the callback data we attached when sending, if any
    error: str | None = None  # STATUS failed: the platform's reason
    name: str | None = None  # the customer's profile name, when the platform gives it
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # the event as received

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "kind": str(self.kind), "sender": self.sender}
        for name in ("text", "choice", "status", "ref", "tag", "error", "name"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.media is not None:
            out["media"] = {k: v for k, v in vars(self.media).items() if v is not None}
        if self.location is not None:
            out["location"] = dict(self.location)
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        out["raw"] = dict(self.raw)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        media = data.get("media")
        stamp = data.get("timestamp")
        return cls(
            key=str(data["key"]),
            kind=EventKind(data["kind"]),
            sender=str(data.get("sender", "")),
            text=str(data.get("text", "")),
            choice=data.get("choice"),
            media=Media(**media) if media else None,
            location=data.get("location"),
            status=data.get("status"),
            ref=data.get("ref"),
            tag=data.get("tag"),
            error=data.get("error"),
            name=data.get("name"),
            timestamp=datetime.fromisoformat(stamp) if stamp else None,
            raw=data.get("raw") or {},
        )


@dataclass(frozen=True)
class Choice:
    """A button or list row offered to the customer."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True)
class Template:
    """An approved message template (WhatsApp): the only thing sent outside the window."""

    name: str
    language: str
    variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outbound:
    """One message to send. ``human``: a person wrote it (Messenger's ``HUMAN_AGENT`` tag lets
    it go out up to 7 days after the customer's last message)."""

    text: str = ""
    choices: tuple[Choice, ...] = ()
    menu: str | None = None  # the label of the button that opens a list of choices
    template: Template | None = None
    human: bool = False
    tag: str | None = None  # our id for the message, echoed in status callbacks where possible

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.choices:
            out["choices"] = [
                {k: v for k, v in vars(c).items() if v is not None} for c in self.choices
            ]
        if self.menu:
            out["menu"] = self.menu
        if self.template is not None:
            out["template"] = {
                "name": self.template.name,
                "language": self.template.language,
                "variables": list(self.template.variables),
            }
        if self.human:
            out["human"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tag: str | None = None) -> Outbound:
        template = data.get("template")
        return cls(
            text=str(data.get("text", "")),
            choices=tuple(Choice(**c) for c in data.get("choices") or ()),
            menu=data.get("menu"),
            template=(
                Template(template["name"], template["language"], tuple(template["variables"]))
                if template
                else None
            ),
            human=bool(data.get("human")),
            tag=tag,
        )


@dataclass(frozen=True)
class Sent:
    """The platform accepted a message: its id there (for status callbacks)."""

    platform_id: str | None


class SendFailed(Exception):
    """The platform did not take a message. ``retry_after``: when to try again (seconds; the
    platform's own figure for a rate limit); ``permanent``: never retry; ``window_closed``:
    refused because the customer-service window has closed (only a template may go)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
        window_closed: bool = False,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.permanent = permanent or window_closed
        self.window_closed = window_closed
        self.rate_limited = rate_limited


class MalformedEvent(Exception):
    """A webhook body that is authentic but cannot be read (kept as a failed event)."""


class ChannelConfig(BaseModel):
    """A channel's settings; the fields listed in ``SECRETS`` are stored encrypted and never
    shown. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    SECRETS: ClassVar[frozenset[str]] = frozenset()

    # Where the platform's API is, for an emulator or a proxy (default: the platform's own).
    api_base_url: str | None = Field(
        None, max_length=500, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
    )


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedEvent("the body is not JSON") from None


def from_epoch(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class PlatformHttp:
    """The platform's HTTP API as an adapter uses it: JSON in and out over the server's egress
    session (a channel's ``api_base_url`` is a destination its organisation chose)."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 15.0) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Status, parsed JSON (None when the body is not JSON) and headers; a connection
        failure is a retryable :class:`SendFailed`."""
        try:
            async with self.session.request(
                method, url, json=json, headers=headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                try:
                    data = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    data = None
                return response.status, data, response.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SendFailed(
                f"the platform could not be reached ({type(exc).__name__})", code="unreachable"
            ) from exc

    async def download(
        self, url: str, headers: Mapping[str, str] | None, max_bytes: int
    ) -> tuple[bytes, str | None]:
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as response:
                if response.status != 200:
                    raise SendFailed(f"media download answered {response.status}", code="media")
                data = await response.content.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise SendFailed("the media file is too large", code="media", permanent=True)
                return data, response.headers.get("content-type")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SendFailed("the media could not be downloaded", code="unreachable") from exc


class ChannelType(ABC):
    """One messaging platform. Subclasses set the class attributes and implement the four
    abstract methods; :meth:`typing`, :meth:`mark_read`, :meth:`fetch_media` and
    :meth:`connect` are optional."""

    name: ClassVar[str]  # "whatsapp", as in POST /v1/channels {"type": ...}
    title: ClassVar[str]
    config_model: ClassVar[type[ChannelConfig]]
    max_text: ClassVar[int]  # longest text message the platform takes
    max_choice_text: ClassVar[int] = 0  # longest text with choices attached (0: max_text)
    max_buttons: ClassVar[int] = 0  # reply buttons in one message (0: none)
    max_list: ClassVar[int] = 0  # rows in one list message (0: none)
    window: ClassVar[timedelta | None] = None  # customer-service window (None: no window)
    human_window: ClassVar[timedelta | None] = None  # longer window for a person's reply
    default_rate: ClassVar[float] = 20.0  # messages a second one sender may send
    typing_seconds: ClassVar[float] = 0.0  # refresh the typing indicator this often (0: never)

    @abstractmethod
    def authenticate(self, config: ChannelConfig, headers: Mapping[str, str], body: bytes) -> None:
        """Refuse (``AuthenticationFailed``) a webhook call the platform did not make."""

    @abstractmethod
    def parse(self, config: ChannelConfig, body: bytes) -> list[Event]:
        """The events in an authentic webhook body (``MalformedEvent`` if it cannot be read)."""

    @abstractmethod
    async def send(
        self, http: PlatformHttp, config: ChannelConfig, to: str, message: Outbound
    ) -> Sent:
        """Send one message (raise :class:`SendFailed`)."""

    @abstractmethod
    def sender_id(self, config: ChannelConfig) -> str:
        """Who sends on the platform (the phone number id, page, bot): the rate limiter's key."""

    def verify(self, config: ChannelConfig, query: Mapping[str, str]) -> str:
        """Answer the platform's subscription handshake (a GET on the webhook)."""
        raise InvalidRequest(f"{self.title} webhooks have no verification handshake")

    async def typing(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        """Show that a reply is being written (best effort)."""

    async def mark_read(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        """Tell the customer their message was read (best effort)."""

    async def fetch_media(
        self, http: PlatformHttp, config: ChannelConfig, media: Media, max_bytes: int
    ) -> tuple[bytes, str | None]:
        """The bytes of a file the customer sent, and its MIME type."""
        raise SendFailed(f"{self.title} media cannot be downloaded", permanent=True)

    def template(
        self, config: ChannelConfig, name: str, variables: list[str]
    ) -> tuple[Template, str]:
        """An approved template of this channel with its variables filled, and its text."""
        raise InvalidRequest(f"{self.title} has no message templates", param="template")

    async def connect(self, http: PlatformHttp, config: ChannelConfig, webhook_url: str) -> None:
        """Point the platform at ``webhook_url`` where its API allows (Telegram's setWebhook);
        Meta's platforms are set up in the app dashboard instead."""
