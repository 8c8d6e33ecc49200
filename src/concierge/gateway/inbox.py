"""The inbox over the API: the queue of conversations people have (filters by status,
assignee, team, label, channel, SLA), what people do with them (assign, snooze, resolve, label,
note), canned responses, agents and teams, the organisation's inbox settings, and reports.
People act with ``inbox`` keys and are named by ``author``/``actor`` accounts until they sign
in to the console; settings, agents and teams need ``admin``. Every change is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from concierge.conversations import store as conversation_store
from concierge.errors import InvalidRequest
from concierge.gateway.auth import AdminKey, InboxKey, admin_key, inbox_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import MAX_ID, RowId, Strict
from concierge.gateway.state import concierge
from concierge.inbox import automation, items, notes, people, reports
from concierge.inbox import settings as inbox_settings
from concierge.inbox.items import Item, ItemStatus

router = APIRouter(prefix="/v1/inbox", tags=["Inbox"])
Account = Annotated[str, Field(min_length=1, max_length=200)]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w .:-]+$")]


class AssignIn(Strict):
    agent: Account | None = None
    team: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class SnoozeIn(Strict):
    until: datetime | None = None
    minutes: Annotated[int, Field(ge=1, le=60 * 24 * 90)] | None = None


class StatusIn(Strict):
    status: Literal["open", "pending"]


class ResolveIn(Strict):
    ask_rating: bool = True


class LabelsIn(Strict):
    add: Annotated[list[Label], Field(max_length=20)] = []
    remove: Annotated[list[Label], Field(max_length=20)] = []


class NoteIn(Strict):
    text: Annotated[str, Field(min_length=1, max_length=10_000)]
    author: Account | None = None


class RatingIn(Strict):
    score: Annotated[int, Field(ge=1, le=5)]


class AgentIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    capacity: Annotated[int, Field(ge=1, le=1000)] | None = None
    available: bool | None = None


class TeamIn(Strict):
    assignment: Literal["manual", "round_robin", "capacity"] = "round_robin"
    members: Annotated[list[Account], Field(max_length=500)] = []


class CannedIn(Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000)]


class RenderIn(Strict):
    conversation: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    variables: dict[
        Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=1000)]
    ] = {}
    agent: Account | None = None


BODY_MODELS: list[type[BaseModel]] = [
    AssignIn,
    SnoozeIn,
    StatusIn,
    ResolveIn,
    LabelsIn,
    NoteIn,
    RatingIn,
    AgentIn,
    TeamIn,
    CannedIn,
    RenderIn,
]


def _name_in_path(value: str, param: str) -> None:
    if not 1 <= len(value) <= 200:
        raise InvalidRequest(f"{param} is 1-200 characters", param=param)


def _page(found: list[Any], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": [f.to_dict() for f in found], "has_more": more}


# -- settings, agents, teams, canned responses, reports ----------------------------------------


@router.get("/settings", summary="The organisation's inbox settings")
async def get_settings(request: Request, key: InboxKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: inbox_settings.get(conn, key.org_id))
    return JSON({"object": "inbox.settings", **found.model_dump(mode="json")})


@router.put(
    "/settings",
    summary="Replace the inbox settings (business hours, SLA, CSAT, assignment)",
    openapi_extra={"security": [{"APIKey": ["admin"]}]},
)
async def put_settings(request: Request) -> JSON:
    key = await admin_key(request)
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the settings are a JSON object")
    new = inbox_settings.parse(body)

    def write(conn: Connection) -> inbox_settings.InboxSettings:
        if new.team is not None:
            people.team(conn, key.org_id, new.team)  # 404 for a team that does not exist
        return inbox_settings.put(conn, key.org_id, new, actor=key.actor)

    done = await concierge(request).db.write(write)
    return JSON({"object": "inbox.settings", **done.model_dump(mode="json")})


@router.get("/agents", summary="The people who answer customers")
async def list_agents(request: Request, key: InboxKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: people.agents(conn, key.org_id))
    return JSON(_page(found, False))


@router.put(
    "/agents/{account}",
    summary="Add or change an agent (capacity, availability)",
    openapi_extra=json_body(AgentIn, "admin"),
)
async def put_agent(account: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, AgentIn)
    _name_in_path(account, "account")
    done = await concierge(request).db.write(
        lambda conn: people.save_agent(
            conn,
            key.org_id,
            account=account,
            name=body.name,
            capacity=body.capacity,
            available=body.available,
            actor=key.actor,
        )
    )
    return JSON(done.to_dict())


@router.delete("/agents/{account}", summary="Remove an agent (their conversations unassigned)")
async def delete_agent(account: str, request: Request, key: AdminKey) -> JSON:
    await concierge(request).db.write(
        lambda conn: people.remove_agent(conn, key.org_id, account, actor=key.actor)
    )
    return JSON({"object": "inbox.agent.deleted", "account": account, "deleted": True})


@router.get("/teams", summary="Teams and how they assign")
async def list_teams(request: Request, key: InboxKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: people.teams(conn, key.org_id))
    return JSON(_page(found, False))


@router.put(
    "/teams/{name}",
    summary="Make or replace a team: its members and assignment rule",
    openapi_extra=json_body(TeamIn, "admin"),
)
async def put_team(name: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, TeamIn)
    _name_in_path(name, "name")
    done = await concierge(request).db.write(
        lambda conn: people.save_team(
            conn,
            key.org_id,
            name=name,
            assignment=body.assignment,
            members=body.members,
            actor=key.actor,
        )
    )
    return JSON(done.to_dict())


@router.get("/canned", summary="Canned responses")
async def list_canned(request: Request, key: InboxKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: notes.canned(conn, key.org_id))
    return JSON(_page(found, False))


@router.put(
    "/canned/{shortcut}",
    summary="Make or change a canned response ({{customer.name}}, {{agent.name}}, ...)",
    openapi_extra=json_body(CannedIn, "inbox"),
)
async def put_canned(shortcut: str, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, CannedIn)
    done = await concierge(request).db.write(
        lambda conn: notes.save_canned(conn, key.org_id, shortcut, body.text, actor=key.actor)
    )
    return JSON(done.to_dict())


@router.delete("/canned/{shortcut}", summary="Delete a canned response")
async def delete_canned(shortcut: str, request: Request, key: InboxKey) -> JSON:
    await concierge(request).db.write(
        lambda conn: notes.remove_canned(conn, key.org_id, shortcut, actor=key.actor)
    )
    return JSON({"object": "inbox.canned_response.deleted", "shortcut": shortcut, "deleted": True})


@router.post(
    "/canned/{shortcut}/render",
    summary="A canned response with its variables filled for a conversation",
    openapi_extra=json_body(RenderIn, "inbox"),
)
async def render_canned(shortcut: str, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, RenderIn)

    def read(conn: Connection) -> str:
        found = notes.get_canned(conn, key.org_id, shortcut)
        values = dict(body.variables)
        if body.conversation is not None:
            conversation, user = conversation_store.get_with_user(
                conn, key.org_id, body.conversation
            )
            values.setdefault("conversation.id", str(conversation.id))
            values.setdefault("customer.id", user.external_id)
            values.setdefault("customer.name", user.external_id)
        if body.agent is not None:
            values.setdefault("agent.name", people.agent(conn, key.org_id, body.agent).name)
        return found.fill(values)

    text = await concierge(request).db.read(read)
    return JSON({"object": "inbox.canned_response.rendered", "shortcut": shortcut, "text": text})


@router.get(
    "/reports", summary="First response, resolution, handoff and bot resolution rates, CSAT"
)
async def get_report(
    request: Request,
    key: InboxKey,
    by: Literal["day", "channel", "assistant", "agent"] = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> JSON:
    end = until or datetime.now(UTC)
    try:
        start = since or end - timedelta(days=30)
    except OverflowError:
        raise InvalidRequest("until is too early", param="until") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("give since and until with a time zone (…Z)", param="since")
    if start >= end:
        raise InvalidRequest("since must be before until", param="since")
    found = await concierge(request).db.read(
        lambda conn: reports.report(conn, key.org_id, start, end, by)
    )
    return JSON(found)


# -- the queue -------------------------------------------------------------------------------


@router.get("", summary="Conversations people have; filters combine")
async def list_inbox(
    request: Request,
    key: InboxKey,
    status: ItemStatus | None = None,
    assignee: str | None = Query(None, max_length=200, description="An agent's account"),
    unassigned: bool = False,
    team: str | None = Query(None, max_length=200),
    label: str | None = Query(None, max_length=64),
    channel: str | None = Query(None, max_length=32),
    breached: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    def read(conn: Connection) -> tuple[list[Item], bool]:
        agent_id = people.agent(conn, key.org_id, assignee).id if assignee else None
        team_id = people.team(conn, key.org_id, team).id if team else None
        return automation.list_items(
            conn,
            key.org_id,
            status=status,
            assignee_id=agent_id,
            unassigned_only=unassigned,
            team_id=team_id,
            label_name=label,
            channel=channel,
            breached=breached,
            limit=limit,
            before=before,
        )

    found, more = await concierge(request).db.read(read)
    return JSON(_page(found, more))


@router.get("/{conversation}", summary="A conversation's place in the inbox, with its notes")
async def get_item(conversation: RowId, request: Request, key: InboxKey) -> JSON:
    def read(conn: Connection) -> dict[str, Any]:
        found = items.get(conn, key.org_id, conversation)
        return {
            **found.to_dict(),
            "notes": [n.to_dict() for n in notes.notes(conn, key.org_id, conversation)],
        }

    return JSON(await concierge(request).db.read(read))


async def _act(request: Request, work: Any) -> JSON:
    done = await concierge(request).db.write(work)
    concierge(request).channels.dispatcher.wake()  # a CSAT question may be on its way out
    return JSON(done.to_dict())


@router.post(
    "/{conversation}/assign",
    summary="Assign to an agent and/or a team (neither: unassign)",
    openapi_extra=json_body(AssignIn, "inbox"),
)
async def assign(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, AssignIn)
    return await _act(
        request,
        lambda conn: items.assign(
            conn, key.org_id, conversation, agent=body.agent, team=body.team, actor=key.actor
        ),
    )


@router.post(
    "/{conversation}/snooze",
    summary="Snooze until a time (or for some minutes); the customer's next message wakes it",
    openapi_extra=json_body(SnoozeIn, "inbox"),
)
async def snooze(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, SnoozeIn)
    if (body.until is None) == (body.minutes is None):
        raise InvalidRequest("give either 'until' or 'minutes'", param="until")
    until = body.until or datetime.now(UTC) + timedelta(minutes=body.minutes or 0)
    if until.tzinfo is None:
        raise InvalidRequest("give 'until' with a time zone (…Z)", param="until")
    return await _act(
        request, lambda conn: items.snooze(conn, key.org_id, conversation, until, actor=key.actor)
    )


@router.post(
    "/{conversation}/status",
    summary="Mark open or pending by hand",
    openapi_extra=json_body(StatusIn, "inbox"),
)
async def set_status(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, StatusIn)
    return await _act(
        request,
        lambda conn: items.set_status(
            conn, key.org_id, conversation, ItemStatus(body.status), actor=key.actor
        ),
    )


@router.post(
    "/{conversation}/resolve",
    summary="Resolve: back to the assistant, and the customer asked for a rating",
    openapi_extra=json_body(ResolveIn, "inbox"),
)
async def resolve(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, ResolveIn)
    notify = concierge(request).inbox.notify

    def write(conn: Connection) -> Item:
        return items.resolve(
            conn,
            key.org_id,
            conversation,
            actor=key.actor,
            settings=inbox_settings.get(conn, key.org_id),
            notify=notify,
            ask_rating=body.ask_rating,
        )

    return await _act(request, write)


@router.post(
    "/{conversation}/labels",
    summary="Add and remove labels",
    openapi_extra=json_body(LabelsIn, "inbox"),
)
async def labels(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, LabelsIn)
    return await _act(
        request,
        lambda conn: items.label(
            conn, key.org_id, conversation, add=body.add, remove=body.remove, actor=key.actor
        ),
    )


@router.post(
    "/{conversation}/notes",
    status_code=201,
    summary="A private note (never sent to the customer)",
    openapi_extra=json_body(NoteIn, "inbox"),
)
async def add_note(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, NoteIn)

    def write(conn: Connection) -> notes.Note:
        conversation_store.get(conn, key.org_id, conversation)
        return notes.add_note(conn, key.org_id, conversation, body.author or key.actor, body.text)

    done = await concierge(request).db.write(write)
    return JSON(done.to_dict(), status_code=201)


@router.post(
    "/{conversation}/rating",
    summary="The customer's rating (1-5) of the last resolution (channels record button presses)",
    openapi_extra=json_body(RatingIn, "inbox"),
)
async def rating(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, RatingIn)
    return await _act(request, lambda conn: items.rate(conn, key.org_id, conversation, body.score))
