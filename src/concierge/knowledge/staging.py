"""A job's sources on record before any is staged, so that staging is atomic and resumable.

:func:`create_job` writes the ingestion job and every one of its sources (a file's bytes, a
text record, a URL to fetch, an error already found) in one transaction: either the job exists
with all it was given, or nothing does. Staging then takes the sources in order, a batch at a
time, and each batch's documents are stored in the same transaction that removes its sources
(:func:`take`, which also makes two workers on one job stage each source once). A process killed
mid-way leaves a job in ``staging`` with exactly the sources still to do; :func:`unfinished`
finds it at the next start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from concierge.errors import InvalidDocument
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.corpus import CorpusRecord
from concierge.store.tables import ingestion_items, ingestion_jobs

MAX_BATCH_ITEMS = 64
MAX_BATCH_BYTES = 16 * 1024 * 1024
URL_BYTES = 8 * 1024 * 1024  # what a URL counts for in a batch before it is fetched


@dataclass
class Item:
    """One source of a job, as stored (see :class:`concierge.knowledge.ingest.Source`)."""

    id: int
    external_id: str
    data: bytes | None
    record: CorpusRecord | None
    url: str | None
    filename: str | None
    content_type: str | None
    source: str | None
    metadata: dict[str, Any]
    error: str | None


def create_job(conn: Connection, kb: KnowledgeBase, sources: Sequence[Any]) -> int:
    """The job and all its sources (``ingest.Source``), in the caller's transaction."""
    key = conn.execute(
        insert(ingestion_jobs).values(
            kb_id=kb.id,
            org_id=kb.org_id,
            status="staging" if sources else "running",
            total=len(sources),
            done=0,
            failed=0,
            skipped=0,
            errors=[],
            created_at=datetime.now(UTC),
        )
    ).inserted_primary_key
    assert key is not None
    job_id = int(key[0])
    rows = []
    for source in sources:
        record = source.record
        size = len(source.data or b"") + (
            len(record.text) + len(record.title or "") if record else 0
        )
        rows.append(
            {
                "job_id": job_id,
                "kb_id": kb.id,
                "external_id": source.external_id,
                "data": source.data,
                "record": {"title": record.title, "text": record.text} if record else None,
                "url": source.url,
                "filename": source.filename,
                "content_type": (source.content_type or "")[:200] or None,
                "source": source.source,
                "metadata": source.metadata,
                "error": source.error.message if source.error is not None else None,
                "size": URL_BYTES if source.url else size,
            }
        )
    for start in range(0, len(rows), 500):
        conn.execute(insert(ingestion_items), rows[start : start + 500])
    return job_id


def next_batch(conn: Connection, job_id: int) -> list[Item]:
    """The job's next sources in order, up to :data:`MAX_BATCH_ITEMS` and about
    :data:`MAX_BATCH_BYTES` (at least one)."""
    sizes = conn.execute(
        select(ingestion_items.c.id, ingestion_items.c.size)
        .where(ingestion_items.c.job_id == job_id)
        .order_by(ingestion_items.c.id)
        .limit(MAX_BATCH_ITEMS)
    ).all()
    chosen: list[int] = []
    total = 0
    for row in sizes:
        if chosen and total + row.size > MAX_BATCH_BYTES:
            break
        chosen.append(row.id)
        total += row.size
    if not chosen:
        return []
    rows = conn.execute(
        select(ingestion_items)
        .where(ingestion_items.c.id.in_(chosen))
        .order_by(ingestion_items.c.id)
    )
    return [
        Item(
            r.id,
            r.external_id,
            r.data,
            CorpusRecord(0, r.external_id, r.record.get("title"), r.record["text"], {})
            if r.record
            else None,
            r.url,
            r.filename,
            r.content_type,
            r.source,
            dict(r.metadata or {}),
            r.error,
        )
        for r in rows
    ]


def take(conn: Connection, item_ids: Sequence[int]) -> set[int]:
    """Remove these sources, as their documents are stored in the same transaction; the ids
    this transaction removed (another worker may have staged some already)."""
    if not item_ids:
        return set()
    removed = conn.execute(
        delete(ingestion_items)
        .where(ingestion_items.c.id.in_(list(item_ids)))
        .returning(ingestion_items.c.id)
    )
    return {int(row[0]) for row in removed}


def staged(conn: Connection, job_id: int) -> None:
    """A job whose sources are all staged moves on to ``running`` (chunking and embedding)."""
    left = conn.execute(
        select(func.count()).select_from(ingestion_items).where(ingestion_items.c.job_id == job_id)
    ).scalar_one()
    if not left:
        conn.execute(
            update(ingestion_jobs)
            .where(ingestion_jobs.c.id == job_id, ingestion_jobs.c.status == "staging")
            .values(status="running")
        )


def unfinished(conn: Connection) -> list[tuple[int, int, int]]:
    """``(org_id, kb_id, job_id)`` of every job still staging (a process stopped mid-way)."""
    rows = conn.execute(
        select(ingestion_jobs.c.org_id, ingestion_jobs.c.kb_id, ingestion_jobs.c.id)
        .where(ingestion_jobs.c.status == "staging")
        .order_by(ingestion_jobs.c.id)
    )
    return [(int(r.org_id), int(r.kb_id), int(r.id)) for r in rows]


def error_of(item: Item) -> InvalidDocument | None:
    return InvalidDocument(item.error) if item.error is not None else None
