"""The audit log: what is recorded, and that tampering in the database is found.

Edits, deletions and reorderings are made with plain SQL on the real database (SQLite and
PostgreSQL), then `concierge audit verify` is run as an operator runs it.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from concierge.governance import audit
from concierge.store import Database
from concierge.store.tables import audit_log


async def _actions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    out = (await client.get("/api/audit", params={"limit": 1000})).json()
    return list(out["data"])


async def test_admin_actions_are_recorded_and_the_chain_verifies(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post("/api/orgs", json={"slug": "acme", "name": "Acme"})
    assert made.status_code == 201
    key = (await client.post("/api/keys", json={"org": "acme", "name": "shop"})).json()
    assert (await client.delete(f"/api/keys/{key['id']}")).status_code == 200
    off = await client.patch("/api/orgs/acme/policy", json={"disclosure": {"enabled": False}})
    assert off.status_code == 200, off.text
    assert off.json()["version"] == 1 and off.json()["disclosure"]["enabled"] is False

    entries = await _actions(client)
    actions = [e["action"] for e in entries]
    for expected in (
        "org.created",
        "key.created",
        "key.revoked",
        "policy.updated",
        "disclosure.disabled",
    ):
        assert expected in actions, actions
    created = next(
        e for e in entries if e["action"] == "key.created" and e["target"] == f"key:{key['id']}"
    )
    assert created["actor"].startswith("key:") and created["details"]["name"] == "shop"
    assert key["key"] not in str(entries)  # secrets never reach the log
    changed = next(e for e in entries if e["action"] == "policy.updated")
    assert changed["details"]["changes"] == {"disclosure.enabled": {"from": True, "to": False}}
    # Each entry carries the previous one's hash.
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"] and after["seq"] == before["seq"] + 1

    verified = (await client.get("/api/audit/verify")).json()
    assert verified["ok"] is True and verified["checked"] == len(entries)
    # Only admins read it.
    shop = (await client.post("/api/keys", json={"org": "acme", "name": "x"})).json()["key"]
    refused = await client.get("/api/audit", headers={"Authorization": f"Bearer {shop}"})
    assert refused.status_code == 403


def _sql(url: str, statement: str, **params: Any) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def _fill(db: Database, count: int) -> list[audit.Entry]:
    return [
        db.write_sync(
            lambda conn, i=i: audit.record(
                conn, "test.event", actor="tester", org_id=1, details={"n": i, "note": "ünïcode"}
            )
        )
        for i in range(count)
    ]


def test_verify_finds_an_edit_a_deletion_and_a_reordering(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    db = Database(db_url, pooled=False)
    try:
        entries = _fill(db, 6)
    finally:
        db.close()
    ok = cli("audit", "verify")
    assert "audit log intact: 6 entries" in ok.stdout

    # 1. An edited entry: its hash no longer matches.
    third = entries[2]
    _sql(db_url, "UPDATE audit_log SET actor = 'someone else' WHERE id = :id", id=third.id)
    broken = cli("audit", "verify", ok=False)
    assert broken.returncode == 1
    assert f"BROKEN at entry {third.seq}" in broken.stderr and "altered" in broken.stderr
    _sql(db_url, "UPDATE audit_log SET actor = 'tester' WHERE id = :id", id=third.id)
    assert cli("audit", "verify").returncode == 0  # put back, it holds again

    # 2. A deleted entry: the next one no longer follows.
    _sql(db_url, "DELETE FROM audit_log WHERE id = :id", id=entries[3].id)
    broken = cli("audit", "verify", ok=False)
    assert broken.returncode == 1 and f"entry {entries[4].seq}" in broken.stderr
    assert "missing or out of order" in broken.stderr


def test_verify_finds_reordering_and_a_truncated_end(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    db = Database(db_url, pooled=False)
    try:
        entries = _fill(db, 5)
    finally:
        db.close()
    # 3. Two entries swapped: their sequence numbers exchanged (hashes cover them).
    a, b = entries[1], entries[2]
    _sql(db_url, "UPDATE audit_log SET seq = -1 WHERE id = :id", id=a.id)
    _sql(db_url, "UPDATE audit_log SET seq = :s WHERE id = :id", s=a.seq, id=b.id)
    _sql(db_url, "UPDATE audit_log SET seq = :s WHERE id = :id", s=b.seq, id=a.id)
    broken = cli("audit", "verify", ok=False)
    assert broken.returncode == 1 and f"BROKEN at entry {a.seq}" in broken.stderr
    _sql(db_url, "UPDATE audit_log SET seq = -1 WHERE id = :id", id=a.id)
    _sql(db_url, "UPDATE audit_log SET seq = :s WHERE id = :id", s=b.seq, id=b.id)
    _sql(db_url, "UPDATE audit_log SET seq = :s WHERE id = :id", s=a.seq, id=a.id)
    assert cli("audit", "verify").returncode == 0

    # 4. The newest entry deleted: the chain alone would not show it; the head does.
    _sql(db_url, "DELETE FROM audit_log WHERE id = :id", id=entries[-1].id)
    broken = cli("audit", "verify", ok=False)
    assert broken.returncode == 1 and "removed from the end" in broken.stderr
    listed = cli("audit", "list", "--json")
    assert len(listed.stdout.strip().splitlines()) == 4


async def test_an_audited_change_and_its_entry_commit_together(db: Database) -> None:
    def fails(conn: Any) -> None:
        audit.record(conn, "test.event", actor="tester")
        raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await db.write(fails)
    assert await db.read(lambda conn: audit.entries(conn)) == []
    await db.write(lambda conn: audit.record(conn, "test.event", actor="tester"))
    result = await db.read(audit.verify)
    assert result.ok and result.checked == 1


def _rewrite_chain(url: str, edit_id: int) -> None:
    """What a database writer who knows the scheme can do: edit an entry, then recompute every
    hash after it and the head, so that the chain alone holds again."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'forger' WHERE id = :id"), {"id": edit_id})
        prev = audit.GENESIS
        for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)).all():
            digest = audit.entry_hash(
                seq=row.seq,
                org_id=row.org_id,
                actor=row.actor,
                action=row.action,
                target=row.target,
                details=row.details,
                created_at=row.created_at,
                prev_hash=prev,
            )
            conn.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id"),
                {"p": prev, "h": digest, "id": row.id},
            )
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})
    engine.dispose()


