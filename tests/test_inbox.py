"""The human agent workflow: conversations handed to people open in the inbox, are assigned
by round robin or capacity, move between open, pending, snoozed and resolved, carry labels,
notes, an SLA and a CSAT answer; canned responses, business hours, reports and the audit
trail. Through real HTTP on both databases, with WhatsApp (a fake Graph API) for what the
customer sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from concierge.store.tables import audit_log
from tests.peers.meta import FakeGraph
from tests.scripted import Pipeline, says
from tests.test_channels_whatsapp import (  # noqa: F401
    CUSTOMER,
    connect,
    graph,
    post,
    wa_text,
    whatsapp_webhook,
)


async def handed_off(pipeline: Pipeline, user: str) -> int:
    cid = await pipeline.conversation(user=user)
    answer = await pipeline.client.post(
        f"/v1/conversations/{cid}/handoff", json={"reason": "billing question"}
    )
    assert answer.status_code == 200, answer.text
    return cid


async def item(pipeline: Pipeline, cid: int) -> dict[str, Any]:
    found = await pipeline.client.get(f"/v1/inbox/{cid}")
    assert found.status_code == 200, found.text
    return dict(found.json())


async def agents(pipeline: Pipeline, *specs: tuple[str, int]) -> dict[str, int]:
    ids = {}
    for account, capacity in specs:
        made = await pipeline.client.put(
            f"/v1/inbox/agents/{account}", json={"name": account.title(), "capacity": capacity}
        )
        assert made.status_code == 200, made.text
        ids[account] = made.json()["id"]
    return ids


async def test_handoffs_open_and_are_assigned_round_robin_then_by_capacity(
    pipeline: Pipeline,
) -> None:
    await pipeline.assistant()
    ids = await agents(pipeline, ("ana", 2), ("bo", 5))
    first = [await handed_off(pipeline, f"cust-{i}") for i in range(3)]
    done = await pipeline.app.inbox.tick()
    assert done["opened"] == 3 and done["assigned"] == 3
    owners = [(await item(pipeline, cid))["assignee_id"] for cid in first]
    assert owners == [ids["ana"], ids["bo"], ids["ana"]]  # longest since last assignment first
    # Ana is at her capacity (2): by capacity, the next goes to Bo whatever the order.
    await pipeline.client.put(
        "/v1/inbox/teams/billing", json={"assignment": "capacity", "members": ["ana", "bo"]}
    )
    settings = (await pipeline.client.get("/v1/inbox/settings")).json()
    settings.pop("object")
    settings["team"] = "billing"
    assert (await pipeline.client.put("/v1/inbox/settings", json=settings)).status_code == 200
    later = await handed_off(pipeline, "cust-9")
    await pipeline.app.inbox.tick()
    shown = await item(pipeline, later)
    assert shown["assignee_id"] == ids["bo"] and shown["status"] == "open"
    listed = await pipeline.client.get("/v1/inbox", params={"assignee": "ana"})
    assert sorted(i["conversation_id"] for i in listed.json()["data"]) == [first[0], first[2]]
    agents_now = {
        a["account"]: a for a in (await pipeline.client.get("/v1/inbox/agents")).json()["data"]
    }
    assert agents_now["ana"]["open_conversations"] == 2
    # A second pass changes nothing: every step is idempotent.
    assert (await pipeline.app.inbox.tick())["opened"] == 0


async def test_statuses_follow_people_and_customers(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    await agents(pipeline, ("ana", 5))
    cid = await handed_off(pipeline, "cust-1")
    await pipeline.app.inbox.tick()
    replied = await pipeline.client.post(
        f"/v1/conversations/{cid}/human_messages",
        json={"content": "Hi, Ana here.", "author": "ana"},
    )
    assert replied.status_code == 201
    shown = await item(pipeline, cid)
    assert shown["status"] == "pending" and shown["first_response_at"]
    # The customer answers: open again (the pass that follows the turns).
    await pipeline.send(cid, "Thanks, one more thing")
    await pipeline.app.inbox.tick()
    assert (await item(pipeline, cid))["status"] == "open"

    snoozed = await pipeline.client.post(f"/v1/inbox/{cid}/snooze", json={"minutes": 30})
    assert snoozed.json()["status"] == "snoozed"
    assert (await pipeline.client.post(f"/v1/inbox/{cid}/snooze", json={})).status_code == 400
    await pipeline.app.inbox.tick(datetime.now(UTC) + timedelta(minutes=31))
    assert (await item(pipeline, cid))["status"] == "open"

    labelled = await pipeline.client.post(
        f"/v1/inbox/{cid}/labels", json={"add": ["vip", "refund"], "remove": []}
    )
    assert labelled.json()["labels"] == ["vip", "refund"]
    unlabelled = await pipeline.client.post(f"/v1/inbox/{cid}/labels", json={"remove": ["vip"]})
    assert unlabelled.json()["labels"] == ["refund"]
    by_label = await pipeline.client.get("/v1/inbox", params={"label": "refund"})
    assert [i["conversation_id"] for i in by_label.json()["data"]] == [cid]
    assert (await pipeline.client.get("/v1/inbox", params={"label": "vip"})).json()["data"] == []
    bad = await pipeline.client.post(f"/v1/inbox/{cid}/labels", json={"add": ["<script>"]})
    assert bad.status_code == 400

    note = await pipeline.client.post(
        f"/v1/inbox/{cid}/notes", json={"text": "Refund approved by finance.", "author": "ana"}
    )
    assert note.status_code == 201
    assert (await item(pipeline, cid))["notes"][0]["text"] == "Refund approved by finance."
    turns = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert all("finance" not in t["content"] for t in turns)  # notes are never sent

    resolved = await pipeline.client.post(f"/v1/inbox/{cid}/resolve", json={})
    assert resolved.json()["status"] == "resolved"
    state = (await pipeline.client.get(f"/v1/conversations/{cid}")).json()
    assert state["status"] == "assistant"  # back to the assistant
    again = await pipeline.client.post(f"/v1/inbox/{cid}/resolve", json={})
    assert again.status_code == 409
    rated = await pipeline.client.post(f"/v1/inbox/{cid}/rating", json={"score": 4})
    assert rated.json()["csat"]["score"] == 4

    # Handed to people again later: a new cycle.
    await pipeline.client.post(f"/v1/conversations/{cid}/handoff", json={})
    await pipeline.app.inbox.tick()
    reopened = await item(pipeline, cid)
    assert reopened["status"] == "open" and reopened["first_response_at"] is None

    actions = [
        r.action
        for r in await pipeline.app.db.read(
            lambda conn: conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
        )
    ]
    for action in ("inbox.assigned", "inbox.snooze", "inbox.label", "inbox.note", "inbox.resolve"):
        assert action in actions


async def test_canned_responses_fill_their_variables(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    await agents(pipeline, ("ana", 5))
    cid = await handed_off(pipeline, "cust-7")
    saved = await pipeline.client.put(
        "/v1/inbox/canned/refund",
        json={"text": "Hello {{customer.name}}, {{agent.name}} here: your refund is on its way."},
    )
    assert saved.json()["variables"] == ["agent.name", "customer.name"]
    rendered = await pipeline.client.post(
        "/v1/inbox/canned/refund/render", json={"conversation": cid, "agent": "ana"}
    )
    assert rendered.json()["text"] == "Hello cust-7, Ana here: your refund is on its way."
    missing = await pipeline.client.post("/v1/inbox/canned/refund/render", json={})
    assert missing.status_code == 400 and "customer.name" in missing.json()["error"]["message"]
    assert (
        await pipeline.client.put("/v1/inbox/canned/Bad Name", json={"text": "x"})
    ).status_code == 400
    assert len((await pipeline.client.get("/v1/inbox/canned")).json()["data"]) == 1


async def test_sla_breaches_are_flagged_and_reported(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    settings = {
        "sla": {"first_response_minutes": 5, "resolution_minutes": 60},
        "assignment": "manual",
    }
    assert (await pipeline.client.put("/v1/inbox/settings", json=settings)).status_code == 200
    late = await handed_off(pipeline, "cust-late")
    await pipeline.app.inbox.tick()
    shown = await item(pipeline, late)
    assert shown["assignee_id"] is None  # manual assignment
    assert shown["sla"]["first_response_due"]
    await pipeline.app.inbox.tick(datetime.now(UTC) + timedelta(minutes=6))
    assert (await item(pipeline, late))["sla"]["breached"] == ["first_response"]
    breached = await pipeline.client.get("/v1/inbox", params={"breached": "true"})
    assert [i["conversation_id"] for i in breached.json()["data"]] == [late]
    await pipeline.conversation(user="happy")  # the assistant handled this one alone
    report = (await pipeline.client.get("/v1/inbox/reports", params={"by": "channel"})).json()
    [row] = report["data"]
    assert row["channel"] == "api" and row["conversations"] == 2 and row["handed_off"] == 1
    assert row["handoff_rate"] == 0.5 and row["bot_resolution_rate"] == 0.5
    assert row["sla_breached"] == 1
    wrong = await pipeline.client.put(
        "/v1/inbox/settings", json={"sla": {"first_response_minutes": 0}}
    )
    assert wrong.status_code == 400
    bad_zone = await pipeline.client.put(
        "/v1/inbox/settings", json={"business_hours": {"timezone": "Mars/Base"}}
    )
    assert bad_zone.status_code == 400 and "time zone" in bad_zone.json()["error"]["message"]


async def test_on_whatsapp_out_of_hours_and_a_csat_button(
    pipeline: Pipeline,
    graph: FakeGraph,  # noqa: F811
) -> None:
    channel = await connect(pipeline, graph)
    away = {"business_hours": {"enabled": True, "timezone": "UTC", "week": {}}}  # never open
    assert (await pipeline.client.put("/v1/inbox/settings", json=away)).status_code == 200
    pipeline.script = lambda body: says("Let me pass you to a colleague.")
    await post(pipeline, channel, whatsapp_webhook(messages=[wa_text(CUSTOMER, "I want a person")]))
    await graph.wait_replies(1)
    conversation = (await pipeline.client.get("/v1/conversations")).json()["data"][0]
    cid = conversation["id"]
    await pipeline.client.post(f"/v1/conversations/{cid}/handoff", json={})
    await pipeline.app.inbox.tick()
    assert (await item(pipeline, cid))["out_of_hours"] is True
    sent = await graph.wait_replies(2)
    assert sent[1]["text"]["body"].startswith("Thank you for your message. Our team is away")

    resolved = await pipeline.client.post(f"/v1/inbox/{cid}/resolve", json={})
    assert resolved.status_code == 200
    sent = await graph.wait_replies(3)
    question = sent[2]
    assert question["type"] == "interactive" and question["interactive"]["type"] == "list"
    rows = question["interactive"]["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == [f"cc:csat:{n}" for n in range(1, 6)]
    choice = {
        "from": CUSTOMER,
        "id": "wamid.CSAT5",
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": {"id": "cc:csat:5", "title": "5"}},
    }
    await post(pipeline, channel, whatsapp_webhook(messages=[choice]))
    thanks = await graph.wait_replies(4)
    assert thanks[3]["text"]["body"] == "Thank you for your rating."
    assert (await item(pipeline, cid))["csat"]["score"] == 5
    report = (await pipeline.client.get("/v1/inbox/reports", params={"by": "channel"})).json()
    assert report["data"][0]["csat"] == {"responses": 1, "average": 5.0, "satisfied_share": 1.0}


async def test_the_inbox_is_the_organisation_s_own(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await handed_off(pipeline, "cust-1")
    await pipeline.app.inbox.tick()
    other = await pipeline.client.post(
        "/api/keys", json={"org": "globex", "name": "inbox", "scopes": ["inbox"]}
    )
    if other.status_code == 404:  # make the organisation first
        await pipeline.client.post("/api/orgs", json={"slug": "globex", "name": "Globex"})
        other = await pipeline.client.post(
            "/api/keys", json={"org": "globex", "name": "inbox", "scopes": ["inbox"]}
        )
    assert other.status_code in (200, 201), other.text
    headers = {"Authorization": f"Bearer {other.json()['key']}"}
    stranger = await pipeline.client.get(f"/v1/inbox/{cid}", headers=headers)
    assert stranger.status_code == 404
    assert (await pipeline.client.get("/v1/inbox", headers=headers)).json()["data"] == []
    resolve = await pipeline.client.post(f"/v1/inbox/{cid}/resolve", json={}, headers=headers)
    assert resolve.status_code == 404
    # Settings, agents and teams are the administrator's.
    put = await pipeline.client.put("/v1/inbox/settings", json={}, headers=headers)
    assert put.status_code == 403


async def test_a_widget_visitor_rates_the_help_after_resolution(pipeline: Pipeline) -> None:
    from tests.conftest import http_client

    w = "/widget/v1/default/support"
    await pipeline.assistant(widget=True)
    async with http_client(pipeline.app, key=None) as widget:
        me = {"X-Concierge-Visitor": (await widget.post(f"{w}/visitors")).json()["token"]}
        cid = (await widget.post(f"{w}/conversations", headers=me)).json()["id"]
        early = await widget.post(f"{w}/conversations/{cid}/rating", headers=me, json={"score": 5})
        assert early.status_code == 409
        await pipeline.client.post(f"/v1/conversations/{cid}/handoff", json={})
        await pipeline.app.inbox.tick()
        assert (await widget.get(f"{w}/conversations/{cid}", headers=me)).json()["rating"] is None
        await pipeline.client.post(f"/v1/inbox/{cid}/resolve", json={})
        shown = (await widget.get(f"{w}/conversations/{cid}", headers=me)).json()
        assert shown["rating"] == {"open": True, "score": None}
        assert shown["turns"][-1]["content"].startswith("How would you rate")
        bad = await widget.post(f"{w}/conversations/{cid}/rating", headers=me, json={"score": 9})
        assert bad.status_code == 400
        rated = await widget.post(f"{w}/conversations/{cid}/rating", headers=me, json={"score": 4})
        assert rated.status_code == 200 and rated.json()["score"] == 4
        twice = await widget.post(f"{w}/conversations/{cid}/rating", headers=me, json={"score": 1})
        assert twice.status_code == 409
        other = {"X-Concierge-Visitor": (await widget.post(f"{w}/visitors")).json()["token"]}
        stranger = await widget.post(
            f"{w}/conversations/{cid}/rating", headers=other, json={"score": 1}
        )
        assert stranger.status_code == 404
    assert (await item(pipeline, cid))["csat"]["score"] == 4
