"""Outbound HTTP to addresses a tenant can choose: one policy, enforced where sockets connect.

Everything that fetches a URL an organisation put in (the knowledge URL fetcher, operators' HTTP
tools, and later channel media and webhooks) takes its client session from :class:`Egress`.
Its connector refuses, at two levels that no code path can step round:

- the **resolver**: a host name's addresses are resolved, and those that are not public are
  dropped; a name with nothing public left is refused with a message that says why;
- the **socket factory**: every socket is checked against the address it is about to connect
  to. IP literals never reach a resolver (``http://[::ffff:127.0.0.1]/``, or full-width digits
  that IDNA normalisation turns into ``127.0.0.1``), so this is the check that always runs, on
  every connection and every redirect hop.

Not public: loopback, private (RFC 1918, unique-local), link-local (cloud metadata at
169.254.169.254), carrier-grade NAT, multicast, unspecified, reserved and documentation
ranges, and IPv6 forms that carry one of these inside: IPv4-mapped (``::ffff:a.b.c.d``),
IPv4-compatible, 6to4 (``2002::/16``), NAT64 (``64:ff9b::/96``, ``64:ff9b:1::/48``) and Teredo.

The only exceptions are networks in the server-level setting ``egress_allowed_networks``, set
by whoever runs the machine (an intranet wiki, a model server on the LAN); nothing in a
tenant's payload can widen the policy. Model upstreams the operator configures are
server-level too and do not go through this module.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


class EgressRefused(OSError):
    """A connection the egress policy does not allow (an ``OSError``, so that aiohttp treats
    it as a failed connection attempt and never sends a byte)."""

    def __init__(self, reason: str) -> None:
        self.message = f"refused by the egress policy: {reason}"
        super().__init__(errno.EACCES, self.message)

    def __str__(self) -> str:
        return self.message


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to, if it is one of the forms that
    reach an IPv4 host (mapped, compatible, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def why_not_public(address: Address) -> str | None:
    """Why ``address`` is not a public internet address, or None when it is one."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = why_not_public(inner)
        return f"an IPv6 form of {inner}, {reason}" if reason else None
    if isinstance(address, ipaddress.IPv6Address) and address.teredo is not None:
        return "a Teredo tunnel address"
    if address in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    checks = (
        ("is_site_local", "site-local"),
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata lives here)"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute, False):
            return reason
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "carrier-grade NAT (shared) space"
    if not address.is_global:
        return "not globally routable"
    return None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (``10.0.0.0/8``, ``fd00::/8``; a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses outbound requests may connect to: public ones, and the operator's
    ``allowed`` networks."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, networks: Sequence[str]) -> EgressPolicy:
        return cls(parse_networks(networks))

    def _allowed(self, address: Address) -> bool:
        forms: list[Address] = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            forms.append(inner)
        return any(form in network for form in forms for network in self.allowed)

    def refusal(self, host: str) -> str | None:
        """Why connecting to the address ``host`` is refused, or None where it is allowed."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return f"{host!r} is not an IP address"
        if self._allowed(address):
            return None
        reason = why_not_public(address)
        return f"{address} is {reason}" if reason else None

    def check(self, host: str) -> None:
        reason = self.refusal(host)
        if reason is not None:
            raise EgressRefused(reason)


class _PolicyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then keeps only the allowed addresses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        allowed = [r for r in results if self.policy.refusal(r["host"]) is None]
        if not allowed:
            reasons = sorted({str(self.policy.refusal(r["host"])) for r in results})
            raise EgressRefused(f"{host} resolves only to refused addresses ({'; '.join(reasons)})")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def _socket_factory(policy: EgressPolicy) -> Any:
    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        policy.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def connector(policy: EgressPolicy, **options: Any) -> aiohttp.TCPConnector:
    """A connector that enforces ``policy`` on every connection it makes."""
    return aiohttp.TCPConnector(
        resolver=_PolicyResolver(policy), socket_factory=_socket_factory(policy), **options
    )


def refused(exc: BaseException) -> EgressRefused | None:
    """The policy refusal behind an aiohttp error, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EgressRefused):
            return current
        inner = getattr(current, "os_error", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    return None


def normalise_host(url: str) -> str | None:
    """The host ``url`` connects to, as the HTTP client sees it: lower case, IDNA (UTS 46)
    applied, so full-width letters and digits become ASCII (full-width ``127.0.0.1`` is the
    loopback address);
    None when there is none or it cannot be normalised."""
    try:
        host = URL(url).raw_host
    except (ValueError, UnicodeError):
        return None
    return host.lower().rstrip(".") if host else None


def origin(url: str) -> str | None:
    """``scheme://host:port`` of ``url`` after normalisation (default ports made explicit)."""
    try:
        parsed = URL(url)
        host, port = parsed.raw_host, parsed.port
    except (ValueError, UnicodeError):
        return None
    if not host or parsed.scheme not in ("http", "https") or port is None:
        return None
    host = host.lower().rstrip(".")
    return f"{parsed.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class Transport(Protocol):
    """Makes the connectors of outbound sessions. The network is the default; a test (or an
    embedding application) passes its own to answer requests in-process, as httpx's
    ``MockTransport`` allows."""

    def connector(self, policy: EgressPolicy | None, **options: Any) -> aiohttp.BaseConnector:
        """A connector enforcing ``policy`` (None: an operator-configured destination)."""


class NetworkTransport:
    """Connections over the network; tenant destinations under the egress policy."""

    def connector(self, policy: EgressPolicy | None, **options: Any) -> aiohttp.BaseConnector:
        if policy is None:
            return aiohttp.TCPConnector(**options)
        return connector(policy, **options)


class Egress:
    """Every outbound HTTP session of one server comes from here.

    Tenant-chosen destinations (the URL fetcher, HTTP tools, later webhooks and channel media)
    share one session under the egress policy, opened on first use; destinations the machine's
    operator configured (model upstreams) get sessions of their own outside it
    (:meth:`server_session`). All are made through one :class:`Transport`, so no caller builds
    an unguarded session and a test can swap the transport for all of them at once.
    """

    def __init__(self, policy: EgressPolicy, transport: Transport | None = None) -> None:
        self.policy = policy
        self.transport: Transport = transport or NetworkTransport()
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session (no default timeout: callers set theirs per request)."""
        if self._session is None or self._session.closed:
            self._session = self.new_session(limit=256, ttl_dns_cache=60)
        return self._session

    def new_session(self, **connector_options: Any) -> aiohttp.ClientSession:
        """A session of the caller's own (the caller closes it)."""
        # No cookie jar: a cookie one organisation's tool was given must never go out with
        # another organisation's request to the same host (the session is shared).
        return aiohttp.ClientSession(
            connector=self.transport.connector(self.policy, **connector_options),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    def server_session(self, **session_options: Any) -> aiohttp.ClientSession:
        """A session to a destination the machine's operator configured (a model upstream on
        the LAN or localhost): not under the egress policy. The caller closes it."""
        return aiohttp.ClientSession(
            connector=self.transport.connector(None, limit=1024, ttl_dns_cache=300),
            **session_options,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
