"""Installation secrets: made at random on first use, kept in the database so that every
replica of a deployment signs and verifies with the same key."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from concierge.store.tables import server_secrets


def server_secret(conn: Connection, name: str) -> str:
    """The secret called ``name`` (64 hex characters), made if it does not exist yet."""
    query = select(server_secrets.c.value).where(server_secrets.c.name == name)
    value = conn.execute(query).scalar_one_or_none()
    if value is not None:
        return str(value)
    try:
        with conn.begin_nested():
            conn.execute(
                insert(server_secrets).values(
                    name=name, value=secrets.token_hex(32), created_at=datetime.now(UTC)
                )
            )
    except IntegrityError:  # another replica made it first
        pass
    return str(conn.execute(query).scalar_one())
