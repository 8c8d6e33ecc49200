"""Documents fetched from URLs, for ingestion.

Only ``http`` and ``https``; redirects followed (at most five); the body read up to the
configured size limit and no further; the content type taken from the response. By default
the fetcher refuses to connect to loopback, private, link-local and other non-public
addresses (checked on the addresses it actually connects to, so DNS tricks do not get round
it): a knowledge base API must not become a way into the server's own network. Operators who
ingest from an intranet switch that off with ``fetch_private_networks``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from concierge.errors import DocumentTooLarge, InvalidDocument

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    data: bytes
    content_type: str | None
    filename: str | None


class _PublicOnly(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses non-public addresses."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            if not ipaddress.ip_address(result["host"]).is_global:
                raise _Refused(f"{host} resolves to a non-public address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._resolver.close()


class _Refused(OSError):
    pass


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
    *,
    max_bytes: int,
    timeout: float = 30.0,  # noqa: ASYNC109 (aiohttp's own timeouts, per phase)
    private_networks: bool = False,
) -> Fetched:
    """GET ``url``; :class:`InvalidDocument` (or a subclass) on any failure, with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidDocument(f"not an http(s) URL: {url!r}", param="url")
    if not private_networks:
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None and not literal.is_global:
            raise InvalidDocument(
                f"fetching {url} refused: {parts.hostname} is not a public address", param="url"
            )
    connector = aiohttp.TCPConnector(resolver=None if private_networks else _PublicOnly())
    limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=limits) as session,
            session.get(
                url,
                max_redirects=MAX_REDIRECTS,
                headers={"User-Agent": "Concierge-knowledge-fetcher/1"},
            ) as response,
        ):
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
    except aiohttp.ClientConnectorError as exc:
        reason = str(exc.os_error if isinstance(exc.os_error, _Refused) else exc.strerror)
        raise InvalidDocument(f"fetching {url} failed: {reason}", param="url") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise InvalidDocument(f"fetching {url} failed: {exc}", param="url") from None
