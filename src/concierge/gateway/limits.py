"""Refuse request bodies over ``max_body_bytes`` with 413, before reading them whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.errors import PayloadTooLarge
from concierge.gateway.responses import JSON

TOO_LARGE = "concierge.body_too_large"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> JSON:
        exc = too_large(self.max_bytes)
        return JSON(exc.to_dict(), status_code=exc.status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._error()(scope, receive, send)
                    return
        seen = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI turns a failing body read into a 400; the error handler reads
                    # this flag and answers 413 instead.
                    scope[TOO_LARGE] = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._error()(scope, receive, send)


class _TooLarge(Exception):
    pass


def too_large(max_bytes: int | None = None) -> PayloadTooLarge:
    limit = f" of {max_bytes} bytes" if max_bytes else ""
    return PayloadTooLarge(f"The request body is larger than the limit{limit}.")
