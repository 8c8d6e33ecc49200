"""Consent (GDPR Art. 6(1)(a), 7): what each end user agreed to, when, where and to which text.

Each decision is a row: purpose (``terms``, ``personalization``, ``marketing``), granted or
withdrawn, the channel it was given through, the version of the text the user saw, who
recorded it. The newest decision per purpose is the user's current answer; the rows before it
are the record GDPR Art. 7(1) asks a business to be able to show.

Processing that needs consent asks :func:`granted` and is skipped without it: the assistant's
memory of a user (saving and recalling facts across conversations) needs the purpose the
organisation's policy names (``personalization`` by default); later, personalisation from
behaviour events and marketing messages ask the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from concierge.errors import InvalidRequest
from concierge.governance import audit
from concierge.governance.policy import PURPOSES, Consent
from concierge.store import aware
from concierge.store.tables import consents


@dataclass(frozen=True)
class Decision:
    id: int
    purpose: str
    granted: bool
    channel: str
    text_version: str
    recorded_by: str
    created_at: datetime

    def to_dict(self, current_version: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "consent",
            "purpose": self.purpose,
            "granted": self.granted,
            "channel": self.channel,
            "text_version": self.text_version,
            "recorded_by": self.recorded_by,
            "created_at": self.created_at.isoformat(),
        }
        if current_version is not None:
            out["current_text"] = self.text_version == current_version
        return out


def _decision(row: Any) -> Decision:
    return Decision(
        int(row.id),
        row.purpose,
        bool(row.granted),
        row.channel,
        row.text_version,
        row.recorded_by,
        aware(row.created_at),
    )


def check_purpose(purpose: Any) -> str:
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    return str(purpose)


def record(
    conn: Connection,
    *,
    org_id: int,
    end_user_id: int,
    purpose: str,
    granted: bool,
    channel: str,
    text_version: str,
    actor: str,
) -> Decision:
    """Store a decision; audited (by the end user's row id: no personal data in the log)."""
    check_purpose(purpose)
    if not isinstance(granted, bool):
        raise InvalidRequest("granted must be true or false", param="granted")
    if not text_version or len(text_version) > 64:
        raise InvalidRequest("text_version has 1-64 characters", param="text_version")
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "org_id": org_id,
        "end_user_id": end_user_id,
        "purpose": purpose,
        "granted": granted,
        "channel": channel[:32],
        "text_version": text_version,
        "recorded_by": actor[:200],
        "created_at": now,
    }
    result = conn.execute(insert(consents).values(**values))
    assert result.inserted_primary_key is not None
    audit.record(
        conn,
        "consent.granted" if granted else "consent.withdrawn",
        actor=actor,
        org_id=org_id,
        target=f"end_user:{end_user_id}",
        details={"purpose": purpose, "channel": channel, "text_version": text_version},
    )
    return Decision(
        int(result.inserted_primary_key[0]),
        purpose,
        granted,
        values["channel"],
        text_version,
        values["recorded_by"],
        now,
    )


def history(conn: Connection, end_user_id: int) -> list[Decision]:
    """Every decision, newest first."""
    rows = conn.execute(
        select(consents).where(consents.c.end_user_id == end_user_id).order_by(consents.c.id.desc())
    )
    return [_decision(r) for r in rows]


def current(conn: Connection, end_user_id: int) -> dict[str, Decision]:
    """The newest decision per purpose."""
    out: dict[str, Decision] = {}
    for decision in history(conn, end_user_id):
        out.setdefault(decision.purpose, decision)
    return out


def granted(conn: Connection, end_user_id: int, purpose: str) -> bool:
    """Whether the end user's current answer for ``purpose`` is yes."""
    if not end_user_id:
        return False
    row = conn.execute(
        select(consents.c.granted)
        .where(consents.c.end_user_id == end_user_id, consents.c.purpose == purpose)
        .order_by(consents.c.id.desc())
        .limit(1)
    ).first()
    return bool(row is not None and row.granted)


def summary(conn: Connection, end_user_id: int, policy: Consent) -> dict[str, Any]:
    """Each purpose's current answer (null: never asked), for the API."""
    now = current(conn, end_user_id)
    return {
        "object": "consent.summary",
        "purposes": {
            purpose: (
                now[purpose].to_dict(policy.text_versions.get(purpose)) if purpose in now else None
            )
            for purpose in PURPOSES
        },
        "history": [d.to_dict() for d in history(conn, end_user_id)],
    }


def erase(conn: Connection, end_user_id: int) -> int:
    """Delete an end user's consent records (their erasure); how many."""
    return int(conn.execute(delete(consents).where(consents.c.end_user_id == end_user_id)).rowcount)
