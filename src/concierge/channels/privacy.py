"""What the channels keep about a person, for the governance workflows: their identity on a
platform (a phone number, a PSID, a Telegram id: personal data), the events they sent, the
messages sent to them with their delivery records, and their files. Exported, erased and
purged by retention with the rest of their data (``concierge.compliance``)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from concierge.channels.outbox import OutboxStatus, _row
from concierge.channels.queue import EventStatus, _queued
from concierge.store import aware
from concierge.store.tables import (
    channel_events,
    channel_media,
    channel_outbox,
    channel_threads,
    channels,
)

FINAL_EVENTS = [EventStatus.DONE, EventStatus.FAILED, EventStatus.IGNORED]
FINAL_MESSAGES = [
    OutboxStatus.SENT,
    OutboxStatus.DELIVERED,
    OutboxStatus.READ,
    OutboxStatus.FAILED,
    OutboxStatus.UNKNOWN,
]


def _threads(conn: Connection, org_id: int, channel_type: str, sender: str) -> list[Any]:
    return list(
        conn.execute(
            select(channel_threads, channels.c.type)
            .join(channels, channels.c.id == channel_threads.c.channel_id)
            .where(
                channel_threads.c.org_id == org_id,
                channels.c.type == channel_type,
                channel_threads.c.sender == sender,
            )
            .order_by(channel_threads.c.id)
        )
    )


def subject_data(
    conn: Connection, org_id: int, channel_type: str, sender: str
) -> list[dict[str, Any]]:
    """The person's threads on the organisation's channels of this type, with every event,
    message and file (files inline, base64)."""
    out = []
    for thread in _threads(conn, org_id, channel_type, sender):
        events = conn.execute(
            select(channel_events)
            .where(channel_events.c.thread_id == thread.id)
            .order_by(channel_events.c.id)
        )
        messages = conn.execute(
            select(channel_outbox)
            .where(channel_outbox.c.thread_id == thread.id)
            .order_by(channel_outbox.c.id)
        )
        files = conn.execute(
            select(channel_media)
            .where(channel_media.c.thread_id == thread.id)
            .order_by(channel_media.c.id)
        )
        out.append(
            {
                "channel_id": thread.channel_id,
                "channel_type": thread.type,
                "identity": thread.sender,
                "conversation_id": thread.conversation_id,
                "last_inbound_at": (
                    aware(thread.last_inbound_at).isoformat() if thread.last_inbound_at else None
                ),
                "events": [{**_queued(e).to_dict(), "payload": e.payload} for e in events],
                "messages": [_row(m).to_dict() for m in messages],
                "media": [
                    {
                        "id": f.id,
                        "turn_id": f.turn_id,
                        "kind": f.kind,
                        "mime_type": f.mime_type,
                        "filename": f.filename,
                        "bytes": f.size,
                        "sha256": f.sha256,
                        "data_base64": base64.b64encode(bytes(f.data)).decode(),
                    }
                    for f in files
                ],
            }
        )
    return out


def _erase_threads(conn: Connection, ids: list[int]) -> dict[str, int]:
    counts = {
        "channel_identities": 0,
        "channel_events": 0,
        "channel_messages": 0,
        "channel_media": 0,
    }
    if not ids:
        return counts
    counts["channel_events"] = conn.execute(
        delete(channel_events).where(channel_events.c.thread_id.in_(ids))
    ).rowcount
    counts["channel_messages"] = conn.execute(
        delete(channel_outbox).where(channel_outbox.c.thread_id.in_(ids))
    ).rowcount
    counts["channel_media"] = conn.execute(
        delete(channel_media).where(channel_media.c.thread_id.in_(ids))
    ).rowcount
    counts["channel_identities"] = conn.execute(
        delete(channel_threads).where(channel_threads.c.id.in_(ids))
    ).rowcount
    return counts


def erase(conn: Connection, org_id: int, channel_type: str, sender: str) -> dict[str, int]:
    """Delete the person's identity on the channels of this type and all it carried."""
    return _erase_threads(conn, [int(t.id) for t in _threads(conn, org_id, channel_type, sender)])


def purge(
    conn: Connection, org_id: int, cutoff: datetime, *, keep_conversations: set[int]
) -> dict[str, int]:
    """Retention: processed events, settled messages and files older than ``cutoff`` (those of
    held conversations stay), then identities left with nothing and no conversation."""
    kept = list(keep_conversations)
    held = select(channel_threads.c.id).where(channel_threads.c.conversation_id.in_(kept))
    removed = {
        "channel_events": conn.execute(
            delete(channel_events).where(
                channel_events.c.org_id == org_id,
                channel_events.c.received_at < cutoff,
                channel_events.c.status.in_(FINAL_EVENTS),
                ~channel_events.c.thread_id.in_(held),
            )
        ).rowcount,
        "channel_messages": conn.execute(
            delete(channel_outbox).where(
                channel_outbox.c.org_id == org_id,
                channel_outbox.c.created_at < cutoff,
                channel_outbox.c.status.in_(FINAL_MESSAGES),
                ~channel_outbox.c.thread_id.in_(held),
            )
        ).rowcount,
        "channel_media": conn.execute(
            delete(channel_media).where(
                channel_media.c.org_id == org_id,
                channel_media.c.created_at < cutoff,
                ~channel_media.c.thread_id.in_(held),
            )
        ).rowcount,
    }
    idle = select(channel_threads.c.id).where(
        channel_threads.c.org_id == org_id,
        ~channel_threads.c.id.in_(held),
        ~select(channel_events.c.id)
        .where(channel_events.c.thread_id == channel_threads.c.id)
        .exists(),
        ~select(channel_outbox.c.id)
        .where(channel_outbox.c.thread_id == channel_threads.c.id)
        .exists(),
        ~select(channel_media.c.id)
        .where(channel_media.c.thread_id == channel_threads.c.id)
        .exists(),
    )
    gone = [int(r.id) for r in conn.execute(idle)]
    removed["channel_identities"] = (
        conn.execute(delete(channel_threads).where(channel_threads.c.id.in_(gone))).rowcount
        if gone
        else 0
    )
    return removed
