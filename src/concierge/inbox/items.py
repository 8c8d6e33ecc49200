"""Conversations in the inbox: where each stands (open: the team owes a reply; pending: the
customer does; snoozed until a time; resolved), who has it, its labels, its SLA and its CSAT.

An item opens when a conversation is handed to people (by the assistant, the customer or an
operator) and follows it: a customer's message reopens a pending or snoozed item, a person's
reply makes it pending (the first one is its first response), resolving it hands the
conversation back to the assistant and asks for a rating. Every change by a person is audited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from concierge.conversations import store as conversations
from concierge.conversations.records import ConversationStatus
from concierge.conversations.store import Conversation
from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.inbox import people
from concierge.inbox.settings import InboxSettings
from concierge.store import aware, id_is
from concierge.store.tables import inbox_items

MAX_LABELS = 20
CSAT_PREFIX = "cc:csat:"
# A message for the customer from the inbox (out-of-hours reply, CSAT question): stored as a
# turn, then handed to whatever carries the conversation (a messaging channel's outbox).
Notify = Callable[[Connection, Conversation, int, str, list[tuple[str, str]]], None]


class ItemStatus(StrEnum):
    OPEN = "open"  # the team owes a reply
    PENDING = "pending"  # waiting for the customer
    SNOOZED = "snoozed"  # out of sight until snoozed_until (or the customer writes)
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Item:
    conversation_id: int
    org_id: int
    channel: str
    assistant_id: int
    status: ItemStatus
    snoozed_until: datetime | None
    assignee_id: int | None
    team_id: int | None
    labels: tuple[str, ...]
    opened_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    first_response_due: datetime | None
    resolution_due: datetime | None
    breaches: tuple[str, ...]
    out_of_hours: bool
    csat_score: int | None
    csat_at: datetime | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        def at(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "conversation_id": self.conversation_id,
            "object": "inbox.item",
            "channel": self.channel,
            "assistant_id": self.assistant_id,
            "status": str(self.status),
            "snoozed_until": at(self.snoozed_until),
            "assignee_id": self.assignee_id,
            "team_id": self.team_id,
            "labels": list(self.labels),
            "opened_at": at(self.opened_at),
            "first_response_at": at(self.first_response_at),
            "resolved_at": at(self.resolved_at),
            "sla": {
                "first_response_due": at(self.first_response_due),
                "resolution_due": at(self.resolution_due),
                "breached": list(self.breaches),
            },
            "out_of_hours": self.out_of_hours,
            "csat": {"score": self.csat_score, "at": at(self.csat_at)},
            "updated_at": at(self.updated_at),
        }


def item_of(row: Any) -> Item:
    return Item(
        row.conversation_id,
        row.org_id,
        row.channel,
        row.assistant_id,
        ItemStatus(row.status),
        aware(row.snoozed_until),
        row.assignee_id,
        row.team_id,
        tuple(row.labels or ()),
        aware(row.opened_at),
        aware(row.first_response_at),
        aware(row.resolved_at),
        aware(row.first_response_due),
        aware(row.resolution_due),
        tuple(row.breaches or ()),
        bool(row.out_of_hours),
        row.csat_score,
        aware(row.csat_at),
        aware(row.updated_at),
    )


def find(conn: Connection, org_id: int, conversation_id: int) -> Item | None:
    row = conn.execute(
        select(inbox_items).where(
            id_is(inbox_items.c.conversation_id, conversation_id), inbox_items.c.org_id == org_id
        )
    ).one_or_none()
    return None if row is None else item_of(row)


def get(conn: Connection, org_id: int, conversation_id: int) -> Item:
    found = find(conn, org_id, conversation_id)
    if found is None:
        conversations.get(conn, org_id, conversation_id)  # 404 for another org's or none
        raise NotFound(
            f"conversation {conversation_id} has never been handed to people", param="conversation"
        )
    return found


def update_item(conn: Connection, item: Item, **values: Any) -> Item:
    values["updated_at"] = datetime.now(UTC)
    conn.execute(
        update(inbox_items)
        .where(inbox_items.c.conversation_id == item.conversation_id)
        .values(values)
    )
    return get(conn, item.org_id, item.conversation_id)


# -- the inbox following conversations --------------------------------------------------------


def open_for(
    conn: Connection,
    conversation: Conversation,
    settings: InboxSettings,
    notify: Notify | None,
    now: datetime,
) -> Item | None:
    """Open (or reopen after a resolution) the item of a conversation handed to people; the
    out-of-hours reply goes out when the team is away. None when it is already open."""
    found = find(conn, conversation.org_id, conversation.id)
    handed = conversation.handoff_at or conversation.updated_at
    if found is not None and (
        found.status != ItemStatus.RESOLVED
        or (found.resolved_at is not None and handed <= found.resolved_at)
    ):
        return None
    first_due, resolve_due = settings.sla.due(now)
    away = not settings.business_hours.is_open(now)
    team_id = people.team(conn, conversation.org_id, settings.team).id if settings.team else None
    values: dict[str, Any] = {
        "status": ItemStatus.OPEN,
        "snoozed_until": None,
        "assignee_id": None,
        "team_id": team_id,
        "opened_at": now,
        "first_response_at": None,
        "resolved_at": None,
        "first_response_due": first_due,
        "resolution_due": resolve_due,
        "breaches": [],
        "out_of_hours": away,
        "csat_score": None,
        "csat_at": None,
        "updated_at": now,
    }
    if found is None:
        conn.execute(
            insert(inbox_items).values(
                conversation_id=conversation.id,
                org_id=conversation.org_id,
                channel=conversation.channel,
                assistant_id=conversation.assistant_id,
                labels=[],
                **values,
            )
        )
    else:  # a resolved conversation handed to people again: a new cycle
        done = conn.execute(
            update(inbox_items)
            .where(
                inbox_items.c.conversation_id == conversation.id,
                inbox_items.c.status == ItemStatus.RESOLVED,
            )
            .values(values)
        )
        if not done.rowcount:
            return None
    if away and notify is not None:
        say(conn, conversation, settings.business_hours.out_of_hours_text, [], notify)
    return get(conn, conversation.org_id, conversation.id)


def say(
    conn: Connection,
    conversation: Conversation,
    text: str,
    choices: list[tuple[str, str]],
    notify: Notify,
) -> None:
    """A message from the inbox to the customer: on record as a turn, then delivered."""
    turn = conversations.add_turn(conn, conversation, "assistant", text, author="inbox")
    notify(conn, conversation, turn.id, text, choices)


def customer_wrote(conn: Connection, org_id: int, conversation_id: int) -> None:
    """A customer's message: a pending or snoozed item is open again."""
    conn.execute(
        update(inbox_items)
        .where(
            inbox_items.c.conversation_id == conversation_id,
            inbox_items.c.org_id == org_id,
            inbox_items.c.status.in_([ItemStatus.PENDING, ItemStatus.SNOOZED]),
        )
        .values(status=ItemStatus.OPEN, snoozed_until=None, updated_at=datetime.now(UTC))
    )


