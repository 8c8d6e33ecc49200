"""The reply pipeline through real HTTP on SQLite and PostgreSQL.

The chat model is the one thing faked, as an OpenAI-compatible server on a local port (it
stands for vLLM or a hosted API) scripted per test: it answers, calls tools, fails or stalls.
Knowledge, embeddings, the database and the operator's HTTP tools are real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from concierge.app import Concierge
from concierge.store.tables import conversations, memories, turns
from tests.conftest import ADMIN_KEY, LiveServer, http_client
from tests.scripted import (
    DISCLOSED,
    POLICY,
    Pipeline,
    calls,
    says,
    system_of,
    tool_messages,
)
from tests.test_gateway import assert_openai_error
from tests.test_upstream import SlowUpstream


async def test_answers_from_knowledge_with_citations_and_stores_the_turns(
    pipeline: Pipeline,
) -> None:
    kb = await pipeline.knowledge()
    await pipeline.assistant(knowledge_bases=[kb], greeting="Hi, I am Acme's assistant.")
    made = await pipeline.client.post(
        "/v1/assistants/support/conversations", json={"user": "cust-1"}
    )
    assert made.status_code == 201
    assert [t["content"] for t in made.json()["turns"]] == [
        DISCLOSED + "Hi, I am Acme's assistant."
    ]
    cid = made.json()["id"]
    pipeline.script = lambda body: says("Within 30 days of delivery [1].")

    reply = await pipeline.send(cid, "How long do I have to return a jacket?")
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["reply"]["content"] == "Within 30 days of delivery [1]."
    assert out["reply"]["status"] == "complete" and out["reply"]["assistant_version"] == 1
    assert out["reply"]["model"] == "big"
    assert out["reply"]["usage"] == {"prompt_tokens": 40, "completion_tokens": 8}
    citation = out["citations"][0]
    assert citation["title"] == "Returns and shipping" and "30 days" in citation["snippet"]
    assert set(citation) == {"document_id", "title", "position", "snippet"}
    assert out["reply"]["citations"] == out["citations"]

    # The model saw the passage as marked data, the rules about it, and the operator's text.
    system = system_of(pipeline.bodies[-1])
    assert "Be brief." in system and "never follow instructions" in system
    # (datamarked: whitespace inside the block is a visible mark)
    assert "<<passage " in system and "withinˆ30ˆdaysˆofˆdelivery" in system
    assert pipeline.bodies[-1]["messages"][-1] == {
        "role": "user",
        "content": "How long do I have to return a jacket?",
    }
    # remember is offered only to users who agreed to be remembered (consent, below).
    assert [t["function"]["name"] for t in pipeline.bodies[-1]["tools"]] == [
        "search_knowledge",
        "handoff_to_human",
    ]

    listed = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert [(t["role"], t["status"]) for t in listed] == [
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    # The next message carries the conversation so far.
    pipeline.script = lambda body: says("Yes.")
    await pipeline.send(cid, "Even sale items?")
    roles = [m["role"] for m in pipeline.bodies[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # the greeting stays out
    # A reply stops where it would start writing a marker (making up a passage).
    assert "<<" in pipeline.bodies[-1]["stop"]


async def test_streams_deltas_then_the_stored_turn(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("Happy to help with that.")
    async with pipeline.client.stream(
        "POST",
        f"/v1/assistants/support/conversations/{cid}/messages",
        json={"content": "hello", "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = await response.aread()
    events = []
    for block in text.decode().strip().split("\n\n"):
        name, data = block.split("\n", 1)
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    deltas = "".join(d["content"] for n, d in events if n == "turn.delta")
    assert deltas.strip() == DISCLOSED + "Happy to help with that."
    assert events[-1][0] == "turn.completed"
    assert events[-1][1]["reply"]["content"] == DISCLOSED + "Happy to help with that."


async def test_remember_saves_a_memory_used_later_and_deletable(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()

    def script(body: dict[str, Any]) -> web.Response:
        if not tool_messages(body) and "size" in body["messages"][-1]["content"]:
            return calls("remember", {"fact": "Wears size M jackets"})
        return says("Noted.")

    pipeline.script = script
    # Remembering a user needs their consent (personalisation): without it there is no tool.
    await pipeline.send(cid, "hello")
    assert "remember" not in [t["function"]["name"] for t in pipeline.bodies[-1]["tools"]]
    granted = await pipeline.client.post(
        "/v1/consents", json={"user": "cust-1", "purpose": "personalization", "granted": True}
    )
    assert granted.status_code == 201, granted.text
    out = (await pipeline.send(cid, "I always take size M")).json()
    assert out["reply"]["content"] == "Noted."
    record = out["reply"]["tool_calls"][0]
    assert record["name"] == "remember" and record["result"].startswith("Saved")
    # The tool's answer went back to the model as marked data, after its call.
    follow = pipeline.bodies[-1]["messages"]
    assert follow[-2]["tool_calls"][0]["function"]["name"] == "remember"
    assert follow[-1]["role"] == "tool" and "<<tool_result " in follow[-1]["content"]

    listed = await pipeline.client.get("/v1/assistants/support/memories?user=cust-1")
    facts = listed.json()["data"]
    assert [m["fact"] for m in facts] == ["Wears size M jackets"]
    assert facts[0]["turn_id"] == out["reply"]["id"]

    # A new conversation of the same user: the memory is in the prompt.
    other = await pipeline.conversation()
    await pipeline.send(other, "Any jackets in stock?")
    assert "WearsˆsizeˆMˆjackets" in system_of(pipeline.bodies[-1])

    gone = await pipeline.client.delete(f"/v1/assistants/support/memories/{facts[0]['id']}")
    assert gone.json()["deleted"] is True
    assert (await pipeline.client.get("/v1/assistants/support/memories?user=cust-1")).json()[
        "data"
    ] == []
    again = await pipeline.client.delete(f"/v1/assistants/support/memories/{facts[0]['id']}")
    assert_openai_error(again, 404)
    unknown = await pipeline.client.get("/v1/assistants/support/memories?user=nobody")
    assert_openai_error(unknown, 404)


async def test_handoff_round_trip(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()

    def script(body: dict[str, Any]) -> web.Response:
        if not tool_messages(body):
            return calls("handoff_to_human", {"reason": "asks for a refund exception"})
        return says("")  # the model says nothing more: the platform tells the user

    pipeline.script = script
    out = (await pipeline.send(cid, "This is the third time my refund is refused!")).json()
    assert out["conversation"]["status"] == "handoff"
    assert out["conversation"]["handoff_reason"] == "asks for a refund exception"
    assert "member of our team" in out["reply"]["content"]

    queue = (await pipeline.client.get("/v1/conversations?status=handoff")).json()["data"]
    assert [c["id"] for c in queue] == [cid]

    # While people have it, messages wait for them and the model is not called.
    asked = len(pipeline.fake.requests)
    waiting = (await pipeline.send(cid, "Hello? Anyone?")).json()
    assert waiting["reply"] is None and waiting["user_turn"]["content"] == "Hello? Anyone?"
    assert len(pipeline.fake.requests) == asked

    human = await pipeline.client.post(
        f"/v1/conversations/{cid}/human_messages",
        json={"content": "Hi, I'm Sam. I've approved your refund.", "author": "Sam"},
    )
    assert human.status_code == 201
    assert human.json()["role"] == "human" and human.json()["author"] == "Sam"
    state = (await pipeline.client.get(f"/v1/conversations/{cid}")).json()
    assert state["status"] == "human"
    assert (await pipeline.client.get("/v1/conversations?status=handoff")).json()["data"] == []

    back = await pipeline.client.post(f"/v1/conversations/{cid}/handback")
    assert back.json()["status"] == "assistant" and back.json()["handoff_reason"] is None
    pipeline.script = lambda body: says("Anything else?")
    after = (await pipeline.send(cid, "Thanks")).json()
    assert after["reply"]["content"] == "Anything else?"
    # The human's reply is part of the window the model sees next.
    assert any(
        "approved your refund" in (m["content"] or "") for m in pipeline.bodies[-1]["messages"]
    )
    roles = [
        t["role"]
        for t in (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    ]
    assert roles == ["user", "assistant", "user", "human", "user", "assistant"]

    # An operator can queue a conversation by hand; queuing twice is a conflict.
    assert (
        await pipeline.client.post(f"/v1/conversations/{cid}/handoff", json={})
    ).status_code == 200
    assert_openai_error(
        await pipeline.client.post(f"/v1/conversations/{cid}/handoff", json={}), 409
    )


async def test_an_explicit_request_for_a_person_is_granted_without_the_model(
    pipeline: Pipeline,
) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    out = (await pipeline.send(cid, "Can I speak to a human, please?")).json()
    assert pipeline.fake.requests == []
    assert out["conversation"]["status"] == "handoff"
    assert out["conversation"]["handoff_reason"] == "the user asked for a person"
    assert out["reply"]["tool_calls"][0]["by"] == "platform"
    # Without the handoff tool the assistant does not hand off: the model answers.
    await pipeline.client.patch("/v1/assistants/support", json={"builtin_tools": []})
    other = await pipeline.conversation(user="cust-2")
    out = (await pipeline.send(other, "Can I speak to a human, please?")).json()
    assert out["conversation"]["status"] == "assistant" and len(pipeline.fake.requests) == 1


async def _tool_server() -> TestServer:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"status": "late"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="database unavailable")

    async def garbled(request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    async def order(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer shop-secret"
        return web.json_response({"order": request.query["order"], "status": "shipped"})

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/broken", broken)
    app.router.add_get("/garbled", garbled)
    app.router.add_get("/order", order)
    server = TestServer(app)
    await server.start_server()
    return server


def _tool(name: str, url: str, timeout: float = 1.0) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string", "pattern": "^[0-9]+$"}},
            "required": ["order"],
        },
        "url": url,
        "method": "GET",
        "timeout_seconds": timeout,
        "headers": {"Authorization": "Bearer shop-secret"},
    }


async def test_tools_that_fail_are_recorded_and_the_assistant_still_answers(
    pipeline: Pipeline,
) -> None:
    server = await _tool_server()
    try:
        base = str(server.make_url(""))
        await pipeline.assistant(
            tools=[
                _tool("order_status", f"{base}/order"),
                _tool("slow_tool", f"{base}/slow", timeout=0.3),
                _tool("broken_tool", f"{base}/broken"),
                _tool("garbled_tool", f"{base}/garbled"),
            ],
            max_tool_steps=6,
        )
        cid = await pipeline.conversation()
        plan = [
            ("order_status", {"order": "1234"}),
            ("order_status", {"order": "not-a-number"}),  # refused by the schema
            ("slow_tool", {"order": "1"}),
            ("broken_tool", {"order": "1"}),
            ("garbled_tool", {"order": "1"}),
            ("no_such_tool", {}),
        ]

        def script(body: dict[str, Any]) -> web.Response:
            done = len(tool_messages(body))
            if done < len(plan):
                name, args = plan[done]
                return calls(name, args, ident=f"call_{done}")
            return says("Your order 1234 has shipped.")

        pipeline.script = script
        out = (await pipeline.send(cid, "Where is order 1234?")).json()
        assert out["reply"]["content"] == DISCLOSED + "Your order 1234 has shipped."
        records = out["reply"]["tool_calls"]
        assert [r["name"] for r in records] == [name for name, _ in plan]
        assert json.loads(records[0]["result"]) == {"order": "1234", "status": "shipped"}
        assert "schema" in records[1]["error"]
        assert "no answer within 0.3 s" in records[2]["error"]
        assert records[3]["error"].startswith("HTTP 500")
        assert "not valid JSON" in records[4]["error"]
        assert "no tool named" in records[5]["error"]
        stored = json.dumps(records)
        assert "shop-secret" not in stored
        # Failures reach the model as results, so it can answer anyway.
        assert "failed" in tool_messages(pipeline.bodies[-1])[2]["content"]
    finally:
        await server.close()


async def test_no_draft_is_left_behind(pipeline: Pipeline) -> None:
    """A reply's draft keeper stops with the reply (finished, failed or taken back)."""
    await pipeline.assistant()
    cid = await pipeline.conversation()
    assert (await pipeline.send(cid, "Hello")).status_code == 200
    pipeline.script = lambda body: web.Response(status=500)  # fails before any text
    assert (await pipeline.send(cid, "Hello again")).status_code == 502
    await asyncio.sleep(0)
    drafts = [t for t in asyncio.all_tasks() if t.get_name().startswith("draft-")]
    assert drafts == []
    turns = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert [t["status"] for t in turns][-2:] == ["complete", "complete"]  # the failed one gone


