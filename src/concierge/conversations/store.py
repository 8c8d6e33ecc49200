"""Reading and writing end users, conversations, turns and memories."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge.errors import InvalidRequest, NotFound
from concierge.store import aware, id_is, lock
from concierge.store.tables import conversations, end_users, memories, turns

Status = Literal["assistant", "handoff", "human"]
Role = Literal["user", "assistant", "human"]
MAX_EXTERNAL_ID = 256
MAX_MEMORIES = 200  # per end user and assistant; the oldest go first


@dataclass(frozen=True)
class EndUser:
    id: int
    org_id: int
    channel: str
    external_id: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "end_user",
            "channel": self.channel,
            "external_id": self.external_id,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Conversation:
    id: int
    org_id: int
    assistant_id: int
    end_user_id: int
    channel: str
    status: Status
    handoff_reason: str | None
    handoff_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "assistant_id": self.assistant_id,
            "end_user_id": self.end_user_id,
            "channel": self.channel,
            "status": self.status,
            "handoff_reason": self.handoff_reason,
            "handoff_at": self.handoff_at.isoformat() if self.handoff_at else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Turn:
    id: int
    conversation_id: int
    role: Role
    content: str
    status: str
    created_at: datetime
    citations: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    assistant_version: int | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    error: str | None = None
    author: str | None = None
    # What governance did: label id and producer, disclosure, PII masked, moderation.
    governance: dict[str, Any] | None = None
    updated_at: datetime | None = None  # last written (a reply is written while it streams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation.turn",
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "citations": self.citations,
            "tool_calls": self.tool_calls,
            "assistant_version": self.assistant_version,
            "model": self.model,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            "latency_ms": self.latency_ms,
            "error": self.error,
            "author": self.author,
            "governance": self.governance,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class Memory:
    id: int
    fact: str
    created_at: datetime
    turn_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "memory",
            "fact": self.fact,
            "turn_id": self.turn_id,
            "created_at": self.created_at.isoformat(),
        }


# -- end users -------------------------------------------------------------------------------


def _end_user(row: Any) -> EndUser:
    return EndUser(row.id, row.org_id, row.channel, row.external_id, aware(row.created_at))


def check_external_id(external_id: str) -> str:
    """An end user's id on a channel, trimmed; refused when empty or too long."""
    external_id = external_id.strip()
    if not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise InvalidRequest(f"an end user id has 1-{MAX_EXTERNAL_ID} characters", param="user")
    return external_id


def _by_identity(org_id: int, channel: str, external_id: str) -> Any:
    return select(end_users).where(
        end_users.c.org_id == org_id,
        end_users.c.channel == channel,
        end_users.c.external_id == external_id,
    )


def peek_end_user(conn: Connection, org_id: int, channel: str, external_id: str) -> EndUser | None:
    """The end user with this identity, if there is one (nothing is written)."""
    row = conn.execute(_by_identity(org_id, channel, check_external_id(external_id))).one_or_none()
    return None if row is None else _end_user(row)


def end_user(conn: Connection, org_id: int, channel: str, external_id: str) -> EndUser:
    """The end user with this identity on this channel, made on first sight."""
    external_id = check_external_id(external_id)
    query = _by_identity(org_id, channel, external_id)
    now = datetime.now(UTC)
    row = conn.execute(query).one_or_none()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(end_users).values(
                        org_id=org_id,
                        channel=channel,
                        external_id=external_id,
                        created_at=now,
                        last_seen_at=now,
                    )
                )
        except IntegrityError:  # made meanwhile by another request
            pass
        row = conn.execute(query).one()
    else:
        conn.execute(update(end_users).where(end_users.c.id == row.id).values(last_seen_at=now))
    return _end_user(row)


