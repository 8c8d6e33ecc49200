"""Uploaded files, as OpenAI's ``/v1/files`` keeps them: bytes with a name and a purpose,
owned by one organisation, to be added to vector stores (knowledge bases) by id."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from concierge.errors import InvalidRequest, NotFound
from concierge.store import aware
from concierge.store.tables import files

PURPOSES = ("assistants", "user_data", "batch", "fine-tune", "vision", "evals")


@dataclass(frozen=True)
class File:
    id: str
    org_id: int
    filename: str
    purpose: str
    content_type: str | None
    bytes: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at.timestamp()),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


_COLUMNS = [c for c in files.c if c.name != "content"]


def _row(row: Any) -> File:
    return File(
        row.public_id,
        row.org_id,
        row.filename,
        row.purpose,
        row.content_type,
        row.bytes,
        aware(row.created_at),
    )


def create(
    conn: Connection,
    org_id: int,
    filename: str,
    purpose: str,
    content: bytes,
    content_type: str | None = None,
) -> File:
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    filename = filename.strip().replace("\x00", "")[:500]
    if not filename:
        raise InvalidRequest("the file has no name", param="file")
    public_id = "file-" + secrets.token_hex(12)
    conn.execute(
        insert(files).values(
            public_id=public_id,
            org_id=org_id,
            filename=filename,
            purpose=purpose,
            content_type=content_type,
            bytes=len(content),
            content=content,
            created_at=datetime.now(UTC),
        )
    )
    return get(conn, org_id, public_id)


def get(conn: Connection, org_id: int, file_id: str) -> File:
    row = conn.execute(
        select(*_COLUMNS).where(files.c.public_id == file_id, files.c.org_id == org_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return _row(row)


def content(conn: Connection, org_id: int, file_id: str) -> bytes:
    row = conn.execute(
        select(files.c.content).where(files.c.public_id == file_id, files.c.org_id == org_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return bytes(row.content)


def list_all(conn: Connection, org_id: int, purpose: str | None = None) -> list[File]:
    query = select(*_COLUMNS).where(files.c.org_id == org_id)
    if purpose:
        query = query.where(files.c.purpose == purpose)
    return [_row(r) for r in conn.execute(query.order_by(files.c.id.desc()))]


def delete(conn: Connection, org_id: int, file_id: str) -> File:
    """Delete the file (documents made from it stay in their vector stores, as at OpenAI)."""
    found = get(conn, org_id, file_id)
    conn.execute(files.delete().where(files.c.public_id == file_id, files.c.org_id == org_id))
    return found
