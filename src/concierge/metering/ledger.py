"""The usage ledger: one append-only row per request, written in batches off the hot path.

Requests hand their record to :meth:`UsageLedger.record` and move on; a background task writes
what has gathered every ``usage_flush_seconds`` in one transaction. Each record carries the
request's unique id (the table has a unique constraint on it), so a record can never be counted
twice, even if a batch is retried. The table refuses UPDATE and DELETE (database triggers). On a
clean shutdown everything is flushed; a crash loses at most the last interval's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from concierge import keys
from concierge.store import Database
from concierge.store.tables import usage_records

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    created_at: datetime
    org_id: int | None
    api_key_id: int | None
    endpoint: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    error_code: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageLedger:
    def __init__(self, db: Database, flush_seconds: float = 0.05, max_batch: int = 1000) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()  # one flush at a time: records commit in order
        self._stopping = False

    def record(self, rec: UsageRecord) -> None:
        self._pending.append(rec)
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="usage-ledger")

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                await self.db.write(lambda conn, b=batch: insert_records(conn, b))  # type: ignore[misc]
            except IntegrityError:
                # Some request ids are already recorded (a batch retried after a failure that
                # happened after its commit): write only the others.
                await self.db.write(lambda conn, b=batch: write_records(conn, b))  # type: ignore[misc]
            except DataError:
                # A record the database refuses: write the others one by one, log the bad one.
                await self.db.write(lambda conn, b=batch: write_one_by_one(conn, b))  # type: ignore[misc]
            except OperationalError:
                # The database is unreachable or restarting: keep the records for the next
                # flush; request ids make the retry safe.
                log.warning("usage ledger: database unavailable; %d records wait", len(batch))
                self._pending[:0] = batch
                return

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()


def insert_records(conn: Connection, batch: list[UsageRecord]) -> None:
    """The common case: one multi-row insert, no savepoint."""
    conn.execute(insert(usage_records), [asdict(r) for r in batch])


def write_records(conn: Connection, batch: list[UsageRecord]) -> None:
    """Insert ``batch``, skipping request ids already recorded."""
    rows = [asdict(r) for r in batch]
    try:  # a savepoint: a duplicate rolls back only this insert
        with conn.begin_nested():
            conn.execute(insert(usage_records), rows)
    except IntegrityError:
        # Some request ids are already recorded (a retried batch): insert the others only.
        ids = [r["request_id"] for r in rows]
        done: set[str] = set(
            conn.execute(
                select(usage_records.c.request_id).where(usage_records.c.request_id.in_(ids))
            ).scalars()
        )
        fresh = [r for r in rows if r["request_id"] not in done]
        if fresh:
            conn.execute(insert(usage_records), fresh)


def write_one_by_one(conn: Connection, batch: list[UsageRecord]) -> None:
    for record in batch:
        try:
            write_records(conn, [record])
        except DataError:
            log.error("usage ledger: the database refused record %s; dropped", record.request_id)


def tokens_since(conn: Connection, api_key_id: int, since: datetime) -> int:
    total: int = conn.execute(
        select(
            func.coalesce(
                func.sum(usage_records.c.prompt_tokens + usage_records.c.completion_tokens), 0
            )
        ).where(usage_records.c.api_key_id == api_key_id, usage_records.c.created_at >= since)
    ).scalar_one()
    return int(total)


def summary(
    conn: Connection,
    *,
    org_id: int | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Usage grouped by UTC day, model and key: requests, errors, tokens, mean latency."""
    day = func.date(usage_records.c.created_at).label("day")
    query = (
        select(
            day,
            usage_records.c.model,
            usage_records.c.api_key_id,
            func.count().label("requests"),
            func.sum(case((usage_records.c.status >= 400, 1), else_=0)).label("errors"),
            func.sum(usage_records.c.prompt_tokens).label("prompt_tokens"),
            func.sum(usage_records.c.completion_tokens).label("completion_tokens"),
            func.avg(usage_records.c.latency_ms).label("mean_latency_ms"),
        )
        .group_by(day, usage_records.c.model, usage_records.c.api_key_id)
        .order_by(day, usage_records.c.model, usage_records.c.api_key_id)
    )
    if org_id is not None:
        query = query.where(usage_records.c.org_id == org_id)
    if since is not None:
        query = query.where(
            usage_records.c.created_at >= datetime.combine(since, datetime.min.time(), UTC)
        )
    if until is not None:
        end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
        query = query.where(usage_records.c.created_at < end)
    rows = conn.execute(query).all()
    shown = keys.prefixes(conn, (r.api_key_id for r in rows if r.api_key_id is not None))
    return [
        {
            "day": str(row.day),
            "model": row.model,
            "api_key_id": row.api_key_id,
            "key_prefix": shown.get(row.api_key_id),
            "requests": int(row.requests),
            "errors": int(row.errors or 0),
            "prompt_tokens": int(row.prompt_tokens or 0),
            "completion_tokens": int(row.completion_tokens or 0),
            "mean_latency_ms": round(float(row.mean_latency_ms or 0), 2),
        }
        for row in rows
    ]


def purge(conn: Connection, org_id: int, before: datetime) -> int:
    """Delete the organisation's usage records older than ``before`` (retention)."""
    return int(
        conn.execute(
            delete(usage_records).where(
                usage_records.c.org_id == org_id, usage_records.c.created_at < before
            )
        ).rowcount
    )
