"""Ingestion jobs: what a batch of documents sent together is doing, for the client to poll."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from concierge.errors import NotFound
from concierge.store import aware
from concierge.store.tables import ingestion_jobs


@dataclass
class JobStatus:
    id: int
    kb_id: int
    status: str
    total: int
    done: int
    failed: int
    skipped: int
    errors: list[dict[str, str]]
    created_at: datetime
    finished_at: datetime | None

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "ingestion_job",
            "knowledge_base_id": self.kb_id,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": self.pending,
            "errors": self.errors,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def job_of(row: Any) -> JobStatus:
    """A job as read from the ``ingestion_jobs`` table."""
    return JobStatus(
        row.id,
        row.kb_id,
        row.status,
        row.total,
        row.done,
        row.failed,
        row.skipped,
        list(row.errors or []),
        aware(row.created_at),
        aware(row.finished_at),
    )


def get_job(conn: Connection, org_id: int, job_id: int) -> JobStatus:
    row = conn.execute(
        select(ingestion_jobs).where(
            ingestion_jobs.c.id == job_id, ingestion_jobs.c.org_id == org_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"ingestion job {job_id} not found", param="job")
    return job_of(row)
