"""WhatsApp Cloud API end to end: webhooks signed as Meta signs them, through the durable queue
and the reply pipeline, out through the outbox to a fake of Meta's Graph API; both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from concierge.store.tables import channel_events, channel_outbox, channels, conversations, turns
from tests.peers.meta import (
    ACCESS_TOKEN,
    APP_SECRET,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    FakeGraph,
    sign,
    wa_contact,
    wa_status,
    wa_text,
    whatsapp_webhook,
)
from tests.scripted import DISCLOSED, Pipeline, says

CUSTOMER = "16505551234"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    fake = FakeGraph()
    await fake.start()
    yield fake
    await fake.close()


def config(graph: FakeGraph, **more: Any) -> dict[str, Any]:
    return {
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "api_base_url": graph.base_url,
        **more,
    }


async def connect(pipeline: Pipeline, graph: FakeGraph, **more: Any) -> dict[str, Any]:
    await pipeline.assistant()
    made = await pipeline.client.post(
        "/v1/channels",
        json={"type": "whatsapp", "assistant": "support", "config": config(graph, **more)},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def post(pipeline: Pipeline, channel: dict[str, Any], body: bytes, **headers: str) -> Any:
    path = f"/channels/{channel['id']}/webhook"
    sent = {"X-Hub-Signature-256": sign(body), "Content-Type": "application/json", **headers}
    return await pipeline.client.post(path, content=body, headers=sent)


async def until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def rows(pipeline: Pipeline, table: Any) -> list[Any]:
    return await pipeline.app.db.read(
        lambda conn: conn.execute(select(table).order_by(table.c.id)).all()
    )


async def test_a_channel_is_created_with_its_secrets_sealed_and_never_shown(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    assert channel["type"] == "whatsapp"
    assert channel["assistant"] == "support"
    assert channel["webhook_url"].endswith(f"/channels/{channel['id']}/webhook")
    shown = channel["config"]
    assert shown["access_token"] == shown["app_secret"] == shown["verify_token"] == "********"
    assert shown["phone_number_id"] == PHONE_NUMBER_ID
    stored = (await rows(pipeline, channels))[0]
    assert ACCESS_TOKEN not in stored.secrets and APP_SECRET not in stored.secrets
    assert ACCESS_TOKEN not in str(stored.config)

    # A change that sends the mask keeps the secret; the rest is validated.
    changed = await pipeline.client.patch(
        f"/v1/channels/{channel['id']}",
        json={
            "name": "Sales line",
            "config": {"access_token": "********", "messages_per_second": 10},
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"]["messages_per_second"] == 10
    service = pipeline.app.channels
    found = await pipeline.app.db.read(lambda conn: service.channel_by_id(conn, channel["id"]))
    assert found.config.access_token == ACCESS_TOKEN  # type: ignore[attr-defined]

    listed = (await pipeline.client.get("/v1/channels")).json()["data"]
    assert [c["id"] for c in listed] == [channel["id"]]
    assert ACCESS_TOKEN not in str(listed)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "fax", "assistant": "support", "config": {}}, "type"),
        ({"type": "whatsapp", "assistant": "support", "config": {"phone_number_id": "1"}}, None),
        ({"type": "whatsapp", "assistant": "nobody", "config": {}}, "assistant"),
    ],
)
async def test_bad_channel_definitions_are_refused(
    pipeline: Pipeline, graph: FakeGraph, body: dict[str, Any], param: str | None
) -> None:
    await pipeline.assistant()
    if body["assistant"] == "nobody":
        body = {**body, "config": config(graph)}
    answer = await pipeline.client.post("/v1/channels", json=body)
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    if param:
        assert error["param"] == param
    assert await pipeline.count(channels) == 0
    unknown = await pipeline.client.post(
        "/v1/channels",
        json={"type": "whatsapp", "assistant": "support", "config": {**config(graph), "x": 1}},
    )
    assert unknown.status_code == 400
    assert "x" in unknown.json()["error"]["message"]


async def test_the_subscription_handshake(pipeline: Pipeline, graph: FakeGraph) -> None:
    channel = await connect(pipeline, graph)
    path = f"/channels/{channel['id']}/webhook"
    ok = await pipeline.client.get(
        path,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    wrong = await pipeline.client.get(
        path, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403
    unknown = await pipeline.client.get("/channels/ch_000000000000000000000000/webhook")
    assert unknown.status_code == 404


async def test_a_message_is_answered_through_the_pipeline_and_the_outbox(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    pipeline.script = lambda body: says("Returns are free within 30 days.")
    message = wa_text(CUSTOMER, "Can I return my boots?")
    answer = await post(
        pipeline, channel, whatsapp_webhook(messages=[message], contacts=[wa_contact(CUSTOMER)])
    )
    assert answer.status_code == 200

    sent = await graph.wait_replies(1)
    assert sent[0]["to"] == CUSTOMER and sent[0]["type"] == "text"
    assert sent[0]["text"]["body"] == DISCLOSED + "Returns are free within 30 days."
    tag = sent[0]["biz_opaque_callback_data"]
    # Read receipt with the typing indicator, before the reply.
    reads = [c for c in graph.calls if c[2] and c[2].get("status") == "read"]
    assert reads and reads[0][2]["message_id"] == message["id"]
    assert reads[0][2]["typing_indicator"] == {"type": "text"}
    assert reads[0][3]["Authorization"] == f"Bearer {ACCESS_TOKEN}"

    stored = await rows(pipeline, turns)
    assert [t.role for t in stored] == ["user", "assistant"]
    assert stored[0].content == "Can I return my boots?"
    assert stored[1].governance["label_id"]  # the aigc label travels with the turn
    [conversation] = await rows(pipeline, conversations)
    assert conversation.channel == "whatsapp"

    # Status callbacks find the message by our tag and move it forward.
    out = (await rows(pipeline, channel_outbox))[0]
    wamid = out.platform_id
    for state in ("sent", "delivered", "read"):
        status = wa_status(wamid, state, CUSTOMER, tag=tag)
        assert (
            await post(pipeline, channel, whatsapp_webhook(statuses=[status]))
        ).status_code == 200

    async def read_status() -> bool:
        return (await rows(pipeline, channel_outbox))[0].status == "read"

    await until(read_status)
    listed = await pipeline.client.get(f"/v1/conversations/{conversation.id}/turns")
    reply = listed.json()["data"][1]
    assert reply["delivery"][0]["status"] == "read"


async def test_forged_or_unsigned_webhooks_are_refused_and_nothing_is_stored(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    body = whatsapp_webhook(messages=[wa_text(CUSTOMER, "hi")])
    forged = await post(pipeline, channel, body, **{"X-Hub-Signature-256": sign(body, "wrong")})
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_signature"
    path = f"/channels/{channel['id']}/webhook"
    unsigned = await pipeline.client.post(path, content=body)
    assert unsigned.status_code == 401
    tampered = await post(
        pipeline, channel, body.replace(b"hi", b"yo"), **{"X-Hub-Signature-256": sign(body)}
    )
    assert tampered.status_code == 401
    assert await pipeline.count(channel_events) == 0


async def test_a_replayed_event_makes_one_turn(pipeline: Pipeline, graph: FakeGraph) -> None:
    channel = await connect(pipeline, graph)
    body = whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hello?", wamid="wamid.SAME")])
    for _ in range(3):
        assert (await post(pipeline, channel, body)).status_code == 200
    await graph.wait_replies(1)
    await asyncio.sleep(0.3)
    assert await pipeline.count(channel_events) == 1
    assert [t.role for t in await rows(pipeline, turns)] == ["user", "assistant"]
    assert len(graph.replies) == 1


async def test_a_malformed_body_is_acknowledged_and_kept_as_failed(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    for body in (
        b"{not json",
        b'{"entry": "nope"}',
        b'{"entry": [{"changes": [{"value": {"messages": [{"type": "text"}]}}]}]}',
    ):
        assert (await post(pipeline, channel, body)).status_code == 200
    events = await pipeline.client.get(f"/v1/channels/{channel['id']}/events?status=failed")
    assert events.status_code == 200
    assert len(events.json()["data"]) == 3
    assert all(e["error"] for e in events.json()["data"])
    assert await pipeline.count(turns) == 0


async def test_the_model_down_gets_an_apology_and_a_person(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    from aiohttp import web

    channel = await connect(pipeline, graph)
    pipeline.script = lambda body: web.Response(status=503, text="down")
    await post(
        pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Where is my order?")])
    )
    sent = await graph.wait_replies(1)
    assert "passed your message to a member of our team" in sent[0]["text"]["body"]
    [conversation] = await rows(pipeline, conversations)
    assert conversation.status == "handoff"
    [event] = await rows(pipeline, channel_events)
    assert event.status == "failed" and event.error


async def test_a_person_replies_through_the_outbox_within_the_window(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))
    await graph.wait_replies(1)
    [conversation] = await rows(pipeline, conversations)
    human = await pipeline.client.post(
        f"/v1/conversations/{conversation.id}/human_messages",
        json={"content": "Hello, this is Ana from support.", "author": "ana"},
    )
    assert human.status_code == 201, human.text
    sent = await graph.wait_replies(2)
    assert sent[1]["text"]["body"] == "Hello, this is Ana from support."


async def test_export_and_erasure_cover_the_phone_number_its_messages_and_files(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    channel = await connect(pipeline, graph)
    graph.media["media-1"] = (b"\x89PNG fake image", "image/png")
    photo = {
        "from": CUSTOMER,
        "id": "wamid.PHOTO1",
        "timestamp": "1700000000",
        "type": "image",
        "image": {"id": "media-1", "mime_type": "image/png", "sha256": "x"},
    }
    await post(pipeline, channel, whatsapp_webhook(messages=[photo]))
    sent = await graph.wait_replies(1)
    assert "cannot see images" in sent[0]["interactive"]["body"]["text"]
    assert sent[0]["interactive"]["action"]["buttons"][0]["reply"]["title"] == "Talk to a person"
    listed = (await pipeline.client.get("/v1/conversations")).json()["data"]
    turns_page = await pipeline.client.get(f"/v1/conversations/{listed[0]['id']}/turns")
    [media] = turns_page.json()["data"][0]["media"]
    assert media["kind"] == "image" and media["bytes"] == len(b"\x89PNG fake image")
    content = await pipeline.client.get(f"/v1/channel_media/{media['id']}/content")
    assert content.content == b"\x89PNG fake image"
    assert content.headers["content-disposition"] == "attachment"

    exported = await pipeline.client.post(
        "/api/orgs/default/subjects/export", json={"subject": CUSTOMER}
    )
    assert exported.status_code == 200, exported.text
    [identity] = exported.json()["identities"]
    [carried] = identity["channels"]
    assert carried["identity"] == CUSTOMER and carried["channel_type"] == "whatsapp"
    assert carried["events"][0]["key"] == "wamid.PHOTO1"
    assert carried["media"][0]["sha256"] == media["sha256"]
    assert len(carried["messages"]) == 2  # the reply and the memory consent question

    erased = await pipeline.client.post(
        "/api/orgs/default/subjects/erase", json={"subject": CUSTOMER}
    )
    assert erased.status_code == 200, erased.text
    removed = erased.json()["removed"]
    assert removed["channel_identities"] == 1
    assert removed["channel_events"] == 1 and removed["channel_media"] == 1
    assert removed["channel_messages"] == 2
    from concierge.store.tables import channel_media, channel_threads

    for table in (channel_events, channel_outbox, channel_media, channel_threads, turns):
        assert await pipeline.count(table) == 0


async def test_retention_purges_channel_records_with_the_conversation(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from concierge.store.tables import channel_threads

    channel = await connect(pipeline, graph)
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))
    await graph.wait_replies(1)

    async def settled() -> bool:
        found = await rows(pipeline, channel_outbox)
        return len(found) == 2 and all(r.status == "sent" for r in found)

    await until(settled)
    long_ago = datetime.now(UTC) - timedelta(days=800)

    def age(conn: Any) -> None:
        conn.execute(update(conversations).values(updated_at=long_ago))
        conn.execute(update(channel_events).values(received_at=long_ago))
        conn.execute(update(channel_outbox).values(created_at=long_ago))

    await pipeline.app.db.write(age)
    run = (await pipeline.client.post("/api/retention/run")).json()
    removed = run["removed"]["default"]
    assert removed["conversations"] == 1
    assert removed["channel_events"] == 1
    assert removed["channel_messages"] == 2  # the reply and the consent question
    assert removed["channel_identities"] == 1
    for table in (channel_events, channel_outbox, channel_threads):
        assert await pipeline.count(table) == 0


def button(sender: str, ident: str, title: str, wamid: str) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": ident, "title": title}},
    }


async def test_memory_consent_is_asked_with_buttons_and_recorded(
    pipeline: Pipeline, graph: FakeGraph
) -> None:
    from concierge.store.tables import consents

    channel = await connect(pipeline, graph)
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Hi")]))
    reply, question = await graph.wait_sent(2)
    assert reply["type"] == "text"
    buttons = question["interactive"]["action"]["buttons"]
    assert [b["reply"]["id"] for b in buttons] == [
        "cc:consent:personalization:yes",
        "cc:consent:personalization:no",
    ]
    assert "remember" in question["interactive"]["body"]["text"]

    press = button(CUSTOMER, "cc:consent:personalization:yes", "Yes", "wamid.YES")
    await post(pipeline, channel, whatsapp_webhook(messages=[press]))
    thanks = (await graph.wait_sent(3))[2]
    assert thanks["text"]["body"].startswith("Thank you. I will remember")
    [decision] = await rows(pipeline, consents)
    assert decision.granted and decision.channel == "whatsapp"
    assert decision.purpose == "personalization"

    # Answered: not asked again; a forged button id is refused and kept as a failed event.
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "Again")]))
    await graph.wait_sent(4)
    forged = button(CUSTOMER, "cc:consent:everything:yes", "Yes", "wamid.FORGED")
    await post(pipeline, channel, whatsapp_webhook(messages=[forged]))

    async def failed() -> Any:
        found = [e for e in await rows(pipeline, channel_events) if e.key == "wamid.FORGED"]
        return found and found[0].status == "failed"

    await until(failed)
    await asyncio.sleep(0.3)
    assert len(graph.sent) == 4
    assert len(await rows(pipeline, consents)) == 1


async def test_a_bot_whose_webhook_cannot_be_set_is_not_kept(pipeline: Pipeline) -> None:
    from tests.conftest import free_port

    await pipeline.assistant()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: Telegram "down"
    config = {"bot_token": "1:abc", "secret_token": "s" * 20, "api_base_url": closed}
    answer = await pipeline.client.post(
        "/v1/channels", json={"type": "telegram", "assistant": "support", "config": config}
    )
    assert answer.status_code == 502, answer.text
    assert "did not accept the webhook" in answer.json()["error"]["message"]
    assert await pipeline.count(channels) == 0
    bad = await pipeline.client.post(
        "/v1/channels",
        json={
            "type": "telegram",
            "assistant": "support",
            "config": {**config, "api_base_url": "javascript:alert(1)"},
        },
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "config.api_base_url"
