"""Data subjects' export and erasure, retention and legal holds, on SQLite and PostgreSQL.

The erasure test looks for the subject's identifiers and the text of their messages in every
column of every table afterwards, as an auditor would.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, Text, select, update
from sqlalchemy.types import JSON, LargeBinary

from concierge import orgs
from concierge.assistants import definitions
from concierge.assistants.definitions import AssistantConfig
from concierge.compliance import retention
from concierge.conversations import store
from concierge.store import Database
from concierge.store.tables import conversations, metadata, scheduled_jobs
from tests.scripted import Pipeline, calls, says
from tests.test_gateway import assert_openai_error

SUBJECT = "maria.kowalska-7731"
SECRET_TEXT = "my parcel to Zielona Street 17 never arrived"


async def _converse(p: Pipeline, user: str, text: str) -> int:
    cid = await p.conversation(user=user)
    response = await p.send(cid, text)
    assert response.status_code == 200, response.text
    return cid


async def _subject_with_everything(p: Pipeline) -> int:
    """A subject with conversations, a memory, consent, a report and a document about them."""
    kb = await p.knowledge()
    await p.assistant(knowledge_bases=[kb])
    granted = await p.client.post(
        "/v1/consents", json={"user": SUBJECT, "purpose": "personalization", "granted": True}
    )
    assert granted.status_code == 201

    def script(body: dict[str, Any]) -> Any:
        if not any(m["role"] == "tool" for m in body["messages"]) and "parcel" in str(
            body["messages"][-1]["content"]
        ):
            return calls("remember", {"fact": "Lives on Zielona Street 17"})
        return says("Sorry to hear that, I will check.")

    p.script = script
    cid = await _converse(p, SUBJECT, SECRET_TEXT)
    await p.send(cid, "Please hurry")
    turns = (await p.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    report = await p.client.post(
        f"/v1/conversations/{cid}/turns/{turns[-1]['id']}/report",
        json={"category": "other", "reason": f"{SUBJECT} says it is useless"},
    )
    assert report.status_code == 201
    document = await p.client.post(
        f"/v1/knowledge_bases/{kb}/documents",
        json={
            "documents": [
                {
                    "id": "complaint-17",
                    "title": "Complaint letter",
                    "text": f"Letter from {SUBJECT}: {SECRET_TEXT}. Please refund.",
                    "metadata": {"subject": SUBJECT},
                }
            ]
        },
    )
    assert document.status_code in (200, 201, 202), document.text
    await p.app.knowledge.wait()
    # Someone else, who must survive the erasure untouched.
    await _converse(p, "someone-else", "Where are your shops?")
    return cid


def _everything(p: Pipeline) -> list[str]:
    """Every text, JSON and binary value of every table, as text."""

    def read(conn: Any) -> list[str]:
        values: list[str] = []
        for table in metadata.sorted_tables:
            columns = [
                c for c in table.columns if isinstance(c.type, String | Text | JSON | LargeBinary)
            ]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, bytes):
                        values.append(value.decode("utf-8", "replace"))
                    elif isinstance(value, str):
                        values.append(value)
                    else:
                        values.append(json.dumps(value, ensure_ascii=False))
        return values

    return p.app.db.read_sync(read)


async def test_export_then_erase_leaves_no_trace(pipeline: Pipeline) -> None:
    cid = await _subject_with_everything(pipeline)
    exported = await pipeline.client.post(
        "/api/orgs/default/subjects/export", json={"subject": SUBJECT}
    )
    assert exported.status_code == 200, exported.text
    data = exported.json()
    assert data["counts"] == {
        "conversations": 1,
        "turns": 4,
        "memories": 1,
        "consents": 1,
        "reports": 1,
        "documents": 1,
        "channel_messages": 0,
        "channel_media": 0,
    }
    person = data["identities"][0]
    assert person["external_id"] == SUBJECT and person["channel"] == "api"
    turns = person["conversations"][0]["turns"]
    assert turns[0]["content"] == SECRET_TEXT
    assert all(("aigc" in t) == (t["role"] == "assistant") for t in turns)
    assert person["memories"][0]["fact"] == "Lives on Zielona Street 17"
    assert data["documents"][0]["text"].startswith(f"Letter from {SUBJECT}")
    # The export is machine-readable and its generated turns verify.
    found = (await pipeline.client.post("/v1/labels/verify-file", content=exported.content)).json()
    assert found["ok"] is True and len(found["items"]) == 2

    assert any(SUBJECT in value for value in _everything(pipeline))
    erased = await pipeline.client.post(
        "/api/orgs/default/subjects/erase", json={"subject": SUBJECT}
    )
    assert erased.status_code == 200, erased.text
    receipt = erased.json()
    assert receipt["object"] == "erasure.receipt"
    assert receipt["removed"] == {
        "end_users": 1,
        "conversations": 1,
        "turns": 4,
        "memories": 1,
        "consents": 1,
        "reports": 1,
        "documents": 1,
        "chunks": 1,
        "quotations": 1,  # the other user's answer had cited the letter
        "channel_identities": 0,
        "channel_events": 0,
        "channel_messages": 0,
        "channel_media": 0,
    }
    entry = (await pipeline.client.get("/api/audit", params={"action": "subject.erased"})).json()[
        "data"
    ][0]
    assert entry["id"] == receipt["audit_entry_id"] and entry["hash"] == receipt["audit_entry_hash"]

    # Nothing of the subject is left anywhere: not their id, not their words, not derived text.
    for value in _everything(pipeline):
        for needle in (SUBJECT, "Zielona", "parcel to", "Please hurry"):
            assert needle not in value, f"{needle!r} survives in {value[:200]!r}"
    # Search no longer finds the document about them; the other user is untouched.
    found = await pipeline.client.post(
        "/v1/knowledge_bases/1/search", json={"query": "Zielona Street parcel complaint"}
    )
    assert all("Zielona" not in r["text"] for r in found.json()["data"])
    assert_openai_error(await pipeline.client.get(f"/v1/conversations/{cid}"), 404)
    others = (await pipeline.client.get("/v1/conversations")).json()["data"]
    assert len(others) == 1
    assert (await pipeline.client.get("/api/audit/verify")).json()["ok"] is True

    # Asking again: nothing is known about them any more.
    again = await pipeline.client.post(
        "/api/orgs/default/subjects/erase", json={"subject": SUBJECT}
    )
    assert_openai_error(again, 404)
    bad = await pipeline.client.post("/api/orgs/default/subjects/erase", json={"who": SUBJECT})
    assert_openai_error(bad, 400)


async def test_a_legal_hold_stops_erasure_and_purges(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    held = await _converse(pipeline, SUBJECT, "I want to dispute a charge")
    old = await _converse(pipeline, "old-customer", "Hello from long ago")
    placed = await pipeline.client.post(
        "/api/orgs/default/holds", json={"subject": SUBJECT, "reason": "Dispute 2026-114"}
    )
    assert placed.status_code == 201, placed.text
    hold = placed.json()["data"][0]
    refused = await pipeline.client.post(
        "/api/orgs/default/subjects/erase", json={"subject": SUBJECT}
    )
    assert_openai_error(refused, 409)
    assert "Dispute 2026-114" in refused.json()["error"]["message"]

    # Two years idle: the purge removes what is not held.
    long_ago = datetime.now(UTC) - timedelta(days=800)
    await pipeline.app.db.write(
        lambda conn: conn.execute(update(conversations).values(updated_at=long_ago))
    )
    run = (await pipeline.client.post("/api/retention/run")).json()
    assert run["removed"]["default"]["conversations"] == 1
    assert_openai_error(await pipeline.client.get(f"/v1/conversations/{old}"), 404)
    assert (await pipeline.client.get(f"/v1/conversations/{held}")).status_code == 200

    released = await pipeline.client.post(f"/api/orgs/default/holds/{hold['id']}/release")
    assert released.json()["active"] is False
    assert_openai_error(
        await pipeline.client.post(f"/api/orgs/default/holds/{hold['id']}/release"), 409
    )
    await pipeline.client.post("/api/retention/run")
    assert_openai_error(await pipeline.client.get(f"/v1/conversations/{held}"), 404)
    actions = [e["action"] for e in (await pipeline.client.get("/api/audit")).json()["data"]]
    assert {"hold.placed", "hold.released", "retention.purged"} <= set(actions)
    for bad in (
        {"reason": "x"},
        {"subject": SUBJECT, "conversation_id": 1, "reason": "x"},
        {"subject": SUBJECT, "reason": ""},
    ):
        assert_openai_error(await pipeline.client.post("/api/orgs/default/holds", json=bad), 400)
    missing = await pipeline.client.post(
        "/api/orgs/default/holds", json={"conversation_id": 987654, "reason": "x"}
    )
    assert_openai_error(missing, 404)


async def test_the_schedule_survives_restarts_and_runs_once_across_replicas(
    pipeline: Pipeline,
) -> None:
    db = pipeline.app.db
    for _ in range(100):  # the app's own scheduler runs the job once at startup
        if (await pipeline.client.get("/api/retention")).json().get("last_status"):
            break
        await asyncio.sleep(0.05)
    now = datetime.now(UTC)
    await db.write(lambda conn: conn.execute(scheduled_jobs.delete()))
    # Two replicas look at the same moment: exactly one wins.
    first = await db.write(lambda conn: retention.claim(conn, "retention", now, 3600))
    second = await db.write(lambda conn: retention.claim(conn, "retention", now, 3600))
    assert (first, second) == (True, False)
    # A restart an hour minus a minute later does not run it again; after the hour it does.
    soon = now + timedelta(minutes=59)
    later = now + timedelta(minutes=61)
    assert await db.write(lambda conn: retention.claim(conn, "retention", soon, 3600)) is False
    assert await db.write(lambda conn: retention.claim(conn, "retention", later, 3600)) is True
    # The running app's scheduler recorded its own run at startup.
    scheduler = retention.Scheduler(db, 3600)
    await db.write(lambda conn: conn.execute(scheduled_jobs.delete()))
    assert await scheduler.run_if_due() is not None
    state = (await pipeline.client.get("/api/retention")).json()
    assert state["last_status"] == "done" and "default" in state["last_result"]["orgs"]
    assert await scheduler.run_if_due() is None


def test_subjects_cli_exports_and_erases(cli, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("orgs", "create", "acme")
    db = Database(db_url, pooled=False)
    try:

        def seed(conn: Any) -> None:
            org = orgs.get(conn, "acme")
            bot = definitions.create(conn, org.id, "bot", AssistantConfig())
            user = store.end_user(conn, org.id, "web", "v_visitor42")
            conversation = store.create(conn, org.id, bot.id, user, "web")
            store.add_turn(conn, conversation, "user", SECRET_TEXT)

        db.write_sync(seed)
    finally:
        db.close()
    missing = cli("subjects", "export", "--org", "acme", "--subject", "nobody", ok=False)
    assert missing.returncode == 2 and "no data about subject 'nobody'" in missing.stderr
    exported = cli("subjects", "export", "--org", "acme", "--subject", "v_visitor42")
    assert (
        json.loads(exported.stdout)["identities"][0]["conversations"][0]["turns"][0]["content"]
        == SECRET_TEXT
    )
    target = tmp_path / "receipt.json"
    cli(
        "subjects", "erase", "--org", "acme", "--subject", "v_visitor42", "--yes", "-o", str(target)
    )
    receipt = json.loads(target.read_text())
    assert receipt["removed"]["turns"] == 1 and receipt["removed"]["end_users"] == 1
    assert "subject.erased" in cli("audit", "list").stdout
    assert cli("audit", "verify").returncode == 0
    nowhere = cli("subjects", "erase", "--org", "nowhere", "--subject", "x", "--yes", ok=False)
    assert nowhere.returncode == 2 and "no organisation" in nowhere.stderr
