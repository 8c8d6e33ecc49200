"""Headers and refusals that every response and request gets, whatever route handles it.

- Every response says ``X-Content-Type-Options: nosniff``. An HTML page (the page at ``/``,
  the API reference) gets a Content-Security-Policy that allows only this server's own scripts
  and none inline, ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` (no clickjacking);
  the API reference pages, which load Swagger UI and ReDoc from their CDN, a policy that allows
  that and nothing else. Anything else (JSON, events, files) gets ``default-src 'none';
  sandbox``: a browser that opens one cannot run it as a page of this origin.
- A request with an API key in its query string is refused (400) before it is handled:
  URLs end up in access logs, proxies and browser history (keys are also masked in this
  server's own logs, ``governance.pii``).
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.errors import InvalidRequest
from concierge.gateway.responses import JSON
from concierge.governance.logs import logging_with
from concierge.governance.pii import Detector

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages: their scripts and styles from jsDelivr, one inline script.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
DOCS_PATHS = ("/docs", "/redoc")
Headers = tuple[tuple[bytes, bytes], ...]
NOSNIFF: Headers = ((b"x-content-type-options", b"nosniff"),)
DATA_HEADERS: Headers = (*NOSNIFF, (b"content-security-policy", DATA_POLICY.encode()))
_FRAMES: Headers = (
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)
PAGE_HEADERS: Headers = (*NOSNIFF, (b"content-security-policy", PAGE_POLICY.encode()), *_FRAMES)
DOCS_HEADERS: Headers = (*NOSNIFF, (b"content-security-policy", DOCS_POLICY.encode()), *_FRAMES)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _key_in_query(scope.get("query_string", b"")):
            error = InvalidRequest(
                "An API key does not belong in a URL (URLs end up in logs); send it as "
                "'Authorization: Bearer YOUR_KEY', and replace the key that was sent this way."
            )
            await JSON(error.to_dict(), status_code=error.status)(scope, receive, send)
            return
        page_headers = DOCS_HEADERS if scope["path"].startswith(DOCS_PATHS) else PAGE_HEADERS

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                html = own_policy = False
                for name, value in headers:  # Starlette's header names are lower case
                    if name == b"content-type":
                        html = value.startswith(b"text/html")
                    elif name == b"content-security-policy":
                        own_policy = True
                extra = NOSNIFF if own_policy else page_headers if html else DATA_HEADERS
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def _key_in_query(query: bytes) -> bool:
    return bool(query) and b"sk-cc-" in unquote_to_bytes(query).lower()


class LogScope:
    """Log lines written while this server handles a request are masked with this server's
    recognisers (plugins' included), not those of another server in the same process: the
    log handlers belong to the process, the detector to the request's server."""

    def __init__(self, app: ASGIApp, detector: Detector) -> None:
        self.app = app
        self.detector = detector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with logging_with(self.detector):
            await self.app(scope, receive, send)
