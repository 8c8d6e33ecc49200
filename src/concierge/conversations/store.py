"""Reading and writing end users, conversations and turns (memories: ``memory``; retention
and erasure: ``erasure``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge.conversations.records import (
    ConversationStatus,
    Role,
    ToolRecord,
    Turn,
    TurnGovernance,
    TurnStatus,
    governance_json,
)
from concierge.errors import InvalidRequest, NotFound
from concierge.store import aware, id_is
from concierge.store.tables import conversations, end_users, turns

MAX_EXTERNAL_ID = 256


@dataclass(frozen=True)
class EndUser:
    id: int
    org_id: int
    channel: str
    external_id: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "end_user",
            "channel": self.channel,
            "external_id": self.external_id,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Conversation:
    id: int
    org_id: int
    assistant_id: int
    end_user_id: int
    channel: str
    status: ConversationStatus
    handoff_reason: str | None
    handoff_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "assistant_id": self.assistant_id,
            "end_user_id": self.end_user_id,
            "channel": self.channel,
            "status": str(self.status),
            "handoff_reason": self.handoff_reason,
            "handoff_at": self.handoff_at.isoformat() if self.handoff_at else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


# -- end users -------------------------------------------------------------------------------


def end_user_of(row: Any) -> EndUser:
    """An end user as read from the ``end_users`` table."""
    return EndUser(row.id, row.org_id, row.channel, row.external_id, aware(row.created_at))


def check_external_id(external_id: str) -> str:
    """An end user's id on a channel, trimmed; refused when empty or too long."""
    external_id = external_id.strip()
    if not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise InvalidRequest(f"an end user id has 1-{MAX_EXTERNAL_ID} characters", param="user")
    return external_id


def _by_identity(org_id: int, channel: str, external_id: str) -> Any:
    return select(end_users).where(
        end_users.c.org_id == org_id,
        end_users.c.channel == channel,
        end_users.c.external_id == external_id,
    )


def peek_end_user(conn: Connection, org_id: int, channel: str, external_id: str) -> EndUser | None:
    """The end user with this identity, if there is one (nothing is written)."""
    row = conn.execute(_by_identity(org_id, channel, check_external_id(external_id))).one_or_none()
    return None if row is None else end_user_of(row)


def end_user(conn: Connection, org_id: int, channel: str, external_id: str) -> EndUser:
    """The end user with this identity on this channel, made on first sight."""
    external_id = check_external_id(external_id)
    query = _by_identity(org_id, channel, external_id)
    now = datetime.now(UTC)
    row = conn.execute(query).one_or_none()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(end_users).values(
                        org_id=org_id,
                        channel=channel,
                        external_id=external_id,
                        created_at=now,
                        last_seen_at=now,
                    )
                )
        except IntegrityError:  # made meanwhile by another request
            pass
        row = conn.execute(query).one()
    else:
        conn.execute(update(end_users).where(end_users.c.id == row.id).values(last_seen_at=now))
    return end_user_of(row)


