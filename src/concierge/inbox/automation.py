"""The inbox's automatic steps (run by the pass in :mod:`concierge.inbox.service`) and its
listing: snoozes that end, SLA targets missed, open conversations given to the next agent;
the queue with its filters."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, or_, select, update

from concierge.governance import audit
from concierge.inbox import people
from concierge.inbox.items import Item, ItemStatus, get, item_of, update_item
from concierge.inbox.settings import InboxSettings
from concierge.store.tables import inbox_items


def wake_snoozed(conn: Connection, now: datetime) -> int:
    return int(
        conn.execute(
            update(inbox_items)
            .where(inbox_items.c.status == ItemStatus.SNOOZED, inbox_items.c.snoozed_until <= now)
            .values(status=ItemStatus.OPEN, snoozed_until=None, updated_at=now)
        ).rowcount
        or 0
    )


def flag_breaches(conn: Connection, now: datetime) -> int:
    """Mark the SLA targets missed: no first response, or not resolved, by their due time."""
    flagged = 0
    rows = conn.execute(
        select(inbox_items).where(
            inbox_items.c.status != ItemStatus.RESOLVED,
            or_(
                (inbox_items.c.first_response_due <= now)
                & inbox_items.c.first_response_at.is_(None),
                inbox_items.c.resolution_due <= now,
            ),
        )
    ).all()
    for row in rows:
        item = item_of(row)
        missed = set(item.breaches)
        if (
            item.first_response_at is None
            and item.first_response_due
            and item.first_response_due <= now
        ):
            missed.add("first_response")
        if item.resolution_due and item.resolution_due <= now:
            missed.add("resolution")
        if missed != set(item.breaches):
            update_item(conn, item, breaches=sorted(missed))
            audit.record(
                conn,
                "inbox.sla_breached",
                actor="system:inbox",
                org_id=item.org_id,
                target=f"conversation:{item.conversation_id}",
                details={"breached": sorted(missed - set(item.breaches))},
            )
            flagged += 1
    return flagged


def unassigned(conn: Connection, limit: int = 200) -> list[Item]:
    rows = conn.execute(
        select(inbox_items)
        .where(inbox_items.c.status == ItemStatus.OPEN, inbox_items.c.assignee_id.is_(None))
        .order_by(inbox_items.c.opened_at)
        .limit(limit)
    )
    return [item_of(r) for r in rows]


def auto_assign(conn: Connection, item: Item, settings: InboxSettings) -> Item | None:
    """Give an unassigned open item to the next agent (its team's rule, else the
    organisation's); None when assignment is manual or nobody is free."""
    mode: str = settings.assignment
    if item.team_id is not None:
        mode = people.team(conn, item.org_id, item.team_id).assignment
    chosen = people.pick(conn, item.org_id, mode, item.team_id)
    if chosen is None:
        return None
    done = conn.execute(
        update(inbox_items)
        .where(
            inbox_items.c.conversation_id == item.conversation_id,
            inbox_items.c.assignee_id.is_(None),
        )
        .values(assignee_id=chosen.id, updated_at=datetime.now(UTC))
    )
    if not done.rowcount:
        return None
    people.mark_assigned(conn, chosen.id)
    audit.record(
        conn,
        "inbox.assigned",
        actor="system:inbox",
        org_id=item.org_id,
        target=f"conversation:{item.conversation_id}",
        details={"agent_id": chosen.id, "rule": mode},
    )
    return get(conn, item.org_id, item.conversation_id)


def list_items(
    conn: Connection,
    org_id: int,
    *,
    status: ItemStatus | None = None,
    assignee_id: int | None = None,
    unassigned_only: bool = False,
    team_id: int | None = None,
    label_name: str | None = None,
    channel: str | None = None,
    breached: bool | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[Item], bool]:
    query = select(inbox_items).where(inbox_items.c.org_id == org_id)
    if status is not None:
        query = query.where(inbox_items.c.status == status)
    if assignee_id is not None:
        query = query.where(inbox_items.c.assignee_id == assignee_id)
    if unassigned_only:
        query = query.where(inbox_items.c.assignee_id.is_(None))
    if team_id is not None:
        query = query.where(inbox_items.c.team_id == team_id)
    if channel is not None:
        query = query.where(inbox_items.c.channel == channel)
    if before is not None:
        query = query.where(inbox_items.c.conversation_id < before)
    query = query.order_by(inbox_items.c.conversation_id.desc())
    found: list[Item] = []
    more = False
    # Labels and breaches are JSON lists: filtered here, reading on in pages.
    for row in conn.execute(query):
        item = item_of(row)
        if label_name is not None and label_name not in item.labels:
            continue
        if breached is not None and bool(item.breaches) != breached:
            continue
        if len(found) == limit:
            more = True
            break
        found.append(item)
    return found, more
