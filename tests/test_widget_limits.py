"""The public widget API: revoking the organisation's widget key switches every route off,
and client addresses and visitors have budgets of calls; what the widget creates is
metered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import http_client
from tests.helpers import ledger_rows
from tests.scripted import Pipeline

W = "/widget/v1/default/support"


async def _visitor(client: httpx.AsyncClient) -> dict[str, str]:
    made = await client.post(f"{W}/visitors")
    assert made.status_code == 201, made.text
    return {"X-Concierge-Visitor": made.json()["token"]}


def _widget(pipeline: Pipeline) -> httpx.AsyncClient:
    return http_client(pipeline.app, key=None)  # the public widget: no API key


async def _every_route(
    client: httpx.AsyncClient, me: dict[str, str], cid: int, turn: int
) -> list[Any]:
    return [
        await client.get(W),
        await client.post(f"{W}/visitors"),
        await client.post(f"{W}/conversations", headers=me),
        await client.get(f"{W}/conversations/{cid}", headers=me),
        await client.post(f"{W}/conversations/{cid}/messages", headers=me, json={"content": "hi"}),
        await client.post(
            f"{W}/conversations/{cid}/turns/{turn}/report", headers=me, json={"category": "other"}
        ),
        await client.get(f"{W}/consents", headers=me),
        await client.post(f"{W}/consents", headers=me, json={"purpose": "terms", "granted": True}),
    ]


async def test_revoking_the_widget_key_switches_every_route_off(pipeline: Pipeline) -> None:
    await pipeline.assistant(widget=True)
    async with _widget(pipeline) as client:
        me = await _visitor(client)
        cid = (await client.post(f"{W}/conversations", headers=me)).json()["id"]
        sent = await client.post(
            f"{W}/conversations/{cid}/messages", headers=me, json={"content": "hi"}
        )
        turn = sent.json()["reply"]["id"]
        before = await _every_route(client, me, cid, turn)
        assert all(r.status_code in (200, 201) for r in before), [r.text for r in before]
        widget_key = next(
            k
            for k in (await pipeline.client.get("/api/keys")).json()["data"]
            if k["name"] == "web widget"
        )
        assert (await pipeline.client.delete(f"/api/keys/{widget_key['id']}")).status_code == 200
        after = await _every_route(client, me, cid, turn)
        assert [r.status_code for r in after] == [403] * len(after), [r.text for r in after]
        assert all("switched off" in r.json()["error"]["message"] for r in after)
    # What it made while it was on is in the usage ledger.
    endpoints = {r.endpoint for r in await ledger_rows(pipeline.app)}
    assert {
        "widget.visitors",
        "widget.conversations",
        "widget.messages",
        "widget.reports",
        "widget.consents",
    } <= endpoints


@pytest.mark.settings(widget_new_visitors_per_minute=3)
async def test_an_address_cannot_mint_visitors_without_end(pipeline: Pipeline) -> None:
    await pipeline.assistant(widget=True)
    async with _widget(pipeline) as client:
        answers = [await client.post(f"{W}/visitors") for _ in range(5)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert answers[3].json()["error"]["type"] == "rate_limit_error"


@pytest.mark.settings(widget_messages_per_minute=2, widget_visitor_requests_per_minute=6)
async def test_a_visitor_has_a_budget_of_messages_and_calls(pipeline: Pipeline) -> None:
    await pipeline.assistant(widget=True)
    async with _widget(pipeline) as client:
        me = await _visitor(client)
        cid = (await client.post(f"{W}/conversations", headers=me)).json()["id"]
        path = f"{W}/conversations/{cid}/messages"
        sent = [await client.post(path, headers=me, json={"content": f"hi {n}"}) for n in range(3)]
        assert [s.status_code for s in sent] == [200, 200, 429]
        assert "messages from this chat" in sent[2].json()["error"]["message"]
        polls = [await client.get(f"{W}/conversations/{cid}", headers=me) for _ in range(4)]
        assert 429 in [p.status_code for p in polls]  # 6 calls a minute: spent
        # Another visitor is not held up by this one.
        other = await _visitor(client)
        assert (await client.post(f"{W}/conversations", headers=other)).status_code == 201


@pytest.mark.settings(key_cache_seconds=300)
async def test_the_kill_switch_is_immediate_where_it_is_pulled(pipeline: Pipeline) -> None:
    await pipeline.assistant(widget=True)
    async with _widget(pipeline) as client:
        me = await _visitor(client)  # the widget key is cached from here on
        assert (await client.get(W)).status_code == 200
        widget_key = next(
            k
            for k in (await pipeline.client.get("/api/keys")).json()["data"]
            if k["name"] == "web widget"
        )
        await pipeline.client.delete(f"/api/keys/{widget_key['id']}")
        assert (await client.get(W)).status_code == 403
        assert (await client.post(f"{W}/conversations", headers=me)).status_code == 403