def get_end_user(conn: Connection, org_id: int, end_user_id: int) -> EndUser:
    row = conn.execute(
        select(end_users).where(end_users.c.org_id == org_id, end_users.c.id == end_user_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"end user {end_user_id} not found", param="end_user")
    return end_user_of(row)


# -- conversations ---------------------------------------------------------------------------


def conversation_of(row: Any) -> Conversation:
    """A conversation as read from the ``conversations`` table."""
    return Conversation(
        row.id,
        row.org_id,
        row.assistant_id,
        row.end_user_id,
        row.channel,
        ConversationStatus(row.status),
        row.handoff_reason,
        aware(row.handoff_at),
        aware(row.created_at),
        aware(row.updated_at),
    )


def create(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, channel: str
) -> Conversation:
    now = datetime.now(UTC)
    key = conn.execute(
        insert(conversations).values(
            org_id=org_id,
            assistant_id=assistant_id,
            end_user_id=user.id,
            channel=channel,
            status=ConversationStatus.ASSISTANT,
            created_at=now,
            updated_at=now,
        )
    ).inserted_primary_key
    assert key is not None
    return get(conn, org_id, int(key[0]))


def get_with_user(
    conn: Connection, org_id: int, conversation_id: int
) -> tuple[Conversation, EndUser]:
    """The conversation and its end user, in one query."""
    row = conn.execute(
        select(
            conversations,
            end_users.c.channel.label("user_channel"),
            end_users.c.external_id,
            end_users.c.created_at.label("user_created_at"),
        )
        .join(end_users, end_users.c.id == conversations.c.end_user_id)
        .where(conversations.c.org_id == org_id, conversations.c.id == conversation_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found", param="conversation")
    user = EndUser(
        row.end_user_id, org_id, row.user_channel, row.external_id, aware(row.user_created_at)
    )
    return conversation_of(row), user


def get(conn: Connection, org_id: int, conversation_id: int) -> Conversation:
    row = conn.execute(
        select(conversations).where(
            conversations.c.org_id == org_id, conversations.c.id == conversation_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found", param="conversation")
    return conversation_of(row)


def latest(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, channel: str
) -> Conversation | None:
    """The end user's most recent conversation with this assistant on this channel."""
    row = conn.execute(
        select(conversations)
        .where(
            conversations.c.org_id == org_id,
            conversations.c.assistant_id == assistant_id,
            conversations.c.end_user_id == user.id,
            conversations.c.channel == channel,
        )
        .order_by(conversations.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else conversation_of(row)


def list_page(
    conn: Connection,
    org_id: int,
    *,
    assistant_id: int | None = None,
    end_user_id: int | None = None,
    status: ConversationStatus | None = None,
    limit: int = 20,
    after: int | None = None,
    oldest_first: bool = False,
) -> tuple[list[Conversation], bool]:
    query = select(conversations).where(conversations.c.org_id == org_id)
    if assistant_id is not None:
        query = query.where(id_is(conversations.c.assistant_id, assistant_id))
    if end_user_id is not None:
        query = query.where(conversations.c.end_user_id == end_user_id)
    if status is not None:
        query = query.where(conversations.c.status == status)
    if after is not None:
        query = query.where(
            conversations.c.id > after if oldest_first else conversations.c.id < after
        )
    order = conversations.c.id if oldest_first else conversations.c.id.desc()
    rows = list(conn.execute(query.order_by(order).limit(limit + 1)))
    return [conversation_of(r) for r in rows[:limit]], len(rows) > limit


def set_status(
    conn: Connection,
    conversation: Conversation,
    status: ConversationStatus,
    reason: str | None = None,
) -> Conversation:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == ConversationStatus.HANDOFF:
        values.update(handoff_reason=reason, handoff_at=now)
    elif status == ConversationStatus.ASSISTANT:
        values.update(handoff_reason=None, handoff_at=None)
    conn.execute(update(conversations).where(conversations.c.id == conversation.id).values(values))
    return get(conn, conversation.org_id, conversation.id)


# -- turns -----------------------------------------------------------------------------------


def new_turn(
    conversation: Conversation,
    role: Role,
    content: str,
    *,
    status: TurnStatus = TurnStatus.COMPLETE,
    citations: list[dict[str, Any]] | None = None,
    tool_calls: list[ToolRecord] | None = None,
    assistant_version: int | None = None,
    model: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    latency_ms: float | None = None,
    error: str | None = None,
    author: str | None = None,
    governance: TurnGovernance | None = None,
) -> Turn:
    """A turn of ``conversation``, not stored yet (id 0): see :func:`add_turns`."""
    return Turn(
        id=0,
        conversation_id=conversation.id,
        role=role,
        content=content,
        status=status,
        created_at=datetime.now(UTC),
        citations=citations or [],
        tool_calls=tool_calls or [],
        assistant_version=assistant_version,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        error=error,
        author=author,
        governance=governance,
        updated_at=None,
    )


def add_turns(conn: Connection, conversation: Conversation, new: Sequence[Turn]) -> list[Turn]:
    """Store turns made by :func:`new_turn`, in order, with one INSERT (an exchange of a user
    message and its reply costs two statements, not six)."""
    rows = [
        {
            "org_id": conversation.org_id,
            **t.values(),
            "conversation_id": conversation.id,
        }
        for t in new
    ]
    result = conn.execute(insert(turns).returning(turns.c.id, sort_by_parameter_order=True), rows)
    ids = [int(row[0]) for row in result]
    stored = [dataclasses.replace(t, id=int(i)) for t, i in zip(new, ids, strict=True)]
    conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation.id)
        .values(updated_at=max(t.created_at for t in new))
    )
    return stored


def finish_turn(conn: Connection, turn: Turn) -> Turn:
    """Write ``turn`` (the id and creation time of a stored draft, the rest made by
    :func:`new_turn`) over the draft, in one statement: a reply is stored before it is written
    and finished in place (the conversation was marked updated when the draft was stored)."""
    finished = dataclasses.replace(turn, updated_at=datetime.now(UTC))
    values = {
        k: v
        for k, v in finished.values().items()
        if k not in ("conversation_id", "role", "created_at")
    }
    conn.execute(update(turns).where(turns.c.id == turn.id).values(values))
    return finished


def touch_draft(conn: Connection, turn_id: int, content: str | None) -> None:
    """A reply being written: its text so far (None: unchanged), and that it is alive."""
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if content is not None:
        values["content"] = content
    conn.execute(
        update(turns)
        .where(turns.c.id == turn_id, turns.c.status == TurnStatus.GENERATING)
        .values(values)
    )


def discard_draft(
    conn: Connection,
    conversation: Conversation,
    turn_ids: Sequence[int],
    *,
    drop_conversation: bool,
    drop_user: bool,
) -> None:
    """Take back a stored exchange whose reply never started (the model failed first): its
    turns, and the conversation and end user if they were made for it."""
    conn.execute(delete(turns).where(turns.c.id.in_(list(turn_ids))))
    if drop_conversation:
        conn.execute(delete(conversations).where(conversations.c.id == conversation.id))
        if drop_user:
            others = conn.execute(
                select(conversations.c.id)
                .where(conversations.c.end_user_id == conversation.end_user_id)
                .limit(1)
            ).first()
            if others is None:
                conn.execute(delete(end_users).where(end_users.c.id == conversation.end_user_id))


INTERRUPTED = "the server stopped while this reply was being written; it is kept as it stood"


def interrupt_stale(conn: Connection, before: datetime) -> int:
    """Mark ``interrupted`` the replies still ``generating`` that were last written before
    ``before``: the process writing them is gone. How many there were."""
    result = conn.execute(
        update(turns)
        .where(turns.c.status == TurnStatus.GENERATING, turns.c.updated_at < before)
        .values(status=TurnStatus.INTERRUPTED, error=INTERRUPTED)
    )
    return int(result.rowcount or 0)


def add_turn(
    conn: Connection, conversation: Conversation, role: Role, content: str, **fields: Any
) -> Turn:
    """Store one turn (the fields of :func:`new_turn`)."""
    return add_turns(conn, conversation, [new_turn(conversation, role, content, **fields)])[0]


def list_turns(
    conn: Connection, conversation: Conversation, *, after: int | None = None, limit: int = 100
) -> tuple[list[Turn], bool]:
    """Oldest first, from after the turn ``after``."""
    query = select(turns).where(turns.c.conversation_id == conversation.id)
    if after is not None:
        query = query.where(turns.c.id > after)
    rows = list(conn.execute(query.order_by(turns.c.id).limit(limit + 1)))
    return [Turn.from_row(r) for r in rows[:limit]], len(rows) > limit


def recent_turns(conn: Connection, conversation: Conversation, limit: int) -> list[Turn]:
    """The last ``limit`` turns, oldest first (the window a reply is built from)."""
    rows = conn.execute(
        select(turns)
        .where(turns.c.conversation_id == conversation.id)
        .order_by(turns.c.id.desc())
        .limit(limit)
    )
    return [Turn.from_row(r) for r in reversed(list(rows))]


def get_turn(conn: Connection, conversation: Conversation, turn_id: int) -> Turn:
    """One turn of ``conversation``; a turn of any other conversation is not found."""
    row = conn.execute(
        select(turns).where(id_is(turns.c.id, turn_id), turns.c.conversation_id == conversation.id)
    ).first()
    if row is None:
        raise NotFound(f"turn {turn_id} not found in conversation {conversation.id}", param="turn")
    return Turn.from_row(row)


def withdraw(conn: Connection, turn: Turn, notice: str, why: dict[str, Any]) -> Turn:
    """Replace a turn's text with ``notice`` (moderation removed it); ``why`` is recorded."""
    record = dataclasses.replace(
        turn.governance or TurnGovernance(),
        withdrawn=why,
        notices=None,
        label_id=None,  # the notice is not generated content
    )
    conn.execute(
        update(turns)
        .where(turns.c.id == turn.id)
        .values(content=notice, citations=[], governance=governance_json(record))
    )
    return dataclasses.replace(turn, content=notice, citations=[], governance=record)


def take_back(conn: Connection, org_id: int, user_turn_id: int) -> bool:
    """Remove an exchange that was never delivered: a user's turn and the unfinished draft of
    its reply (``generating`` or ``interrupted``), as when the process writing the reply
    stopped and the message is to be answered again. False when the reply was finished (it
    stays: it may have been delivered)."""
    row = conn.execute(
        select(turns.c.conversation_id).where(
            turns.c.id == user_turn_id, turns.c.org_id == org_id, turns.c.role == "user"
        )
    ).one_or_none()
    if row is None:
        return True  # already gone
    reply = conn.execute(
        select(turns.c.id, turns.c.status)
        .where(
            turns.c.conversation_id == row.conversation_id,
            turns.c.id > user_turn_id,
            turns.c.role == "assistant",
        )
        .order_by(turns.c.id)
        .limit(1)
    ).one_or_none()
    if reply is not None and reply.status not in (TurnStatus.GENERATING, TurnStatus.INTERRUPTED):
        return False
    taken = [user_turn_id] + ([reply.id] if reply is not None else [])
    conn.execute(delete(turns).where(turns.c.id.in_(taken)))
    return True
