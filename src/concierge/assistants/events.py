"""What goes into the reply pipeline and what comes out of it, and the reply in progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from concierge.assistants.prompt import HistoryTurn, Passage
from concierge.conversations.records import ToolRecord, Turn, TurnStatus
from concierge.conversations.store import Conversation
from concierge.governance.labels import new_produce_id
from concierge.governance.moderation import ModerationHit
from concierge.models.base import TokenCount, total


class Stage(StrEnum):
    DRAFT = "draft"  # the user's turn and the reply's draft are stored; the model starts
    FINAL = "final"  # the reply is stored as it ends (complete, or failed after some text)
    WAITING = "waiting"  # a person has the conversation: the message is stored, no reply


@dataclass(frozen=True)
class Recorded:
    """What the pipeline has just written, for :attr:`Inbound.on_record`."""

    stage: Stage
    conversation: Conversation
    user_turn: Turn
    reply: Turn | None
    delivered: str = ""  # the reply as the user receives it (it may be stored masked)


# Called inside the transaction that stores each stage, so that what a caller writes with it
# (a channel's outbox, its queue's bookkeeping) commits or rolls back with the turns.
OnRecord = Callable[[Connection, Recorded], None]


@dataclass(frozen=True)
class Inbound:
    """One user message for an assistant, from any channel."""

    org_id: int
    assistant: int | str  # id or name
    channel: str  # "api", "web", later "whatsapp", ...
    external_id: str  # the end user's identity on that channel
    text: str
    conversation_id: int | None = None  # None: continue the latest on this channel, or start
    new_conversation: bool = False  # start a new one even if there is a latest
    history: Sequence[HistoryTurn] | None = None  # the caller's own history (OpenAI door)
    priority_key: str | None = None  # who waits in the model's fair queue
    language: str | None = None  # the user's languages (Accept-Language), for notices
    on_record: OnRecord | None = None  # written with each stage's turns (messaging channels)


@dataclass(frozen=True)
class Delta:
    """A piece of the reply's text."""

    text: str


@dataclass(frozen=True)
class Replaced:
    """The reply so far is withdrawn and replaced by ``text`` (output moderation); ``answer``
    is the replacement without the notices before it."""

    text: str
    answer: str


@dataclass(frozen=True)
class ToolUsed:
    """A tool call and its result (or failure), as recorded on the turn."""

    record: ToolRecord


@dataclass(frozen=True)
class Completed:
    """The last event: what was stored."""

    conversation: Conversation
    user_turn: Turn
    reply: Turn | None  # None while a human has the conversation
    citations: list[dict[str, Any]]
    timings: dict[str, float]
    label: dict[str, str] | None = None  # the reply's provenance label (AIGC), as delivered
    delivered: str = ""  # the reply as the user received it (stored masked, per policy)


ReplyEvent = Delta | Replaced | ToolUsed | Completed


@dataclass
class Progress:
    """The reply as it is being produced, stored whatever way the turn ends."""

    text: list[str] = field(default_factory=list)
    tool_records: list[ToolRecord] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    handoff: str | None = None
    model: str | None = None
    # One per model call, kept current by the backend while it works (a reply cut short is
    # stored and metered with what it really used).
    counts: list[TokenCount] = field(default_factory=list)
    status: TurnStatus = TurnStatus.COMPLETE
    error: str | None = None
    prefix: str = ""  # notices before the answer: AI disclosure, an explicit label
    suffix: str = ""  # an explicit label after the answer
    prefix_sent: bool = False
    moderation: ModerationHit | None = None  # the check that fired
    label_id: str = field(default_factory=new_produce_id)

    @property
    def prompt_tokens(self) -> int:
        return total(self.counts).prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return total(self.counts).completion_tokens

    @property
    def answer(self) -> str:
        """What the model (or the platform in its place) said."""
        return "".join(self.text).strip()

    @property
    def content(self) -> str:
        """The reply as delivered: notices, the answer, a closing label."""
        return self.prefix + self.answer + self.suffix
