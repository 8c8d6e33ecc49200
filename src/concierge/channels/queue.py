"""The durable inbound queue: events stored before the platform is answered, then processed
at least once, in order per end user, by whichever replica holds that end user's lease.

- **Intake** (:func:`store_batch`) writes each event once: a repeated delivery (same
  platform id) is ignored by the unique key ``(channel_id, key)``. The customer-service window
  is moved in the same transaction.
- **Leases**: a thread (one end user of one channel) is worked on by one worker at a time. A
  worker takes it by moving ``locked_until`` forward where it has passed (an UPDATE that only
  one transaction can win; PostgreSQL candidates are found with ``FOR UPDATE SKIP LOCKED``)
  and keeps it by renewing it; a worker that dies simply lets it lapse.
- **Order**: a thread's events are handled oldest first; one waiting for a retry holds back
  those after it.
- **Status callbacks** have no thread: they are applied in batches, each batch in one
  transaction with the outbox rows it updates.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from concierge.channels.base import Event, EventKind
from concierge.store import aware
from concierge.store.tables import channel_events, channel_threads

MAX_MALFORMED_BODY = 65_536


class EventStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # could not be processed (a malformed body, too many attempts)
    IGNORED = "ignored"  # nothing to do (a reaction, a disabled channel)


@dataclass(frozen=True)
class Thread:
    id: int
    channel_id: str
    org_id: int
    sender: str
    conversation_id: int | None
    last_inbound_at: datetime | None


@dataclass(frozen=True)
class QueuedEvent:
    id: int
    channel_id: str
    thread_id: int | None
    event: Event
    status: EventStatus
    attempts: int
    turn_id: int | None
    error: str | None
    received_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "channel.event",
            "channel_id": self.channel_id,
            "key": self.event.key,
            "kind": str(self.event.kind),
            "status": str(self.status),
            "attempts": self.attempts,
            "turn_id": self.turn_id,
            "error": self.error,
            "received_at": self.received_at.isoformat(),
        }


def _thread(row: Any) -> Thread:
    return Thread(
        row.id,
        row.channel_id,
        row.org_id,
        row.sender,
        row.conversation_id,
        aware(row.last_inbound_at),
    )


def _queued(row: Any) -> QueuedEvent:
    payload = row.payload or {}
    event = (
        Event.from_dict(payload)
        if "key" in payload
        else Event(key=row.key, kind=EventKind(row.kind), sender="", raw=payload)
    )
    return QueuedEvent(
        row.id,
        row.channel_id,
        row.thread_id,
        event,
        EventStatus(row.status),
        row.attempts,
        row.turn_id,
        row.error,
        aware(row.received_at),
    )


def _insert_ignoring_duplicates(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping those whose unique key exists; how many were new. One
    statement, compiled once and cached, run for every row (executemany)."""
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    return int(conn.execute(statement, rows).rowcount or 0)


def thread_for(conn: Connection, channel_id: str, org_id: int, sender: str) -> Thread:
    """The thread of ``sender`` on the channel, made on first sight."""
    query = select(channel_threads).where(
        channel_threads.c.channel_id == channel_id, channel_threads.c.sender == sender
    )
    row = conn.execute(query).one_or_none()
    if row is None:
        _insert_ignoring_duplicates(
            conn,
            channel_threads,
            [{"channel_id": channel_id, "org_id": org_id, "sender": sender}],
        )
        row = conn.execute(query).one()
    return _thread(row)


def get_thread(conn: Connection, thread_id: int) -> Thread:
    return _thread(
        conn.execute(select(channel_threads).where(channel_threads.c.id == thread_id)).one()
    )


def store_events(conn: Connection, channel_id: str, org_id: int, events: Sequence[Event]) -> int:
    """Store ``events`` of one channel (a repeated one is skipped); how many were new."""
    return store_batch(conn, [(channel_id, org_id, list(events))])


