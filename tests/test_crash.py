"""Nothing lost in a crash: ``kill -9`` mid-reply and mid-staging, then a restart, on SQLite
and PostgreSQL. Real servers (``concierge serve`` subprocesses), killed for real."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY, LiveServer
from tests.scripted import DISCLOSED
from tests.test_upstream import SlowUpstream


def _env(tmp_path: Path, db_url: str, models_dir: Path, **more: str) -> dict[str, str]:
    return {
        "CONCIERGE_DATA_DIR": str(tmp_path),
        "CONCIERGE_DATABASE_URL": db_url,
        "CONCIERGE_MODELS_DIR": str(models_dir),
        "CONCIERGE_ADMIN_KEY": ADMIN_KEY,
        "CONCIERGE_LLM_ENABLED": "false",
        "CONCIERGE_LOG_LEVEL": "warning",
        "CONCIERGE_USAGE_FLUSH_SECONDS": "0.01",
        **more,
    }


async def test_a_reply_cut_by_kill_9_is_kept_with_the_users_message(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    slow = await SlowUpstream.start()
    upstream = {"name": "slow", "base_url": slow.base_url, "models": ["big"]}
    env = _env(
        tmp_path,
        db_url,
        models_dir,
        CONCIERGE_EMBEDDING_ENABLED="false",
        CONCIERGE_UPSTREAMS=json.dumps([upstream]),
        CONCIERGE_REPLY_FLUSH_SECONDS="0.2",
        CONCIERGE_REPLY_STALE_SECONDS="2",
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