def person_replied(conn: Connection, org_id: int, conversation_id: int, author: str) -> None:
    """A person's reply: the first is the first response; the customer owes the next word."""
    found = find(conn, org_id, conversation_id)
    if found is None or found.status == ItemStatus.RESOLVED:
        return
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": ItemStatus.PENDING, "snoozed_until": None}
    if found.first_response_at is None:
        values["first_response_at"] = now
    if found.assignee_id is None:
        # The agent who answers takes it (a reply through the API by someone who is not an
        # agent leaves it unassigned).
        with contextlib.suppress(NotFound):
            values["assignee_id"] = people.agent(conn, org_id, author).id
    update_item(conn, found, **values)


# -- what people do -------------------------------------------------------------------------


def _audit(conn: Connection, item: Item, action: str, actor: str, **details: Any) -> None:
    audit.record(
        conn,
        f"inbox.{action}",
        actor=actor,
        org_id=item.org_id,
        target=f"conversation:{item.conversation_id}",
        details=details,
    )


def assign(
    conn: Connection,
    org_id: int,
    conversation_id: int,
    *,
    agent: str | int | None,
    team: str | int | None,
    actor: str,
) -> Item:
    item = get(conn, org_id, conversation_id)
    values: dict[str, Any] = {}
    if agent is not None:
        chosen = people.agent(conn, org_id, agent)
        values["assignee_id"] = chosen.id
        people.mark_assigned(conn, chosen.id)
    if team is not None:
        values["team_id"] = people.team(conn, org_id, team).id
    if not values:
        values["assignee_id"] = None  # unassign
    done = update_item(conn, item, **values)
    _audit(conn, done, "assign", actor, agent_id=done.assignee_id, team_id=done.team_id)
    return done