def store_batch(conn: Connection, batch: Sequence[tuple[str, int, list[Event]]]) -> int:
    """Store the events of several webhook calls (``(channel_id, org_id, events)`` each) in a
    few statements, whatever their number: the senders' threads made where missing (one
    insert) and read back (one select), the customer-service window moved for those who wrote
    (one update), the events inserted, a repeated one skipped (one insert). How many were
    new."""
    now = datetime.now(UTC)
    senders = {
        (channel_id, event.sender): org_id
        for channel_id, org_id, events in batch
        for event in events
        if event.kind != EventKind.STATUS and event.sender
    }
    ids: dict[tuple[str, str], int] = {}
    if senders:
        _insert_ignoring_duplicates(
            conn,
            channel_threads,
            [{"channel_id": c, "org_id": o, "sender": s} for (c, s), o in senders.items()],
        )
        rows = conn.execute(
            select(
                channel_threads.c.id, channel_threads.c.channel_id, channel_threads.c.sender
            ).where(
                tuple_(channel_threads.c.channel_id, channel_threads.c.sender).in_(list(senders))
            )
        )
        ids = {(r.channel_id, r.sender): int(r.id) for r in rows}
    wrote = {
        ids[(channel_id, e.sender)]
        for channel_id, _org, events in batch
        for e in events
        if e.kind == EventKind.MESSAGE and e.sender
    }
    if wrote:
        conn.execute(
            update(channel_threads)
            .where(channel_threads.c.id.in_(sorted(wrote)))
            .values(last_inbound_at=now)
        )
    rows_in = [
        {
            "channel_id": channel_id,
            "org_id": org_id,
            "thread_id": ids.get((channel_id, event.sender)),
            "key": event.key[:160],
            "kind": str(event.kind),
            "payload": event.to_dict(),
            "status": EventStatus.PENDING,
            "attempts": 0,
            "available_at": now,
            "received_at": now,
        }
        for channel_id, org_id, events in batch
        for event in events
    ]
    return _insert_ignoring_duplicates(conn, channel_events, rows_in)


def store_malformed(conn: Connection, channel_id: str, org_id: int, body: bytes, why: str) -> None:
    """An authentic body that could not be read: kept, failed, for a person to look at."""
    now = datetime.now(UTC)
    text = body[:MAX_MALFORMED_BODY].decode("utf-8", errors="replace")
    _insert_ignoring_duplicates(
        conn,
        channel_events,
        [
            {
                "channel_id": channel_id,
                "org_id": org_id,
                "thread_id": None,
                "key": "malformed:" + hashlib.sha256(body).hexdigest()[:40],
                "kind": str(EventKind.OTHER),
                "payload": {"body": text, "truncated": len(body) > MAX_MALFORMED_BODY},
                "status": EventStatus.FAILED,
                "attempts": 0,
                "available_at": now,
                "error": why[:500],
                "received_at": now,
                "processed_at": now,
            }
        ],
    )


# -- workers ---------------------------------------------------------------------------------


def ready_threads(conn: Connection, limit: int) -> list[int]:
    """Threads with an event due now and no live lease."""
    now = datetime.now(UTC)
    query = (
        select(channel_events.c.thread_id)
        .join(channel_threads, channel_threads.c.id == channel_events.c.thread_id)
        .where(
            channel_events.c.status == EventStatus.PENDING,
            channel_events.c.available_at <= now,
            or_(channel_threads.c.locked_until.is_(None), channel_threads.c.locked_until < now),
        )
        .group_by(channel_events.c.thread_id)
        .order_by(func.min(channel_events.c.id))
        .limit(limit)
    )
    return [int(r[0]) for r in conn.execute(query)]


def lease(conn: Connection, thread_id: int, worker: str, seconds: float, *, send: bool) -> bool:
    """Take (or renew) the thread's inbound (or, ``send``, outbox) lease for ``worker``."""
    now = datetime.now(UTC)
    until_col = channel_threads.c.send_locked_until if send else channel_threads.c.locked_until
    by_col = channel_threads.c.send_locked_by if send else channel_threads.c.locked_by
    free = or_(until_col.is_(None), until_col < now, by_col == worker)
    if conn.dialect.name == "postgresql":
        # Another worker deciding about the same thread right now is skipped, not waited for.
        found = conn.execute(
            select(channel_threads.c.id)
            .where(channel_threads.c.id == thread_id, free)
            .with_for_update(skip_locked=True)
        ).first()
        if found is None:
            return False
    values = (
        {"send_locked_until": now + timedelta(seconds=seconds), "send_locked_by": worker}
        if send
        else {"locked_until": now + timedelta(seconds=seconds), "locked_by": worker}
    )
    result = conn.execute(
        update(channel_threads).where(channel_threads.c.id == thread_id, free).values(values)
    )
    return bool(result.rowcount)


