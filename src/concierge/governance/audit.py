"""The audit log: append-only and hash-chained.

Each entry carries the hash of the one before it, and its own hash covers its sequence number,
organisation, actor, action, target, details, time and that previous hash (SHA-256 over
canonical JSON). Editing an entry breaks its own hash; deleting one breaks the chain at the
next (and leaves a gap in the sequence); reordering changes the sequence numbers the hashes
cover. The newest entry's number and hash are also kept in ``audit_head``, updated in the same
transaction, so removing entries from the end is found too. Whoever can write the database
could still rewrite every entry and the head consistently; :class:`Anchor` copies of the head,
kept elsewhere, catch that (``concierge audit head``, ``verify --anchors-file``).

Entries are written in the caller's transaction: the change and its record commit together or
not at all. Appenders lock the head row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
writes are serial already), so the chain is extended one entry at a time across replicas.

Only this module writes these tables; nothing ever updates or deletes an entry.
"""

from __future__ import annotations

import getpass
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update

from concierge.errors import InvalidRequest
from concierge.store import aware
from concierge.store.tables import audit_head, audit_log

GENESIS = "0" * 64
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_BATCH = 1000


@dataclass(frozen=True)
class Entry:
    id: int
    seq: int
    org_id: int | None
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    created_at: datetime
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "org_id": self.org_id,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
            "created_at": self.created_at.isoformat(),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _timestamp(value: datetime) -> str:
    return aware(value).astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    org_id: int | None,
    actor: str,
    action: str,
    target: str | None,
    details: dict[str, Any],
    created_at: datetime,
    prev_hash: str,
) -> str:
    body = orjson.dumps(
        {
            "seq": seq,
            "org_id": org_id,
            "actor": actor,
            "action": action,
            "target": target,
            "details": details,
            "created_at": _timestamp(created_at),
            "prev_hash": prev_hash,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(body).hexdigest()


def cli_actor() -> str:
    """Who runs a CLI command: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def record(
    conn: Connection,
    action: str,
    *,
    actor: str,
    org_id: int | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> Entry:
    """Append an entry, in the caller's transaction."""
    query = _HEAD
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    head = conn.execute(query).one_or_none()
    if head is None:
        head = _new_head(conn)
    # JSON in and out of the database must hash the same: keep only what JSON can carry.
    clean: dict[str, Any] = orjson.loads(orjson.dumps(details or {}, default=str))
    # Microseconds are the finest both backends keep.
    now = datetime.now(UTC)
    seq = int(head.seq) + 1
    fields: dict[str, Any] = {
        "seq": seq,
        "org_id": org_id,
        "actor": actor[:200],
        "action": action[:64],
        "target": target[:200] if target is not None else None,
        "details": clean,
        "created_at": now,
        "prev_hash": str(head.hash),
    }
    digest = entry_hash(**fields)
    result = conn.execute(insert(audit_log).values(**fields, hash=digest))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    assert result.inserted_primary_key is not None
    return Entry(id=int(result.inserted_primary_key[0]), hash=digest, **fields)


def _new_head(conn: Connection) -> Any:
    """The head row of an empty log (the migration makes it; an emptied database lacks it).
    A log that has entries but no head was tampered with: nothing more is appended to it."""
    if conn.execute(select(audit_log.c.id).limit(1)).first() is not None:
        raise RuntimeError("the audit log has entries but no head: run `concierge audit verify`")
    conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))
    return conn.execute(_HEAD).one()


