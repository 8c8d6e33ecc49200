"""The typed records a turn carries, and their one serialised form.

A turn's status, the tool calls made for it and what governance did to it are stored as JSON
columns and shown by the API; this module is the only place that turns them into JSON and back.
Every record reads what earlier versions wrote (unknown keys are kept, so a newer server's
records survive an older one's rewrite).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from concierge.governance.moderation import ModerationHit
from concierge.store import aware

Role = Literal["user", "assistant", "human"]


class TurnStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # the client went away; what it was shown is kept
    FAILED = "failed"  # the model broke off after saying something; ``error`` says why
    GENERATING = "generating"  # a reply being written (a draft)
    INTERRUPTED = "interrupted"  # the process writing it stopped; kept as it stood


class ConversationStatus(StrEnum):
    ASSISTANT = "assistant"  # the assistant answers
    HANDOFF = "handoff"  # waiting in the human queue
    HUMAN = "human"  # a person has taken it


@dataclass(frozen=True)
class ToolRecord:
    """A tool call made for a reply: its arguments and its result or error."""

    name: str
    arguments: Any  # the parsed arguments, or the raw text when they were not JSON
    ms: float = 0.0
    result: str | None = None
    error: str | None = None
    refused_by: str | None = None  # "injection_guard": not run
    by: str | None = None  # "platform": made by the platform in the model's place
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "name": self.name, "arguments": self.arguments}
        if self.by is None:
            out["ms"] = self.ms
        else:
            out["by"] = self.by
        if self.error is not None:
            out["error"] = self.error
        elif self.result is not None:
            out["result"] = self.result
        if self.refused_by is not None:
            out["refused_by"] = self.refused_by
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolRecord:
        known = {"name", "arguments", "ms", "result", "error", "refused_by", "by"}
        return cls(
            name=str(data.get("name", "")),
            arguments=data.get("arguments"),
            ms=float(data.get("ms") or 0.0),
            result=data.get("result"),
            error=data.get("error"),
            refused_by=data.get("refused_by"),
            by=data.get("by"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class TurnGovernance:
    """What governance did to a turn."""

    # Lengths of the platform's notices before and after the answer in the stored text (the AI
    # disclosure, an explicit label): the answer alone is what a model reads back.
    notices: tuple[int, int] | None = None
    disclosure: str | None = None  # the AI disclosure shown with this turn
    label_id: str | None = None  # the provenance label's ProduceID (generated text only)
    producer: str | None = None
    masked: bool = False  # personal data masked before storage
    pii: Mapping[str, int] = field(default_factory=dict)  # entity -> how many were masked
    moderation: ModerationHit | None = None
    draft: bool = False  # written while the reply streamed
    withdrawn: Mapping[str, Any] | None = None  # removed after a report: why, by whom
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def generated(self) -> bool:
        """A model wrote the turn (it carries a provenance label)."""
        return bool(self.label_id)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        if self.notices is not None:
            out["notices"] = list(self.notices)
        if self.disclosure is not None:
            out["disclosure"] = self.disclosure
        if self.label_id is not None:
            out["label_id"] = self.label_id
        if self.producer is not None:
            out["producer"] = self.producer
        if self.masked:
            out["masked"] = True
        if self.pii:
            out["pii"] = dict(self.pii)
        if self.moderation is not None:
            out["moderation"] = self.moderation.to_dict()
        if self.draft:
            out["draft"] = True
        if self.withdrawn is not None:
            out["withdrawn"] = dict(self.withdrawn)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TurnGovernance | None:
        if not data:
            return None
        known = {
            "notices",
            "disclosure",
            "label_id",
            "producer",
            "masked",
            "pii",
            "moderation",
            "draft",
            "withdrawn",
        }
        notices = data.get("notices")
        moderation = data.get("moderation")
        return cls(
            notices=(int(notices[0]), int(notices[1])) if notices else None,
            disclosure=data.get("disclosure"),
            label_id=data.get("label_id"),
            producer=data.get("producer"),
            masked=bool(data.get("masked")),
            pii={str(k): int(v) for k, v in (data.get("pii") or {}).items()},
            moderation=ModerationHit.from_dict(moderation) if moderation else None,
            draft=bool(data.get("draft")),
            withdrawn=data.get("withdrawn"),
            extra={k: v for k, v in data.items() if k not in known},
        )


def governance_json(record: TurnGovernance | None) -> dict[str, Any] | None:
    """A turn's governance record as stored and shown (None when governance did nothing)."""
    if record is None:
        return None
    return record.to_dict() or None


@dataclass(frozen=True)
class Turn:
    id: int
    conversation_id: int
    role: Role
    content: str
    status: TurnStatus
    created_at: datetime
    citations: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[ToolRecord] = field(default_factory=list)
    assistant_version: int | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    error: str | None = None
    author: str | None = None
    governance: TurnGovernance | None = None  # what governance did to it
    updated_at: datetime | None = None  # last written (a reply is written while it streams)

    @property
    def label_id(self) -> str | None:
        """The provenance label's id (a turn a model wrote)."""
        return self.governance.label_id if self.governance is not None else None

    @property
    def producer(self) -> str | None:
        return self.governance.producer if self.governance is not None else None

    def _shared(self) -> dict[str, Any]:
        """The fields the API shows as they are stored."""
        return {
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "status": str(self.status),
            "citations": self.citations,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
            "assistant_version": self.assistant_version,
            "model": self.model,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "author": self.author,
            "governance": governance_json(self.governance),
        }

    def to_dict(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "id": self.id,
            "object": "conversation.turn",
            **self._shared(),
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }

    def values(self) -> dict[str, Any]:
        """The turn's columns as stored (all but ``id`` and ``org_id``)."""
        return {
            **self._shared(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_row(cls, row: Any) -> Turn:
        """A turn as read from the ``turns`` table."""
        return cls(
            id=row.id,
            conversation_id=row.conversation_id,
            role=row.role,
            content=row.content,
            status=TurnStatus(row.status),
            created_at=aware(row.created_at),
            citations=list(row.citations or []),
            tool_calls=[ToolRecord.from_dict(call) for call in row.tool_calls or []],
            assistant_version=row.assistant_version,
            model=row.model,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            latency_ms=row.latency_ms,
            error=row.error,
            author=row.author,
            governance=TurnGovernance.from_dict(row.governance),
            updated_at=aware(row.updated_at),
        )
