"""API key authentication: ``Authorization: Bearer <key>``, cached briefly per replica."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from concierge import keys
from concierge.errors import AuthenticationFailed, PermissionDenied
from concierge.keys import ApiKey
from concierge.store import Database

bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer sk-cc-…")


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


async def _authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        )
    secret = credentials.credentials
    cache: KeyCache = request.app.state.concierge.key_cache
    key = await cache.lookup(secret)
    if key is None:
        shown = secret[:8] + "…" if len(secret) > 12 else "***"
        raise AuthenticationFailed(f"Incorrect or revoked API key provided: {shown}")
    return key


def require(scope: str):  # type: ignore[no-untyped-def]
    """A dependency that yields the caller's key if it has ``scope`` (admin has all)."""

    async def dependency(key: Annotated[ApiKey, Depends(_authenticate)]) -> ApiKey:
        if not key.has_scope(scope):
            raise PermissionDenied(f"this API key lacks the '{scope}' scope")
        return key

    return dependency


InferenceKey = Annotated[ApiKey, Depends(require("inference"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
