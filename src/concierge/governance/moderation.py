"""Moderation and complaints (China's Interim Measures for Generative AI Services, Art. 14-15).

Input and output are checked against the organisation's policy: blocked terms (whole words,
any case), blocked patterns (regular expressions) and any classifier a plugin registered
(``register_moderation_classifiers``; a category scoring at or above the policy's threshold
counts). What a hit does is the policy's ``action``:

- ``refuse``: the user gets the policy's refusal text instead of a model answer (input), or
  instead of the answer the model wrote (output); the exchange is stored with the refusal and
  a moderation report is opened;
- ``flag``: the answer is delivered as usual and a report goes to the review queue.

End users report an answer they object to (``POST /v1/conversations/{id}/turns/{id}/report``,
the widget's report button); operators work through the queue (``GET /v1/reports``,
``POST /v1/reports/{id}/resolve``). Every decision, automatic or human, is in the audit log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, delete, func, insert, select, update

from concierge import regex
from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.governance.policy import Moderation
from concierge.store import aware, id_is
from concierge.store.tables import reports

Resolution = Literal["dismissed", "upheld", "content_removed"]
log = logging.getLogger(__name__)
RESOLUTIONS: tuple[Resolution, ...] = ("dismissed", "upheld", "content_removed")
REPORT_CATEGORIES = (
    "harmful",
    "illegal",
    "inaccurate",
    "offensive",
    "privacy",
    "other",
)


class Classifier(Protocol):
    """Scores a text per category, 0-1 (a toxicity or safety model)."""

    name: str

    def score(self, text: str) -> dict[str, float]: ...


@dataclass(frozen=True)
class ModerationHit:
    """A moderation check that fired, as recorded on the turn and its report."""

    stage: Literal["input", "output"]
    action: str  # what the policy did: refuse | flag
    category: str | None  # blocked_term | blocked_pattern | <classifier category>
    rule: str | None  # which term, pattern or classifier matched

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "action": self.action,
            "category": self.category,
            "rule": self.rule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModerationHit:
        stage: Literal["input", "output"] = "output" if data.get("stage") == "output" else "input"
        return cls(stage, str(data.get("action", "")), data.get("category"), data.get("rule"))


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    category: str | None = None  # blocked_term | blocked_pattern | <classifier category>
    rule: str | None = None  # which term, pattern or classifier matched

    def record(self, stage: Literal["input", "output"], action: str) -> ModerationHit:
        return ModerationHit(stage, action, self.category, self.rule)


PASS = Verdict(False)


@lru_cache(maxsize=256)
def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    if not terms:
        return None
    words = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=256)
def _patterns(patterns: tuple[str, ...]) -> tuple[Any, ...]:
    """The policy's patterns in RE2 (linear time: no message can make them slow). One stored
    before patterns were checked for RE2, which it cannot run, is skipped and logged."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(regex.compile(pattern, ignore_case=True))
        except regex.PatternError as exc:
            log.warning("moderation pattern skipped: %s", exc)
    return tuple(compiled)


def check(text: str, policy: Moderation, classifiers: Sequence[Classifier] = ()) -> Verdict:
    """The first rule ``text`` breaks, if any."""
    if not policy.enabled or not text:
        return PASS
    terms = _terms_pattern(tuple(policy.blocked_terms))
    if terms is not None:
        hit = terms.search(text)
        if hit:
            return Verdict(True, "blocked_term", hit.group().lower())
    for pattern in _patterns(tuple(policy.blocked_patterns)):
        if pattern.search(text):  # RE2
            return Verdict(True, "blocked_pattern", pattern.pattern)
    for classifier in classifiers:
        scores = classifier.score(text)
        for category, score in sorted(scores.items(), key=lambda kv: -kv[1]):
            if score >= policy.classifier_threshold:
                return Verdict(True, category, f"{classifier.name}:{score:.2f}")
    return PASS


# -- reports and the review queue ------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    id: int
    org_id: int
    conversation_id: int
    turn_id: int
    source: str
    category: str
    reason: str | None
    status: str
    resolution: str | None
    note: str | None
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "report",
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "source": self.source,
            "category": self.category,
            "reason": self.reason,
            "status": self.status,
            "resolution": self.resolution,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_by": self.resolved_by,
        }


