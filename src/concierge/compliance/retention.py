"""Retention (GDPR Art. 5(1)(e), storage limitation) and legal holds.

Each organisation's policy sets how long conversations are kept after their last message
(``retention.conversation_days``, default 365) and how long events are kept
(``retention.event_days``: usage records now, behaviour events when they arrive). The purge:

- deletes conversations idle for longer than their organisation allows (their turns and
  reports with them), unless a legal hold covers the conversation or its end user;
- deletes memories older than the same limit (same holds);
- deletes events older than ``event_days``;
- writes one audit entry per organisation with what it removed.

It runs as a scheduled job (:class:`Scheduler`): the next run time is kept in the database
(``scheduled_jobs``), so a restart neither skips nor repeats a run, and with several replicas
the one that moves the next run time forward runs it. ``concierge retention run`` and
``POST /api/retention/run`` run it at once.

A legal hold (``POST /api/orgs/{org}/holds``) is placed on a data subject or on one
conversation, with a reason; it stops both the purge and erasure until released. Placing and
releasing holds is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from concierge import background, orgs
from concierge.channels import privacy as channel_privacy
from concierge.conversations import erasure, store
from concierge.errors import ConciergeError, Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.governance import policy as policies
from concierge.metering import ledger
from concierge.store import Database, aware, id_is
from concierge.store.tables import legal_holds, scheduled_jobs

log = logging.getLogger(__name__)
JOB = "retention"
JOB_ACTOR = "system:retention"


# -- legal holds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    id: int
    org_id: int
    end_user_id: int | None
    conversation_id: int | None
    reason: str
    created_at: datetime
    created_by: str
    released_at: datetime | None
    released_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "legal_hold",
            "end_user_id": self.end_user_id,
            "conversation_id": self.conversation_id,
            "reason": self.reason,
            "active": self.released_at is None,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "released_at": self.released_at.isoformat() if self.released_at else None,
            "released_by": self.released_by,
        }


def _hold(row: Any) -> Hold:
    return Hold(
        int(row.id),
        row.org_id,
        row.end_user_id,
        row.conversation_id,
        row.reason,
        aware(row.created_at),
        row.created_by,
        aware(row.released_at),
        row.released_by,
    )


def place_hold(
    conn: Connection,
    org_id: int,
    *,
    end_user_ids: list[int] | None = None,
    conversation_id: int | None = None,
    reason: str,
    actor: str,
) -> list[Hold]:
    """Hold a subject (each of their end-user identities) or one conversation."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("a legal hold needs a reason", param="reason")
    if conversation_id is not None:
        try:
            store.get(conn, org_id, conversation_id)
        except NotFound:
            raise NotFound(
                f"conversation {conversation_id} not found", param="conversation_id"
            ) from None
        targets: list[dict[str, Any]] = [{"conversation_id": conversation_id}]
    elif end_user_ids:
        targets = [{"end_user_id": u} for u in end_user_ids]
    else:
        raise InvalidRequest("give a subject or a conversation to hold")
    now = datetime.now(UTC)
    made = []
    for target in targets:
        result = conn.execute(
            insert(legal_holds).values(
                org_id=org_id,
                reason=reason[:2000],
                created_at=now,
                created_by=actor[:200],
                **target,
            )
        )
        assert result.inserted_primary_key is not None
        hold_id = int(result.inserted_primary_key[0])
        what = next(iter(target.items()))
        audit.record(
            conn,
            "hold.placed",
            actor=actor,
            org_id=org_id,
            target=f"{what[0].removesuffix('_id')}:{what[1]}",
            details={"hold_id": hold_id, "reason": reason[:500]},
        )
        made.append(_get_hold(conn, org_id, hold_id))
    return made


def _get_hold(conn: Connection, org_id: int, hold_id: int) -> Hold:
    row = conn.execute(
        select(legal_holds).where(id_is(legal_holds.c.id, hold_id), legal_holds.c.org_id == org_id)
    ).first()
    if row is None:
        raise NotFound(f"legal hold {hold_id} not found", param="hold")
    return _hold(row)


def release_hold(conn: Connection, org_id: int, hold_id: int, *, actor: str) -> Hold:
    current = _get_hold(conn, org_id, hold_id)
    if current.released_at is not None:
        raise Conflict(f"legal hold {hold_id} was already released")
    conn.execute(
        update(legal_holds)
        .where(legal_holds.c.id == hold_id)
        .values(released_at=datetime.now(UTC), released_by=actor[:200])
    )
    audit.record(
        conn,
        "hold.released",
        actor=actor,
        org_id=org_id,
        target=f"hold:{hold_id}",
        details={"hold_id": hold_id},
    )
    return _get_hold(conn, org_id, hold_id)


def holds(conn: Connection, org_id: int, *, active_only: bool = True) -> list[Hold]:
    query = select(legal_holds).where(legal_holds.c.org_id == org_id)
    if active_only:
        query = query.where(legal_holds.c.released_at.is_(None))
    return [_hold(r) for r in conn.execute(query.order_by(legal_holds.c.id))]


def held_users(conn: Connection, org_id: int) -> set[int]:
    return {h.end_user_id for h in holds(conn, org_id) if h.end_user_id is not None}


