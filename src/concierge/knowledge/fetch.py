"""Documents fetched from URLs, for ingestion.

Only ``http`` and ``https``; redirects followed (at most five); the body read up to the
configured size limit and no further; the content type taken from the response. Every
connection, redirect hops included, goes through the server's egress policy
(:mod:`concierge.egress`): a knowledge base API must not become a way into the server's own
network. Operators who ingest from an intranet list its networks in
``egress_allowed_networks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import aiohttp

from concierge.egress import Egress, normalise_host, refused
from concierge.errors import DocumentTooLarge, InvalidDocument

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    data: bytes
    content_type: str | None
    filename: str | None


def _filename(url: str, disposition: str | None) -> str | None:
    if disposition:
        msg = aiohttp.multipart.parse_content_disposition(disposition)
        name = aiohttp.multipart.content_disposition_filename(msg[1], "filename")
        if name:
            return PurePosixPath(name).name
    path = unquote(urlsplit(url).path)
    return PurePosixPath(path).name or None


async def fetch(
    url: str,
    egress: Egress,
    *,
    max_bytes: int,
    timeout: float = 30.0,  # noqa: ASYNC109 (aiohttp's own timeouts, per phase)
) -> Fetched:
    """GET ``url``; :class:`InvalidDocument` (or a subclass) on any failure, with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not normalise_host(url):
        raise InvalidDocument(f"not an http(s) URL: {url!r}", param="url")
    limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
    try:
        async with egress.session().get(
            url,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": "Concierge-knowledge-fetcher/1"},
            timeout=limits,
        ) as response:
            if response.status >= 400:
                reason = f"HTTP {response.status} {response.reason or ''}".strip()
                raise InvalidDocument(f"fetching {url} failed: {reason}", param="url")
            if response.content_length is not None and response.content_length > max_bytes:
                raise DocumentTooLarge(
                    f"{url} is {response.content_length} bytes; the limit is {max_bytes}",
                    param="url",
                )
            body = bytearray()
            async for piece in response.content.iter_chunked(65536):
                body += piece
                if len(body) > max_bytes:
                    raise DocumentTooLarge(
                        f"{url} is larger than the limit of {max_bytes} bytes", param="url"
                    )
            return Fetched(
                url=str(response.url),
                data=bytes(body),
                content_type=response.headers.get("Content-Type"),
                filename=_filename(str(response.url), response.headers.get("Content-Disposition")),
            )
    except InvalidDocument:
        raise
    except aiohttp.TooManyRedirects:
        raise InvalidDocument(f"fetching {url} failed: too many redirects", param="url") from None
    except TimeoutError:
        raise InvalidDocument(
            f"fetching {url} failed: no complete answer within {timeout:g} s", param="url"
        ) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        policy = refused(exc)
        if policy is not None:
            raise InvalidDocument(f"fetching {url} {policy.message}", param="url") from None
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.strerror or type(exc).__name__
        elif isinstance(exc, aiohttp.ClientError | OSError):
            reason = str(exc) or type(exc).__name__
        else:
            reason = "the URL is not valid"
        raise InvalidDocument(f"fetching {url} failed: {reason}", param="url") from None
