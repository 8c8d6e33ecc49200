"""Agents (the people who answer, by account id until they sign in to the console) and teams,
and how a conversation finds its person: round robin (the available agent assigned longest
ago) or by capacity (the available agent with the fewest open conversations, under their
limit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.store import aware, id_is
from concierge.store.tables import inbox_agents, inbox_items, inbox_team_members, inbox_teams

ACTIVE = ("open", "pending", "snoozed")  # statuses that take an agent's capacity


@dataclass(frozen=True)
class Agent:
    id: int
    account: str
    name: str
    capacity: int
    available: bool
    last_assigned_at: datetime | None
    open_conversations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "inbox.agent",
            "account": self.account,
            "name": self.name,
            "capacity": self.capacity,
            "available": self.available,
            "open_conversations": self.open_conversations,
            "last_assigned_at": self.last_assigned_at.isoformat()
            if self.last_assigned_at
            else None,
        }


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    assignment: str
    members: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "inbox.team",
            "name": self.name,
            "assignment": self.assignment,
            "members": list(self.members),
        }


def _load(conn: Connection, org_id: int, where: Any = None) -> list[Agent]:
    load = (
        select(inbox_items.c.assignee_id, func.count().label("n"))
        .where(inbox_items.c.org_id == org_id, inbox_items.c.status.in_(ACTIVE))
        .group_by(inbox_items.c.assignee_id)
        .subquery()
    )
    query = (
        select(inbox_agents, func.coalesce(load.c.n, 0).label("n"))
        .outerjoin(load, load.c.assignee_id == inbox_agents.c.id)
        .where(inbox_agents.c.org_id == org_id)
        .order_by(inbox_agents.c.id)
    )
    if where is not None:
        query = query.where(where)
    return [
        Agent(
            r.id,
            r.account,
            r.name,
            r.capacity,
            bool(r.available),
            aware(r.last_assigned_at),
            int(r.n),
        )
        for r in conn.execute(query)
    ]


def agents(conn: Connection, org_id: int) -> list[Agent]:
    return _load(conn, org_id)


def agent(conn: Connection, org_id: int, ref: int | str) -> Agent:
    """By id, or by account."""
    where = id_is(inbox_agents.c.id, ref) if isinstance(ref, int) else inbox_agents.c.account == ref
    found = _load(conn, org_id, where)
    if not found:
        raise NotFound(f"agent '{ref}' not found", param="agent")
    return found[0]


def save_agent(
    conn: Connection,
    org_id: int,
    *,
    account: str,
    name: str | None,
    capacity: int | None,
    available: bool | None,
    actor: str,
) -> Agent:
    """Make or change the agent with this account."""
    existing = _load(conn, org_id, inbox_agents.c.account == account)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    if capacity is not None:
        values["capacity"] = capacity
    if available is not None:
        values["available"] = available
    if existing:
        if values:
            conn.execute(
                update(inbox_agents).where(inbox_agents.c.id == existing[0].id).values(values)
            )
    else:
        conn.execute(
            insert(inbox_agents).values(
                org_id=org_id,
                account=account,
                name=name or account,
                capacity=capacity if capacity is not None else 10,
                available=True if available is None else available,
                created_at=datetime.now(UTC),
            )
        )
    audit.record(
        conn,
        "inbox.agent",
        actor=actor,
        org_id=org_id,
        target=f"agent:{account}",
        details={"changed": sorted(values)},
    )
    return agent(conn, org_id, account)


def remove_agent(conn: Connection, org_id: int, ref: int | str, *, actor: str) -> None:
    found = agent(conn, org_id, ref)
    conn.execute(delete(inbox_agents).where(inbox_agents.c.id == found.id))
    audit.record(
        conn, "inbox.agent.delete", actor=actor, org_id=org_id, target=f"agent:{found.account}"
    )


def teams(conn: Connection, org_id: int) -> list[Team]:
    rows = conn.execute(
        select(inbox_teams).where(inbox_teams.c.org_id == org_id).order_by(inbox_teams.c.id)
    ).all()
    members: dict[int, list[int]] = {}
    for m in conn.execute(
        select(inbox_team_members).where(inbox_team_members.c.team_id.in_([r.id for r in rows]))
    ):
        members.setdefault(m.team_id, []).append(m.agent_id)
    return [Team(r.id, r.name, r.assignment, tuple(sorted(members.get(r.id, [])))) for r in rows]


def team(conn: Connection, org_id: int, ref: int | str) -> Team:
    for found in teams(conn, org_id):
        if found.id == ref or found.name == ref:
            return found
    raise NotFound(f"team '{ref}' not found", param="team")


def save_team(
    conn: Connection,
    org_id: int,
    *,
    name: str,
    assignment: str,
    members: list[str],
    actor: str,
) -> Team:
    """Make or replace the team called ``name``; ``members`` are agents' accounts."""
    ids = [agent(conn, org_id, account).id for account in members]
    existing = conn.execute(
        select(inbox_teams.c.id).where(inbox_teams.c.org_id == org_id, inbox_teams.c.name == name)
    ).first()
    if existing is None:
        try:
            with conn.begin_nested():
                key = conn.execute(
                    insert(inbox_teams).values(
                        org_id=org_id,
                        name=name,
                        assignment=assignment,
                        created_at=datetime.now(UTC),
                    )
                ).inserted_primary_key
        except IntegrityError:
            raise Conflict(f"team '{name}' was just made by someone else") from None
        assert key is not None
        team_id = int(key[0])
    else:
        team_id = int(existing.id)
        conn.execute(
            update(inbox_teams).where(inbox_teams.c.id == team_id).values(assignment=assignment)
        )
        conn.execute(delete(inbox_team_members).where(inbox_team_members.c.team_id == team_id))
    if ids:
        conn.execute(insert(inbox_team_members), [{"team_id": team_id, "agent_id": i} for i in ids])
    audit.record(
        conn,
        "inbox.team",
        actor=actor,
        org_id=org_id,
        target=f"team:{name}",
        details={"assignment": assignment, "members": sorted(ids)},
    )
    return team(conn, org_id, team_id)


def pick(conn: Connection, org_id: int, mode: str, team_id: int | None) -> Agent | None:
    """The agent a new conversation goes to, or None (manual, or nobody free)."""
    if mode == "manual":
        return None
    candidates = [a for a in _load(conn, org_id) if a.available]
    if team_id is not None:
        members = {
            int(r.agent_id)
            for r in conn.execute(
                select(inbox_team_members.c.agent_id).where(inbox_team_members.c.team_id == team_id)
            )
        }
        candidates = [a for a in candidates if a.id in members]
    candidates = [a for a in candidates if a.open_conversations < a.capacity]
    if not candidates:
        return None
    epoch = datetime.min.replace(tzinfo=UTC)
    if mode == "capacity":
        return min(candidates, key=lambda a: (a.open_conversations / a.capacity, a.id))
    if mode == "round_robin":
        return min(candidates, key=lambda a: (a.last_assigned_at or epoch, a.id))
    raise InvalidRequest(f"unknown assignment mode {mode!r}", param="assignment")


def mark_assigned(conn: Connection, agent_id: int) -> None:
    conn.execute(
        update(inbox_agents)
        .where(inbox_agents.c.id == agent_id)
        .values(last_assigned_at=datetime.now(UTC))
    )
