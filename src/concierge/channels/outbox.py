"""The durable outbox: every message to a customer is a row before anything is sent.

Rows are written in the transaction that stores the turn they carry (so a reply is either on
record and queued, or neither), sent in order per thread by the holder of the thread's send
lease, and retried with exponential backoff and full jitter; the platform's own wait (a 429's
``retry_after``) is honoured. A row is marked ``sending`` (committed) before the request goes
out: if the process dies then, the row is *in doubt*. A status callback that names it (by our
id, WhatsApp's ``biz_opaque_callback_data``, or by the platform's) settles it; when none has
within ``outbox_in_doubt_seconds``, it is marked ``unknown`` for a person to decide: never sent
a second time on a guess (a late callback still settles it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from concierge.channels.base import Outbound
from concierge.channels.queue import Thread, _insert_ignoring_duplicates
from concierge.channels.store import Channel
from concierge.errors import Conflict, NotFound
from concierge.store import aware, id_is
from concierge.store.tables import channel_outbox, channel_threads

TAG_PREFIX = "cc-out:"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # the request went out; its answer not recorded yet
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"  # permanently: the error says why
    UNKNOWN = "unknown"  # the process stopped mid-send and the platform cannot tell us


# Status callbacks only move a message forward.
RANK = {
    OutboxStatus.PENDING: 0,
    OutboxStatus.SENDING: 1,
    OutboxStatus.UNKNOWN: 1,
    OutboxStatus.SENT: 2,
    OutboxStatus.DELIVERED: 3,
    OutboxStatus.READ: 4,
    OutboxStatus.FAILED: 5,
}


@dataclass(frozen=True)
class OutboxRow:
    id: int
    channel_id: str
    org_id: int
    thread_id: int
    conversation_id: int | None
    turn_id: int | None
    message: Outbound
    status: OutboxStatus
    attempts: int
    available_at: datetime
    platform_id: str | None
    error: str | None
    error_code: str | None
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "channel.message",
            "channel_id": self.channel_id,
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "message": self.message.to_dict(),
            "status": str(self.status),
            "attempts": self.attempts,
            "next_attempt_at": (
                self.available_at.isoformat() if self.status == OutboxStatus.PENDING else None
            ),
            "platform_id": self.platform_id,
            "error": self.error,
            "error_code": self.error_code,
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "updated_at": self.updated_at.isoformat(),
        }


def _row(row: Any) -> OutboxRow:
    message = Outbound.from_dict(row.payload, tag=f"{TAG_PREFIX}{row.id}")
    return OutboxRow(
        row.id,
        row.channel_id,
        row.org_id,
        row.thread_id,
        row.conversation_id,
        row.turn_id,
        message,
        OutboxStatus(row.status),
        row.attempts,
        aware(row.available_at),
        row.platform_id,
        row.error,
        row.error_code,
        aware(row.created_at),
        aware(row.sent_at),
        aware(row.updated_at),
    )


def backoff(attempt: int, base: float = 2.0, cap: float = 600.0) -> float:
    """Seconds before the try after try ``attempt``: exponential with full jitter (uniform in
    [base/2, min(cap, base * 2**(attempt-1))]: retries of many messages spread out instead of
    arriving together)."""
    top = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(min(base / 2, top), top)


def enqueue(
    conn: Connection,
    *,
    channel_id: str,
    org_id: int,
    thread_id: int,
    conversation_id: int | None,
    turn_id: int | None,
    messages: Sequence[Outbound],
    dedupe: str,
) -> int:
    """Queue ``messages`` in order; a second call with the same ``dedupe`` queues nothing."""
    now = datetime.now(UTC)
    if len(dedupe) > 72:  # a long platform id: kept whole in a digest, not cut
        dedupe = dedupe[:30] + hashlib.sha256(dedupe.encode()).hexdigest()[:40]
    rows = [
        {
            "channel_id": channel_id,
            "org_id": org_id,
            "thread_id": thread_id,
            "conversation_id": conversation_id,
            "turn_id": turn_id,
            "dedupe": f"{dedupe}:{part}",
            "payload": message.to_dict(),
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "available_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for part, message in enumerate(messages)
    ]
    return _insert_ignoring_duplicates(conn, channel_outbox, rows)


def enqueue_to(
    conn: Connection,
    channel: Channel,
    thread: Thread,
    messages: Sequence[Outbound],
    *,
    dedupe: str,
    turn_id: int | None = None,
    conversation_id: int | None = None,
) -> int:
    """:func:`enqueue` for a channel's customer (their conversation by default)."""
    return enqueue(
        conn,
        channel_id=channel.id,
        org_id=channel.org_id,
        thread_id=thread.id,
        conversation_id=conversation_id if conversation_id is not None else thread.conversation_id,
        turn_id=turn_id,
        messages=messages,
        dedupe=dedupe,
    )


def ready_threads(conn: Connection, limit: int) -> list[int]:
    """Threads with a message due and no live send lease (in-doubt rows included)."""
    now = datetime.now(UTC)
    query = (
        select(channel_outbox.c.thread_id)
        .join(channel_threads, channel_threads.c.id == channel_outbox.c.thread_id)
        .where(
            channel_outbox.c.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]),
            channel_outbox.c.available_at <= now,
            or_(
                channel_threads.c.send_locked_until.is_(None),
                channel_threads.c.send_locked_until < now,
            ),
        )
        .group_by(channel_outbox.c.thread_id)
        .order_by(func.min(channel_outbox.c.id))
        .limit(limit)
    )
    return [int(r[0]) for r in conn.execute(query)]


