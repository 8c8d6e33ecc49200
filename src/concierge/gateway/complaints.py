"""Complaints and the review queue over HTTP: end users report an answer, operators resolve.

``POST /v1/conversations/{id}/turns/{id}/report`` (an API caller on behalf of its user; the
widget has its own route), ``GET /v1/reports`` (the queue, oldest first),
``GET /v1/reports/{id}``, ``POST /v1/reports/{id}/resolve``. Every step is audited by
:mod:`concierge.governance.moderation`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import Connection

from concierge.conversations import store
from concierge.conversations.store import Conversation
from concierge.errors import InvalidRequest
from concierge.gateway.auth import InboxKey, inbox_key, inference_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import MAX_ID, ReportIn, ResolveIn, RowId
from concierge.gateway.state import concierge
from concierge.governance import moderation
from concierge.governance.moderation import Report

router = APIRouter(prefix="/v1", tags=["Governance"])
BODY_MODELS: list[type[BaseModel]] = [ReportIn, ResolveIn]
WITHDRAWN = "This answer was removed after review."


def report_turn(
    conn: Connection, conversation: Conversation, turn_id: int, body: ReportIn, *, actor: str
) -> Report:
    """Open a report on an assistant's answer in ``conversation``."""
    turn = store.get_turn(conn, conversation, turn_id)
    if turn.role != "assistant":
        raise InvalidRequest("only an assistant's answers can be reported", param="turn")
    return moderation.open_report(
        conn,
        org_id=conversation.org_id,
        conversation_id=conversation.id,
        turn_id=turn.id,
        source="user",
        category=body.category,
        reason=body.reason,
        actor=actor,
    )


@router.post(
    "/conversations/{conversation}/turns/{turn}/report",
    status_code=201,
    summary="Report an answer for review (on behalf of the end user)",
    openapi_extra=json_body(ReportIn),
)
async def report(conversation: RowId, turn: RowId, request: Request) -> JSON:
    key = await inference_key(request)
    body = await parse(request, ReportIn)

    def write(conn: Connection) -> Report:
        found = store.get(conn, key.org_id, conversation)
        return report_turn(conn, found, turn, body, actor=key.actor)

    return JSON((await concierge(request).db.write(write)).to_dict(), status_code=201)


@router.get("/reports", summary="The review queue: reports and moderation flags, oldest first")
async def list_reports(
    request: Request,
    key: InboxKey,
    status: Literal["open", "resolved", "all"] = "open",
    limit: int = Query(50, ge=1, le=200),
    after: int = Query(0, ge=0, le=MAX_ID),
) -> JSON:
    rows, total = await concierge(request).db.read(
        lambda conn: moderation.queue(
            conn, key.org_id, status=None if status == "all" else status, limit=limit, after=after
        )
    )
    data = [r.to_dict() for r in rows]
    return JSON(
        {
            "object": "list",
            "data": data,
            "total": total,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) == limit,
        }
    )


@router.get("/reports/{report}", summary="One report, with the answer it is about")
async def get_report(report: RowId, request: Request, key: InboxKey) -> JSON:
    def read(conn: Connection) -> dict[str, Any]:
        found = moderation.get(conn, key.org_id, report)
        conversation = store.get(conn, key.org_id, found.conversation_id)
        turn = store.get_turn(conn, conversation, found.turn_id)
        return {**found.to_dict(), "turn": turn.to_dict()}

    return JSON(await concierge(request).db.read(read))


@router.post(
    "/reports/{report}/resolve",
    summary="Resolve a report (content_removed also withdraws the answer)",
    openapi_extra=json_body(ResolveIn, "inbox"),
)
async def resolve(report: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, ResolveIn)

    def write(conn: Connection) -> dict[str, Any]:
        done = moderation.resolve(
            conn, key.org_id, report, body.resolution, body.note, actor=key.actor
        )
        out = done.to_dict()
        if body.resolution == "content_removed":
            conversation = store.get(conn, key.org_id, done.conversation_id)
            turn = store.get_turn(conn, conversation, done.turn_id)
            why = {"report_id": done.id, "by": key.actor}
            out["turn"] = store.withdraw(conn, turn, WITHDRAWN, why).to_dict()
        return out

    return JSON(await concierge(request).db.write(write))