def _entry(row: Any) -> Entry:
    return Entry(
        id=int(row.id),
        seq=int(row.seq),
        org_id=row.org_id,
        actor=row.actor,
        action=row.action,
        target=row.target,
        details=row.details,
        created_at=aware(row.created_at),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def entries(
    conn: Connection,
    *,
    org_id: int | None = None,
    action: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[Entry]:
    """Entries in order, from sequence number ``after`` on; an organisation's only when given."""
    query = select(audit_log).where(audit_log.c.seq > after)
    if org_id is not None:
        query = query.where(audit_log.c.org_id == org_id)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    query = query.order_by(audit_log.c.seq).limit(limit)
    return [_entry(r) for r in conn.execute(query)]


def _all(conn: Connection) -> Iterator[Entry]:
    after = 0
    while True:
        batch = entries(conn, after=after, limit=_BATCH)
        yield from batch
        if len(batch) < _BATCH:
            return
        after = batch[-1].seq


_ANCHOR = re.compile(r"^([1-9][0-9]{0,17}):([0-9a-f]{64})$")


@dataclass(frozen=True)
class Anchor:
    """An entry's number and hash kept outside the database (``SEQ:HASH``).

    The chain shows any change to some entries; someone able to write the database could
    still rewrite every entry and the head consistently. A copy of the head taken regularly
    and kept where the database's writers cannot write rules that out: a rewritten log no
    longer holds the anchored hash at that number.
    """

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        found = _ANCHOR.match(text.strip().lower())
        if found is None:
            raise InvalidRequest(
                f"an anchor is SEQ:HASH (as `concierge audit head` prints it), not {text[:80]!r}",
                param="anchor",
            )
        return cls(int(found.group(1)), found.group(2))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def read_anchors(lines: Iterable[str]) -> list[Anchor]:
    """Anchors from a file of them: the first word of each line (a date or a note may follow);
    blank lines and lines starting with ``#`` are skipped."""
    out = []
    for line in lines:
        words = line.split()
        if words and not words[0].startswith("#"):
            out.append(Anchor.parse(words[0]))
    return out


def head(conn: Connection) -> Anchor | None:
    """The newest entry's number and hash (None: nothing recorded yet)."""
    row = conn.execute(_HEAD).one_or_none()
    if row is None or int(row.seq) == 0:
        return None
    return Anchor(int(row.seq), str(row.hash))


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    problem: str | None = None
    bad_seq: int | None = None  # the first entry that fails
    bad_id: int | None = None
    anchors_checked: int = 0


def verify(conn: Connection, anchors: Sequence[Anchor] = ()) -> Verification:
    """Walk the whole chain; the first entry that does not hold is named. Each anchor's entry
    must still carry the anchored hash."""
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    last: Entry | None = None
    matched = 0
    pinned: dict[int, str] = {}
    for anchor in anchors:
        if pinned.setdefault(anchor.seq, anchor.hash) != anchor.hash:
            raise InvalidRequest(f"two anchors for entry {anchor.seq} disagree", param="anchor")
    for entry in _all(conn):
        where = {"bad_seq": entry.seq, "bad_id": entry.id}
        if entry.seq != expected_seq:
            return Verification(
                False,
                checked,
                f"entry {entry.seq} follows entry {expected_seq - 1}: "
                f"entries {expected_seq}..{entry.seq - 1} are missing or out of order",
                **where,
            )
        if entry.prev_hash != expected_prev:
            return Verification(
                False,
                checked,
                f"entry {entry.seq} does not follow from the entry before it "
                "(an entry was deleted, reordered or edited)",
                **where,
            )
        recomputed = entry_hash(
            seq=entry.seq,
            org_id=entry.org_id,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            details=entry.details,
            created_at=entry.created_at,
            prev_hash=entry.prev_hash,
        )
        if recomputed != entry.hash:
            return Verification(
                False, checked, f"entry {entry.seq} was altered: its hash does not match", **where
            )
        if entry.seq in pinned and pinned[entry.seq] != entry.hash:
            return Verification(
                False,
                checked,
                f"entry {entry.seq} is not the entry anchored outside the database (hash "
                f"{entry.hash[:12]}…, anchored {pinned[entry.seq][:12]}…): the log was "
                f"rewritten at or before entry {entry.seq}",
                **where,
                anchors_checked=matched,
            )
        if entry.seq in pinned:
            matched += 1
        checked += 1
        expected_prev = entry.hash
        expected_seq += 1
        last = entry
    row = conn.execute(_HEAD).one_or_none()
    last_seq = last.seq if last else 0
    last_hash = last.hash if last else GENESIS
    if row is None or int(row.seq) != last_seq or row.hash != last_hash:
        recorded = int(row.seq) if row is not None else "unknown"
        return Verification(
            False,
            checked,
            f"the log ends at entry {last_seq} but its head records entry {recorded}: "
            "entries were removed from the end, or the head was altered",
            bad_seq=last_seq + 1,
        )
    beyond = [seq for seq in pinned if seq > last_seq]
    if beyond:
        return Verification(
            False,
            checked,
            f"entry {min(beyond)} was anchored outside the database but the log ends at entry "
            f"{last_seq}: entries were removed from the end and the head rewritten",
            bad_seq=min(beyond),
            anchors_checked=matched,
        )
    return Verification(True, checked, anchors_checked=matched)