def test_anchors_kept_elsewhere_find_a_rewritten_chain(cli, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = Database(db_url, pooled=False)
    try:
        entries = _fill(db, 4)
    finally:
        db.close()
    # The operator keeps the head somewhere the database's writers cannot reach.
    anchors = tmp_path / "anchors"
    first = cli("audit", "head").stdout.strip()
    assert first == f"{entries[-1].seq}:{entries[-1].hash}"
    anchors.write_text(f"# taken daily\n{first} 2026-11-23T08:00:00+00:00\n")
    later = _fill_more(db_url, 2)
    anchors.write_text(anchors.read_text() + cli("audit", "head").stdout)
    ok = cli("audit", "verify", "--anchors-file", str(anchors))
    assert "intact: 6 entries" in ok.stdout and "2 anchors match" in ok.stdout

    # Someone edits entry 2 and recomputes every hash after it, and the head.
    _rewrite_chain(db_url, entries[1].id)
    assert cli("audit", "verify").returncode == 0  # the chain alone cannot tell
    broken = cli("audit", "verify", "--anchors-file", str(anchors), ok=False)
    assert broken.returncode == 1
    assert f"BROKEN at entry {entries[-1].seq}" in broken.stderr
    assert "rewritten at or before" in broken.stderr
    one = cli("audit", "verify", "--anchor", f"{later[-1].seq}:{later[-1].hash}", ok=False)
    assert one.returncode == 1 and f"entry {later[-1].seq}" in one.stderr

    # Entries cut from the end with the head rewritten: the anchor beyond the end says so.
    _sql(db_url, "DELETE FROM audit_log WHERE seq > :s", s=entries[-1].seq)
    _sql(
        db_url,
        "UPDATE audit_head SET seq = :s, hash = (SELECT hash FROM audit_log WHERE seq = :s)",
        s=entries[-1].seq,
    )
    assert cli("audit", "verify").returncode == 0
    cut = cli("audit", "verify", "--anchor", f"{later[-1].seq}:{later[-1].hash}", ok=False)
    assert cut.returncode == 1
    assert f"entry {later[-1].seq} was anchored outside the database" in cut.stderr

    # Malformed anchors: a usage error, nothing checked.
    bad = cli("audit", "verify", "--anchor", "12:nothex", ok=False)
    assert bad.returncode == 2 and "SEQ:HASH" in bad.stderr
    anchors.write_text("not-an-anchor\n")
    bad = cli("audit", "verify", "--anchors-file", str(anchors), ok=False)
    assert bad.returncode == 2 and "SEQ:HASH" in bad.stderr


def _fill_more(url: str, count: int) -> list[audit.Entry]:
    db = Database(url, pooled=False)
    try:
        return _fill(db, count)
    finally:
        db.close()


async def test_anchors_through_the_api(client: httpx.AsyncClient) -> None:
    await client.post("/api/orgs", json={"slug": "acme", "name": "Acme"})
    head = (await client.get("/api/audit/head")).json()
    assert head["object"] == "audit.head" and head["anchor"] == f"{head['seq']}:{head['hash']}"
    checked = (await client.get("/api/audit/verify", params={"anchor": head["anchor"]})).json()
    assert checked["ok"] is True and checked["anchors_checked"] == 1
    wrong = f"{head['seq']}:{'0' * 64}"
    failed = (await client.get("/api/audit/verify", params={"anchor": wrong})).json()
    assert failed["ok"] is False and failed["bad_seq"] == head["seq"]
    for bad in ("x", f"{head['seq']}:abc", f"0:{'0' * 64}"):
        refused = await client.get("/api/audit/verify", params={"anchor": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["param"] == "anchor"
    clash = await client.get(
        "/api/audit/verify", params=[("anchor", head["anchor"]), ("anchor", wrong)]
    )
    assert clash.status_code == 400 and "disagree" in clash.json()["error"]["message"]
