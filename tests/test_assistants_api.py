"""/v1/assistants through real HTTP (ASGI) on SQLite and PostgreSQL: definitions, versions,
secrets kept server-side, bad input, and organisations kept apart."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from sqlalchemy import select

from concierge.app import Concierge
from concierge.store.tables import assistants
from tests.conftest import LLM, http_client
from tests.test_gateway import assert_openai_error

LOOKUP = {
    "name": "order_status",
    "description": "Look up an order's status by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string", "pattern": "^[0-9]{4,10}$"}},
        "required": ["order"],
    },
    "url": "https://shop.example/api/orders",
    "method": "GET",
    "headers": {"Authorization": "Bearer shop-secret"},
}


async def create(client: AsyncClient, **fields: Any) -> dict[str, Any]:
    made = await client.post("/v1/assistants", json={"name": "support", **fields})
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_create_read_update_versions_and_archive(
    client: AsyncClient, concierge: Concierge
) -> None:
    kb = (await client.post("/v1/knowledge_bases", json={"name": "policies"})).json()
    made = await create(
        client,
        instructions="You answer questions about Acme's orders.",
        model=LLM,
        knowledge_bases=[kb["id"]],
        tools=[LOOKUP],
        greeting="Hi! How can I help?",
        max_tool_steps=2,
    )
    assert made["version"] == 1 and made["model"] == LLM
    assert made["builtin_tools"] == ["search_knowledge", "remember", "handoff_to_human"]
    tool = made["tools"][0]
    assert tool["headers"] == {"Authorization": "********"}  # never shown
    assert tool["allowed_hosts"] == ["shop.example"]
    assert (await client.get("/v1/assistants/support")).json()["id"] == made["id"]
    listed = (await client.get("/v1/assistants")).json()["data"]
    assert [a["name"] for a in listed] == ["support"]

    # A change writes version 2; the tool is sent back as shown and keeps its secret.
    changed = await client.patch(
        f"/v1/assistants/{made['id']}",
        json={"instructions": "Be brief.", "tools": made["tools"], "temperature": 0.1},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.json()["instructions"] == "Be brief."
    same = await client.patch(f"/v1/assistants/{made['id']}", json={"temperature": 0.1})
    assert same.json()["version"] == 2  # nothing changed, no new version
    versions = (await client.get(f"/v1/assistants/{made['id']}/versions")).json()["data"]
    assert [v["version"] for v in versions] == [1, 2]
    first = (await client.get(f"/v1/assistants/{made['id']}/versions/1")).json()
    assert first["instructions"].startswith("You answer")
    assert first["tools"][0]["headers"] == {"Authorization": "********"}
    stored = concierge.db.read_sync(
        lambda conn: conn.execute(
            select(assistants.c.config).where(assistants.c.id == made["id"])
        ).scalar_one()
    )
    assert stored["tools"][0]["headers"] == {"Authorization": "Bearer shop-secret"}

    renamed = await client.patch(f"/v1/assistants/{made['id']}", json={"name": "help-desk"})
    assert renamed.json()["name"] == "help-desk" and renamed.json()["version"] == 3
    assert_openai_error(await client.get("/v1/assistants/support"), 404)

    gone = await client.delete(f"/v1/assistants/{made['id']}")
    assert gone.json()["deleted"] is True
    assert_openai_error(await client.get(f"/v1/assistants/{made['id']}"), 404)
    assert (await client.get("/v1/assistants")).json()["data"] == []
    # Its versions stay readable (turns point at them), and the name is free again.
    assert (await client.get(f"/v1/assistants/{made['id']}/versions/2")).status_code == 200
    again = await client.post("/v1/assistants", json={"name": "help-desk"})
    assert again.status_code == 201 and again.json()["id"] != made["id"]


async def test_bad_definitions_are_refused_with_a_reason(client: AsyncClient) -> None:
    await create(client)
    assert_openai_error(await client.post("/v1/assistants", json={"name": "support"}), 409)
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({}, 400, "name"),
        ({"name": ""}, 400, "name"),
        ({"name": "42"}, 400, "digits"),
        ({"name": "a", "model": "no-such-model"}, 404, "does not exist"),
        ({"name": "a", "fallback_models": ["nope"]}, 404, "does not exist"),
        ({"name": "a", "knowledge_bases": [999999]}, 404, "knowledge base"),
        ({"name": "a", "temperature": 3}, 400, "temperature"),
        ({"name": "a", "max_tool_steps": 99}, 400, "max_tool_steps"),
        ({"name": "a", "surprise": True}, 400, "surprise"),
        ({"name": "a", "builtin_tools": ["launch_missiles"]}, 400, "builtin_tools"),
        ({"name": "a", "tools": [{**LOOKUP, "name": "remember"}]}, 400, "built-in"),
        ({"name": "a", "tools": [LOOKUP, LOOKUP]}, 400, "unique"),
        ({"name": "a", "tools": [{**LOOKUP, "url": "ftp://x/y"}]}, 400, "http"),
        (
            {"name": "a", "tools": [{**LOOKUP, "allowed_hosts": ["other.example"]}]},
            400,
            "allowed_hosts",
        ),
        ({"name": "a", "tools": [{**LOOKUP, "parameters": {"type": 12}}]}, 400, "JSON Schema"),
        ({"name": "a", "tools": [{**LOOKUP, "parameters": {"type": "string"}}]}, 400, "object"),
        ({"name": "a", "instructions": "x\u0000"}, 400, "NUL"),
    ]
    for body, status, words in bad:
        answer = await client.post("/v1/assistants", json=body)
        assert_openai_error(answer, status)
        assert words in answer.json()["error"]["message"], (body, answer.json())
    # A masked header with nothing stored behind it cannot be "kept".
    masked = {**LOOKUP, "name": "other", "headers": {"X-Key": "********"}}
    assert_openai_error(await client.patch("/v1/assistants/support", json={"tools": [masked]}), 400)
    assert_openai_error(await client.patch("/v1/assistants/support", json={"temperature": -1}), 400)
    assert_openai_error(await client.get("/v1/assistants/support/versions/9"), 404)
    assert (await client.get("/v1/assistants/support")).json()["version"] == 1  # untouched


async def test_organisations_never_see_each_others_assistants(
    client: AsyncClient, concierge: Concierge
) -> None:
    mine = await create(client, tools=[LOOKUP])
    assert (await client.post("/api/orgs", json={"slug": "globex"})).status_code == 201
    made = await client.post("/api/keys", json={"org": "globex", "name": "op", "scopes": ["admin"]})
    kb = (await client.post("/v1/knowledge_bases", json={"name": "acme-only"})).json()
    async with http_client(concierge, made.json()["key"]) as other:
        assert (await other.get("/v1/assistants")).json()["data"] == []
        base = f"/v1/assistants/{mine['id']}"
        for method, url, body in [
            ("GET", base, None),
            ("GET", "/v1/assistants/support", None),
            ("PATCH", base, {"instructions": "stolen"}),
            ("DELETE", base, None),
            ("GET", f"{base}/versions", None),
            ("GET", f"{base}/versions/1", None),
        ]:
            answer = await other.request(method, url, json=body)
            assert_openai_error(answer, 404)
        # Another organisation's knowledge base cannot be attached either.
        theirs = await other.post(
            "/v1/assistants", json={"name": "support", "knowledge_bases": [kb["id"]]}
        )
        assert_openai_error(theirs, 404)
        assert (await other.post("/v1/assistants", json={"name": "support"})).status_code == 201
    assert (await client.get(base)).json()["instructions"] == ""


async def test_ids_beyond_32_bits_are_not_found(client: AsyncClient) -> None:
    """Integer id columns are 32-bit: PostgreSQL refused the comparison (500) where it should
    find nothing (found by schemathesis)."""
    big = 15_122_858_731
    for path in [
        f"/v1/assistants/{big}",
        f"/v1/knowledge_bases/{big}",
        f"/v1/vector_stores/vs_{big}",
    ]:
        assert_openai_error(await client.get(path), 404)
    assert_openai_error(await client.delete(f"/api/keys/{big}"), 404)
    listed = await client.get(f"/v1/conversations?assistant={big}")
    assert listed.status_code == 200 and listed.json()["data"] == []
    made = await client.post("/v1/assistants", json={"name": "x", "knowledge_bases": [big]})
    assert_openai_error(made, 404)
