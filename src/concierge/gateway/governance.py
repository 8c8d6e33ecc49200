"""Governance over HTTP.

Administration, under ``/api``: an organisation's policy, its audit entries, its data
subjects' export and erasure and its legal holds (``admin``, of that organisation); the audit
chain's head and verification and the retention purge (``platform``: they span every
organisation). An organisation's own keys (``/v1``, ``inference``): end users' consent.
Public: the label keys (``/.well-known/aigc-keys``) and label verification
(``POST /v1/labels/verify``), so anyone holding generated content can check where it came from.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, RootModel
from sqlalchemy import Connection
from starlette.responses import Response

from concierge import orgs
from concierge.compliance import retention, subjects
from concierge.conversations import erasure, store
from concierge.conversations.records import Turn
from concierge.errors import InvalidRequest, NotFound
from concierge.gateway.auth import (
    AdminKey,
    PlatformKey,
    ReaderKey,
    admin_key,
    also,
    inference_key,
    manages,
)
from concierge.gateway.body import json_body, parse
from concierge.gateway.limits import client_address
from concierge.gateway.preconditions import etag, if_match
from concierge.gateway.responses import AI_HEADERS, JSON
from concierge.gateway.schemas import (
    MAX_ID,
    ApiConsentIn,
    ExternalId,
    HoldIn,
    LabelCheckIn,
    RowId,
)
from concierge.gateway.state import concierge
from concierge.governance import audit, consent, labels, media, provenance
from concierge.governance import policy as policies
from concierge.governance.policy import OrgPolicy
from concierge.keys import ApiKey
from concierge.orgs import SLUG_PATTERN

admin = APIRouter(prefix="/api", tags=["Governance (admin)"])
router = APIRouter(tags=["Governance"])
Channel = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")]


class PolicyPatch(RootModel[dict[str, Any]]):
    """Part of a policy: the sections and settings to change; the rest stays."""


class SubjectIn(BaseModel):
    """A data subject: their id as the organisation knows them, on one channel or all."""

    model_config = {"extra": "forbid"}
    subject: ExternalId
    channel: Channel | None = None


BODY_MODELS: list[type[BaseModel]] = [
    OrgPolicy,
    PolicyPatch,
    SubjectIn,
    HoldIn,
    ApiConsentIn,
    LabelCheckIn,
]


def _org(conn: Connection, slug: str, key: ApiKey) -> int:
    """The organisation ``slug``, which ``key`` must administer."""
    manages(key, slug)
    return orgs.get(conn, slug).id


# -- policy ----------------------------------------------------------------------------------


@admin.get("/orgs/{org}/policy", summary="An organisation's governance policy")
async def get_policy(org: str, request: Request, key: AdminKey) -> JSON:
    found = await concierge(request).db.read(
        lambda conn: policies.describe(conn, _org(conn, org, key))
    )
    return JSON(found, headers=etag(found["version"]))


@admin.put(
    "/orgs/{org}/policy",
    summary="Replace an organisation's governance policy (audited)",
    openapi_extra=json_body(OrgPolicy, "admin"),
)
async def put_policy(org: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, OrgPolicy)
    expected = if_match(request)

    def write(conn: Connection) -> dict[str, Any]:
        org_id = _org(conn, org, key)
        policies.put(conn, org_id, body, actor=key.actor, expected_version=expected)
        return policies.describe(conn, org_id)

    done = await concierge(request).db.write(write)
    return JSON(done, headers=etag(done["version"]))


@admin.patch(
    "/orgs/{org}/policy",
    summary="Change part of an organisation's governance policy (audited)",
    openapi_extra=json_body(PolicyPatch, "admin"),
)
async def patch_policy(org: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, PolicyPatch)
    expected = if_match(request)

    def write(conn: Connection) -> dict[str, Any]:
        org_id = _org(conn, org, key)
        policies.patch(conn, org_id, body.root, actor=key.actor, expected_version=expected)
        return policies.describe(conn, org_id)

    done = await concierge(request).db.write(write)
    return JSON(done, headers=etag(done["version"]))


# -- the audit log ---------------------------------------------------------------------------


@admin.get("/audit", summary="Audit log entries, oldest first")
async def list_audit(
    request: Request,
    key: AdminKey,
    org: str | None = Query(None, pattern=SLUG_PATTERN.pattern),
    action: str | None = Query(None, max_length=64),
    after: int = Query(0, ge=0, le=MAX_ID, description="Entries after this sequence number."),
    limit: int = Query(100, ge=1, le=1000),
) -> JSON:
    def read(conn: Connection) -> list[audit.Entry]:
        # An organisation's admin reads its own entries; the platform's, anyone's or all.
        slug = org if org is not None or key.is_platform else key.org_slug
        org_id = _org(conn, slug, key) if slug is not None else None
        return audit.entries(conn, org_id=org_id, action=action, after=after, limit=limit)

    rows = await concierge(request).db.read(read)
    return JSON(
        {
            "object": "list",
            "data": [e.to_dict() for e in rows],
            "last_seq": rows[-1].seq if rows else None,
            "has_more": len(rows) == limit,
        }
    )


@admin.get("/audit/head", summary="The newest entry's number and hash, to keep elsewhere")
async def audit_head(request: Request, _key: PlatformKey) -> JSON:
    now = await concierge(request).db.read(audit.head)
    return JSON(
        {
            "object": "audit.head",
            "seq": now.seq if now else 0,
            "hash": now.hash if now else None,
            "anchor": str(now) if now else None,
        }
    )


@admin.get("/audit/verify", summary="Check the audit log's hash chain")
async def verify_audit(
    request: Request,
    _key: PlatformKey,
    anchor: Annotated[
        list[str] | None,
        Query(max_length=1000, description="SEQ:HASH copies of the head kept elsewhere."),
    ] = None,
) -> JSON:
    anchors = [audit.Anchor.parse(a) for a in anchor or ()]
    result = await concierge(request).db.read(lambda conn: audit.verify(conn, anchors))
    return JSON(
        {
            "object": "audit.verification",
            "ok": result.ok,
            "checked": result.checked,
            "anchors_checked": result.anchors_checked,
            "problem": result.problem,
            "bad_seq": result.bad_seq,
            "bad_id": result.bad_id,
        }
    )


# -- data subjects ---------------------------------------------------------------------------


def _label(request: Request) -> subjects.Labeller:
    governance = concierge(request).governance

    def label(turn: Turn) -> dict[str, str] | None:
        return governance.label(turn.content, turn.label_id, turn.producer)

    return label


@admin.post(
    "/orgs/{org}/subjects/export",
    summary="Everything stored about a data subject, as JSON (GDPR Art. 15, 20; audited)",
    openapi_extra=json_body(SubjectIn, "admin"),
)
async def export_subject(org: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, SubjectIn)
    label = _label(request)

    def write(conn: Connection) -> dict[str, Any]:
        return subjects.export(
            conn,
            _org(conn, org, key),
            body.subject,
            channel=body.channel,
            actor=key.actor,
            label=label,
        )

    return JSON(await concierge(request).db.write(write))


@admin.post(
    "/orgs/{org}/subjects/erase",
    summary="Erase a data subject and return the receipt (GDPR Art. 17; audited)",
    openapi_extra=json_body(SubjectIn, "admin"),
)
async def erase_subject(org: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, SubjectIn)

    def write(conn: Connection) -> dict[str, Any]:
        return subjects.erase(
            conn, _org(conn, org, key), body.subject, channel=body.channel, actor=key.actor
        )

    return JSON(await concierge(request).db.write(write))


# -- legal holds and retention ---------------------------------------------------------------


@admin.get("/orgs/{org}/holds", summary="An organisation's legal holds")
async def list_holds(
    org: str, request: Request, key: AdminKey, include_released: bool = False
) -> JSON:
    rows = await concierge(request).db.read(
        lambda conn: retention.holds(conn, _org(conn, org, key), active_only=not include_released)
    )
    return JSON({"object": "list", "data": [h.to_dict() for h in rows]})


@admin.post(
    "/orgs/{org}/holds",
    status_code=201,
    summary="Place a legal hold on a subject or a conversation (audited)",
    openapi_extra=json_body(HoldIn, "admin"),
)
async def place_hold(org: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, HoldIn)

    def write(conn: Connection) -> list[retention.Hold]:
        org_id = _org(conn, org, key)
        users = None
        if body.subject is not None:
            users = [u.id for u in erasure.end_users_named(conn, org_id, body.subject)]
            if not users:
                raise NotFound(f"no data about subject '{body.subject}' in this organisation")
        return retention.place_hold(
            conn,
            org_id,
            end_user_ids=users,
            conversation_id=body.conversation_id,
            reason=body.reason,
            actor=key.actor,
        )

    made = await concierge(request).db.write(write)
    return JSON({"object": "list", "data": [h.to_dict() for h in made]}, status_code=201)


@admin.post("/orgs/{org}/holds/{hold}/release", summary="Release a legal hold (audited)")
async def release_hold(org: str, hold: RowId, request: Request, key: AdminKey) -> JSON:
    released = await concierge(request).db.write(
        lambda conn: retention.release_hold(conn, _org(conn, org, key), hold, actor=key.actor)
    )
    return JSON(released.to_dict())


@admin.get("/retention", summary="The retention job: when it last ran and runs next")
async def retention_state(request: Request, _key: PlatformKey) -> JSON:
    state = await concierge(request).db.read(lambda conn: retention.job_state(conn))
    return JSON({"object": "retention.job", **(state or {"job": retention.JOB})})


@admin.post("/retention/run", summary="Run the retention purge now")
async def run_retention(request: Request, key: PlatformKey) -> JSON:
    db = concierge(request).db
    report = await asyncio.to_thread(retention.purge, db, actor=key.actor)
    return JSON({"object": "retention.run", "removed": report})


# -- consent ---------------------------------------------------------------------------------


@router.get(
    "/v1/consents",
    summary="An end user's consent: current answers and history",
    openapi_extra=also("inbox"),
)
async def get_consents(
    request: Request,
    key: ReaderKey,
    user: str = Query(..., min_length=1, max_length=256, description="The end user's id."),
    channel: str = Query("api", max_length=32),
) -> JSON:
    def read(conn: Connection) -> dict[str, Any]:
        who = store.peek_end_user(conn, key.org_id, channel, user)
        if who is None:
            raise NotFound(f"end user '{user}' not found on channel '{channel}'", param="user")
        policy, _ = policies.get(conn, key.org_id)
        return consent.summary(conn, who.id, policy.consent)

    return JSON(await concierge(request).db.read(read))


@router.post(
    "/v1/consents",
    status_code=201,
    summary="Record an end user's consent decision (audited)",
    openapi_extra=json_body(ApiConsentIn),
    tags=["Governance"],
)
async def post_consent(request: Request) -> JSON:
    key = await inference_key(request)
    body = await parse(request, ApiConsentIn)

    def write(conn: Connection) -> dict[str, Any]:
        policy, _ = policies.get(conn, key.org_id)
        who = store.end_user(conn, key.org_id, body.channel, body.user)
        current = policy.consent.text_versions[body.purpose]
        decision = consent.record(
            conn,
            org_id=key.org_id,
            end_user_id=who.id,
            purpose=body.purpose,
            granted=body.granted,
            channel=body.channel,
            text_version=body.text_version or current,
            actor=key.actor,
        )
        return decision.to_dict(current)

    return JSON(await concierge(request).db.write(write), status_code=201)


# -- provenance labels -----------------------------------------------------------------------


async def _public(request: Request) -> None:
    """Routes anyone may call (no key) have a budget of calls a minute per client address."""
    c = concierge(request)
    address = client_address(request)
    await c.limiter.hit(
        f"public-ip:{address}",
        c.settings.widget_ip_requests_per_minute,
        "requests from your address",
    )


@router.get("/.well-known/aigc-keys", summary="The public keys that sign provenance labels")
async def label_keys(request: Request) -> JSON:
    labeller = concierge(request).governance.labeller
    return JSON({"keys": [labeller.public_jwk()]})


@router.post(
    "/v1/labels/verify",
    summary="Check a provenance label against the content it came with (no key needed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/LabelCheckIn"}}
            },
        }
    },
)
async def verify_label(request: Request) -> JSON:
    await _public(request)
    body = await parse(request, LabelCheckIn)
    labeller = concierge(request).governance.labeller
    check = labels.verify(body.aigc, body.content, {labeller.kid: labeller.public})
    return JSON({"object": "label.verification", **check.to_dict()})


@router.post(
    "/v1/labels/verify-file",
    summary="Check every label in a file: an image, a completion, a stream or an export",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def verify_file(request: Request) -> JSON:
    await _public(request)
    governance = concierge(request).governance
    data = await request.body()
    if not data:
        raise InvalidRequest("send the file as the request body")
    anchor = governance.c2pa.ca_pem if governance.c2pa else None
    found = await asyncio.to_thread(provenance.inspect, data, governance.keys(), anchor)
    return JSON({"object": "label.verification", **found.to_dict()})


@router.post(
    "/v1/labels/images",
    summary="Label an AI-generated image (PNG or JPEG): AIGC metadata and a C2PA manifest",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "security": [{"APIKey": ["inference"]}],
    },
    response_model=None,
)
async def label_image(request: Request, title: str = Query("image", max_length=200)) -> Response:
    key = await inference_key(request)
    governance = concierge(request).governance
    data = await request.body()
    if not data:
        raise InvalidRequest("send the image as the request body")
    media.image_format(data)
    producer = await governance.producer_for(key.org_id)
    out, made = await asyncio.to_thread(governance.label_image, data, producer, title)
    kind = "image/png" if media.image_format(out) == "png" else "image/jpeg"
    return Response(
        out,
        media_type=kind,
        headers={**AI_HEADERS, "X-AIGC-Produce-Id": made["ProduceID"]},
    )
