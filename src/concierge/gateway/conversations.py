"""Conversations over the API: start one, send messages, read turns; the human handoff queue;
an end user's memories.

Everything is scoped to the caller's organisation inside the query: another organisation's
conversation is "not found", like one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import Connection
from starlette.responses import Response

from concierge.assistants import definitions
from concierge.assistants.definitions import Assistant
from concierge.assistants.events import (
    Completed,
    Delta,
    Inbound,
    Replaced,
    ReplyEvent,
    ToolUsed,
)
from concierge.channels import media as channel_media
from concierge.channels import outbox
from concierge.compliance import exports
from concierge.conversations import memory as memories
from concierge.conversations import store
from concierge.conversations.records import ConversationStatus, Turn
from concierge.conversations.store import Conversation, EndUser
from concierge.errors import ConciergeError, Conflict, InvalidRequest, NotFound
from concierge.gateway.auth import (
    InboxKey,
    InferenceKey,
    ReaderKey,
    also,
    inbox_key,
    inference_key,
    reader_key,
)
from concierge.gateway.body import json_body, parse
from concierge.gateway.replies import respond
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import (
    MAX_ID,
    ConversationIn,
    HandoffIn,
    HumanMessageIn,
    MessageIn,
    RowId,
)
from concierge.gateway.state import concierge
from concierge.governance import audit
from concierge.inbox import items as inbox_items
from concierge.inbox import settings as inbox_settings
from concierge.models.base import TokenCount

router = APIRouter(prefix="/v1", tags=["Conversations"])
BODY_MODELS: list[type[BaseModel]] = [ConversationIn, MessageIn, HumanMessageIn, HandoffIn]
API_CHANNEL = "api"


def sse(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def reply_body(completed: Completed) -> dict[str, Any]:
    return {
        "object": "conversation.reply",
        "conversation": completed.conversation.to_dict(),
        "user_turn": completed.user_turn.to_dict(),
        "reply": (
            {**completed.reply.to_dict(), "content": completed.delivered, "aigc": completed.label}
            if completed.reply
            else None
        ),
        "citations": completed.citations,
        "aigc": completed.label,  # GB 45438-2025 implicit label of the reply, signed
        "timings": completed.timings,  # milliseconds per pipeline step
    }


class NativeFormat:
    """``turn.delta`` / ``turn.tool`` / ``turn.completed`` / ``error`` events."""

    def whole(self, completed: Completed) -> dict[str, Any]:
        return reply_body(completed)

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, Delta):
            return sse("turn.delta", {"content": event.text})
        if isinstance(event, Replaced):
            return sse("turn.replaced", {"content": event.text})
        if isinstance(event, ToolUsed):
            return sse("turn.tool", event.record.to_dict())
        return sse("turn.completed", reply_body(event))

    def error(self, exc: ConciergeError) -> bytes:
        return sse("error", exc.to_dict())


def _page(rows: list[Any], more: bool) -> dict[str, Any]:
    data = [r.to_dict() for r in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


# -- conversations of an assistant -----------------------------------------------------------


@router.post(
    "/assistants/{assistant}/conversations",
    status_code=201,
    summary="Start a conversation (opens with the greeting)",
    openapi_extra=json_body(ConversationIn),
)
async def start_conversation(assistant: str, request: Request) -> JSON:
    key = await inference_key(request)
    body = await parse(request, ConversationIn)
    conversation, opening = await concierge(request).runtime.start_conversation(
        key.org_id, assistant, API_CHANNEL, body.user, request.headers.get("accept-language")
    )
    return JSON(
        {**conversation.to_dict(), "turns": [t.to_dict() for t in opening]}, status_code=201
    )


@router.get("/assistants/{assistant}/conversations", summary="An assistant's conversations")
async def list_assistant_conversations(
    assistant: str,
    request: Request,
    key: InferenceKey,
    user: str | None = Query(None, max_length=256, description="Only this end user's (API id)."),
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    def read(conn: Connection) -> dict[str, Any]:
        found = definitions.get(conn, key.org_id, assistant, include_archived=True)
        end_user_id = None
        if user is not None:
            who = store.peek_end_user(conn, key.org_id, API_CHANNEL, user)
            if who is None:
                return _page([], False)
            end_user_id = who.id
        rows, more = store.list_page(
            conn,
            key.org_id,
            assistant_id=found.id,
            end_user_id=end_user_id,
            limit=limit,
            after=after,
        )
        return _page(rows, more)

    return JSON(await concierge(request).db.read(read))


@router.post(
    "/assistants/{assistant}/conversations/{conversation}/messages",
    summary="Send a message and get the assistant's reply (streamed with stream: true)",
    openapi_extra=json_body(MessageIn),
)
async def send_message(assistant: str, conversation: RowId, request: Request) -> Response:
    key = await inference_key(request)
    body = await parse(request, MessageIn)
    inbound = Inbound(
        org_id=key.org_id,
        assistant=assistant,
        channel=API_CHANNEL,
        external_id="-",
        text=body.content,
        conversation_id=conversation,
        priority_key=f"key:{key.id}",  # the model's queue is shared fairly by API key
        language=request.headers.get("accept-language"),
    )
    spent: list[TokenCount] = []
    events = concierge(request).runtime.reply(inbound, spent)
    return await respond(
        request, key, "assistants.messages", events, NativeFormat(), stream=body.stream, spent=spent
    )


# -- conversations of the organisation: reading, and the human queue ------------------------


@router.get("/conversations", summary="Conversations; status=handoff is the human queue")
async def list_conversations(
    request: Request,
    key: InboxKey,
    status: ConversationStatus | None = None,
    assistant: int | None = Query(None, ge=0, le=MAX_ID),
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    # The queue is served oldest first (first come, first served); other lists newest first.
    oldest_first = status == ConversationStatus.HANDOFF
    rows, more = await concierge(request).db.read(
        lambda conn: store.list_page(
            conn,
            key.org_id,
            assistant_id=assistant,
            status=status,
            limit=limit,
            after=after,
            oldest_first=oldest_first,
        )
    )
    return JSON(_page(rows, more))


@router.get(
    "/conversations/{conversation}", summary="Retrieve a conversation", openapi_extra=also("inbox")
)
async def get_conversation(conversation: RowId, request: Request, key: ReaderKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: store.get(conn, key.org_id, conversation))
    return JSON(found.to_dict())


@router.get(
    "/conversations/{conversation}/turns",
    summary="A conversation's turns, oldest first",
    openapi_extra=also("inbox"),
)
async def list_turns(
    conversation: RowId,
    request: Request,
    key: ReaderKey,
    limit: int = Query(100, ge=1, le=500),
    after: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    def read(conn: Connection) -> tuple[list[Turn], bool]:
        found = store.get(conn, key.org_id, conversation)
        return store.list_turns(conn, found, after=after, limit=limit)

    rows, more = await concierge(request).db.read(read)
    ids = [t.id for t in rows]
    sent, files = await concierge(request).db.read(
        lambda conn: (outbox.for_turns(conn, ids), channel_media.of_turns(conn, key.org_id, ids))
    )
    governance = concierge(request).governance
    page = _page(rows, more)
    for item, turn in zip(page["data"], rows, strict=True):
        made = governance.label(turn.content, turn.label_id, turn.producer)
        if made is not None:
            item["aigc"] = made
        if turn.id in sent:  # how the turn went out on a messaging channel
            item["delivery"] = [m.to_dict() for m in sent[turn.id]]
        if turn.id in files:  # what the customer sent with it
            item["media"] = [m.to_dict() for m in files[turn.id]]
    return JSON(page)


@router.get(
    "/conversations/{conversation}/export",
    summary="Export a conversation with its provenance labels (JSON, text or HTML)",
    response_model=None,
    openapi_extra=also("inbox"),
)
async def export_conversation(
    conversation: RowId,
    request: Request,
    key: ReaderKey,
    format: Literal["json", "text", "html"] = "json",
) -> Response:
    governance = concierge(request).governance

    def read(conn: Connection) -> tuple[Conversation, list[Turn], str]:
        found = store.get(conn, key.org_id, conversation)
        everything: list[Turn] = []
        after: int | None = None
        while True:
            rows, more = store.list_turns(conn, found, after=after, limit=500)
            everything += rows
            if not more:
                break
            after = rows[-1].id
        assistant = definitions.get(conn, key.org_id, found.assistant_id, include_archived=True)
        return found, everything, assistant.name

    found, rows, name = await concierge(request).db.read(read)

    def label(turn: Turn) -> dict[str, str] | None:
        return governance.label(turn.content, turn.label_id, turn.producer)

    now = datetime.now(UTC)
    suffix = {"json": "json", "text": "txt", "html": "html"}[format]
    disposition = {
        "Content-Disposition": f'attachment; filename="conversation-{found.id}.{suffix}"'
    }
    if format == "json":
        return JSON(exports.as_json(found, rows, label, now), headers=disposition)
    if format == "text":
        body = exports.as_text(found, rows, label, now, name)
        return Response(body, media_type="text/plain; charset=utf-8", headers=disposition)
    body = exports.as_html(found, rows, label, now, name)
    return Response(body, media_type="text/html; charset=utf-8", headers=disposition)


@router.post(
    "/conversations/{conversation}/human_messages",
    status_code=201,
    summary="Reply as a human operator (takes the conversation from the assistant)",
    openapi_extra=json_body(HumanMessageIn, "inbox"),
)
async def human_message(conversation: RowId, request: Request) -> JSON:
    key = await inbox_key(request)
    body = await parse(request, HumanMessageIn)

    channels = concierge(request).channels

    def write(conn: Connection) -> Turn:
        found = store.get(conn, key.org_id, conversation)
        carrier = channels.carrier(conn, found.id)
        content, template = (body.content or "").strip(), None
        if body.template is not None:
            if carrier is None:
                raise InvalidRequest(
                    "templates are sent on messaging channels; this conversation is not on one",
                    param="template",
                )
            template, content = carrier.kind.template(
                carrier.channel.config, body.template.name, body.template.variables
            )
        if found.status != ConversationStatus.HUMAN:
            found = store.set_status(conn, found, ConversationStatus.HUMAN)
        author = body.author or key.name
        turn = store.add_turn(conn, found, "human", content, author=author)
        if carrier is not None:  # out through the channel's outbox, in this transaction
            channels.queue_human_reply(conn, carrier, turn.id, content, template)
        if inbox_items.find(conn, key.org_id, found.id) is None:  # taken without a handoff
            settings = inbox_settings.get(conn, key.org_id)
            inbox_items.open_for(conn, found, settings, None, datetime.now(UTC))
        inbox_items.person_replied(conn, key.org_id, found.id, author)
        audit.record(
            conn,
            "inbox.reply",
            actor=key.actor,
            org_id=key.org_id,
            target=f"conversation:{found.id}",
            details={"turn_id": turn.id, "author": author, "template": bool(template)},
        )
        return turn

    turn = await concierge(request).db.write(write)
    channels.dispatcher.wake()
    return JSON(turn.to_dict(), status_code=201)


@router.post(
    "/conversations/{conversation}/handoff",
    summary="Put a conversation in the human queue",
    openapi_extra=json_body(HandoffIn, "inference", "inbox"),
)
async def handoff(conversation: RowId, request: Request) -> JSON:
    key = await reader_key(request)
    body = await parse(request, HandoffIn)

    def write(conn: Connection) -> Conversation:
        found = store.get(conn, key.org_id, conversation)
        if found.status != ConversationStatus.ASSISTANT:
            raise Conflict(f"conversation {conversation} is already with a human")
        return store.set_status(
            conn, found, ConversationStatus.HANDOFF, body.reason or "by an operator"
        )

    return JSON((await concierge(request).db.write(write)).to_dict())


@router.post(
    "/conversations/{conversation}/handback",
    summary="Give the conversation back to the assistant",
)
async def handback(conversation: RowId, request: Request, key: InboxKey) -> JSON:
    def write(conn: Connection) -> Conversation:
        found = store.get(conn, key.org_id, conversation)
        item = inbox_items.find(conn, key.org_id, found.id)
        if item is not None and item.status != inbox_items.ItemStatus.RESOLVED:
            # People are done with it: resolved in the inbox, without asking for a rating.
            inbox_items.resolve(
                conn,
                key.org_id,
                found.id,
                actor=key.actor,
                settings=inbox_settings.get(conn, key.org_id),
                notify=None,
                ask_rating=False,
            )
            return store.get(conn, key.org_id, found.id)
        return store.set_status(conn, found, ConversationStatus.ASSISTANT)

    return JSON((await concierge(request).db.write(write)).to_dict())


# -- memories ------------------------------------------------------------------------------


def _assistant_and_user(
    conn: Connection, org_id: int, assistant: str, channel: str, user: str
) -> tuple[Assistant, EndUser]:
    found = definitions.get(conn, org_id, assistant, include_archived=True)
    who = store.peek_end_user(conn, org_id, channel, user)
    if who is None:
        raise NotFound(f"end user '{user}' not found on channel '{channel}'", param="user")
    return found, who


@router.get("/assistants/{assistant}/memories", summary="What an assistant remembers of a user")
async def list_memories(
    assistant: str,
    request: Request,
    key: InferenceKey,
    user: str = Query(..., min_length=1, max_length=256, description="The end user's id."),
    channel: str = Query(API_CHANNEL, max_length=32),
) -> JSON:
    def read(conn: Connection) -> list[Any]:
        found, who = _assistant_and_user(conn, key.org_id, assistant, channel, user)
        return [m.to_dict() for m in memories.memories_of(conn, key.org_id, found.id, who)]

    return JSON({"object": "list", "data": await concierge(request).db.read(read)})


@router.delete(
    "/assistants/{assistant}/memories/{memory}", summary="Delete one memory (the user asked)"
)
async def delete_memory(assistant: str, memory: RowId, request: Request, key: InferenceKey) -> JSON:
    def write(conn: Connection) -> None:
        found = definitions.get(conn, key.org_id, assistant, include_archived=True)
        memories.forget_one(conn, key.org_id, found.id, memory)

    await concierge(request).db.write(write)
    return JSON({"id": memory, "object": "memory.deleted", "deleted": True})


@router.delete("/assistants/{assistant}/memories", summary="Delete everything remembered of a user")
async def delete_memories(
    assistant: str,
    request: Request,
    key: InferenceKey,
    user: str = Query(..., min_length=1, max_length=256),
    channel: str = Query(API_CHANNEL, max_length=32),
) -> JSON:
    def write(conn: Connection) -> int:
        found, who = _assistant_and_user(conn, key.org_id, assistant, channel, user)
        return memories.forget(conn, key.org_id, found.id, who)

    gone = await concierge(request).db.write(write)
    return JSON({"object": "memory.deleted", "deleted": gone})