def _report(row: Any) -> Report:
    return Report(
        id=int(row.id),
        org_id=row.org_id,
        conversation_id=int(row.conversation_id),
        turn_id=int(row.turn_id),
        source=row.source,
        category=row.category,
        reason=row.reason,
        status=row.status,
        resolution=row.resolution,
        note=row.note,
        created_at=aware(row.created_at),
        resolved_at=aware(row.resolved_at),
        resolved_by=row.resolved_by,
    )


def open_report(
    conn: Connection,
    *,
    org_id: int,
    conversation_id: int,
    turn_id: int,
    source: Literal["user", "moderation"],
    category: str,
    reason: str | None,
    actor: str,
    details: dict[str, Any] | None = None,
) -> Report:
    """A report in the review queue, audited."""
    if source == "user" and category not in REPORT_CATEGORIES:
        raise InvalidRequest(
            f"category must be one of {', '.join(REPORT_CATEGORIES)}", param="category"
        )
    reason = reason.strip()[:2000] if reason else None
    now = datetime.now(UTC)
    values = {
        "org_id": org_id,
        "conversation_id": conversation_id,
        "turn_id": turn_id,
        "source": source,
        "category": category[:64],
        "reason": reason,
        "status": "open",
        "created_at": now,
    }
    result = conn.execute(insert(reports).values(**values))
    assert result.inserted_primary_key is not None
    report_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        "report.opened" if source == "user" else "moderation.flagged",
        actor=actor,
        org_id=org_id,
        target=f"turn:{turn_id}",
        details={"report_id": report_id, "category": category, **(details or {})},
    )
    return get(conn, org_id, report_id)


def get(conn: Connection, org_id: int, report_id: int) -> Report:
    row = conn.execute(
        select(reports).where(id_is(reports.c.id, report_id), reports.c.org_id == org_id)
    ).first()
    if row is None:
        raise NotFound(f"report {report_id} not found", param="report")
    return _report(row)


def queue(
    conn: Connection,
    org_id: int,
    *,
    status: str | None = "open",
    limit: int = 50,
    after: int = 0,
) -> tuple[list[Report], int]:
    """Reports oldest first (those waiting longest on top), and how many match in all."""
    where = [reports.c.org_id == org_id, reports.c.id > after]
    if status is not None:
        where.append(reports.c.status == status)
    rows = conn.execute(select(reports).where(*where).order_by(reports.c.id).limit(limit))
    total = conn.execute(
        select(func.count()).select_from(reports).where(*where[:1], *where[2:])
    ).scalar_one()
    return [_report(r) for r in rows], int(total)


def resolve(
    conn: Connection,
    org_id: int,
    report_id: int,
    resolution: str,
    note: str | None,
    *,
    actor: str,
) -> Report:
    if resolution not in RESOLUTIONS:
        raise InvalidRequest(
            f"resolution must be one of {', '.join(RESOLUTIONS)}", param="resolution"
        )
    current = get(conn, org_id, report_id)
    already = Conflict(f"report {report_id} is already resolved")
    if current.status != "open":
        raise Conflict(f"report {report_id} is already resolved ({current.resolution})")
    now = datetime.now(UTC)
    # Only an open report is resolved: of two people resolving it at once, one is told so.
    result = conn.execute(
        update(reports)
        .where(reports.c.id == report_id, reports.c.status == "open")
        .values(
            status="resolved",
            resolution=resolution,
            note=note.strip()[:4000] if note else None,
            resolved_at=now,
            resolved_by=actor[:200],
        )
    )
    if result.rowcount != 1:
        raise already
    audit.record(
        conn,
        "report.resolved",
        actor=actor,
        org_id=org_id,
        target=f"turn:{current.turn_id}",
        details={"report_id": report_id, "resolution": resolution},
    )
    return get(conn, org_id, report_id)


def reports_on(conn: Connection, conversation_ids: Sequence[int]) -> list[Report]:
    """Every report about these conversations (a data subject's export)."""
    if not conversation_ids:
        return []
    rows = conn.execute(
        select(reports)
        .where(reports.c.conversation_id.in_(list(conversation_ids)))
        .order_by(reports.c.id)
    )
    return [_report(r) for r in rows]


def erase_on(conn: Connection, conversation_ids: Sequence[int]) -> int:
    """Delete the reports about these conversations (a data subject's erasure); how many."""
    if not conversation_ids:
        return 0
    result = conn.execute(
        delete(reports).where(reports.c.conversation_id.in_(list(conversation_ids)))
    )
    return int(result.rowcount)
