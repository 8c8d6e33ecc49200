"""Retention and erasure of conversations (called by the governance workflows): idle
conversations purged, an end user's data gathered for export or erased, and what other
conversations quoted from erased documents scrubbed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from concierge.conversations.memory import Memory
from concierge.conversations.records import Turn
from concierge.conversations.store import EndUser, conversation_of, end_user_of
from concierge.store import aware
from concierge.store.tables import conversations, end_users, memories, turns


def purge_idle(
    conn: Connection,
    org_id: int,
    cutoff: datetime,
    *,
    keep_users: set[int],
    keep_conversations: set[int],
) -> dict[str, int]:
    """Delete the organisation's conversations idle since before ``cutoff`` (turns go with
    them), memories older than it, and end users left with nothing; held ones stay."""
    removed = {"conversations": 0, "memories": 0, "end_users": 0}
    query = select(conversations.c.id, conversations.c.end_user_id).where(
        conversations.c.org_id == org_id, conversations.c.updated_at < cutoff
    )
    doomed = [
        int(r.id)
        for r in conn.execute(query)
        if int(r.id) not in keep_conversations and int(r.end_user_id) not in keep_users
    ]
    for start in range(0, len(doomed), 500):
        batch = doomed[start : start + 500]
        removed["conversations"] += conn.execute(
            delete(conversations).where(conversations.c.id.in_(batch))
        ).rowcount
    where = [memories.c.org_id == org_id, memories.c.created_at < cutoff]
    if keep_users:
        where.append(memories.c.end_user_id.not_in(keep_users))
    removed["memories"] = conn.execute(delete(memories).where(*where)).rowcount
    orphans = select(end_users.c.id).where(
        end_users.c.org_id == org_id,
        end_users.c.last_seen_at < cutoff,
        ~select(conversations.c.id).where(conversations.c.end_user_id == end_users.c.id).exists(),
        ~select(memories.c.id).where(memories.c.end_user_id == end_users.c.id).exists(),
    )
    gone = [int(r.id) for r in conn.execute(orphans) if int(r.id) not in keep_users]
    if gone:
        removed["end_users"] = conn.execute(
            delete(end_users).where(end_users.c.id.in_(gone))
        ).rowcount
    return removed


def end_users_named(
    conn: Connection, org_id: int, external_id: str, channel: str | None = None
) -> list[EndUser]:
    """Every identity of a data subject: their external id on each channel (or one)."""
    query = select(end_users).where(
        end_users.c.org_id == org_id, end_users.c.external_id == external_id
    )
    if channel is not None:
        query = query.where(end_users.c.channel == channel)
    return [end_user_of(r) for r in conn.execute(query.order_by(end_users.c.id))]


def subject_data(conn: Connection, user: EndUser) -> dict[str, Any]:
    """Everything stored about one end user: conversations with their turns, memories."""
    rows = conn.execute(
        select(conversations)
        .where(conversations.c.end_user_id == user.id)
        .order_by(conversations.c.id)
    )
    out = []
    for row in rows:
        conversation = conversation_of(row)
        listed = conn.execute(
            select(turns).where(turns.c.conversation_id == conversation.id).order_by(turns.c.id)
        )
        out.append({**conversation.to_dict(), "turns": [Turn.from_row(t) for t in listed]})
    remembered = conn.execute(
        select(memories).where(memories.c.end_user_id == user.id).order_by(memories.c.id)
    )
    return {
        "conversations": out,
        "memories": [
            Memory(int(m.id), m.fact, aware(m.created_at), m.turn_id).to_dict() for m in remembered
        ],
    }


def erase_end_user(conn: Connection, user: EndUser) -> dict[str, int]:
    """Delete an end user and everything stored about them; counts per kind."""
    ids = [
        int(r.id)
        for r in conn.execute(
            select(conversations.c.id).where(conversations.c.end_user_id == user.id)
        )
    ]
    counts = {"conversations": len(ids), "turns": 0, "memories": 0, "end_users": 0}
    if ids:
        counts["turns"] = conn.execute(
            delete(turns).where(turns.c.conversation_id.in_(ids))
        ).rowcount
        conn.execute(delete(conversations).where(conversations.c.id.in_(ids)))
    counts["memories"] = conn.execute(
        delete(memories).where(memories.c.end_user_id == user.id)
    ).rowcount
    counts["end_users"] = conn.execute(delete(end_users).where(end_users.c.id == user.id)).rowcount
    return counts


def conversation_ids_of(conn: Connection, user: EndUser) -> list[int]:
    rows = conn.execute(
        select(conversations.c.id)
        .where(conversations.c.end_user_id == user.id)
        .order_by(conversations.c.id)
    )
    return [int(r.id) for r in rows]


ERASED = "[removed: erased personal data]"


def scrub_documents(
    conn: Connection, org_id: int, document_ids: set[int], texts: Sequence[str]
) -> int:
    """Remove what other conversations kept of erased documents: citations of them (their
    snippets quote the text) and tool results that quote their passages. Returns the number
    of turns changed. Scans the organisation's assistant turns, in batches."""
    if not document_ids:
        return 0
    changed = 0
    after = 0
    probes = [t.strip()[:80] for t in texts if t.strip()]
    while True:
        rows = list(
            conn.execute(
                select(turns.c.id, turns.c.citations, turns.c.tool_calls)
                .where(turns.c.org_id == org_id, turns.c.role == "assistant", turns.c.id > after)
                .order_by(turns.c.id)
                .limit(1000)
            )
        )
        if not rows:
            return changed
        after = int(rows[-1].id)
        for row in rows:
            citations = [
                c for c in (row.citations or []) if c.get("document_id") not in document_ids
            ]
            calls = []
            for call in row.tool_calls or []:
                result = str(call.get("result") or "")
                if any(probe in result for probe in probes):
                    call = {**call, "result": ERASED}
                calls.append(call)
            if citations != (row.citations or []) or calls != (row.tool_calls or []):
                conn.execute(
                    update(turns)
                    .where(turns.c.id == row.id)
                    .values(citations=citations, tool_calls=calls)
                )
                changed += 1
