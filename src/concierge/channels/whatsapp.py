"""WhatsApp Cloud API (Meta): webhooks in, Graph API ``/{phone_number_id}/messages`` out.

Webhooks are verified with the ``hub.*`` handshake and signed with ``X-Hub-Signature-256``.
Inbound: text, image, audio (voice notes), video, document, sticker, location, interactive
button and list replies, template quick-reply buttons; status callbacks. Outbound: text,
reply buttons (at most 3), list messages (at most 10 rows), approved templates with their
variables filled; ``biz_opaque_callback_data`` carries our id for each message so that its
status callbacks find it even if the server stopped before it recorded the platform's id. The
customer-service window is 24 hours from the customer's last message; outside it only a
template may go (error 131047). Read receipt and typing indicator go in one call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from concierge.channels.base import (
    ChannelConfig,
    Event,
    EventKind,
    MalformedEvent,
    Media,
    Outbound,
    PlatformHttp,
    SendFailed,
    Sent,
    Template,
    from_epoch,
    loads,
)
from concierge.channels.meta import MetaConfig, MetaPlatform
from concierge.errors import InvalidRequest

MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")
# Graph API error codes (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes)
RATE_LIMITED = {4, 80007, 130429, 131048, 131056, 613}
RETRYABLE = {1, 2, 131000, 131016, 133004, 133005}
WINDOW_CLOSED = 131047


class TemplateSpec(BaseModel):
    """An approved message template, as registered in WhatsApp Manager: its body's
    ``{{1}}``, ``{{2}}``... are filled with the variables a person gives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field("en_US", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    body: str = Field(min_length=1, max_length=1024)

    @property
    def variables(self) -> int:
        return len(set(re.findall(r"\{\{(\d+)\}\}", self.body)))

    def fill(self, values: list[str]) -> str:
        if len(values) != self.variables:
            raise ValueError(
                f"template '{self.name}' takes {self.variables} variable(s), not {len(values)}"
            )
        return re.sub(r"\{\{(\d+)\}\}", lambda m: values[int(m.group(1)) - 1], self.body)


class WhatsAppConfig(MetaConfig):
    phone_number_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    messages_per_second: float = Field(80.0, gt=0, le=1000)
    templates: list[TemplateSpec] = Field(default_factory=list, max_length=250)


def _err(data: Any) -> tuple[int | None, str]:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, "no error details"
    code = error.get("code")
    details = (error.get("error_data") or {}).get("details") if isinstance(error, dict) else None
    text = str(error.get("message") or "error")
    if details:
        text = f"{text}: {details}"
    return (int(code) if isinstance(code, int) else None), text[:500]


def failure(status: int, data: Any, headers: Mapping[str, str]) -> SendFailed:
    """What a Graph API error means for the outbox."""
    code, text = _err(data)
    label = f"whatsapp:{code}" if code is not None else f"http:{status}"
    if code == WINDOW_CLOSED:
        return SendFailed(
            "the 24-hour customer-service window has closed; only an approved template can "
            f"be sent ({text})",
            code=label,
            window_closed=True,
        )
    if code in RATE_LIMITED or status == 429:
        retry = headers.get("retry-after")
        return SendFailed(
            f"rate limited by WhatsApp ({text})",
            code=label,
            retry_after=float(retry) if retry and retry.isdigit() else None,
            rate_limited=True,
        )
    if code in RETRYABLE or status >= 500:
        return SendFailed(f"WhatsApp failed ({text})", code=label)
    return SendFailed(f"WhatsApp refused the message ({text})", code=label, permanent=True)


def _media(kind: str, body: Mapping[str, Any]) -> Media:
    if kind == "audio" and body.get("voice"):
        kind = "voice"
    return Media(
        kind=kind,
        ref=str(body.get("id", "")),
        mime_type=body.get("mime_type"),
        filename=body.get("filename"),
        caption=body.get("caption"),
    )


def message_event(message: Mapping[str, Any], names: Mapping[str, str]) -> Event:
    kind = message.get("type")
    sender = str(message.get("from", ""))
    fields: dict[str, Any] = {}
    if kind == "text":
        fields["text"] = str((message.get("text") or {}).get("body", ""))
    elif kind in MEDIA_KINDS:
        media = _media(kind, message.get(kind) or {})
        fields["media"], fields["text"] = media, media.caption or ""
    elif kind == "location":
        where = message.get("location") or {}
        fields["location"] = {
            k: where[k] for k in ("latitude", "longitude", "name", "address") if k in where
        }
    elif kind == "interactive":
        inner = message.get("interactive") or {}
        chosen = inner.get(inner.get("type", "")) or {}  # button_reply | list_reply
        fields["choice"], fields["text"] = chosen.get("id"), str(chosen.get("title", ""))
    elif kind == "button":  # a template's quick-reply button
        button = message.get("button") or {}
        fields["choice"], fields["text"] = button.get("payload"), str(button.get("text", ""))
    else:
        return Event(key=str(message["id"]), kind=EventKind.OTHER, sender=sender, raw=dict(message))
    return Event(
        key=str(message["id"]),
        kind=EventKind.MESSAGE,
        sender=sender,
        name=names.get(sender),
        timestamp=from_epoch(message.get("timestamp")),
        raw=dict(message),
        **fields,
    )


def status_event(status: Mapping[str, Any]) -> Event:
    errors = status.get("errors") or []
    error = None
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        error = f"{first.get('code')}: {first.get('title') or first.get('message') or ''}"
    ref, state = str(status["id"]), str(status.get("status", ""))
    return Event(
        key=f"{ref}:{state}",
        kind=EventKind.STATUS,
        sender=str(status.get("recipient_id", "")),
        status=state,
        ref=ref,
        tag=status.get("biz_opaque_callback_data"),
        error=error,
        timestamp=from_epoch(status.get("timestamp")),
        raw=dict(status),
    )


class WhatsApp(MetaPlatform):
    name = "whatsapp"
    title = "WhatsApp"
    config_model = WhatsAppConfig
    max_text = 4096
    max_choice_text = 1024  # an interactive message's body
    max_buttons = 3
    max_list = 10
    window = timedelta(hours=24)
    default_rate = 80.0
    typing_seconds = 20.0  # the indicator shows for up to 25 seconds

    def sender_id(self, config: ChannelConfig) -> str:
        assert isinstance(config, WhatsAppConfig)
        return f"whatsapp:{config.phone_number_id}"

    def parse(self, config: ChannelConfig, body: bytes) -> list[Event]:
        assert isinstance(config, WhatsAppConfig)
        data = loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
            raise MalformedEvent("a WhatsApp webhook has an 'entry' list")
        events: list[Event] = []
        try:
            for entry in data["entry"]:
                for change in entry.get("changes") or []:
                    value = change.get("value") or {}
                    number = (value.get("metadata") or {}).get("phone_number_id")
                    if number is not None and str(number) != config.phone_number_id:
                        continue  # another number of the same business account
                    names = {
                        str(c.get("wa_id")): str((c.get("profile") or {}).get("name", ""))
                        for c in value.get("contacts") or []
                    }
                    events += [message_event(m, names) for m in value.get("messages") or []]
                    events += [status_event(s) for s in value.get("statuses") or []]
        except (AttributeError, KeyError, TypeError) as exc:
            raise MalformedEvent(f"unexpected WhatsApp payload ({type(exc).__name__})") from None
        return events

    def payload(self, to: str, message: Outbound) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
        }
        if message.tag:
            out["biz_opaque_callback_data"] = message.tag
        if message.template is not None:
            template: dict[str, Any] = {
                "name": message.template.name,
                "language": {"code": message.template.language},
            }
            if message.template.variables:
                template["components"] = [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": v} for v in message.template.variables
                        ],
                    }
                ]
            return {**out, "type": "template", "template": template}
        if not message.choices:
            return {**out, "type": "text", "text": {"preview_url": False, "body": message.text}}
        if len(message.choices) <= self.max_buttons:
            action: dict[str, Any] = {
                "buttons": [
                    {"type": "reply", "reply": {"id": c.id[:256], "title": c.title[:20]}}
                    for c in message.choices
                ]
            }
            kind = "button"
        else:
            rows = []
            for c in message.choices[: self.max_list]:
                row = {"id": c.id[:200], "title": c.title[:24]}
                if c.description:
                    row["description"] = c.description[:72]
                rows.append(row)
            action = {"button": (message.menu or "Options")[:20], "sections": [{"rows": rows}]}
            kind = "list"
        interactive = {"type": kind, "body": {"text": message.text[:1024]}, "action": action}
        return {**out, "type": "interactive", "interactive": interactive}

    def template(
        self, config: ChannelConfig, name: str, variables: list[str]
    ) -> tuple[Template, str]:
        assert isinstance(config, WhatsAppConfig)
        for spec in config.templates:
            if spec.name == name:
                try:
                    text = spec.fill(variables)
                except ValueError as exc:
                    raise InvalidRequest(str(exc), param="template.variables") from None
                return Template(spec.name, spec.language, tuple(variables)), text
        known = ", ".join(t.name for t in config.templates) or "none"
        raise InvalidRequest(
            f"template '{name[:80]}' is not one of this channel's approved templates ({known})",
            param="template.name",
        )

    async def send(
        self, http: PlatformHttp, config: ChannelConfig, to: str, message: Outbound
    ) -> Sent:
        assert isinstance(config, WhatsAppConfig)
        status, data, headers = await http.call(
            "POST",
            f"{self._base(config)}/{config.phone_number_id}/messages",
            json=self.payload(to, message),
            headers=self._auth(config),
        )
        if status != 200:
            raise failure(status, data, headers)
        try:
            return Sent(str(data["messages"][0]["id"]))
        except (KeyError, IndexError, TypeError):
            return Sent(None)

    async def mark_read(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        """The read receipt and the typing indicator (it shows for up to 25 seconds, or until
        the reply is sent), in one call."""
        assert isinstance(config, WhatsAppConfig)
        await http.call(
            "POST",
            f"{self._base(config)}/{config.phone_number_id}/messages",
            json={
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": event.key,
                "typing_indicator": {"type": "text"},
            },
            headers=self._auth(config),
        )

    async def typing(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        await self.mark_read(http, config, to, event)

    async def fetch_media(
        self, http: PlatformHttp, config: ChannelConfig, media: Media, max_bytes: int
    ) -> tuple[bytes, str | None]:
        """Graph API media flow: the media id gives a short-lived URL, fetched with the token."""
        assert isinstance(config, WhatsAppConfig)
        status, data, headers = await http.call(
            "GET", f"{self._base(config)}/{media.ref}", headers=self._auth(config)
        )
        if status != 200 or not isinstance(data, dict) or not data.get("url"):
            raise failure(status, data, headers)
        body, mime = await http.download(str(data["url"]), self._auth(config), max_bytes)
        return body, data.get("mime_type") or mime
