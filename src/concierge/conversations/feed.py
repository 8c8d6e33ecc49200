"""What the inbox follows of conversations: who waits for people, the turns as they are
written (a change feed: turn ids only grow), and conversations started in a period (reports)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from concierge.conversations.records import ConversationStatus
from concierge.conversations.store import Conversation, conversation_of
from concierge.store import aware
from concierge.store.tables import conversations, turns


def awaiting_people(conn: Connection, limit: int = 500) -> list[Conversation]:
    """Conversations in the human queue or with a person (for the inbox)."""
    rows = conn.execute(
        select(conversations)
        .where(conversations.c.status.in_([ConversationStatus.HANDOFF, ConversationStatus.HUMAN]))
        .order_by(conversations.c.id)
        .limit(limit)
    )
    return [conversation_of(r) for r in rows]


@dataclass(frozen=True)
class TurnSeen:
    """A turn as the inbox follows them: who wrote it, when, in which conversation."""

    id: int
    conversation_id: int
    org_id: int
    role: str
    created_at: datetime


def turns_after(conn: Connection, after: int, limit: int = 1000) -> list[TurnSeen]:
    """Turns written after the turn ``after``, oldest first (a change feed: ids only grow)."""
    rows = conn.execute(
        select(
            turns.c.id, turns.c.conversation_id, turns.c.org_id, turns.c.role, turns.c.created_at
        )
        .where(turns.c.id > after)
        .order_by(turns.c.id)
        .limit(limit)
    )
    return [TurnSeen(r.id, r.conversation_id, r.org_id, r.role, aware(r.created_at)) for r in rows]


def last_turn_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(turns.c.id), 0))).scalar_one())


def started_between(
    conn: Connection, org_id: int, since: datetime, until: datetime
) -> list[tuple[int, str, int, datetime]]:
    """(id, channel, assistant_id, created_at) of the conversations started in a period."""
    rows = conn.execute(
        select(
            conversations.c.id,
            conversations.c.channel,
            conversations.c.assistant_id,
            conversations.c.created_at,
        ).where(
            conversations.c.org_id == org_id,
            conversations.c.created_at >= since,
            conversations.c.created_at < until,
        )
    )
    return [(int(r.id), r.channel, int(r.assistant_id), aware(r.created_at)) for r in rows]
