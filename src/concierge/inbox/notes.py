"""Private notes on a conversation (never sent to the customer) and canned responses: texts
people reuse, with variables filled in when used (``{{customer.name}}``, ``{{agent.name}}``,
``{{conversation.id}}``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.governance import audit
from concierge.store import aware
from concierge.store.tables import inbox_canned, inbox_notes

SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VARIABLE = re.compile(r"\{\{\s*([a-z_]+(?:\.[a-z_]+)?)\s*\}\}")


@dataclass(frozen=True)
class Note:
    id: int
    conversation_id: int
    author: str
    text: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "inbox.note",
            "conversation_id": self.conversation_id,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Canned:
    id: int
    shortcut: str
    text: str
    updated_at: datetime

    @property
    def variables(self) -> list[str]:
        return sorted(set(VARIABLE.findall(self.text)))

    def fill(self, values: dict[str, str]) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise InvalidRequest(
                f"canned response '{self.shortcut}' needs {', '.join(missing)}", param="variables"
            )
        return VARIABLE.sub(lambda m: values[m.group(1)], self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "inbox.canned_response",
            "shortcut": self.shortcut,
            "text": self.text,
            "variables": self.variables,
            "updated_at": self.updated_at.isoformat(),
        }


def add_note(conn: Connection, org_id: int, conversation_id: int, author: str, text: str) -> Note:
    now = datetime.now(UTC)
    key = conn.execute(
        insert(inbox_notes).values(
            org_id=org_id,
            conversation_id=conversation_id,
            author=author,
            text=text,
            created_at=now,
        )
    ).inserted_primary_key
    assert key is not None
    audit.record(
        conn,
        "inbox.note",
        actor=author,
        org_id=org_id,
        target=f"conversation:{conversation_id}",
        details={"note_id": int(key[0])},  # not its text: notes may hold personal data
    )
    return Note(int(key[0]), conversation_id, author, text, now)


def notes(conn: Connection, org_id: int, conversation_id: int) -> list[Note]:
    rows = conn.execute(
        select(inbox_notes)
        .where(inbox_notes.c.org_id == org_id, inbox_notes.c.conversation_id == conversation_id)
        .order_by(inbox_notes.c.id)
    )
    return [Note(r.id, r.conversation_id, r.author, r.text, aware(r.created_at)) for r in rows]


def _canned(row: Any) -> Canned:
    return Canned(row.id, row.shortcut, row.text, aware(row.updated_at))


def canned(conn: Connection, org_id: int) -> list[Canned]:
    rows = conn.execute(
        select(inbox_canned)
        .where(inbox_canned.c.org_id == org_id)
        .order_by(inbox_canned.c.shortcut)
    )
    return [_canned(r) for r in rows]


def get_canned(conn: Connection, org_id: int, shortcut: str) -> Canned:
    row = conn.execute(
        select(inbox_canned).where(
            inbox_canned.c.org_id == org_id, inbox_canned.c.shortcut == shortcut
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"canned response '{shortcut[:64]}' not found", param="shortcut")
    return _canned(row)


def save_canned(conn: Connection, org_id: int, shortcut: str, text: str, *, actor: str) -> Canned:
    if not SHORTCUT.match(shortcut):
        raise InvalidRequest(
            "a shortcut is 1-64 lower-case letters, digits, '-' or '_'", param="shortcut"
        )
    now = datetime.now(UTC)
    done = conn.execute(
        update(inbox_canned)
        .where(inbox_canned.c.org_id == org_id, inbox_canned.c.shortcut == shortcut)
        .values(text=text, updated_at=now)
    )
    if not done.rowcount:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(inbox_canned).values(
                        org_id=org_id, shortcut=shortcut, text=text, created_at=now, updated_at=now
                    )
                )
        except IntegrityError:
            raise Conflict(f"canned response '{shortcut}' was just made by someone else") from None
    audit.record(conn, "inbox.canned", actor=actor, org_id=org_id, target=f"canned:{shortcut}")
    return get_canned(conn, org_id, shortcut)


def remove_canned(conn: Connection, org_id: int, shortcut: str, *, actor: str) -> None:
    get_canned(conn, org_id, shortcut)
    conn.execute(
        delete(inbox_canned).where(
            inbox_canned.c.org_id == org_id, inbox_canned.c.shortcut == shortcut
        )
    )
    audit.record(
        conn, "inbox.canned.delete", actor=actor, org_id=org_id, target=f"canned:{shortcut}"
    )