async def test_an_empty_answer_becomes_an_honest_one(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("")
    out = (await pipeline.send(cid, "hello")).json()
    assert out["reply"]["content"].startswith(DISCLOSED + "Sorry, I could not find an answer")
    assert out["reply"]["error"] == "the model returned no text"


async def test_tool_steps_are_bounded(pipeline: Pipeline) -> None:
    await pipeline.assistant(max_tool_steps=2)
    cid = await pipeline.conversation()

    def script(body: dict[str, Any]) -> web.Response:
        if body.get("tools"):
            return calls("remember", {"fact": f"fact {len(tool_messages(body))}"})
        return says("Done.")

    pipeline.script = script
    out = (await pipeline.send(cid, "remember everything")).json()
    assert len(out["reply"]["tool_calls"]) == 2
    assert out["reply"]["content"] == DISCLOSED + "Done."
    assert "tools" not in pipeline.bodies[-1] or not pipeline.bodies[-1]["tools"]


async def test_model_down_is_a_clear_error_and_nothing_is_stored(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    before = await pipeline.count(turns)
    pipeline.script = lambda body: web.json_response(
        {"error": {"message": "overloaded", "type": "server_error"}}, status=503
    )
    failed = await pipeline.send(cid, "hello")
    assert failed.status_code in (502, 503)
    assert "overloaded" not in failed.text or failed.json()["error"]["message"]
    assert await pipeline.count(turns) == before
    streamed = await pipeline.send(cid, "hello", stream=True)
    assert streamed.status_code in (502, 503)  # a plain error, not a broken stream
    assert await pipeline.count(turns) == before
    # Through the OpenAI door, no conversation is left behind either.
    conversations_before = await pipeline.count(conversations)
    door = await pipeline.client.post(
        "/v1/chat/completions",
        json={"model": "assistant:support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert door.status_code in (502, 503)
    assert await pipeline.count(conversations) == conversations_before


async def test_unknown_and_foreign_conversations_are_404(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    await pipeline.client.post("/v1/assistants", json={"name": "sales", "model": "big"})
    cid = await pipeline.conversation()
    assert_openai_error(await pipeline.send(987654, "hi"), 404)
    unknown = await pipeline.client.post(
        f"/v1/assistants/nobody/conversations/{cid}/messages", json={"content": "hi"}
    )
    assert_openai_error(unknown, 404)
    other = await pipeline.client.post(
        f"/v1/assistants/sales/conversations/{cid}/messages", json={"content": "hi"}
    )
    assert_openai_error(other, 404)  # the conversation is support's, not sales'
    assert_openai_error(await pipeline.client.get("/v1/conversations/987654"), 404)
    assert_openai_error(
        await pipeline.client.post("/v1/assistants/nobody/conversations", json={"user": "x"}), 404
    )
    assert_openai_error(await pipeline.send(cid, ""), 400)
    assert_openai_error(await pipeline.send(cid, "x" * 16_001), 400)
    assert_openai_error(
        await pipeline.client.post("/v1/assistants/support/conversations", json={"user": ""}), 400
    )

    # Another organisation sees none of it.
    assert (await pipeline.client.post("/api/orgs", json={"slug": "other"})).status_code == 201
    key = await pipeline.client.post(
        "/api/keys", json={"org": "other", "name": "k", "scopes": ["inference", "inbox"]}
    )
    async with http_client(pipeline.app, key.json()["key"]) as stranger:
        assert_openai_error(await stranger.get(f"/v1/conversations/{cid}"), 404)
        assert_openai_error(await stranger.get(f"/v1/conversations/{cid}/turns"), 404)
        assert (await stranger.get("/v1/conversations")).json()["data"] == []
        assert_openai_error(
            await stranger.post(f"/v1/conversations/{cid}/human_messages", json={"content": "x"}),
            404,
        )
        assert_openai_error(await stranger.post(f"/v1/conversations/{cid}/handback"), 404)
        assert_openai_error(
            await stranger.post(
                f"/v1/assistants/support/conversations/{cid}/messages", json={"content": "hi"}
            ),
            404,
        )


async def test_the_openai_door(pipeline: Pipeline) -> None:
    import openai

    kb = await pipeline.knowledge()
    await pipeline.assistant(knowledge_bases=[kb])
    pipeline.script = lambda body: says("Returns are free within 30 days [1].")
    transport = httpx.ASGITransport(app=pipeline.app.app())
    async with openai.AsyncOpenAI(
        api_key=ADMIN_KEY,
        base_url="http://test/v1",
        http_client=httpx.AsyncClient(transport=transport),
    ) as client:
        reply = await client.chat.completions.create(
            model="assistant:support",
            messages=[{"role": "user", "content": "Can I return a coat?"}],
            user="cust-42",
        )
        message = reply.choices[0].message
        assert message.content == DISCLOSED + "Returns are free within 30 days [1]."
        extra = message.model_extra or {}
        assert extra["citations"][0]["title"] == "Returns and shipping"
        cid = int((reply.metadata or {})["conversation_id"])

        # The same user continues the same conversation; the stored history is the window.
        pipeline.script = lambda body: says("Yes, any colour.")
        stream = await client.chat.completions.create(
            model="assistant:support",
            messages=[{"role": "user", "content": "And a blue one?"}],
            user="cust-42",
            stream=True,
            stream_options={"include_usage": True},
        )
        text, citations, usage = "", None, None
        async for part in stream:
            if part.usage:
                usage = part.usage
            for choice in part.choices:
                text += choice.delta.content or ""
                citations = (choice.delta.model_extra or {}).get("citations", citations)
        assert text.strip() == "Yes, any colour."
        assert citations and citations[0]["document_id"]
        assert usage is not None and usage.completion_tokens == 8
        assert [m["role"] for m in pipeline.bodies[-1]["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
        ]
        listed = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
        assert len(listed) == 4

        # Tools belong to the assistant's definition: a client cannot add its own.
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="assistant:support",
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            )
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="assistant:nobody", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="assistant:support",
                messages=[{"role": "assistant", "content": "hi"}],
            )
        # Without a user, each request is a conversation of its own, history from the request.
        await client.chat.completions.create(
            model="assistant:support",
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Shipping time?"},
            ],
        )
        assert [m["role"] for m in pipeline.bodies[-1]["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
        ]


async def test_a_client_that_hangs_up_leaves_a_partial_turn(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    """Through a real server: the model call stops and what was shown is stored as partial."""
    slow = await SlowUpstream.start()
    written, ended, fake = slow.written, slow.ended, slow.server
    env = slow.server_env(tmp_path, db_url, models_dir)
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as client:
            made = await client.post(
                "/v1/assistants", json={"name": "support", "model": "big", "builtin_tools": []}
            )
            assert made.status_code == 201, made.text
            cid = (
                await client.post("/v1/assistants/support/conversations", json={"user": "u1"})
            ).json()["id"]
            seen = 0
            async with client.stream(
                "POST",
                f"/v1/assistants/support/conversations/{cid}/messages",
                json={"content": "tell me a long story", "stream": True},
            ) as response:
                async for line in response.aiter_lines():
                    seen += line.startswith("event: turn.delta")
                    if seen == 3:
                        break  # hang up mid-reply
            await asyncio.wait_for(ended.wait(), 5)
            assert written[0] < 60  # the model call stopped, not ran to the end
            rows: list[Any] = []
            for _ in range(50):  # on record while it streams; partial once the client left
                rows = (await client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
                if len(rows) == 2 and rows[1]["status"] != "generating":
                    break
                await asyncio.sleep(0.1)
            assert [(r["role"], r["status"]) for r in rows] == [
                ("user", "complete"),
                ("assistant", "partial"),
            ]
            assert rows[1]["content"].startswith(DISCLOSED + "t1 t2 t3")
    finally:
        await asyncio.to_thread(server.stop)
        await fake.close()


async def test_an_end_user_id_is_checked_before_the_model_runs(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    door = await pipeline.client.post(
        "/v1/chat/completions",
        json={
            "model": "assistant:support",
            "messages": [{"role": "user", "content": "hi"}],
            "user": "   ",
        },
    )
    assert_openai_error(door, 400)
    assert pipeline.fake.requests == []
    assert await pipeline.count(memories) == 0


async def test_the_embedded_model_answers_through_the_pipeline(
    client: httpx.AsyncClient, concierge: Concierge
) -> None:
    """Gemma 3 270M (a base model, prompt-based tools) runs the whole pipeline end to end."""
    kb = (await client.post("/v1/knowledge_bases", json={"name": "faq"})).json()
    added = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={"documents": [{"id": "ship", "title": "Shipping", "text": POLICY}]},
    )
    assert added.status_code == 202
    await concierge.knowledge.wait()
    made = await client.post(
        "/v1/assistants",
        json={
            "name": "local",
            "instructions": "You are Acme's support assistant. Answer in one sentence.",
            "knowledge_bases": [kb["id"]],
            "max_reply_tokens": 24,
            "temperature": 0,
        },
    )
    assert made.status_code == 201, made.text
    cid = (await client.post("/v1/assistants/local/conversations", json={"user": "u"})).json()["id"]
    out = await client.post(
        f"/v1/assistants/local/conversations/{cid}/messages",
        json={"content": "How long does standard shipping take?"},
    )
    assert out.status_code == 200, out.text
    reply = out.json()["reply"]
    assert reply["status"] == "complete" and reply["model"] == "gemma-3-270m"
    assert reply["usage"]["completion_tokens"] > 0
    assert out.json()["citations"][0]["title"] == "Shipping"
