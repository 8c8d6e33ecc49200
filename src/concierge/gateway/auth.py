"""API key authentication: ``Authorization: Bearer <key>``, cached briefly per replica; the
scope each route needs, and the organisation the key acts in (``keys`` documents the scopes)."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from concierge import keys, orgs
from concierge.errors import AuthenticationFailed, PermissionDenied
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.store import Database


class KeyCache:
    """Secret-hash -> key (or None for an unknown secret), for ``ttl`` seconds.

    A key revoked on this replica is dropped at once; other replicas notice within ``ttl``.
    """

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._entries: dict[str, tuple[ApiKey | None, float]] = {}

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = keys.hash_secret(secret)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        key = await self.db.read(lambda conn: keys.find_active(conn, secret))
        if self.ttl > 0:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[digest] = (key, now + self.ttl)
        return key

    def invalidate(self) -> None:
        self._entries.clear()


ORG_HEADER = "OpenAI-Organization"


class ApiKeyAuth(HTTPBearer):
    """The caller's key, if it is valid, active and has ``scope`` (scopes include those below
    them, ``keys.IMPLIES``), as it acts in the organisation the request names.

    A key acts in its own organisation. ``OpenAI-Organization: <slug>`` (which the official
    clients send when given ``organization=``) names another one for a ``platform`` key; any
    other key naming an organisation not its own is refused. One dependency for the whole check
    (it runs on every request, so it is kept flat); as an ``HTTPBearer`` it still puts the
    bearer scheme, with the scope, in the OpenAPI document.
    """

    def __init__(self, scope: str, *alternatives: str) -> None:
        """``scope``, or any of ``alternatives`` (a conversation is read by the application
        and by the organisation's people alike)."""
        super().__init__(
            auto_error=False,
            scheme_name="APIKey",
            description="An API key: Authorization: Bearer sk-cc-…",
        )
        self.scope = scope
        self.scopes = (scope, *alternatives)

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None or not credentials.credentials:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        secret = credentials.credentials
        key = await concierge(request).key_cache.lookup(secret)
        if key is None:
            shown = secret[:8] + "…" if len(secret) > 12 else "***"
            raise AuthenticationFailed(f"Incorrect or revoked API key provided: {shown}")
        if not any(key.has_scope(scope) for scope in self.scopes):
            wanted = "' or '".join(self.scopes)
            raise PermissionDenied(f"this API key lacks the '{wanted}' scope")
        named = request.headers.get(ORG_HEADER)
        if named and named.strip() != key.org_slug:
            return await _acting_in(request, key, named.strip())
        return key


async def _acting_in(request: Request, key: ApiKey, slug: str) -> ApiKey:
    if not key.is_platform:
        raise PermissionDenied(
            f"this API key belongs to organisation '{key.org_slug}' and acts only there "
            f"({ORG_HEADER} names '{slug[:64]}')"
        )
    org = await concierge(request).db.read(lambda conn: orgs.get(conn, slug))
    return dataclasses.replace(key, org_id=org.id, org_slug=org.slug)


def manages(key: ApiKey, org_slug: str | None) -> None:
    """Refuse an organisation's admin key reaching into another organisation (a platform key
    manages them all)."""
    if org_slug is not None and org_slug != key.org_slug and not key.is_platform:
        raise PermissionDenied(
            f"this API key administers organisation '{key.org_slug}' only, not '{org_slug[:64]}'"
        )


def _requires(auth: ApiKeyAuth) -> Any:
    return Security(auth, scopes=[auth.scope])


def also(*scopes: str) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that other scopes open as well (OpenAPI: one security
    requirement per alternative)."""
    return {"security": [{"APIKey": [scope]} for scope in scopes]}


# Called directly by the routes that skip dependency injection (see gateway/body.py).
inference_key = ApiKeyAuth("inference")
knowledge_key = ApiKeyAuth("knowledge")
inbox_key = ApiKeyAuth("inbox")
admin_key = ApiKeyAuth("admin")
platform_key = ApiKeyAuth("platform")
reader_key = ApiKeyAuth("inference", "inbox")

InferenceKey = Annotated[ApiKey, _requires(inference_key)]
KnowledgeKey = Annotated[ApiKey, _requires(knowledge_key)]
InboxKey = Annotated[ApiKey, _requires(inbox_key)]
AdminKey = Annotated[ApiKey, _requires(admin_key)]
PlatformKey = Annotated[ApiKey, _requires(platform_key)]
ReaderKey = Annotated[ApiKey, _requires(reader_key)]
"""Reading end users' conversations and consent: the application (``inference``) and the
organisation's people (``inbox``); routes using it declare ``openapi_extra=also("inbox")``."""