def held_conversations(conn: Connection, org_id: int) -> set[int]:
    return {h.conversation_id for h in holds(conn, org_id) if h.conversation_id is not None}


# -- the purge -------------------------------------------------------------------------------


def purge_org(conn: Connection, org_id: int, now: datetime, *, actor: str) -> dict[str, int]:
    """Apply one organisation's retention policy; returns what was removed (audited)."""
    policy, _ = policies.get(conn, org_id)
    removed: dict[str, int] = {"conversations": 0, "memories": 0, "end_users": 0, "events": 0}
    days = policy.retention.conversation_days
    if days is not None:
        cutoff, keep = now - timedelta(days=days), held_conversations(conn, org_id)
        removed.update(
            erasure.purge_idle(
                conn,
                org_id,
                cutoff,
                keep_users=held_users(conn, org_id),
                keep_conversations=keep,
            )
        )
        removed.update(channel_privacy.purge(conn, org_id, cutoff, keep_conversations=keep))
    if policy.retention.event_days is not None:
        removed["events"] = ledger.purge(
            conn, org_id, now - timedelta(days=policy.retention.event_days)
        )
    if any(removed.values()):
        audit.record(
            conn,
            "retention.purged",
            actor=actor,
            org_id=org_id,
            target=f"org:{org_id}",
            details={
                "removed": removed,
                "conversation_days": days,
                "event_days": policy.retention.event_days,
            },
        )
    return removed


def purge(db: Database, now: datetime | None = None, *, actor: str) -> dict[str, dict[str, int]]:
    """Apply every organisation's policy, one transaction per organisation."""
    now = now or datetime.now(UTC)
    report: dict[str, dict[str, int]] = {}
    for org in db.read_sync(orgs.list_all):

        def one(conn: Connection, org_id: int = org.id) -> dict[str, int]:
            return purge_org(conn, org_id, now, actor=actor)

        report[org.slug] = db.write_sync(one)
    return report


# -- the schedule ----------------------------------------------------------------------------


def claim(conn: Connection, job: str, now: datetime, interval: float) -> bool:
    """Whether this process runs ``job`` now: the row's next run time is due and this call
    moved it forward (a conditional UPDATE, so exactly one replica wins)."""
    row = conn.execute(
        select(scheduled_jobs.c.next_run_at).where(scheduled_jobs.c.name == job)
    ).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(scheduled_jobs).values(name=job, next_run_at=now))
        except IntegrityError:  # another replica made the row first: it runs this time
            return False
        due = now
    else:
        due = aware(row.next_run_at)
    if due > now:
        return False
    result = conn.execute(
        update(scheduled_jobs)
        .where(
            scheduled_jobs.c.name == job,
            or_(scheduled_jobs.c.next_run_at == due, scheduled_jobs.c.next_run_at.is_(None)),
        )
        .values(next_run_at=now + timedelta(seconds=interval))
    )
    return result.rowcount == 1


def finished(conn: Connection, job: str, status: str, result: dict[str, Any]) -> None:
    conn.execute(
        update(scheduled_jobs)
        .where(scheduled_jobs.c.name == job)
        .values(last_run_at=datetime.now(UTC), last_status=status, last_result=result)
    )


def job_state(conn: Connection, job: str = JOB) -> dict[str, Any] | None:
    row = conn.execute(select(scheduled_jobs).where(scheduled_jobs.c.name == job)).first()
    if row is None:
        return None
    return {
        "job": job,
        "next_run_at": aware(row.next_run_at).isoformat(),
        "last_run_at": aware(row.last_run_at).isoformat() if row.last_run_at else None,
        "last_status": row.last_status,
        "last_result": row.last_result,
    }


class Scheduler:
    """Runs the retention purge every ``interval`` seconds, across restarts and replicas."""

    def __init__(self, db: Database, interval: float, poll: float = 60.0) -> None:
        self.db = db
        self.interval = interval
        self.poll = min(poll, interval)
        self._task: asyncio.Task[None] | None = None
        self._purging: asyncio.Future[dict[str, dict[str, int]]] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await background.stop(task)
        if self._purging is not None:
            # A purge runs in a worker thread: let it finish its transaction first.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._purging)

    async def run_if_due(self) -> dict[str, dict[str, int]] | None:
        now = datetime.now(UTC)
        if not await self.db.write(lambda conn: claim(conn, JOB, now, self.interval)):
            return None
        loop = asyncio.get_running_loop()
        self._purging = loop.run_in_executor(None, lambda: purge(self.db, actor=JOB_ACTOR))
        try:
            report = await asyncio.shield(self._purging)
        except (SQLAlchemyError, ConciergeError, OSError) as exc:
            log.exception("the retention purge failed")
            failure = {"error": type(exc).__name__}
            await self.db.write(lambda conn: finished(conn, JOB, "failed", failure))
            return None
        await self.db.write(lambda conn: finished(conn, JOB, "done", {"orgs": report}))
        return report

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_if_due()
            except (SQLAlchemyError, OSError):  # the database was away: try again next tick
                log.exception("the retention scheduler could not check its job")
            await asyncio.sleep(self.poll)
