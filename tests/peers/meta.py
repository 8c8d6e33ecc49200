"""A fake of Meta's Graph API for the WhatsApp Cloud API and the Messenger Platform, on a local
port (a channel's ``api_base_url`` points at it), and the webhook calls Meta makes, built from
the payloads in Meta's documentation and signed exactly as Meta signs them.

No maintained Cloud API emulator installs from npm; this fake answers the calls Concierge makes
(send a message, mark read, media URL and download) with Meta's documented response shapes, and
can be told to fail: an error code for the next N sends, a delay, or a rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

APP_SECRET = "meta-app-secret-0123456789"
VERIFY_TOKEN = "verify-me-0123456789"
ACCESS_TOKEN = "EAAG-test-access-token"
PHONE_NUMBER_ID = "106540352242922"
PAGE_ID = "1234567890"


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def whatsapp_webhook(
    *,
    messages: list[dict[str, Any]] = (),
    statuses: list[dict[str, Any]] = (),  # type: ignore[assignment]
    contacts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    phone_number_id: str = PHONE_NUMBER_ID,
) -> bytes:
    """A ``messages`` webhook as the Cloud API sends it."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    if contacts:
        value["contacts"] = list(contacts)
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(body).encode()


_ids = itertools.count(1)


def wa_text(sender: str, text: str, wamid: str | None = None) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid or f"wamid.HBgL{next(_ids):08d}",
        "timestamp": str(int(time.time())),
        "text": {"body": text},
        "type": "text",
    }


def wa_contact(sender: str, name: str = "Sheena Nelson") -> dict[str, Any]:
    return {"profile": {"name": name}, "wa_id": sender}


def wa_status(
    wamid: str,
    status: str,
    recipient: str,
    tag: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if tag:
        out["biz_opaque_callback_data"] = tag
    if errors:
        out["errors"] = errors
    return out


def is_consent_question(message: dict[str, Any]) -> bool:
    ids = [
        *(
            b["reply"]["id"]
            for b in message.get("interactive", {}).get("action", {}).get("buttons", [])
        ),
        *(q["payload"] for q in message.get("message", {}).get("quick_replies", [])),
    ]
    return any(str(i).startswith("cc:consent:") for i in ids)


@dataclass
class Failure:
    status: int
    code: int
    message: str
    times: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeGraph:
    """Records every call; ``sent`` are the messages a platform accepted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.sent: list[dict[str, Any]] = []
        self.failures: list[Failure] = []
        self.delay = 0.0
        self.media: dict[str, tuple[bytes, str]] = {}
        self.sent_event = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        await self.server.close()

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def fail(
        self,
        status: int,
        code: int,
        message: str = "error",
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.failures.append(Failure(status, code, message, times, headers or {}))

    async def wait_sent(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.sent)} of {count} messages sent: {self.sent}")
            await asyncio.sleep(0.02)
        return self.sent

    @property
    def replies(self) -> list[dict[str, Any]]:
        """What was sent, less the memory consent question (asked after a first reply)."""
        return [m for m in self.sent if not is_consent_question(m)]

    async def wait_replies(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.replies) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.replies)} of {count} replies: {self.sent}")
            await asyncio.sleep(0.02)
        return self.replies

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        path = request.path
        self.calls.append((request.method, path, body, dict(request.headers)))
        answer = self.answer(request.method, path, body)
        if self.delay:  # the platform has acted; its answer is slow to come back
            await asyncio.sleep(self.delay)
        return answer

    def answer(self, method: str, path: str, body: Any) -> web.Response:
        if path.startswith("/download/"):
            data, mime = self.media[path.rsplit("/", 1)[-1]]
            return web.Response(body=data, content_type=mime)
        if method == "GET":  # a media id: its short-lived URL
            media_id = path.rsplit("/", 1)[-1]
            if media_id not in self.media:
                return web.json_response(
                    {"error": {"code": 100, "message": "no media"}}, status=400
                )
            return web.json_response(
                {
                    "url": f"{self.base_url}/download/{media_id}",
                    "mime_type": self.media[media_id][1],
                    "id": media_id,
                    "messaging_product": "whatsapp",
                }
            )
        if (body and body.get("status") == "read") or (body and "sender_action" in body):
            return web.json_response({"success": True})
        if self.failures:
            failure = self.failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self.failures.pop(0)
            return web.json_response(
                {
                    "error": {
                        "message": failure.message,
                        "type": "OAuthException",
                        "code": failure.code,
                        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
                    }
                },
                status=failure.status,
                headers=failure.headers,
            )
        self.sent.append(body or {})
        self.sent_event.set()
        if "recipient" in (body or {}):  # Messenger's Send API
            return web.json_response(
                {"recipient_id": body["recipient"]["id"], "message_id": f"m_{next(_ids)}"}
            )
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                "messages": [{"id": f"wamid.OUT{next(_ids):08d}"}],
            }
        )
