"""A data subject's rights: access and portability (GDPR Art. 15, 20), erasure (Art. 17).

A *subject* is a person as the organisation knows them: their external id (the API's
``user``, a widget visitor id, later a phone number), on every channel where the organisation
has seen it, or on one channel when given.

- :func:`export` gathers everything stored about them as JSON: identities, conversations with
  every turn (generated ones keep their provenance labels: the visible text, and the signed
  ``aigc`` label), memories, consent records, reports about their conversations, the
  knowledge documents tagged as being about them (metadata ``{"subject": "<id>"}``).
- :func:`erase` deletes all of that, chunks and vectors of those documents included, and
  returns a receipt: what was removed, how many, when, and the audit entry that records it.
  A legal hold refuses erasure (409) until released.

The audit log stores no identifier of the subject: entries name end users by row id, and the
erasure entry carries a keyed hash of the subject id (``subject_ref``), so an operator who is
asked "was X erased?" can check without the log holding X.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from concierge import orgs
from concierge.channels import privacy as channel_privacy
from concierge.compliance import retention
from concierge.conversations import erasure
from concierge.conversations.records import Turn
from concierge.conversations.store import EndUser
from concierge.errors import Conflict, NotFound
from concierge.governance import audit, consent, moderation
from concierge.knowledge import bases, documents
from concierge.store.secrets import server_secret

Labeller = Callable[[Turn], dict[str, str] | None]


def subject_ref(conn: Connection, org_id: int, subject: str) -> str:
    """A keyed hash naming the subject in the audit log (no identifier is stored there)."""
    key = server_secret(conn, "audit_subject_key").encode()
    return hmac.new(key, f"{org_id}:{subject}".encode(), hashlib.sha256).hexdigest()[:32]


def identities(
    conn: Connection, org_id: int, subject: str, channel: str | None = None
) -> list[EndUser]:
    found = erasure.end_users_named(conn, org_id, subject, channel)
    about = documents.about_subject(conn, org_id, subject)
    if not found and not about:
        where = f" on channel '{channel}'" if channel else ""
        raise NotFound(f"no data about subject '{subject}'{where} in this organisation")
    return found


def export(
    conn: Connection,
    org_id: int,
    subject: str,
    *,
    channel: str | None = None,
    actor: str,
    label: Labeller,
) -> dict[str, Any]:
    """Everything stored about ``subject``, audited."""
    org = orgs.get_by_id(conn, org_id)
    users = identities(conn, org_id, subject, channel)
    people = []
    counts = {
        "conversations": 0,
        "turns": 0,
        "memories": 0,
        "consents": 0,
        "reports": 0,
        "channel_messages": 0,
        "channel_media": 0,
    }
    for user in users:
        data = erasure.subject_data(conn, user)
        conversations = []
        for conversation in data["conversations"]:
            turns = []
            for turn in conversation.pop("turns"):
                shown = turn.to_dict()
                made = label(turn)
                if made is not None:
                    shown["aigc"] = made
                turns.append(shown)
            conversations.append({**conversation, "turns": turns})
            counts["turns"] += len(turns)
        reports = moderation.reports_on(conn, [c["id"] for c in conversations])
        carried = channel_privacy.subject_data(conn, org_id, user.channel, user.external_id)
        decisions = consent.history(conn, user.id)
        counts["conversations"] += len(conversations)
        counts["memories"] += len(data["memories"])
        counts["consents"] += len(decisions)
        counts["reports"] += len(reports)
        counts["channel_messages"] += sum(len(t["messages"]) for t in carried)
        counts["channel_media"] += sum(len(t["media"]) for t in carried)
        people.append(
            {
                "end_user_id": user.id,
                "channel": user.channel,
                "external_id": user.external_id,
                "created_at": user.created_at.isoformat(),
                "conversations": conversations,
                "memories": data["memories"],
                "consents": [d.to_dict() for d in decisions],
                "reports": [r.to_dict() for r in reports],
                "channels": carried,  # messaging platforms: events, deliveries, files
            }
        )
    docs = documents.about_subject(conn, org_id, subject)
    counts["documents"] = len(docs)
    entry = audit.record(
        conn,
        "subject.exported",
        actor=actor,
        org_id=org_id,
        target=f"subject:{subject_ref(conn, org_id, subject)}",
        details={"counts": counts, "end_user_ids": [u.id for u in users]},
    )
    return {
        "object": "subject.export",
        "organization": org.slug,
        "subject": subject,
        "channel": channel,
        "exported_at": entry.created_at.isoformat(),
        "audit_entry_id": entry.id,
        "counts": counts,
        "identities": people,
        "documents": [
            {
                "id": d.id,
                "knowledge_base_id": d.kb_id,
                "external_id": d.external_id,
                "title": d.title,
                "text": documents.text(conn, bases.get(conn, org_id, d.kb_id), d.id),
            }
            for d in docs
        ],
    }


def erase(
    conn: Connection, org_id: int, subject: str, *, channel: str | None = None, actor: str
) -> dict[str, Any]:
    """Delete everything stored about ``subject`` (one transaction) and return the receipt."""
    users = identities(conn, org_id, subject, channel)
    owned = {user.id: erasure.conversation_ids_of(conn, user) for user in users}
    everything = {cid for ids in owned.values() for cid in ids}
    held = [
        h
        for h in retention.holds(conn, org_id)
        if h.end_user_id in owned or h.conversation_id in everything
    ]
    if held:
        raise Conflict(
            f"subject '{subject}' is under legal hold (hold {held[0].id}: {held[0].reason}); "
            "release the hold before erasing"
        )
    removed = {
        "end_users": 0,
        "conversations": 0,
        "turns": 0,
        "memories": 0,
        "consents": 0,
        "reports": 0,
        "documents": 0,
        "chunks": 0,
        "channel_identities": 0,
        "channel_events": 0,
        "channel_messages": 0,
        "channel_media": 0,
    }
    for user in users:
        for kind, count in channel_privacy.erase(
            conn, org_id, user.channel, user.external_id
        ).items():
            removed[kind] += count
        removed["reports"] += moderation.erase_on(conn, owned[user.id])
        removed["consents"] += consent.erase(conn, user.id)
        for kind, count in erasure.erase_end_user(conn, user).items():
            removed[kind] += count
    gone = documents.erase_subject(conn, org_id, subject)
    removed["documents"] += gone["documents"]
    removed["chunks"] += gone["chunks"]
    if gone["documents"]:
        # Other conversations may quote those documents (citations, search results).
        removed["quotations"] = erasure.scrub_documents(
            conn, org_id, set(gone["ids"]), gone["passages"]
        )
    now = datetime.now(UTC)
    entry = audit.record(
        conn,
        "subject.erased",
        actor=actor,
        org_id=org_id,
        target=f"subject:{subject_ref(conn, org_id, subject)}",
        details={"removed": removed, "channel": channel},
    )
    return {
        "object": "erasure.receipt",
        "organization": orgs.get_by_id(conn, org_id).slug,
        "subject": subject,
        "channel": channel,
        "erased_at": now.isoformat(),
        "removed": removed,
        "audit_entry_id": entry.id,
        "audit_entry_hash": entry.hash,
    }
