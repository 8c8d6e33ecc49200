"""The outbox under the platform's faults: rate limits with their waits, errors retried with
backoff, permanent refusals and the customer-service window, templates; Messenger's tags."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from concierge.channels.pacing import MemoryPacer, Pacer, RedisPacer
from concierge.channels.text import split
from concierge.store.tables import channel_outbox, channel_threads, conversations
from tests.peers.meta import (
    ACCESS_TOKEN,
    APP_SECRET,
    PAGE_ID,
    VERIFY_TOKEN,
    FakeGraph,
    sign,
    wa_text,
    whatsapp_webhook,
)
from tests.scripted import DISCLOSED, Pipeline, says
from tests.test_channels_whatsapp import CUSTOMER, connect, graph, post, rows, until  # noqa: F401

FAST = pytest.mark.settings(outbox_retry_seconds=0.05, channel_poll_seconds=0.05)


async def _statuses(pipeline: Pipeline) -> list[str]:
    return [r.status for r in await rows(pipeline, channel_outbox)]


@FAST
async def test_rate_limits_and_server_errors_are_retried_until_sent_once(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    channel = await connect(pipeline, graph)
    graph.fail(400, 130429, "Rate limit hit", headers={"Retry-After": "1"})
    graph.fail(500, 131000, "Something went wrong", times=2)
    pipeline.script = lambda body: says("Fine.")
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))
    sent = await graph.wait_replies(1, timeout=20)
    assert len(sent) == 1

    async def settled() -> Any:
        found = [r for r in await rows(pipeline, channel_outbox) if r.turn_id is not None]
        return found and found[0].status == "sent" and found[0]

    row = await until(settled)  # the fake counts a send before the server records it
    assert row.attempts == 4
    tries = [c for c in graph.calls if c[2] and c[2].get("type") == "text"]
    assert len(tries) == 4
    # The platform's wait was honoured: the try after the 429 came a second later or more.


@FAST
async def test_a_permanent_refusal_fails_the_message_visibly(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    channel = await connect(pipeline, graph)
    graph.fail(400, 131047, "Re-engagement message")
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))

    async def failed() -> Any:
        found = await rows(pipeline, channel_outbox)
        return found and found[0].status == "failed" and found[0]

    row = await until(failed)
    assert row.error_code == "whatsapp:131047" and "template" in row.error
    [conversation] = await rows(pipeline, conversations)
    turns = (await pipeline.client.get(f"/v1/conversations/{conversation.id}/turns")).json()
    delivery = turns["data"][1]["delivery"][0]
    assert delivery["status"] == "failed" and "window" in delivery["error"]
    listed = await pipeline.client.get(f"/v1/channels/{channel['id']}/messages?status=failed")
    assert [m["id"] for m in listed.json()["data"]] == [row.id]
    resent = await pipeline.client.post(f"/v1/channels/{channel['id']}/messages/{row.id}/resend")
    assert resent.status_code == 200 and resent.json()["status"] == "pending"
    await graph.wait_replies(1)
    again = await pipeline.client.post(f"/v1/channels/{channel['id']}/messages/{row.id}/resend")
    assert again.status_code == 409


@FAST
async def test_outside_the_window_only_a_template_goes(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    templates = [{"name": "order_update", "language": "en_US", "body": "Hi {{1}}, order {{2}}."}]
    channel = await connect(pipeline, graph, templates=templates)
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))
    await graph.wait_replies(1)
    [conversation] = await rows(pipeline, conversations)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    await pipeline.app.db.write(
        lambda conn: conn.execute(update(channel_threads).values(last_inbound_at=two_days_ago))
    )
    path = f"/v1/conversations/{conversation.id}/human_messages"
    late = await pipeline.client.post(path, json={"content": "Are you still there?"})
    assert late.status_code == 409
    assert "template" in late.json()["error"]["message"]
    wrong = await pipeline.client.post(
        path, json={"template": {"name": "order_update", "variables": ["Ann"]}}
    )
    assert wrong.status_code == 400 and "2 variable" in wrong.json()["error"]["message"]
    unknown = await pipeline.client.post(path, json={"template": {"name": "promo"}})
    assert unknown.status_code == 400 and "order_update" in unknown.json()["error"]["message"]
    both = await pipeline.client.post(
        path, json={"content": "x", "template": {"name": "order_update"}}
    )
    assert both.status_code == 400
    ok = await pipeline.client.post(
        path, json={"template": {"name": "order_update", "variables": ["Ann", "A-17"]}}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["content"] == "Hi Ann, order A-17."
    sent = await graph.wait_replies(2)
    template = sent[1]["template"]
    assert template["name"] == "order_update" and template["language"] == {"code": "en_US"}
    assert [p["text"] for p in template["components"][0]["parameters"]] == ["Ann", "A-17"]


@FAST
async def test_a_long_reply_is_split_on_sentences_and_sent_in_order(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    channel = await connect(pipeline, graph)
    long = " ".join(f"Sentence number {i} explains one more detail." for i in range(200))
    pipeline.script = lambda body: says(long)
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Tell me all")]))
    expected = split(DISCLOSED + long, 4096)
    sent = await graph.wait_replies(len(expected))
    bodies = [m["text"]["body"] for m in sent]
    assert bodies == expected and len(bodies) >= 3
    assert all(len(b) <= 4096 and b.endswith(".") for b in bodies)


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_the_pacer_keeps_a_sender_under_its_rate(kind: str) -> None:
    prefix = f"test-pace-{uuid.uuid4().hex[:8]}"
    pacer: Pacer = (
        MemoryPacer() if kind == "memory" else RedisPacer("redis://127.0.0.1:6379/15", prefix)
    )
    try:
        waits = [await pacer.reserve("whatsapp:1", 80.0) for _ in range(160)]
        # Slots 1/80 s apart: the 160th message leaves about two seconds after the first.
        assert waits[0] <= 0.01
        assert abs(waits[-1] - 159 / 80) < 0.1
        await pacer.hold("whatsapp:1", 5.0)
        assert await pacer.reserve("whatsapp:1", 80.0) >= 4.8
        assert await pacer.reserve("telegram:2", 30.0) <= 0.01  # another sender: its own pace
    finally:
        await pacer.close()


async def test_replicas_share_one_schedule_through_redis() -> None:
    prefix = f"test-pace-{uuid.uuid4().hex[:8]}"
    a = RedisPacer("redis://127.0.0.1:6379/15", prefix)
    b = RedisPacer("redis://127.0.0.1:6379/15", prefix)
    try:
        waits = []
        for _ in range(50):
            waits.append(await a.reserve("whatsapp:9", 50.0))
            waits.append(await b.reserve("whatsapp:9", 50.0))
        # One schedule: the 100th slot of the two together is ~2 s out, not ~1 s.
        assert abs(max(waits) - 99 / 50) < 0.15
    finally:
        await a.close()
        await b.close()


# -- Messenger -------------------------------------------------------------------------------


def messenger_webhook(sender: str, text: str, mid: str, quick: str | None = None) -> bytes:
    import json
    import time

    message: dict[str, Any] = {"mid": mid, "text": text}
    if quick:
        message["quick_reply"] = {"payload": quick}
    return json.dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": PAGE_ID,
                    "time": int(time.time() * 1000),
                    "messaging": [
                        {
                            "sender": {"id": sender},
                            "recipient": {"id": PAGE_ID},
                            "timestamp": int(time.time() * 1000),
                            "message": message,
                        }
                    ],
                }
            ],
        }
    ).encode()


@FAST
async def test_messenger_quick_replies_and_a_person_replying_after_a_day(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    await pipeline.assistant()
    made = await pipeline.client.post(
        "/v1/channels",
        json={
            "type": "messenger",
            "assistant": "support",
            "config": {
                "page_id": PAGE_ID,
                "access_token": ACCESS_TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": VERIFY_TOKEN,
                "api_base_url": graph.base_url,
            },
        },
    )
    assert made.status_code == 201, made.text
    path = f"/channels/{made.json()['id']}/webhook"
    pipeline.script = lambda body: says("Pick one:\n- Returns\n- Shipping")
    body = messenger_webhook("PSID-77", "Help", "m_1")
    answer = await pipeline.client.post(
        path, content=body, headers={"X-Hub-Signature-256": sign(body)}
    )
    assert answer.status_code == 200
    [first] = await graph.wait_replies(1)
    assert first["recipient"] == {"id": "PSID-77"} and first["messaging_type"] == "RESPONSE"
    assert [q["payload"] for q in first["message"]["quick_replies"]] == ["Returns", "Shipping"]
    assert first["message"]["text"] == DISCLOSED + "Pick one:"
    typing = [c[2] for c in graph.calls if c[2] and c[2].get("sender_action")]
    assert {"recipient": {"id": "PSID-77"}, "sender_action": "mark_seen"} in typing

    pipeline.script = lambda body: says("Returns are free.")
    body = messenger_webhook("PSID-77", "Returns", "m_2", quick="Returns")
    await pipeline.client.post(path, content=body, headers={"X-Hub-Signature-256": sign(body)})
    await graph.wait_replies(2)

    # Three days later a person answers: allowed with the HUMAN_AGENT tag (up to 7 days).
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    await pipeline.app.db.write(
        lambda conn: conn.execute(update(channel_threads).values(last_inbound_at=three_days_ago))
    )
    [conversation] = await rows(pipeline, conversations)
    human = await pipeline.client.post(
        f"/v1/conversations/{conversation.id}/human_messages",
        json={"content": "Sorry for the wait."},
    )
    assert human.status_code == 201, human.text
    sent = await graph.wait_replies(3)
    assert sent[2]["messaging_type"] == "MESSAGE_TAG" and sent[2]["tag"] == "HUMAN_AGENT"
    eight_days_ago = datetime.now(UTC) - timedelta(days=8)
    await pipeline.app.db.write(
        lambda conn: conn.execute(update(channel_threads).values(last_inbound_at=eight_days_ago))
    )
    late = await pipeline.client.post(
        f"/v1/conversations/{conversation.id}/human_messages", json={"content": "Hello?"}
    )
    assert late.status_code == 409


@pytest.mark.settings(
    outbox_retry_seconds=0.05, outbox_in_doubt_seconds=1, channel_poll_seconds=0.05
)
async def test_a_send_cut_short_is_marked_unknown_not_sent_again(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    from concierge.channels import outbox as box
    from concierge.channels import queue
    from concierge.channels.base import Outbound

    channel = await connect(pipeline, graph)

    def crashed_mid_send(conn: Any) -> int:
        """What a process killed between the request and its answer leaves behind."""
        thread = queue.thread_for(conn, channel["id"], 1, CUSTOMER)
        conn.execute(
            update(channel_threads)
            .where(channel_threads.c.id == thread.id)
            .values(last_inbound_at=datetime.now(UTC))
        )
        box.enqueue(
            conn,
            channel_id=channel["id"],
            org_id=1,
            thread_id=thread.id,
            conversation_id=None,
            turn_id=None,
            messages=[Outbound(text="Your parcel left the warehouse.")],
            dedupe="crash:1",
        )
        [row] = conn.execute(channel_outbox.select()).all()
        box.mark_sending(conn, row.id, grace=1.0)
        return int(row.id)

    row_id = await pipeline.app.db.write(crashed_mid_send)
    pipeline.app.channels.dispatcher.wake()

    async def unknown() -> Any:
        found = (await rows(pipeline, channel_outbox))[0]
        return found.status == "unknown" and found

    found = await until(unknown)
    assert found.error_code == "in_doubt" and graph.sent == []
    # A late status callback still settles it.
    from tests.peers.meta import wa_status

    late = wa_status("wamid.LATE", "delivered", CUSTOMER, tag=f"cc-out:{row_id}")
    await post(pipeline, channel, whatsapp_webhook(statuses=[late]))

    async def delivered() -> bool:
        return (await rows(pipeline, channel_outbox))[0].status == "delivered"

    await until(delivered)
