"""Requests refused before any handler sees them.

``BodySizeLimit`` answers 413 to bodies over ``max_body_bytes``, before reading them whole;
uploads (files, documents) have their own, larger limit, ``max_upload_bytes``.
``RefuseNul`` answers 400 to a path or query string holding a NUL character, which no
database column can store and PostgreSQL refuses even in a lookup.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.errors import InvalidRequest, PayloadTooLarge
from concierge.gateway.responses import JSON

TOO_LARGE = "concierge.body_too_large"


UPLOAD_PATHS = re.compile(r"^/v1/(files|knowledge_bases/[^/]+/documents)/?$")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max(max_upload_bytes or max_bytes, max_bytes)

    @staticmethod
    def _reply(limit: int) -> JSON:
        error = too_large(limit)
        return JSON(error.to_dict(), status_code=error.status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if UPLOAD_PATHS.match(scope["path"]) else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reply(limit)(scope, receive, send)
                    return
        seen = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
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
                await self._reply(limit)(scope, receive, send)


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b""))
        ):
            error = InvalidRequest("the request URL must not contain NUL characters")
            await JSON(error.to_dict(), status_code=error.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


def client_address(request: Request) -> str:
    """Who is calling, for per-address budgets: the client's address (from X-Forwarded-For
    when the server trusts the proxy, see ``trusted_proxies``), an IPv6 one by its /64 (one
    subscriber's whole prefix, which costs an attacker nothing to vary within)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def too_large(max_bytes: int | None = None) -> PayloadTooLarge:
    limit = f" of {max_bytes} bytes" if max_bytes else ""
    return PayloadTooLarge(f"The request body is larger than the limit{limit}.")
