"""The platform's admin API: organisations, API keys and usage (``admin`` scope)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Query, Request

from concierge import keys, orgs
from concierge.gateway.auth import AdminKey
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import KeyIn, OrganizationIn, RowId
from concierge.gateway.state import concierge
from concierge.metering import ledger
from concierge.orgs import SLUG_PATTERN

router = APIRouter(prefix="/api", tags=["Admin"])


@router.get("/orgs", summary="List organisations")
async def list_orgs(request: Request, _key: AdminKey) -> JSON:
    rows = await concierge(request).db.read(orgs.list_all)
    return JSON({"data": [o.to_dict() for o in rows]})


@router.post("/orgs", status_code=201, summary="Create an organisation")
async def create_org(body: OrganizationIn, request: Request, key: AdminKey) -> JSON:
    org = await concierge(request).db.write(
        lambda conn: orgs.create(conn, body.slug, body.name, actor=key.actor)
    )
    return JSON(org.to_dict(), status_code=201)


@router.get("/keys", summary="List API keys")
async def list_keys(
    request: Request, _key: AdminKey, org: str | None = Query(None, pattern=SLUG_PATTERN.pattern)
) -> JSON:
    rows = await concierge(request).db.read(lambda conn: keys.list_keys(conn, org))
    return JSON({"data": [k.to_dict() for k in rows]})


@router.post("/keys", status_code=201, summary="Create an API key (its secret is shown once)")
async def create_key(body: KeyIn, request: Request, key: AdminKey) -> JSON:
    limits = keys.Limits(
        body.requests_per_minute, body.tokens_per_minute, body.tokens_per_day, body.tokens_per_month
    )
    new = await concierge(request).db.write(
        lambda conn: keys.create(
            conn, body.org, body.name, frozenset(body.scopes), limits, actor=key.actor
        )
    )
    return JSON({**new.key.to_dict(), "key": new.secret}, status_code=201)


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: RowId, request: Request, key: AdminKey) -> JSON:
    c = concierge(request)
    revoked = await c.db.write(lambda conn: keys.revoke(conn, key_id, actor=key.actor))
    c.key_cache.invalidate()
    return JSON(revoked.to_dict())


@router.get("/usage", summary="Usage by day, model and key")
async def usage(
    request: Request,
    _key: AdminKey,
    org: str | None = Query(None, pattern=SLUG_PATTERN.pattern),
    since: date | None = None,
    until: date | None = None,
) -> JSON:
    c = concierge(request)
    await c.ledger.flush()

    def query(conn: Any) -> list[dict[str, Any]]:
        org_id = orgs.get(conn, org).id if org else None
        return ledger.summary(conn, org_id=org_id, since=since, until=until)

    return JSON({"data": await c.db.read(query)})
