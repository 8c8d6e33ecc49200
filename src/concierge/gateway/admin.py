"""The admin API: organisations (``platform``), API keys and usage (``admin``, of the key's own
organisation; ``platform``, of any)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Query, Request

from concierge import keys, orgs
from concierge.errors import NotFound, PermissionDenied
from concierge.gateway.auth import AdminKey, PlatformKey, manages
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import KeyIn, OrganizationIn, RowId
from concierge.gateway.state import concierge
from concierge.metering import ledger
from concierge.orgs import SLUG_PATTERN

router = APIRouter(prefix="/api", tags=["Admin"])


def _own(key: keys.ApiKey, org: str | None) -> str | None:
    """The organisation a listing covers: the one asked for, which the key must administer;
    without one, every organisation for a platform key and its own for any other."""
    manages(key, org)
    return org if org is not None or key.is_platform else key.org_slug


@router.get("/orgs", summary="List organisations")
async def list_orgs(request: Request, _key: PlatformKey) -> JSON:
    rows = await concierge(request).db.read(orgs.list_all)
    return JSON({"data": [o.to_dict() for o in rows]})


@router.post("/orgs", status_code=201, summary="Create an organisation")
async def create_org(body: OrganizationIn, request: Request, key: PlatformKey) -> JSON:
    org = await concierge(request).db.write(
        lambda conn: orgs.create(conn, body.slug, body.name, actor=key.actor)
    )
    return JSON(org.to_dict(), status_code=201)


@router.get("/keys", summary="List API keys")
async def list_keys(
    request: Request, key: AdminKey, org: str | None = Query(None, pattern=SLUG_PATTERN.pattern)
) -> JSON:
    org = _own(key, org)
    rows = await concierge(request).db.read(lambda conn: keys.list_keys(conn, org))
    return JSON({"data": [k.to_dict() for k in rows]})


@router.post("/keys", status_code=201, summary="Create an API key (its secret is shown once)")
async def create_key(body: KeyIn, request: Request, key: AdminKey) -> JSON:
    manages(key, body.org)
    scopes = frozenset(body.scopes)
    if not key.may_grant(scopes):
        raise PermissionDenied("only a platform key can make platform keys", param="scopes")
    limits = keys.Limits(
        body.requests_per_minute, body.tokens_per_minute, body.tokens_per_day, body.tokens_per_month
    )
    new = await concierge(request).db.write(
        lambda conn: keys.create(conn, body.org, body.name, scopes, limits, actor=key.actor)
    )
    return JSON({**new.key.to_dict(), "key": new.secret}, status_code=201)


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: RowId, request: Request, key: AdminKey) -> JSON:
    c = concierge(request)

    def write(conn: Any) -> keys.ApiKey:
        target = keys.get(conn, key_id)
        if target.org_id != key.org_id and not key.is_platform:
            raise NotFound(f"no API key with id {key_id}")  # another organisation's
        return keys.revoke(conn, key_id, actor=key.actor)

    revoked = await c.db.write(write)
    c.key_cache.invalidate()
    c.widget_keys.invalidate()  # a revoked widget key switches the widget off here at once
    return JSON(revoked.to_dict())


@router.get("/usage", summary="Usage by day, model and key")
async def usage(
    request: Request,
    key: AdminKey,
    org: str | None = Query(None, pattern=SLUG_PATTERN.pattern),
    since: date | None = None,
    until: date | None = None,
) -> JSON:
    org = _own(key, org)
    c = concierge(request)
    await c.ledger.flush()

    def query(conn: Any) -> list[dict[str, Any]]:
        org_id = orgs.get(conn, org).id if org else None
        return ledger.summary(conn, org_id=org_id, since=since, until=until)

    return JSON({"data": await c.db.read(query)})