def head(conn: Connection, thread_id: int) -> OutboxRow | None:
    """The thread's oldest unsent message (``sending``: in doubt), whether due or not."""
    row = conn.execute(
        select(channel_outbox)
        .where(
            channel_outbox.c.thread_id == thread_id,
            channel_outbox.c.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]),
        )
        .order_by(channel_outbox.c.id)
        .limit(1)
    ).one_or_none()
    return None if row is None else _row(row)


def mark_sending(conn: Connection, row_id: int, grace: float) -> None:
    """The request is about to go out. Should the process stop before its answer is recorded,
    the row is looked at again only after ``grace`` seconds (its status callback may settle
    it meanwhile)."""
    now = datetime.now(UTC)
    conn.execute(
        update(channel_outbox)
        .where(channel_outbox.c.id == row_id)
        .values(
            status=OutboxStatus.SENDING,
            attempts=channel_outbox.c.attempts + 1,
            available_at=now + timedelta(seconds=grace),
            updated_at=now,
        )
    )


def mark_sent(conn: Connection, row_id: int, platform_id: str | None) -> None:
    now = datetime.now(UTC)
    conn.execute(
        update(channel_outbox)
        .where(channel_outbox.c.id == row_id, channel_outbox.c.status == OutboxStatus.SENDING)
        .values(
            status=OutboxStatus.SENT,
            platform_id=platform_id,
            sent_at=now,
            updated_at=now,
            error=None,
            error_code=None,
        )
    )


def mark_retry(conn: Connection, row_id: int, delay: float, error: str, code: str | None) -> None:
    conn.execute(
        update(channel_outbox)
        .where(channel_outbox.c.id == row_id)
        .values(
            status=OutboxStatus.PENDING,
            available_at=datetime.now(UTC) + timedelta(seconds=delay),
            error=error[:500],
            error_code=code,
            updated_at=datetime.now(UTC),
        )
    )


def mark_failed(
    conn: Connection,
    row_id: int,
    error: str,
    code: str | None,
    status: OutboxStatus = OutboxStatus.FAILED,
) -> None:
    conn.execute(
        update(channel_outbox)
        .where(channel_outbox.c.id == row_id)
        .values(status=status, error=error[:500], error_code=code, updated_at=datetime.now(UTC))
    )


def apply_status(
    conn: Connection,
    channel_id: str,
    *,
    platform_id: str | None,
    tag: str | None,
    status: str,
    error: str | None,
) -> bool:
    """A status callback: the message it names (by our tag, else by the platform's id) moves
    forward to ``status``; an in-doubt message is settled as sent. False if none matches."""
    condition = None
    if tag and tag.startswith(TAG_PREFIX) and tag[len(TAG_PREFIX) :].isdigit():
        condition = id_is(channel_outbox.c.id, int(tag[len(TAG_PREFIX) :]))
    elif platform_id:
        condition = channel_outbox.c.platform_id == platform_id
    if condition is None:
        return False
    row = conn.execute(
        select(channel_outbox).where(channel_outbox.c.channel_id == channel_id, condition)
    ).one_or_none()
    if row is None:
        return False
    try:
        new = OutboxStatus(status)
    except ValueError:
        return False
    current = OutboxStatus(row.status)
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if platform_id and not row.platform_id:
        values["platform_id"] = platform_id
    if current in (OutboxStatus.SENDING, OutboxStatus.UNKNOWN) and new != OutboxStatus.FAILED:
        values["sent_at"] = row.sent_at or datetime.now(UTC)
    if RANK[new] > RANK[current]:
        values["status"] = new
        if new == OutboxStatus.FAILED:
            values.update(error=(error or "the platform reported the message failed")[:500])
    conn.execute(update(channel_outbox).where(channel_outbox.c.id == row.id).values(values))
    return True


def list_messages(
    conn: Connection,
    org_id: int,
    *,
    channel_id: str | None = None,
    conversation_id: int | None = None,
    status: OutboxStatus | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[OutboxRow], bool]:
    query = select(channel_outbox).where(channel_outbox.c.org_id == org_id)
    if channel_id is not None:
        query = query.where(channel_outbox.c.channel_id == channel_id)
    if conversation_id is not None:
        query = query.where(channel_outbox.c.conversation_id == conversation_id)
    if status is not None:
        query = query.where(channel_outbox.c.status == status)
    if before is not None:
        query = query.where(channel_outbox.c.id < before)
    rows = list(conn.execute(query.order_by(channel_outbox.c.id.desc()).limit(limit + 1)))
    return [_row(r) for r in rows[:limit]], len(rows) > limit


def for_turns(conn: Connection, turn_ids: Sequence[int]) -> dict[int, list[OutboxRow]]:
    """The delivery records of these turns, by turn."""
    out: dict[int, list[OutboxRow]] = {}
    if not turn_ids:
        return out
    rows = conn.execute(
        select(channel_outbox)
        .where(channel_outbox.c.turn_id.in_(list(turn_ids)))
        .order_by(channel_outbox.c.id)
    )
    for row in rows:
        out.setdefault(int(row.turn_id), []).append(_row(row))
    return out


def resend(conn: Connection, org_id: int, row_id: int) -> OutboxRow:
    """A failed or unknown message queued again by a person."""
    row = conn.execute(
        select(channel_outbox).where(
            id_is(channel_outbox.c.id, row_id), channel_outbox.c.org_id == org_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"outbound message {row_id} not found", param="message")
    if row.status not in (OutboxStatus.FAILED, OutboxStatus.UNKNOWN):
        raise Conflict(f"message {row_id} is {row.status}; only failed or unknown ones are resent")
    now = datetime.now(UTC)
    conn.execute(
        update(channel_outbox)
        .where(channel_outbox.c.id == row.id)
        .values(status=OutboxStatus.PENDING, available_at=now, updated_at=now)
    )
    return _row(conn.execute(select(channel_outbox).where(channel_outbox.c.id == row.id)).one())
