"""Messenger and Instagram (the Messenger Platform): page webhooks in, ``/me/messages`` out.

Same signature scheme as WhatsApp (``X-Hub-Signature-256`` under the app secret) and the same
``hub.*`` handshake. Inbound: text, attachments (image, audio, video, file), quick-reply and
postback payloads; delivery and read receipts. Outbound: text (2,000 characters on Messenger,
1,000 on Instagram) with quick replies. A reply goes out as ``RESPONSE`` within 24 hours of the
customer's last message; a person's reply up to 7 days after it with the ``HUMAN_AGENT`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import Field

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
    from_epoch,
    loads,
)
from concierge.channels.meta import MetaConfig, MetaPlatform

# Graph API error codes for the Send API
RATE_LIMITED = {4, 17, 32, 613}
RETRYABLE = {1, 2, -1}
OUTSIDE_WINDOW_SUBCODES = {2018278, 2018108, 2534022}
ATTACHMENT_KINDS = {"image": "image", "audio": "audio", "video": "video", "file": "document"}


class MessengerConfig(MetaConfig):
    page_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    messages_per_second: float = Field(40.0, gt=0, le=1000)


def failure(status: int, data: Any, headers: Mapping[str, str]) -> SendFailed:
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    code, sub = error.get("code"), error.get("error_subcode")
    text = str(error.get("message") or f"HTTP {status}")[:500]
    label = f"messenger:{code}" if code is not None else f"http:{status}"
    if sub in OUTSIDE_WINDOW_SUBCODES or (code == 10 and "window" in text.lower()):
        return SendFailed(
            f"outside the window the platform allows for replies ({text})",
            code=label,
            window_closed=True,
        )
    if code in RATE_LIMITED or status == 429:
        return SendFailed(f"rate limited ({text})", code=label, rate_limited=True)
    if code in RETRYABLE or status >= 500:
        return SendFailed(f"the platform failed ({text})", code=label)
    return SendFailed(f"the platform refused the message ({text})", code=label, permanent=True)


def _event(item: Mapping[str, Any]) -> Event | None:
    sender = str((item.get("sender") or {}).get("id", ""))
    stamp = from_epoch((item.get("timestamp") or 0) // 1000)
    message = item.get("message")
    if isinstance(message, dict):
        if message.get("is_echo"):
            return None  # our own message, echoed back
        fields: dict[str, Any] = {"text": str(message.get("text") or "")}
        quick = message.get("quick_reply")
        if isinstance(quick, dict):
            fields["choice"] = quick.get("payload")
        for attachment in message.get("attachments") or []:
            kind = ATTACHMENT_KINDS.get(str(attachment.get("type")))
            payload = attachment.get("payload") or {}
            if kind and payload.get("url"):
                fields["media"] = Media(kind=kind, ref=str(payload["url"]))
                break
            if attachment.get("type") == "location" and payload.get("coordinates"):
                where = payload["coordinates"]
                fields["location"] = {"latitude": where.get("lat"), "longitude": where.get("long")}
        return Event(
            key=str(message["mid"]),
            kind=EventKind.MESSAGE,
            sender=sender,
            timestamp=stamp,
            raw=dict(item),
            **fields,
        )
    postback = item.get("postback")
    if isinstance(postback, dict):
        key = postback.get("mid") or f"postback:{sender}:{item.get('timestamp')}"
        return Event(
            key=str(key),
            kind=EventKind.MESSAGE,
            sender=sender,
            text=str(postback.get("title") or ""),
            choice=postback.get("payload"),
            timestamp=stamp,
            raw=dict(item),
        )
    for state in ("delivery", "read"):
        receipt = item.get(state)
        if isinstance(receipt, dict):
            watermark = receipt.get("watermark")
            mids = receipt.get("mids") or []
            return Event(
                key=f"{state}:{sender}:{watermark}",
                kind=EventKind.STATUS,
                sender=sender,
                status="delivered" if state == "delivery" else "read",
                ref=str(mids[0]) if mids else None,
                timestamp=from_epoch((watermark or 0) // 1000),
                raw=dict(item),
            )
    return Event(
        key=f"other:{sender}:{item.get('timestamp')}",
        kind=EventKind.OTHER,
        sender=sender,
        raw=dict(item),
    )


class Messenger(MetaPlatform):
    name = "messenger"
    title = "Messenger"
    config_model = MessengerConfig
    max_text = 2000
    max_buttons = 13  # quick replies
    window = timedelta(hours=24)
    human_window = timedelta(days=7)
    default_rate = 40.0
    webhook_object = "page"

    def sender_id(self, config: ChannelConfig) -> str:
        assert isinstance(config, MessengerConfig)
        return f"{self.name}:{config.page_id}"

    def parse(self, config: ChannelConfig, body: bytes) -> list[Event]:
        assert isinstance(config, MessengerConfig)
        data = loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
            raise MalformedEvent(f"a {self.title} webhook has an 'entry' list")
        events: list[Event] = []
        try:
            for entry in data["entry"]:
                if str(entry.get("id")) != config.page_id:
                    continue  # another page or account of the same app
                for item in entry.get("messaging") or []:
                    event = _event(item)
                    if event is not None:
                        events.append(event)
        except (AttributeError, KeyError, TypeError) as exc:
            raise MalformedEvent(
                f"unexpected {self.title} payload ({type(exc).__name__})"
            ) from None
        return events

    def payload(self, to: str, message: Outbound) -> dict[str, Any]:
        body: dict[str, Any] = {"text": message.text}
        if message.choices:
            body["quick_replies"] = [
                {"content_type": "text", "title": c.title[:20], "payload": c.id[:1000]}
                for c in message.choices[: self.max_buttons]
            ]
        if message.tag:
            body["metadata"] = message.tag
        out: dict[str, Any] = {"recipient": {"id": to}, "message": body}
        if message.human:
            out.update(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        else:
            out["messaging_type"] = "RESPONSE"
        return out

    async def send(
        self, http: PlatformHttp, config: ChannelConfig, to: str, message: Outbound
    ) -> Sent:
        assert isinstance(config, MessengerConfig)
        if message.template is not None:
            raise SendFailed(f"{self.title} has no message templates", permanent=True)
        status, data, headers = await http.call(
            "POST",
            f"{self._base(config)}/me/messages",
            json=self.payload(to, message),
            headers=self._auth(config),
        )
        if status != 200:
            raise failure(status, data, headers)
        return Sent(str(data.get("message_id")) if isinstance(data, dict) else None)

    async def _action(self, http: PlatformHttp, config: MessengerConfig, to: str, act: str) -> None:
        await http.call(
            "POST",
            f"{self._base(config)}/me/messages",
            json={"recipient": {"id": to}, "sender_action": act},
            headers=self._auth(config),
        )

    async def mark_read(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        assert isinstance(config, MessengerConfig)
        await self._action(http, config, to, "mark_seen")

    async def typing(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        assert isinstance(config, MessengerConfig)
        await self._action(http, config, to, "typing_on")

    async def fetch_media(
        self, http: PlatformHttp, config: ChannelConfig, media: Media, max_bytes: int
    ) -> tuple[bytes, str | None]:
        return await http.download(media.ref, None, max_bytes)


class InstagramConfig(MessengerConfig):
    """``page_id`` is the Instagram professional account's id."""

    messages_per_second: float = Field(40.0, gt=0, le=1000)


class Instagram(Messenger):
    name = "instagram"
    title = "Instagram"
    config_model = InstagramConfig
    max_text = 1000
    webhook_object = "instagram"
