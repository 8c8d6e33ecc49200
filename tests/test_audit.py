"""The audit log: what is recorded, and that tampering in the database is found.

Edits, deletions and reorderings are made with plain SQL on the real database (SQLite and
PostgreSQL), then `concierge audit verify` is run as an operator runs it.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from concierge.governance import audit
from concierge.store import Database


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