def get_end_user(conn: Connection, org_id: int, end_user_id: int) -> EndUser:
    row = conn.execute(
        select(end_users).where(end_users.c.org_id == org_id, end_users.c.id == end_user_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"end user {end_user_id} not found", param="end_user")
    return _end_user(row)


# -- conversations ---------------------------------------------------------------------------


def _conversation(row: Any) -> Conversation:
    return Conversation(
        row.id,
        row.org_id,
        row.assistant_id,
        row.end_user_id,
        row.channel,
        row.status,
        row.handoff_reason,
        aware(row.handoff_at),
        aware(row.created_at),
        aware(row.updated_at),
    )


def create(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, channel: str
) -> Conversation:
    now = datetime.now(UTC)
    key = conn.execute(
        insert(conversations).values(
            org_id=org_id,
            assistant_id=assistant_id,
            end_user_id=user.id,
            channel=channel,
            status="assistant",
            created_at=now,
            updated_at=now,
        )
    ).inserted_primary_key
    assert key is not None
    return get(conn, org_id, int(key[0]))


def get_with_user(
    conn: Connection, org_id: int, conversation_id: int
) -> tuple[Conversation, EndUser]:
    """The conversation and its end user, in one query."""
    row = conn.execute(
        select(
            conversations,
            end_users.c.channel.label("user_channel"),
            end_users.c.external_id,
            end_users.c.created_at.label("user_created_at"),
        )
        .join(end_users, end_users.c.id == conversations.c.end_user_id)
        .where(conversations.c.org_id == org_id, conversations.c.id == conversation_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found", param="conversation")
    user = EndUser(
        row.end_user_id, org_id, row.user_channel, row.external_id, aware(row.user_created_at)
    )
    return _conversation(row), user


def get(conn: Connection, org_id: int, conversation_id: int) -> Conversation:
    row = conn.execute(
        select(conversations).where(
            conversations.c.org_id == org_id, conversations.c.id == conversation_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found", param="conversation")
    return _conversation(row)


def latest(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, channel: str
) -> Conversation | None:
    """The end user's most recent conversation with this assistant on this channel."""
    row = conn.execute(
        select(conversations)
        .where(
            conversations.c.org_id == org_id,
            conversations.c.assistant_id == assistant_id,
            conversations.c.end_user_id == user.id,
            conversations.c.channel == channel,
        )
        .order_by(conversations.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _conversation(row)


def list_page(
    conn: Connection,
    org_id: int,
    *,
    assistant_id: int | None = None,
    end_user_id: int | None = None,
    status: Status | None = None,
    limit: int = 20,
    after: int | None = None,
    oldest_first: bool = False,
) -> tuple[list[Conversation], bool]:
    query = select(conversations).where(conversations.c.org_id == org_id)
    if assistant_id is not None:
        query = query.where(id_is(conversations.c.assistant_id, assistant_id))
    if end_user_id is not None:
        query = query.where(conversations.c.end_user_id == end_user_id)
    if status is not None:
        query = query.where(conversations.c.status == status)
    if after is not None:
        query = query.where(
            conversations.c.id > after if oldest_first else conversations.c.id < after
        )
    order = conversations.c.id if oldest_first else conversations.c.id.desc()
    rows = list(conn.execute(query.order_by(order).limit(limit + 1)))
    return [_conversation(r) for r in rows[:limit]], len(rows) > limit


def set_status(
    conn: Connection, conversation: Conversation, status: Status, reason: str | None = None
) -> Conversation:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "handoff":
        values.update(handoff_reason=reason, handoff_at=now)
    elif status == "assistant":
        values.update(handoff_reason=None, handoff_at=None)
    conn.execute(update(conversations).where(conversations.c.id == conversation.id).values(values))
    return get(conn, conversation.org_id, conversation.id)


# -- turns -----------------------------------------------------------------------------------


def _turn(row: Any) -> Turn:
    return Turn(
        id=row.id,
        conversation_id=row.conversation_id,
        role=row.role,
        content=row.content,
        status=row.status,
        created_at=aware(row.created_at),
        citations=list(row.citations or []),
        tool_calls=list(row.tool_calls or []),
        assistant_version=row.assistant_version,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        latency_ms=row.latency_ms,
        error=row.error,
        author=row.author,
        governance=row.governance,
        updated_at=aware(row.updated_at),
    )


def new_turn(
    conversation: Conversation,
    role: Role,
    content: str,
    *,
    status: str = "complete",
    citations: list[dict[str, Any]] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    assistant_version: int | None = None,
    model: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    latency_ms: float | None = None,
    error: str | None = None,
    author: str | None = None,
    governance: dict[str, Any] | None = None,
) -> Turn:
    """A turn of ``conversation``, not stored yet (id 0): see :func:`add_turns`."""
    return Turn(
        id=0,
        conversation_id=conversation.id,
        role=role,
        content=content,
        status=status,
        created_at=datetime.now(UTC),
        citations=citations or [],
        tool_calls=tool_calls or [],
        assistant_version=assistant_version,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        error=error,
        author=author,
        governance=governance,
        updated_at=None,
    )


def add_turns(conn: Connection, conversation: Conversation, new: Sequence[Turn]) -> list[Turn]:
    """Store turns made by :func:`new_turn`, in order, with one INSERT (an exchange of a user
    message and its reply costs two statements, not six)."""
    rows = [
        {
            "org_id": conversation.org_id,
            **{k: v for k, v in dataclasses.asdict(t).items() if k != "id"},
            "conversation_id": conversation.id,
        }
        for t in new
    ]
    result = conn.execute(insert(turns).returning(turns.c.id, sort_by_parameter_order=True), rows)
    ids = [int(row[0]) for row in result]
    stored = [dataclasses.replace(t, id=int(i)) for t, i in zip(new, ids, strict=True)]
    conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation.id)
        .values(updated_at=max(t.created_at for t in new))
    )
    return stored


def finish_turn(conn: Connection, turn: Turn) -> Turn:
    """Write ``turn`` (the id and creation time of a stored draft, the rest made by
    :func:`new_turn`) over the draft, in one statement: a reply is stored before it is written
    and finished in place (the conversation was marked updated when the draft was stored)."""
    finished = dataclasses.replace(turn, updated_at=datetime.now(UTC))
    values = {
        k: v
        for k, v in dataclasses.asdict(finished).items()
        if k not in ("id", "conversation_id", "role", "created_at")
    }
    conn.execute(update(turns).where(turns.c.id == turn.id).values(values))
    return finished


def touch_draft(conn: Connection, turn_id: int, content: str | None) -> None:
    """A reply being written: its text so far (None: unchanged), and that it is alive."""
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if content is not None:
        values["content"] = content
    conn.execute(
        update(turns).where(turns.c.id == turn_id, turns.c.status == "generating").values(values)
    )


def discard_draft(
    conn: Connection,
    conversation: Conversation,
    turn_ids: Sequence[int],
    *,
    drop_conversation: bool,
    drop_user: bool,
) -> None:
    """Take back a stored exchange whose reply never started (the model failed first): its
    turns, and the conversation and end user if they were made for it."""
    conn.execute(delete(turns).where(turns.c.id.in_(list(turn_ids))))
    if drop_conversation:
        conn.execute(delete(conversations).where(conversations.c.id == conversation.id))
        if drop_user:
            others = conn.execute(
                select(conversations.c.id)
                .where(conversations.c.end_user_id == conversation.end_user_id)
                .limit(1)
            ).first()
            if others is None:
                conn.execute(delete(end_users).where(end_users.c.id == conversation.end_user_id))


INTERRUPTED = "the server stopped while this reply was being written; it is kept as it stood"


def interrupt_stale(conn: Connection, before: datetime) -> int:
    """Mark ``interrupted`` the replies still ``generating`` that were last written before
    ``before``: the process writing them is gone. How many there were."""
    result = conn.execute(
        update(turns)
        .where(turns.c.status == "generating", turns.c.updated_at < before)
        .values(status="interrupted", error=INTERRUPTED)
    )
    return int(result.rowcount or 0)


def add_turn(
    conn: Connection, conversation: Conversation, role: Role, content: str, **fields: Any
) -> Turn:
    """Store one turn (the fields of :func:`new_turn`)."""
    return add_turns(conn, conversation, [new_turn(conversation, role, content, **fields)])[0]


def list_turns(
    conn: Connection, conversation: Conversation, *, after: int | None = None, limit: int = 100
) -> tuple[list[Turn], bool]:
    """Oldest first, from after the turn ``after``."""
    query = select(turns).where(turns.c.conversation_id == conversation.id)
    if after is not None:
        query = query.where(turns.c.id > after)
    rows = list(conn.execute(query.order_by(turns.c.id).limit(limit + 1)))
    return [_turn(r) for r in rows[:limit]], len(rows) > limit


def recent_turns(conn: Connection, conversation: Conversation, limit: int) -> list[Turn]:
    """The last ``limit`` turns, oldest first (the window a reply is built from)."""
    rows = conn.execute(
        select(turns)
        .where(turns.c.conversation_id == conversation.id)
        .order_by(turns.c.id.desc())
        .limit(limit)
    )
    return [_turn(r) for r in reversed(list(rows))]


# -- memory ----------------------------------------------------------------------------------


def remember(
    conn: Connection,
    org_id: int,
    assistant_id: int,
    user: EndUser,
    fact: str,
    turn_id: int | None = None,
) -> Memory:
    fact = " ".join(fact.split())
    if not fact:
        raise InvalidRequest("a memory needs some text", param="fact")
    lock(conn, "memories", user.id)  # the duplicate check and the cap hold under concurrency
    existing = memories_of(conn, org_id, assistant_id, user)
    same = next((m for m in existing if m.fact.lower() == fact.lower()), None)
    if same is not None:
        return same
    if len(existing) >= MAX_MEMORIES:
        oldest = existing[: len(existing) - MAX_MEMORIES + 1]
        conn.execute(delete(memories).where(memories.c.id.in_([m.id for m in oldest])))
    key = conn.execute(
        insert(memories).values(
            org_id=org_id,
            assistant_id=assistant_id,
            end_user_id=user.id,
            fact=fact[:2000],
            turn_id=turn_id,
            created_at=datetime.now(UTC),
        )
    ).inserted_primary_key
    assert key is not None
    row = conn.execute(select(memories).where(memories.c.id == key[0])).one()
    return Memory(row.id, row.fact, aware(row.created_at), row.turn_id)


def memories_of(conn: Connection, org_id: int, assistant_id: int, user: EndUser) -> list[Memory]:
    rows = conn.execute(
        select(memories)
        .where(
            memories.c.org_id == org_id,
            memories.c.assistant_id == assistant_id,
            memories.c.end_user_id == user.id,
        )
        .order_by(memories.c.id)
    )
    return [Memory(r.id, r.fact, aware(r.created_at), r.turn_id) for r in rows]


def forget(
    conn: Connection, org_id: int, assistant_id: int, user: EndUser, memory_id: int | None = None
) -> int:
    """Delete one memory, or all of them (``memory_id`` None); returns how many went."""
    query = delete(memories).where(
        memories.c.org_id == org_id,
        memories.c.assistant_id == assistant_id,
        memories.c.end_user_id == user.id,
    )
    if memory_id is not None:
        query = query.where(memories.c.id == memory_id)
    gone = conn.execute(query).rowcount
    if memory_id is not None and not gone:
        raise NotFound(f"memory {memory_id} not found", param="memory")
    return int(gone)


def forget_one(conn: Connection, org_id: int, assistant_id: int, memory_id: int) -> None:
    """Delete one memory of this assistant, whoever it is about."""
    gone = conn.execute(
        delete(memories).where(
            memories.c.org_id == org_id,
            memories.c.assistant_id == assistant_id,
            memories.c.id == memory_id,
        )
    ).rowcount
    if not gone:
        raise NotFound(f"memory {memory_id} not found", param="memory")


def get_turn(conn: Connection, conversation: Conversation, turn_id: int) -> Turn:
    """One turn of ``conversation``; a turn of any other conversation is not found."""
    row = conn.execute(
        select(turns).where(id_is(turns.c.id, turn_id), turns.c.conversation_id == conversation.id)
    ).first()
    if row is None:
        raise NotFound(f"turn {turn_id} not found in conversation {conversation.id}", param="turn")
    return _turn(row)


def withdraw(conn: Connection, turn: Turn, notice: str, why: dict[str, Any]) -> Turn:
    """Replace a turn's text with ``notice`` (moderation removed it); ``why`` is recorded."""
    record = {**(turn.governance or {}), "withdrawn": why}
    record.pop("notices", None)
    record.pop("label_id", None)  # the notice is not generated content
    conn.execute(
        update(turns)
        .where(turns.c.id == turn.id)
        .values(content=notice, citations=[], governance=record)
    )
    return dataclasses.replace(turn, content=notice, citations=[], governance=record)


# -- retention and erasure (called by concierge.governance) ----------------------------------


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
    return [_end_user(r) for r in conn.execute(query.order_by(end_users.c.id))]


def subject_data(conn: Connection, user: EndUser) -> dict[str, Any]:
    """Everything stored about one end user: conversations with their turns, memories."""
    rows = conn.execute(
        select(conversations)
        .where(conversations.c.end_user_id == user.id)
        .order_by(conversations.c.id)
    )
    out = []
    for row in rows:
        conversation = _conversation(row)
        listed = conn.execute(
            select(turns).where(turns.c.conversation_id == conversation.id).order_by(turns.c.id)
        )
        out.append({**conversation.to_dict(), "turns": [_turn(t) for t in listed]})
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
