"""The documents of a knowledge base: listed, read and deleted (ingestion adds them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Select, func, select

from concierge.errors import InvalidRequest, NotFound
from concierge.knowledge import bases
from concierge.knowledge.bases import KnowledgeBase
from concierge.store import aware
from concierge.store.tables import chunks, documents


class DocumentStatus(StrEnum):
    PENDING = "pending"  # stored, waiting to be chunked and embedded
    READY = "ready"  # searchable
    FAILED = "failed"  # ``error`` says why


STATUSES = tuple(DocumentStatus)
_COLUMNS = [c for c in documents.c if c.name not in ("original", "text")]


@dataclass(frozen=True)
class Document:
    id: int
    kb_id: int
    external_id: str
    title: str | None
    source: str | None
    format: str
    content_type: str | None
    size_bytes: int
    content_hash: str
    metadata: dict[str, Any]
    status: DocumentStatus
    error: str | None
    chunk_count: int
    job_id: int | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "knowledge_base.document",
            "knowledge_base_id": self.kb_id,
            "external_id": self.external_id,
            "title": self.title,
            "source": self.source,
            "format": self.format,
            "content_type": self.content_type,
            "bytes": self.size_bytes,
            "sha256": self.content_hash,
            "metadata": self.metadata,
            "status": str(self.status),
            "error": self.error,
            "chunk_count": self.chunk_count,
            "job_id": self.job_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _row(row: Any) -> Document:
    return Document(
        row.id,
        row.kb_id,
        row.external_id,
        row.title,
        row.source,
        row.format,
        row.content_type,
        row.size_bytes,
        row.content_hash,
        dict(row.metadata or {}),
        DocumentStatus(row.status),
        row.error,
        row.chunk_count,
        row.job_id,
        aware(row.created_at),
        aware(row.updated_at),
    )


def _by_ref(query: Select[Any], ref: int | str) -> Select[Any]:
    """A document by its id (an int) or by its external id (a str, even one of digits: corpus
    ids often are)."""
    if isinstance(ref, int):
        return query.where(documents.c.id == ref)
    return query.where(documents.c.external_id == ref)


def get(conn: Connection, kb: KnowledgeBase, ref: int | str) -> Document:
    query = _by_ref(select(*_COLUMNS).where(documents.c.kb_id == kb.id), ref)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"document '{ref}' not found", param="document")
    return _row(row)


def text(conn: Connection, kb: KnowledgeBase, ref: int | str) -> str:
    """The text extracted from a document."""
    query = _by_ref(select(documents.c.text).where(documents.c.kb_id == kb.id), ref)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"document '{ref}' not found", param="document")
    return str(row.text)


def list_page(
    conn: Connection,
    kb: KnowledgeBase,
    *,
    limit: int = 100,
    after: int | None = None,
    status: str | None = None,
    external_id: str | None = None,
    job_id: int | None = None,
) -> tuple[list[Document], bool]:
    """Up to ``limit`` documents in id order after ``after``, and whether more follow."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000", param="limit")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    query = select(*_COLUMNS).where(documents.c.kb_id == kb.id)
    if after is not None:
        query = query.where(documents.c.id > after)
    if status is not None:
        query = query.where(documents.c.status == status)
    if external_id is not None:
        query = query.where(documents.c.external_id == external_id)
    if job_id is not None:
        query = query.where(documents.c.job_id == job_id)
    rows = conn.execute(query.order_by(documents.c.id).limit(limit + 1)).all()
    return [_row(r) for r in rows[:limit]], len(rows) > limit


def chunk_count(conn: Connection, kb: KnowledgeBase) -> int:
    """How many chunks ``kb``'s documents make."""
    return int(conn.execute(select(func.count()).where(chunks.c.kb_id == kb.id)).scalar_one())


def counts(conn: Connection, kb: KnowledgeBase) -> dict[str, int]:
    """Documents of ``kb`` by status, and their total size in bytes (``bytes``)."""
    rows = conn.execute(
        select(documents.c.status, func.count(), func.coalesce(func.sum(documents.c.size_bytes), 0))
        .where(documents.c.kb_id == kb.id)
        .group_by(documents.c.status)
    ).all()
    found = {row[0]: int(row[1]) for row in rows}
    return {
        **{str(status): found.get(status, 0) for status in STATUSES},
        "bytes": sum(int(row[2]) for row in rows),
    }


def delete(conn: Connection, kb: KnowledgeBase, ref: int | str) -> Document:
    """Delete a document and its chunks; it leaves search at once (the index version moves)."""
    doc = get(conn, kb, ref)
    conn.execute(documents.delete().where(documents.c.id == doc.id))
    bases.bump_version(conn, kb.id)
    return doc


SUBJECT_KEY = "subject"  # metadata naming the person a document is about (erasure finds it)


def _about(org_id: int, subject: str) -> Any:
    return (documents.c.org_id == org_id) & (
        documents.c.metadata[SUBJECT_KEY].as_string() == subject
    )


def about_subject(conn: Connection, org_id: int, subject: str) -> list[Document]:
    """Documents whose metadata says they are about ``subject`` (``{"subject": "<id>"}``)."""
    rows = conn.execute(select(documents).where(_about(org_id, subject)).order_by(documents.c.id))
    return [_row(r) for r in rows]


def erase_subject(conn: Connection, org_id: int, subject: str) -> dict[str, Any]:
    """Delete the documents about ``subject``, their chunks and vectors; the knowledge bases'
    indexes move on at once (their versions change). Returns the counts, and the deleted ids
    and passage texts (to scrub quotations of them elsewhere)."""
    found = about_subject(conn, org_id, subject)
    if not found:
        return {"documents": 0, "chunks": 0}
    ids = [d.id for d in found]
    passages = [
        str(r.text)
        for r in conn.execute(select(chunks.c.text).where(chunks.c.document_id.in_(ids)))
    ]
    chunk_count = conn.execute(
        select(func.count()).select_from(chunks).where(chunks.c.document_id.in_(ids))
    ).scalar_one()
    conn.execute(documents.delete().where(documents.c.id.in_(ids)))
    for kb_id in sorted({d.kb_id for d in found}):
        bases.bump_version(conn, kb_id)
    return {"documents": len(found), "chunks": int(chunk_count), "passages": passages, "ids": ids}