def snooze(
    conn: Connection, org_id: int, conversation_id: int, until: datetime, *, actor: str
) -> Item:
    item = get(conn, org_id, conversation_id)
    if item.status == ItemStatus.RESOLVED:
        raise Conflict(f"conversation {conversation_id} is resolved; reopen it first")
    if until <= datetime.now(UTC):
        raise InvalidRequest("snooze until a time in the future", param="until")
    done = update_item(conn, item, status=ItemStatus.SNOOZED, snoozed_until=until)
    _audit(conn, done, "snooze", actor, until=until.isoformat())
    return done


def set_status(
    conn: Connection, org_id: int, conversation_id: int, status: ItemStatus, *, actor: str
) -> Item:
    """Open or pending by hand (resolve with :func:`resolve`, snooze with :func:`snooze`)."""
    item = get(conn, org_id, conversation_id)
    if status not in (ItemStatus.OPEN, ItemStatus.PENDING):
        raise InvalidRequest("status is open or pending here", param="status")
    if item.status == ItemStatus.RESOLVED:
        conversation = conversations.get(conn, org_id, conversation_id)
        if conversation.status == ConversationStatus.ASSISTANT:
            conversations.set_status(conn, conversation, ConversationStatus.HUMAN)
    done = update_item(conn, item, status=status, snoozed_until=None, resolved_at=None)
    _audit(conn, done, "status", actor, status=str(status))
    return done


def resolve(
    conn: Connection,
    org_id: int,
    conversation_id: int,
    *,
    actor: str,
    settings: InboxSettings,
    notify: Notify | None,
    ask_rating: bool = True,
) -> Item:
    """Resolved: the conversation goes back to the assistant, and the customer is asked for a
    rating (buttons 1-5 where the channel has them)."""
    item = get(conn, org_id, conversation_id)
    if item.status == ItemStatus.RESOLVED:
        raise Conflict(f"conversation {conversation_id} is already resolved")
    conversation = conversations.get(conn, org_id, conversation_id)
    conversation = conversations.set_status(conn, conversation, ConversationStatus.ASSISTANT)
    now = datetime.now(UTC)
    done = update_item(conn, item, status=ItemStatus.RESOLVED, resolved_at=now, snoozed_until=None)
    _audit(conn, done, "resolve", actor)
    if ask_rating and settings.csat.enabled and notify is not None:
        choices = [(f"{CSAT_PREFIX}{n}", str(n)) for n in range(1, 6)]
        say(conn, conversation, settings.csat.question, choices, notify)
    return done


def rate(conn: Connection, org_id: int, conversation_id: int, score: int) -> Item:
    """The customer's CSAT answer (1-5) for the conversation's last resolution."""
    if not 1 <= score <= 5:
        raise InvalidRequest("a rating is 1 to 5", param="score")
    item = get(conn, org_id, conversation_id)
    if item.resolved_at is None:
        raise Conflict(f"conversation {conversation_id} has not been resolved")
    return update_item(conn, item, csat_score=score, csat_at=datetime.now(UTC))


def label(
    conn: Connection,
    org_id: int,
    conversation_id: int,
    *,
    add: list[str],
    remove: list[str],
    actor: str,
) -> Item:
    item = get(conn, org_id, conversation_id)
    labels = [lbl for lbl in item.labels if lbl not in remove]
    labels += [lbl for lbl in add if lbl not in labels]
    if len(labels) > MAX_LABELS:
        raise InvalidRequest(f"a conversation has at most {MAX_LABELS} labels", param="add")
    done = update_item(conn, item, labels=labels)
    _audit(conn, done, "label", actor, add=add, remove=remove)
    return done


def find_many(conn: Connection, conversation_ids: list[int]) -> dict[int, Item]:
    if not conversation_ids:
        return {}
    rows = conn.execute(
        select(inbox_items).where(inbox_items.c.conversation_id.in_(conversation_ids))
    )
    return {int(r.conversation_id): item_of(r) for r in rows}
