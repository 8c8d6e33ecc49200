"""Files customers send on channels: downloaded from the platform, stored with the turn, shown
to people; read by a registered media reader (transcription, vision) where there is one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, insert, select, update

from concierge.errors import NotFound
from concierge.store import aware, id_in, id_is
from concierge.store.tables import channel_media


class MediaReader(Protocol):
    """Turns a customer's file into text the assistant can answer (a transcript of a voice
    note, a description of a photo). Registered with the ``register_media_readers`` hook."""

    name: str
    kinds: frozenset[str]  # the media kinds it reads: voice, audio, image, video, document

    async def read(self, data: bytes, mime_type: str | None) -> str:
        """The text of the file (raise to give up: the assistant then says it cannot)."""
        ...


@dataclass(frozen=True)
class StoredMedia:
    id: int
    channel_id: str
    turn_id: int | None
    kind: str
    mime_type: str | None
    filename: str | None
    size: int
    sha256: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "channel.media",
            "channel_id": self.channel_id,
            "turn_id": self.turn_id,
            "kind": self.kind,
            "mime_type": self.mime_type,
            "filename": self.filename,
            "bytes": self.size,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
        }


def _stored(row: Any) -> StoredMedia:
    return StoredMedia(
        row.id,
        row.channel_id,
        row.turn_id,
        row.kind,
        row.mime_type,
        row.filename,
        row.size,
        row.sha256,
        aware(row.created_at),
    )


def save(
    conn: Connection,
    *,
    org_id: int,
    channel_id: str,
    thread_id: int,
    kind: str,
    data: bytes,
    mime_type: str | None,
    filename: str | None,
) -> int:
    key = conn.execute(
        insert(channel_media).values(
            org_id=org_id,
            channel_id=channel_id,
            thread_id=thread_id,
            kind=kind,
            mime_type=(mime_type or "")[:200] or None,
            filename=(filename or "")[:300] or None,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data,
            created_at=datetime.now(UTC),
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def attach(conn: Connection, media_ids: list[int], turn_id: int) -> None:
    if media_ids:
        conn.execute(
            update(channel_media)
            .where(id_in(channel_media.c.id, media_ids))
            .values(turn_id=turn_id)
        )


def of_turns(conn: Connection, org_id: int, turn_ids: list[int]) -> dict[int, list[StoredMedia]]:
    out: dict[int, list[StoredMedia]] = {}
    if not turn_ids:
        return out
    rows = conn.execute(
        select(*[c for c in channel_media.c if c.name != "data"]).where(
            channel_media.c.org_id == org_id, channel_media.c.turn_id.in_(turn_ids)
        )
    )
    for row in rows:
        out.setdefault(int(row.turn_id), []).append(_stored(row))
    return out


def content(conn: Connection, org_id: int, media_id: int) -> tuple[StoredMedia, bytes]:
    row = conn.execute(
        select(channel_media).where(
            id_is(channel_media.c.id, media_id), channel_media.c.org_id == org_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"media {media_id} not found", param="media")
    return _stored(row), bytes(row.data)
