"""What an assistant remembers about an end user: facts saved with the ``remember`` tool, kept
per end user and assistant (at most :data:`MAX_MEMORIES`, the oldest go first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from concierge.conversations.store import EndUser
from concierge.errors import InvalidRequest, NotFound
from concierge.store import aware, lock
from concierge.store.tables import memories

MAX_MEMORIES = 200  # per end user and assistant; the oldest go first


@dataclass(frozen=True)
class Memory:
    id: int
    fact: str
    created_at: datetime
    turn_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "memory",
            "fact": self.fact,
            "turn_id": self.turn_id,
            "created_at": self.created_at.isoformat(),
        }


def remember(
    conn: Connection,
    org_id: int,
    assistant_id: int,
    user: EndUser,
    fact: str,
    turn_id: int | None = None,
) -> Memory:
    fact = " ".join(fact.split())
    if not fact:
        raise InvalidRequest("a memory needs some text", param="fact")
    lock(conn, "memories", user.id)  # the duplicate check and the cap hold under concurrency
    existing = memories_of(conn, org_id, assistant_id, user)
    same = next((m for m in existing if m.fact.lower() == fact.lower()), None)
    if same is not None:
        return same
    if len(existing) >= MAX_MEMORIES:
        oldest = existing[: len(existing) - MAX_MEMORIES + 1]
        conn.execute(delete(memories).where(memories.c.id.in_([m.id for m in oldest])))
    key = conn.execute(
        insert(memories).values(
            org_id=org_id,
            assistant_id=assistant_id,
            end_user_id=user.id,
            fact=fact[:2000],
            turn_id=turn_id,
            created_at=datetime.now(UTC),
        )
    ).inserted_primary_key
    assert key is not None
    row = conn.execute(select(memories).where(memories.c.id == key[0])).one()
    return Memory(row.id, row.fact, aware(row.created_at), row.turn_id)


def memories_of(conn: Connection, org_id: int, assistant_id: int, user: EndUser) -> list[Memory]:
    rows = conn.execute(
        select(memories)
        .where(
            memories.c.org_id == org_id,
            memories.c.assistant_id == assistant_id,
            memories.c.end_user_id == user.id,
        )
        .order_by(memories.c.id)
    )
    return [Memory(r.id, r.fact, aware(r.created_at), r.turn_id) for r in rows]


def forget(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, memory_id: int | None = None
) -> int:
    """Delete one memory, or all of them (``memory_id`` None); returns how many went."""
    query = delete(memories).where(
        memories.c.org_id == org_id,
        memories.c.assistant_id == assistant_id,
        memories.c.end_user_id == user.id,
    )
    if memory_id is not None:
        query = query.where(memories.c.id == memory_id)
    gone = conn.execute(query).rowcount
    if memory_id is not None and not gone:
        raise NotFound(f"memory {memory_id} not found", param="memory")
    return int(gone)


def forget_one(conn: Connection, org_id: int, assistant_id: int, memory_id: int) -> None:
    """Delete one memory of this assistant, whoever it is about."""
    gone = conn.execute(
        delete(memories).where(
            memories.c.org_id == org_id,
            memories.c.assistant_id == assistant_id,
            memories.c.id == memory_id,
        )
    ).rowcount
    if not gone:
        raise NotFound(f"memory {memory_id} not found", param="memory")
