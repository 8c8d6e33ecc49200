"""API key authentication: ``Authorization: Bearer <key>``, cached briefly per replica."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from concierge import keys
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


class ApiKeyAuth(HTTPBearer):
    """The caller's key, if it is valid, active and has ``scope`` (admin has all).

    One dependency for the whole check (it runs on every request, so it is kept flat); as an
    ``HTTPBearer`` it still puts the bearer scheme in the OpenAPI document.
    """

    def __init__(self, scope: str) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="APIKey",
            description="An API key: Authorization: Bearer sk-cc-…",
        )
        self.scope = scope

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
        if not key.has_scope(self.scope):
            raise PermissionDenied(f"this API key lacks the '{self.scope}' scope")
        return key


inference_key = ApiKeyAuth("inference")
"""Called directly by the routes that skip dependency injection (see gateway/body.py)."""
InferenceKey = Annotated[ApiKey, Depends(inference_key)]
AdminKey = Annotated[ApiKey, Depends(ApiKeyAuth("admin"))]