def release(conn: Connection, thread_id: int, worker: str, *, send: bool) -> None:
    if send:
        conn.execute(
            update(channel_threads)
            .where(channel_threads.c.id == thread_id, channel_threads.c.send_locked_by == worker)
            .values(send_locked_until=None, send_locked_by=None)
        )
    else:
        conn.execute(
            update(channel_threads)
            .where(channel_threads.c.id == thread_id, channel_threads.c.locked_by == worker)
            .values(locked_until=None, locked_by=None)
        )


def next_event(conn: Connection, thread_id: int) -> QueuedEvent | None:
    """The thread's oldest pending event if it is due (an earlier one waiting for its retry
    holds back the rest), counted as one more attempt."""
    row = conn.execute(
        select(channel_events)
        .where(
            channel_events.c.thread_id == thread_id,
            channel_events.c.status == EventStatus.PENDING,
        )
        .order_by(channel_events.c.id)
        .limit(1)
    ).one_or_none()
    if row is None or aware(row.available_at) > datetime.now(UTC):
        return None
    conn.execute(
        update(channel_events)
        .where(channel_events.c.id == row.id)
        .values(attempts=channel_events.c.attempts + 1)
    )
    return dataclasses.replace(_queued(row), attempts=row.attempts + 1)


def note_turn(conn: Connection, event_id: int, turn_id: int) -> None:
    """The user's turn the event made (a draft that a crash may leave behind)."""
    conn.execute(
        update(channel_events).where(channel_events.c.id == event_id).values(turn_id=turn_id)
    )


def finish(
    conn: Connection,
    event_id: int,
    status: EventStatus,
    *,
    error: str | None = None,
    turn_id: int | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "processed_at": datetime.now(UTC),
    }
    if turn_id is not None:
        values["turn_id"] = turn_id
    conn.execute(update(channel_events).where(channel_events.c.id == event_id).values(values))


def retry_later(conn: Connection, event_id: int, delay: float, error: str) -> None:
    conn.execute(
        update(channel_events)
        .where(channel_events.c.id == event_id)
        .values(available_at=datetime.now(UTC) + timedelta(seconds=delay), error=error[:500])
    )


def pending_statuses(conn: Connection, limit: int) -> list[QueuedEvent]:
    """Status callbacks to apply, locked for this transaction (others skip them)."""
    query = (
        select(channel_events)
        .where(
            channel_events.c.thread_id.is_(None),
            channel_events.c.status == EventStatus.PENDING,
        )
        .order_by(channel_events.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_queued(r) for r in conn.execute(query)]


def drop(conn: Connection, event_ids: list[int]) -> None:
    if event_ids:
        conn.execute(delete(channel_events).where(channel_events.c.id.in_(event_ids)))


def set_conversation(conn: Connection, thread_id: int, conversation_id: int) -> None:
    conn.execute(
        update(channel_threads)
        .where(
            channel_threads.c.id == thread_id,
            or_(
                channel_threads.c.conversation_id.is_(None),
                channel_threads.c.conversation_id != conversation_id,
            ),
        )
        .values(conversation_id=conversation_id)
    )


def list_events(
    conn: Connection,
    org_id: int,
    channel_id: str,
    *,
    status: EventStatus | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[QueuedEvent], bool]:
    query = select(channel_events).where(
        channel_events.c.org_id == org_id, channel_events.c.channel_id == channel_id
    )
    if status is not None:
        query = query.where(channel_events.c.status == status)
    if before is not None:
        query = query.where(channel_events.c.id < before)
    rows = list(conn.execute(query.order_by(channel_events.c.id.desc()).limit(limit + 1)))
    return [_queued(r) for r in rows[:limit]], len(rows) > limit


def backlog(conn: Connection) -> int:
    """Events waiting to be processed."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(channel_events)
            .where(channel_events.c.status == EventStatus.PENDING)
        ).scalar_one()
    )
