"""Telegram Bot API: a webhook registered with ``setWebhook`` and a ``secret_token`` that
Telegram sends back in ``X-Telegram-Bot-Api-Secret-Token``; updates carry an increasing
``update_id`` (the dedupe key). Outbound ``sendMessage`` (4,096 characters) with an inline
keyboard for choices; ``sendChatAction`` (typing, about 5 seconds each) refreshed while the
model works; 429 answers carry ``parameters.retry_after``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from concierge.channels.base import (
    ChannelConfig,
    ChannelType,
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
from concierge.errors import SignatureInvalid

API = "https://api.telegram.org"


def chat_id(to: str) -> int | str:
    """A chat id as Telegram gives it: an integer, or a channel's @username."""
    return int(to) if to.lstrip("-").isdigit() else to


MEDIA_KINDS = ("voice", "audio", "video", "video_note", "document", "sticker")


class TelegramConfig(ChannelConfig):
    SECRETS: ClassVar[frozenset[str]] = frozenset({"bot_token", "secret_token"})

    bot_token: str = Field(min_length=1, max_length=256, pattern=r"^[0-9]+:[A-Za-z0-9_-]+$")
    # 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token).
    secret_token: str = Field(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")
    messages_per_second: float = Field(30.0, gt=0, le=1000)


def failure(status: int, data: Any) -> SendFailed:
    data = data if isinstance(data, dict) else {}
    code = data.get("error_code", status)
    text = str(data.get("description") or f"HTTP {status}")[:500]
    label = f"telegram:{code}"
    if code == 429:
        retry = (data.get("parameters") or {}).get("retry_after")
        return SendFailed(
            f"rate limited by Telegram ({text})",
            code=label,
            retry_after=float(retry) if isinstance(retry, int | float) else None,
            rate_limited=True,
        )
    if isinstance(code, int) and code >= 500:
        return SendFailed(f"Telegram failed ({text})", code=label)
    return SendFailed(f"Telegram refused the message ({text})", code=label, permanent=True)


def _message_event(key: str, message: Mapping[str, Any]) -> Event:
    chat = str((message.get("chat") or {}).get("id", ""))
    who = message.get("from") or {}
    name = " ".join(str(who[k]) for k in ("first_name", "last_name") if who.get(k)) or None
    fields: dict[str, Any] = {"text": str(message.get("text") or message.get("caption") or "")}
    if message.get("photo"):
        biggest = message["photo"][-1]  # sizes come smallest first
        fields["media"] = Media(kind="image", ref=str(biggest["file_id"]), mime_type="image/jpeg")
    for kind in MEDIA_KINDS:
        item = message.get(kind)
        if isinstance(item, dict) and item.get("file_id"):
            fields["media"] = Media(
                kind="video" if kind == "video_note" else kind,
                ref=str(item["file_id"]),
                mime_type=item.get("mime_type"),
                filename=item.get("file_name"),
            )
    if isinstance(message.get("location"), dict):
        fields["location"] = {
            "latitude": message["location"].get("latitude"),
            "longitude": message["location"].get("longitude"),
        }
    has_content = fields["text"] or "media" in fields or "location" in fields
    return Event(
        key=key,
        kind=EventKind.MESSAGE if has_content else EventKind.OTHER,
        sender=chat,
        name=name,
        timestamp=from_epoch(message.get("date")),
        raw=dict(message),
        **fields,
    )


class Telegram(ChannelType):
    name = "telegram"
    title = "Telegram"
    config_model = TelegramConfig
    max_text = 4096
    max_buttons = 8  # inline keyboard rows we offer
    default_rate = 30.0
    typing_seconds = 4.0

    def _url(self, config: TelegramConfig, method: str) -> str:
        return f"{(config.api_base_url or API).rstrip('/')}/bot{config.bot_token}/{method}"

    def sender_id(self, config: ChannelConfig) -> str:
        assert isinstance(config, TelegramConfig)
        return f"telegram:{config.bot_token.split(':', 1)[0]}"

    def authenticate(self, config: ChannelConfig, headers: Mapping[str, str], body: bytes) -> None:
        assert isinstance(config, TelegramConfig)
        given = headers.get("x-telegram-bot-api-secret-token", "")
        if not given:
            raise SignatureInvalid("the update has no X-Telegram-Bot-Api-Secret-Token")
        if not hmac.compare_digest(given.encode(), config.secret_token.encode()):
            raise SignatureInvalid("the update's X-Telegram-Bot-Api-Secret-Token is wrong")

    def parse(self, config: ChannelConfig, body: bytes) -> list[Event]:
        data = loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            raise MalformedEvent("a Telegram update has an integer 'update_id'")
        key = str(data["update_id"])
        try:
            if isinstance(data.get("message"), dict):
                return [_message_event(key, data["message"])]
            query = data.get("callback_query")
            if isinstance(query, dict):
                chat = ((query.get("message") or {}).get("chat") or {}).get("id")
                sender = str(chat if chat is not None else (query.get("from") or {}).get("id"))
                return [
                    Event(
                        key=key,
                        kind=EventKind.MESSAGE,
                        sender=sender,
                        text=str(query.get("data") or ""),
                        choice=query.get("data"),
                        raw=dict(query),
                    )
                ]
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            raise MalformedEvent(f"unexpected Telegram update ({type(exc).__name__})") from None
        sender = ""
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("chat"), dict):
                sender = str(value["chat"].get("id", ""))
        return [Event(key=key, kind=EventKind.OTHER, sender=sender, raw=dict(data))]

    def payload(self, to: str, message: Outbound) -> dict[str, Any]:
        out: dict[str, Any] = {"chat_id": chat_id(to), "text": message.text}
        if message.choices:
            out["reply_markup"] = {
                "inline_keyboard": [
                    [
                        {
                            "text": c.title[:64],
                            "callback_data": c.id.encode()[:64].decode(errors="ignore"),
                        }
                    ]
                    for c in message.choices[: self.max_buttons]
                ]
            }
        return out

    async def _call(
        self, http: PlatformHttp, config: TelegramConfig, method: str, body: dict[str, Any]
    ) -> Any:
        status, data, _headers = await http.call("POST", self._url(config, method), json=body)
        if status != 200 or not isinstance(data, dict) or not data.get("ok"):
            raise failure(status, data)
        return data.get("result")

    async def send(
        self, http: PlatformHttp, config: ChannelConfig, to: str, message: Outbound
    ) -> Sent:
        assert isinstance(config, TelegramConfig)
        if message.template is not None:
            raise SendFailed("Telegram has no message templates", permanent=True)
        result = await self._call(http, config, "sendMessage", self.payload(to, message))
        ident = result.get("message_id") if isinstance(result, dict) else None
        return Sent(f"{to}:{ident}" if ident is not None else None)

    async def typing(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        assert isinstance(config, TelegramConfig)
        body = {"chat_id": chat_id(to), "action": "typing"}
        await self._call(http, config, "sendChatAction", body)

    async def mark_read(
        self, http: PlatformHttp, config: ChannelConfig, to: str, event: Event
    ) -> None:
        """A button press is acknowledged (Telegram shows a spinner until it is)."""
        assert isinstance(config, TelegramConfig)
        if event.choice is not None and event.raw.get("id"):
            await self._call(
                http, config, "answerCallbackQuery", {"callback_query_id": event.raw["id"]}
            )

    async def fetch_media(
        self, http: PlatformHttp, config: ChannelConfig, media: Media, max_bytes: int
    ) -> tuple[bytes, str | None]:
        assert isinstance(config, TelegramConfig)
        found = await self._call(http, config, "getFile", {"file_id": media.ref})
        path = found.get("file_path") if isinstance(found, dict) else None
        if not path:
            raise SendFailed("Telegram gave no file path for the media", permanent=True)
        base = (config.api_base_url or API).rstrip("/")
        body, mime = await http.download(
            f"{base}/file/bot{config.bot_token}/{path}", None, max_bytes
        )
        return body, media.mime_type or mime

    async def connect(self, http: PlatformHttp, config: ChannelConfig, webhook_url: str) -> None:
        assert isinstance(config, TelegramConfig)
        await self._call(
            http,
            config,
            "setWebhook",
            {
                "url": webhook_url,
                "secret_token": config.secret_token,
                "allowed_updates": ["message", "callback_query"],
            },
        )
