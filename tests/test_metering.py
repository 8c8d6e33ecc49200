"""Metering tells the truth: a client that hangs up mid-stream is recorded with the tokens
actually read and written by then, and they count against its quota, on plain
/v1/chat/completions (an upstream and the embedded model), the assistants API and the OpenAI
door. Real servers, real hang-ups."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from concierge.store import Database
from concierge.store.tables import usage_records
from tests.conftest import ADMIN_KEY, LLM, LiveServer, server_env
from tests.test_upstream import SlowUpstream

PROMPT = "Tell me a long story about a lighthouse keeper and the sea, please. " * 4


async def _rows(db_url: str, count: int) -> list[Any]:
    """The ledger's rows once there are ``count`` (they land within a flush interval); an
    assertion error if they do not come."""
    rows: list[Any] = []
    for _ in range(100):
        database = Database(db_url)
        try:
            rows = await database.read(
                lambda conn: conn.execute(select(usage_records).order_by(usage_records.c.id)).all()
            )
        finally:
            database.close()
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(rows)} ledger rows, not {count}: {rows}")


async def _hang_up(client: httpx.AsyncClient, path: str, body: dict[str, Any], after: int) -> int:
    """Stream, read ``after`` data lines, hang up; the lines read."""
    seen = 0
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen >= after:
                    break
    return seen


@pytest.fixture
async def slow_server(tmp_path: Path, db_url: str, models_dir: Path) -> Any:
    slow = await SlowUpstream.start()
    env = slow.server_env(tmp_path, db_url, models_dir)
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    yield server
    await asyncio.to_thread(server.stop)
    await slow.server.close()


@pytest.mark.slow
async def test_hanging_up_is_metered_and_counts_against_the_quota(
    slow_server: LiveServer, db_url: str
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=slow_server.url, headers=admin) as client:
        made = await client.post(
            "/v1/assistants", json={"name": "support", "model": "big", "builtin_tools": []}
        )
        assert made.status_code == 201, made.text
        key = await client.post("/api/keys", json={"org": "default", "name": "app"})
        secret = key.json()["key"]
        small = await client.post(
            "/api/keys", json={"org": "default", "name": "small", "tokens_per_day": 50}
        )
        limited = small.json()["key"]
    app = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=slow_server.url, headers=app, timeout=30) as client:
        cid = (
            await client.post("/v1/assistants/support/conversations", json={"user": "u1"})
        ).json()["id"]
        messages = [{"role": "user", "content": PROMPT}]
        await _hang_up(
            client,
            "/v1/chat/completions",
            {"model": "big", "messages": messages, "stream": True},
            after=10,
        )
        await _hang_up(
            client,
            f"/v1/assistants/support/conversations/{cid}/messages",
            {"content": PROMPT, "stream": True},
            after=10,
        )
        await _hang_up(
            client,
            "/v1/chat/completions",
            {"model": "assistant:support", "messages": messages, "stream": True, "user": "u2"},
            after=10,
        )
        rows = await _rows(db_url, 3)  # starting a conversation is not metered
        cut = [r for r in rows if r.status == 499]
        assert [r.endpoint for r in cut] == [
            "chat.completions",
            "assistants.messages",
            "chat.completions",
        ]
        for row in cut:
            # The prompt was read (estimated at four characters a token until the upstream
            # says) and about the streamed chunks were written: not zero, not the whole 200.
            assert row.prompt_tokens >= 40, row
            assert 5 <= row.completion_tokens < 200, row
    # Those tokens count: one hang-up spends a day's quota of 50; hanging up does not dodge it.
    app = {"Authorization": f"Bearer {limited}"}
    async with httpx.AsyncClient(base_url=slow_server.url, headers=app, timeout=30) as client:
        body = {"model": "big", "messages": messages, "stream": True}
        await _hang_up(client, "/v1/chat/completions", body, after=10)
        await _rows(db_url, 4)
        over = await client.post("/v1/chat/completions", json=body)
        assert over.status_code == 429 and over.json()["error"]["code"] == "insufficient_quota"
        assert "daily quota" in over.json()["error"]["message"]


async def test_the_embedded_model_meters_a_hang_up_too(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    env = server_env(
        tmp_path, db_url, models_dir, embedding_enabled="false", llm_context_length="1024"
    )
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=60) as client:
            body = {
                "model": LLM,
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 300,
                "temperature": 0,
                "stream": True,
            }
            seen = await _hang_up(client, "/v1/chat/completions", body, after=6)
            assert seen == 6
        rows = await _rows(db_url, 1)
        assert [r.status for r in rows] == [499]
        assert rows[0].prompt_tokens >= 40  # the prompt, as the model read it
        assert 4 <= rows[0].completion_tokens < 300
    finally:
        await asyncio.to_thread(server.stop)
