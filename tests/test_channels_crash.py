"""kill -9 at several points of a message's path: no inbound message is lost and no reply is
sent twice. `concierge serve` runs as a user starts it; the model is a scripted upstream that
can stall mid-reply, Meta's Graph API a fake that can hold a send in flight."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select

from concierge.store import Database
from concierge.store.tables import channel_events, channel_outbox, conversations, turns
from tests.conftest import ADMIN_KEY, LiveServer, server_env
from tests.peers.meta import FakeGraph, sign, wa_status, wa_text, whatsapp_webhook
from tests.scripted import says
from tests.test_channels_whatsapp import config
from tests.test_upstream import FakeUpstream, chunk

pytestmark = pytest.mark.slow
CUSTOMERS = [f"4477009000{i:02d}" for i in range(12)]


async def _start(env: dict[str, str], cwd: Path) -> LiveServer:
    return await asyncio.to_thread(LiveServer, env, cwd)


async def _post(server: LiveServer, channel_id: str, body: bytes) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        answer = await client.post(
            f"/channels/{channel_id}/webhook",
            content=body,
            headers={"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"},
        )
        return answer.status_code


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _rows(db_url: str, table: Any) -> list[Any]:
    db = Database(db_url, pooled=False)
    try:
        return db.read_sync(lambda conn: conn.execute(select(table).order_by(table.c.id)).all())
    finally:
        db.close()


async def test_kill_9_loses_no_message_and_sends_no_reply_twice(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    graph = FakeGraph()
    await graph.start()
    stall = {"on": True}

    async def model(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not stall["on"]:
            return says("Here is your answer.")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Here "))
        await asyncio.sleep(3600)  # the server is killed while the reply is being written
        return response

    upstream = FakeUpstream({"big": model})
    await upstream.server.start_server()
    env = server_env(
        tmp_path,
        db_url,
        models_dir,
        llm_enabled="false",
        embedding_enabled="false",  # no knowledge here: a faster start
        upstreams=json.dumps([{"name": "up", "base_url": upstream.base_url, "models": ["big"]}]),
        egress_allowed_networks='["127.0.0.1"]',
        channel_lease_seconds="2",
        channel_poll_seconds="0.1",
        outbox_in_doubt_seconds="15",
        outbox_retry_seconds="0.1",
    )
    server = await _start(env, tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        ) as client:
            made = await client.post(
                "/v1/assistants", json={"name": "support", "model": "big", "instructions": "Hi."}
            )
            assert made.status_code == 201, made.text
            channel = (
                await client.post(
                    "/v1/channels",
                    json={"type": "whatsapp", "assistant": "support", "config": config(graph)},
                )
            ).json()

        # 1. Twelve customers write; the model stalls: eight replies are being written (the
        #    workers' limit), four messages wait in the queue. kill -9.
        for number in CUSTOMERS:
            body = whatsapp_webhook(messages=[wa_text(number, f"Question from {number}")])
            assert await _post(server, channel["id"], body) == 200
        await _wait(lambda: len(upstream.requests) >= 8, 20, "eight replies under way")
        server.kill()
        assert graph.replies == []

        # 2. A new process: every message answered once, the half-written drafts taken back.
        stall["on"] = False
        started = time.monotonic()
        server = await _start(env, tmp_path)
        await _wait(lambda: len(graph.replies) >= len(CUSTOMERS), 30, "every reply")
        recovery = time.monotonic() - started
        await asyncio.sleep(1.0)  # nothing more may come
        assert Counter(m["to"] for m in graph.replies) == Counter(CUSTOMERS)
        stored = _rows(db_url, turns)
        by_conversation: dict[int, list[str]] = {}
        for turn in stored:
            by_conversation.setdefault(turn.conversation_id, []).append(turn.role)
        assert len(by_conversation) == len(CUSTOMERS)
        assert all(roles == ["user", "assistant"] for roles in by_conversation.values())
        assert {e.status for e in _rows(db_url, channel_events)} == {"done"}

        # 3. kill -9 while a send is in flight: the platform took it, the server never heard.
        graph.delay = 3.0
        late = "447700900999"
        await _post(server, channel["id"], whatsapp_webhook(messages=[wa_text(late, "One more")]))
        await _wait(
            lambda: any(c[2] and c[2].get("to") == late for c in graph.calls), 20, "the send"
        )
        server.kill()
        await _wait(lambda: any(m["to"] == late for m in graph.replies), 10, "the platform")
        graph.delay = 0.0
        [in_doubt] = [r for r in _rows(db_url, channel_outbox) if r.status == "sending"]
        wamid = next(m for m in graph.replies if m["to"] == late)

        # 4. The restarted server waits for the status callback, which settles it: not resent.
        server = await _start(env, tmp_path)
        status = wa_status("wamid.LATE", "delivered", late, tag=f"cc-out:{in_doubt.id}")
        assert await _post(server, channel["id"], whatsapp_webhook(statuses=[status])) == 200

        def settled() -> Any:
            return next(r for r in _rows(db_url, channel_outbox) if r.id == in_doubt.id)

        await _wait(lambda: settled().status == "delivered", 10, "the callback")
        await asyncio.sleep(1.0)
        assert [m["to"] for m in graph.replies].count(late) == 1
        assert settled().platform_id == "wamid.LATE"
        assert wamid["biz_opaque_callback_data"] == f"cc-out:{in_doubt.id}"
        assert len(_rows(db_url, conversations)) == len(CUSTOMERS) + 1
        print(f"kill -9 recovery: {len(CUSTOMERS)} replies sent {recovery:.2f} s after restart")
    finally:
        server.stop()
        await upstream.server.close()
        await graph.close()
