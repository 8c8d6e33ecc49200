"""Telegram end to end against telegram-test-api, the Bot API emulator from npm: setWebhook
with a secret token, updates delivered to the webhook, replies through the outbox, the typing
action while the model works, inline keyboards and callback queries; both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from concierge.store.tables import channel_events, turns
from tests.peers.telegram_peer import Served, TelegramEmulator
from tests.scripted import DISCLOSED, Pipeline, says

TOKEN = "123456:ABC-test_token"
SECRET = "telegram-secret-token-0123456789"

pytestmark = pytest.mark.slow


@pytest.fixture
async def served(pipeline: Pipeline) -> AsyncIterator[Served]:
    server = Served(pipeline.app)
    await server.start()
    yield server
    await server.close()


async def connect(pipeline: Pipeline, served: Served, telegram: TelegramEmulator) -> dict:
    await pipeline.assistant()
    made = await served.client.post(
        "/v1/channels",
        json={
            "type": "telegram",
            "assistant": "support",
            "config": {"bot_token": TOKEN, "secret_token": SECRET, "api_base_url": telegram.url},
        },
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_a_bot_answers_a_customer_through_the_emulator(
    pipeline: Pipeline,
    served: Served,
    telegram: TelegramEmulator,
) -> None:
    channel = await connect(pipeline, served, telegram)
    assert channel["webhook_url"] == f"{served.url}/channels/{channel['id']}/webhook"
    assert channel["config"]["bot_token"] == channel["config"]["secret_token"] == "********"
    pipeline.script = lambda body: says("Our shop opens at nine.")
    await telegram.user_says(TOKEN, 4242, "When do you open?")
    [reply] = await telegram.bot_messages(TOKEN, 1)
    assert reply["chat_id"] == 4242
    assert reply["text"] == DISCLOSED + "Our shop opens at nine."
    actions = await telegram.actions()
    assert {"token": TOKEN, "chat_id": 4242, "action": "typing"} in actions
    stored = await pipeline.app.db.read(
        lambda conn: conn.execute(turns.select().order_by(turns.c.id)).all()
    )
    assert (stored[0].role, stored[0].content) == ("user", "When do you open?")


async def test_choices_become_an_inline_keyboard_and_a_press_is_the_answer(
    pipeline: Pipeline,
    served: Served,
    telegram: TelegramEmulator,
) -> None:
    await connect(pipeline, served, telegram)
    answers = iter(["Which size?\n- Small\n- Medium\n- Large", "Medium it is."])
    pipeline.script = lambda body: says(next(answers))
    await telegram.user_says(TOKEN, 77, "I want the boots")
    [first] = await telegram.bot_messages(TOKEN, 1)
    keyboard = first["reply_markup"]["inline_keyboard"]
    assert [row[0]["callback_data"] for row in keyboard] == ["Small", "Medium", "Large"]
    assert first["text"] == DISCLOSED + "Which size?"
    await telegram.user_presses(TOKEN, 77, "Medium")
    messages = await telegram.bot_messages(TOKEN, 2)
    assert messages[1]["text"] == "Medium it is."
    assert pipeline.bodies[-1]["messages"][-1]["content"].endswith("Medium")
    assert any("answered" in a for a in await telegram.actions())


async def test_an_update_without_the_secret_token_is_refused(
    pipeline: Pipeline,
    served: Served,
    telegram: TelegramEmulator,
) -> None:
    channel = await connect(pipeline, served, telegram)
    update = {"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}, "text": "hi"}}
    path = f"/channels/{channel['id']}/webhook"
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong-secret-token-000"}):
        answer = await served.client.post(path, json=update, headers=headers)
        assert answer.status_code == 401
    assert await pipeline.count(channel_events) == 0
    ok = await served.client.post(
        path, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert ok.status_code == 200
    again = await served.client.post(
        path, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert again.status_code == 200
    assert await pipeline.count(channel_events) == 1  # update_id deduplicates
