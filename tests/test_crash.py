"""Nothing lost in a crash: ``kill -9`` mid-reply and mid-staging, then a restart, on SQLite
and PostgreSQL. Real servers (``concierge serve`` subprocesses), killed for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from concierge.app import Concierge
from concierge.store import Database
from concierge.store.tables import documents, ingestion_items, ingestion_jobs
from tests.conftest import ADMIN_KEY, ROOT, LiveServer, make_settings, server_env
from tests.scripted import DISCLOSED
from tests.test_upstream import SlowUpstream

pytestmark = pytest.mark.slow  # kills real server processes


async def test_a_reply_cut_by_kill_9_is_kept_with_the_users_message(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    slow = await SlowUpstream.start()
    env = slow.server_env(
        tmp_path, db_url, models_dir, reply_flush_seconds="0.2", reply_stale_seconds="2"
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    received = ""
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            made = await client.post(
                "/v1/assistants", json={"name": "support", "model": "big", "builtin_tools": []}
            )
            assert made.status_code == 201, made.text
            started = await client.post("/v1/assistants/support/conversations", json={"user": "u"})
            cid = started.json()["id"]
            async with client.stream(
                "POST",
                f"/v1/assistants/support/conversations/{cid}/messages",
                json={"content": "tell me a long story", "stream": True},
            ) as response:
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "turn.delta":
                        received += json.loads(line[6:])["content"]
                        if received.count("t") >= 25:  # about 1.2 s of streaming
                            await asyncio.to_thread(server.kill)  # kill -9, mid-reply
                            break
    finally:
        await asyncio.to_thread(server.stop)
    assert received.startswith(DISCLOSED + "t1 ")

    again = await asyncio.to_thread(LiveServer, env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=again.url, headers=headers) as client:
            rows: list[Any] = []
            for _ in range(100):  # marked interrupted once stale (2 s here)
                rows = (await client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
                if len(rows) == 2 and rows[1]["status"] == "interrupted":
                    break
                await asyncio.sleep(0.1)
            asked, reply = rows
            assert (asked["role"], asked["content"], asked["status"]) == (
                "user",
                "tell me a long story",
                "complete",
            )
            assert reply["status"] == "interrupted" and "server stopped" in reply["error"]
            # What the user was shown, up to the last save (at most a flush interval short).
            assert reply["content"].startswith(DISCLOSED + "t1 t2")
            assert received.startswith(reply["content"].rstrip())
            # Still labelled as AI-generated, and the label checks out.
            label = reply["aigc"]
            check = await client.post(
                "/v1/labels/verify", json={"content": reply["content"], "aigc": label}
            )
            assert check.json()["ok"] is True, check.text
            # The conversation goes on.
            later = await client.get(f"/v1/conversations/{cid}")
            assert later.status_code == 200
    finally:
        await asyncio.to_thread(again.stop)
        await slow.server.close()


STAGER = """
import asyncio, sys
from concierge.config import load_settings
from concierge.knowledge import bases, staging
from concierge.knowledge.sources import Source
from concierge.knowledge.parsers import Parsers
from concierge.knowledge.service import Knowledge
from concierge.models.registry import ModelRegistry
from concierge.plugins import plugin_manager
from concierge.store import Database

staging.MAX_BATCH_ITEMS = 2  # many small transactions, so that a kill lands between two
settings = load_settings()
db = Database(settings.resolved_database_url)
pm = plugin_manager(entry_points=False)
registry = ModelRegistry.from_plugins(pm, settings)
knowledge = Knowledge(db, registry, settings, parsers=Parsers.from_plugins(pm, settings))
kb = db.read_sync(lambda conn: bases.get(conn, int(sys.argv[1]), int(sys.argv[2])))
sources = [
    Source(f"f{i}.txt", (f"Document {i} is about topic{i}. " * 300).encode(), filename=f"f{i}.txt")
    for i in range(40)
]
print("staging", flush=True)
asyncio.run(knowledge.add(kb, sources))
print("finished", flush=True)
"""


async def test_a_job_killed_while_staging_resumes_with_every_document(
    tmp_path: Path, db_url: str, models_dir: Path, registry: Any
) -> None:
    settings = make_settings(tmp_path, db_url, models_dir, llm_enabled=False)
    app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await app.startup()
    kb = await app.knowledge.create(1, "crash")
    await app.shutdown()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        **server_env(tmp_path, db_url, models_dir, llm_enabled="false"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", STAGER, str(kb.org_id), str(kb.id)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def counts() -> tuple[int, int]:
        return app.db.read_sync(
            lambda conn: (
                conn.execute(select(func.count()).select_from(documents)).scalar_one(),
                conn.execute(select(func.count()).select_from(ingestion_items)).scalar_one(),
            )
        )

    app.db = Database(db_url)  # the first app's pool is closed; a fresh one to look
    staged = left = 0
    try:
        for _ in range(600):
            staged, left = counts()
            if staged >= 4 and left:
                break
            await asyncio.sleep(0.02)
        assert worker.poll() is None, "the worker finished before it could be killed"
        os.kill(worker.pid, signal.SIGKILL)  # kill -9, mid-staging
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
        assert worker.stdout is not None
        output = worker.stdout.read().decode()
        worker.stdout.close()
    assert "finished" not in output, output
    staged, left = counts()
    assert staged >= 4 and left >= 2 and staged + left == 40, (staged, left)
    job_row = app.db.read_sync(lambda conn: conn.execute(select(ingestion_jobs)).one())
    assert job_row.status == "staging" and job_row.total == 40
    app.db.close()

    again = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await again.startup()  # resumes: the sources left are staged, then all are processed
    try:
        for _ in range(300):
            await again.knowledge.wait()
            job = await again.knowledge.job(kb.org_id, job_row.id)
            if job.status == "done":
                break
            await asyncio.sleep(0.1)
        assert (job.status, job.total, job.done, job.failed) == ("done", 40, 40, 0), job
        rows = await again.db.read(
            lambda conn: conn.execute(select(documents.c.external_id, documents.c.status)).all()
        )
        assert sorted(r.external_id for r in rows) == sorted(f"f{i}.txt" for i in range(40))
        assert {r.status for r in rows} == {"ready"}
        hits = await again.knowledge.search(kb, "topic37", mode="bm25")
        assert hits and hits[0].external_id == "f37.txt"
    finally:
        await again.shutdown()
