"""Response classes: JSON through orjson, and Server-Sent Events in OpenAI's framing."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from concierge.gateway.disconnect import ClientDisconnected, until_disconnect

if TYPE_CHECKING:
    from concierge.models.base import Usage


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def sse_event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"

# Generated content says so (EU AI Act Art. 50(2)); the body's ``aigc`` object is the label.
AI_HEADERS = {"X-AI-Generated": "1"}


class ChunkEncoder:
    """The streamed chunks of one OpenAI completion (``chat.completion.chunk`` or
    ``text_completion``): every chunk is ``{**base, "choices": [choice], "usage": null?}``, so
    the fixed parts are encoded once and each chunk encodes only its choice (and any extra
    top-level fields: the last chunk's ``aigc`` label, an assistant's ``metadata``)."""

    def __init__(self, ident: str, model: str, *, chat: bool, include_usage: bool) -> None:
        self.chat = chat
        self.base = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self._head = b"data: " + orjson.dumps(self.base)[:-1] + b',"choices":['
        self._tail = b'],"usage":null' if include_usage else b"]"

    def chunk(
        self,
        delta: Mapping[str, Any],
        finish: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        """One chunk: ``delta`` for chat (its ``content`` as ``text`` for a completion)."""
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            text = delta.get("content", "")
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        fields = b"".join(
            b',"' + name.encode() + b'":' + orjson.dumps(value)
            for name, value in (extra or {}).items()
        )
        return self._head + orjson.dumps(choice) + self._tail + fields + b"}\n\n"

    def usage(self, usage: Usage) -> bytes:
        """The chunk a client that asked for ``include_usage`` gets last: no choices, usage."""
        return sse_event({**self.base, "choices": [], "usage": usage.to_dict()})


class EventStream(StreamingResponse):
    """A Server-Sent Events response whose event generator stops when the client goes away.

    Starlette's StreamingResponse watches for the disconnect with an anyio task group per
    response on servers that speak ASGI before 2.4 (uvicorn among them); one watcher task does
    the same here at a fraction of the cost, which matters on every streamed request.
    """

    def __init__(
        self, events: AsyncGenerator[bytes, None], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )
        self.events = events

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        ended = False
        async for chunk in self.events:
            # ``data: [DONE]`` ends an OpenAI stream: end the HTTP body with it, in one write.
            ended = chunk.endswith(SSE_DONE)
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await until_disconnect(receive, self.stream_response(send))
        except ClientDisconnected:
            pass
        finally:
            await self.events.aclose()  # runs the generator's clean-up if it did not finish
