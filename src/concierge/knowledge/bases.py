"""Knowledge bases: named collections of documents, each owned by one organisation.

Every function takes the caller's organisation and filters by it inside the query: a knowledge
base of another organisation is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge import names
from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.store import aware, id_in, id_is
from concierge.store.tables import knowledge_bases


@dataclass(frozen=True)
class KnowledgeBase:
    id: int
    org_id: int
    name: str
    description: str | None
    embedding_model: str
    chunk_tokens: int
    chunk_overlap: int
    version: int
    created_at: datetime
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "knowledge_base",
            "name": self.name,
            "description": self.description,
            "embedding_model": self.embedding_model,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "metadata": self.metadata or {},
            "created_at": self.created_at.isoformat(),
        }


def _row(row: Any) -> KnowledgeBase:
    return KnowledgeBase(
        row.id,
        row.org_id,
        row.name,
        row.description,
        row.embedding_model,
        row.chunk_tokens,
        row.chunk_overlap,
        row.version,
        aware(row.created_at),
        row.metadata,
    )


def validate_name(name: str) -> str:
    return names.validate_name(name, "a knowledge base")


def create(
    conn: Connection,
    org_id: int,
    name: str,
    *,
    embedding_model: str,
    description: str | None = None,
    chunk_tokens: int = 200,
    chunk_overlap: int = 30,
    metadata: dict[str, Any] | None = None,
) -> KnowledgeBase:
    name = validate_name(name)
    if not 32 <= chunk_tokens <= 8192:
        raise InvalidRequest("chunk_tokens must be between 32 and 8192", param="chunk_tokens")
    if not 0 <= chunk_overlap < chunk_tokens // 2:
        raise InvalidRequest(
            "chunk_overlap must be at least 0 and less than half of chunk_tokens",
            param="chunk_overlap",
        )
    values = {
        "org_id": org_id,
        "name": name,
        "description": description,
        "embedding_model": embedding_model,
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "version": 0,
        "created_at": datetime.now(UTC),
        "metadata": metadata,
    }
    try:
        with conn.begin_nested():
            key = conn.execute(insert(knowledge_bases).values(values)).inserted_primary_key
    except IntegrityError:
        raise Conflict(f"a knowledge base named '{name}' already exists") from None
    assert key is not None
    kb_id = key[0]
    return _row(conn.execute(select(knowledge_bases).where(knowledge_bases.c.id == kb_id)).one())


def get_many(conn: Connection, org_id: int, ids: Sequence[int]) -> list[KnowledgeBase]:
    """The organisation's knowledge bases among ``ids``, in that order; missing ones skipped."""
    if not ids:
        return []
    rows = conn.execute(
        select(knowledge_bases).where(
            knowledge_bases.c.org_id == org_id, id_in(knowledge_bases.c.id, ids)
        )
    )
    found = {row.id: _row(row) for row in rows}
    return [found[i] for i in dict.fromkeys(ids) if i in found]


def get(conn: Connection, org_id: int, ref: int | str) -> KnowledgeBase:
    """By id, or by name (a string of digits is taken as an id)."""
    query = select(knowledge_bases).where(knowledge_bases.c.org_id == org_id)
    if isinstance(ref, int) or names.is_row_id(ref):
        query = query.where(id_is(knowledge_bases.c.id, int(ref)))
    else:
        query = query.where(knowledge_bases.c.name == ref.strip())
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"knowledge base '{ref}' not found", param="knowledge_base")
    return _row(row)


def list_all(conn: Connection, org_id: int) -> list[KnowledgeBase]:
    rows = conn.execute(
        select(knowledge_bases)
        .where(knowledge_bases.c.org_id == org_id)
        .order_by(knowledge_bases.c.name)
    )
    return [_row(r) for r in rows]


def delete_kb(conn: Connection, org_id: int, kb_id: int) -> None:
    """Delete a knowledge base; its documents, chunks and jobs go with it (ON DELETE CASCADE,
    which the store switches on for SQLite too)."""
    get(conn, org_id, kb_id)
    conn.execute(delete(knowledge_bases).where(knowledge_bases.c.id == kb_id))


def bump_version(conn: Connection, kb_id: int) -> None:
    """Mark the knowledge base's chunks as changed (search caches reload)."""
    conn.execute(
        update(knowledge_bases)
        .where(knowledge_bases.c.id == kb_id)
        .values(version=knowledge_bases.c.version + 1)
    )


def update_kb(
    conn: Connection,
    org_id: int,
    kb_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> KnowledgeBase:
    """Rename a knowledge base or change its description or metadata (None: unchanged)."""
    get(conn, org_id, kb_id)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = validate_name(name)
    if description is not None:
        values["description"] = description
    if metadata is not None:
        values["metadata"] = metadata
    if values:
        try:
            with conn.begin_nested():
                conn.execute(
                    update(knowledge_bases).where(knowledge_bases.c.id == kb_id).values(values)
                )
        except IntegrityError:
            raise Conflict(f"a knowledge base named '{name}' already exists") from None
    return get(conn, org_id, kb_id)
