"""Organisations: the tenants. Every key, document and conversation belongs to one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, ScalarSelect, insert, select
from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError

from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.store import aware
from concierge.store.tables import organizations

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
DEFAULT_ORG = "default"


@dataclass(frozen=True)
class Organization:
    id: int
    slug: str
    name: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
        }


def _row(row: Any) -> Organization:
    return Organization(row.id, row.slug, row.name, aware(row.created_at))


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug):
        raise InvalidRequest(
            f"'{slug}' is not a valid organisation slug: use 1-64 lowercase letters, digits and "
            "hyphens, starting and ending with a letter or digit",
            param="slug",
        )
    return slug


def create(
    conn: Connection, slug: str, name: str | None = None, *, actor: str = "system"
) -> Organization:
    validate_slug(slug)
    name = (name or slug).strip()
    if not name or len(name) > 200:
        raise InvalidRequest("an organisation name has 1-200 characters", param="name")
    now = datetime.now(UTC)
    try:
        with conn.begin_nested():
            result = conn.execute(
                insert(organizations).values(slug=slug, name=name, created_at=now)
            )
    except IntegrityError:
        raise Conflict(f"an organisation with slug '{slug}' already exists", param="slug") from None
    assert result.inserted_primary_key is not None
    org_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        "org.created",
        actor=actor,
        org_id=org_id,
        target=f"org:{org_id}",
        details={"slug": slug, "name": name},
    )
    return Organization(org_id, slug, name, now)


def get(conn: Connection, slug: str) -> Organization:
    if not SLUG_PATTERN.match(slug):
        raise NotFound(f"no organisation with slug {slug!r}", param="org")
    row = conn.execute(select(organizations).where(organizations.c.slug == slug)).first()
    if row is None:
        raise NotFound(f"no organisation with slug '{slug}'", param="org")
    return _row(row)


def get_by_id(conn: Connection, org_id: int) -> Organization:
    row = conn.execute(select(organizations).where(organizations.c.id == org_id)).first()
    if row is None:
        raise NotFound(f"no organisation with id {org_id}")
    return _row(row)


def slug_column(org_id: ColumnElement[Any]) -> ScalarSelect[Any]:
    """The slug of the organisation ``org_id`` (a column of another module's query) refers to,
    as a column of that query: it shows the slug in one round trip without reading this
    module's table itself."""
    return select(organizations.c.slug).where(organizations.c.id == org_id).scalar_subquery()


def list_all(conn: Connection) -> list[Organization]:
    return [_row(r) for r in conn.execute(select(organizations).order_by(organizations.c.id))]


def ensure(conn: Connection, slug: str, name: str | None = None) -> Organization:
    """The organisation, made if it does not exist (by this call or, meanwhile, another)."""
    row = conn.execute(select(organizations).where(organizations.c.slug == slug)).first()
    if row is not None:
        return _row(row)
    try:
        return create(conn, slug, name)
    except Conflict:  # two replicas starting at once: the other one made it
        return get(conn, slug)


def delete(conn: Connection, slug: str, *, actor: str = "system") -> bool:
    """Delete an organisation and everything it owns (every table's rows go with it); the
    audit log keeps that it happened. False when there was none."""
    try:
        org = get(conn, slug)
    except NotFound:
        return False
    conn.execute(sa_delete(organizations).where(organizations.c.id == org.id))
    audit.record(
        conn,
        "org.deleted",
        actor=actor,
        target=f"org:{org.id}",
        details={"slug": org.slug, "name": org.name},
    )
    return True
