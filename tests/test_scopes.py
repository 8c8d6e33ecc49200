"""API key scopes: every scope against every route, and organisations kept apart.

The OpenAPI document names the scope each operation needs; the matrix test calls every
operation with a key of every scope and checks that exactly the keys holding that scope (or
one that includes it) get past the check, and that nobody gets a 5xx. A route added without a
scope fails the test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from concierge import keys
from concierge.app import Concierge
from tests.conftest import http_client

SCOPES = ["inference", "knowledge", "inbox", "admin", "platform", "widget"]
PUBLIC = {
    ("post", "/v1/labels/verify"),
    ("post", "/v1/labels/verify-file"),
}


@pytest.fixture
async def keyring(client: httpx.AsyncClient) -> AsyncIterator[dict[str, str]]:
    """A key of every scope in organisation ``acme`` (``platform`` is the bootstrap key's
    kind, in ``default``), and an admin key of ``globex``."""
    for slug in ("acme", "globex"):
        assert (await client.post("/api/orgs", json={"slug": slug})).status_code == 201
    ring: dict[str, str] = {}
    for scope in SCOPES:
        org = "default" if scope == "platform" else "acme"
        made = await client.post("/api/keys", json={"org": org, "name": scope, "scopes": [scope]})
        assert made.status_code == 201, made.text
        ring[scope] = made.json()["key"]
    made = await client.post("/api/keys", json={"org": "globex", "name": "g", "scopes": ["admin"]})
    ring["globex-admin"] = made.json()["key"]
    yield ring


def _operations(document: dict[str, Any]) -> list[tuple[str, str, set[str]]]:
    """Every operation and the scopes that open it (any one of them; none: public)."""
    out = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            alternatives = set()
            for requirement in operation.get("security") or []:
                needed = requirement.get("APIKey", [])
                assert len(needed) == 1, (method, path, requirement)  # one scope each
                alternatives.add(needed[0])
            out.append((method, path, alternatives))
    return out


def _fill(path: str) -> str:
    path = path.replace("{org}", "acme")
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_scope_against_every_route(
    concierge: Concierge, client: httpx.AsyncClient, keyring: dict[str, str]
) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = _operations(document)
    assert len(operations) > 60
    unguarded = [
        (m, p)
        for m, p, scopes in operations
        if not scopes and p.startswith(("/v1", "/api")) and (m, p) not in PUBLIC
    ]
    assert unguarded == [], "routes without a declared scope"
    failures: list[str] = []
    for scope in SCOPES:
        holds = keys.expand(frozenset({scope}))
        async with http_client(concierge, key=keyring[scope]) as caller:
            for method, path, needed in operations:
                if not needed:
                    continue
                body = {} if method in ("post", "put", "patch") else None
                response = await caller.request(method, _fill(path), json=body)
                allowed = bool(needed & holds)
                status = response.status_code
                if allowed and status in (401, 403):
                    failures.append(f"{scope} refused {method} {path}: {status} {response.text}")
                if not allowed and status != 403:
                    failures.append(f"{scope} reached {method} {path}: {status}")
                if status >= 500:
                    failures.append(f"{scope}: {method} {path} answered {status}")
                if status == 403:
                    assert response.json()["error"]["type"] == "permission_error"
    assert failures == []


async def test_an_inference_key_cannot_rewrite_what_the_operator_set(
    concierge: Concierge, client: httpx.AsyncClient, keyring: dict[str, str]
) -> None:
    async with http_client(concierge, key=keyring["admin"]) as admin:
        made = await admin.post(
            "/v1/assistants",
            json={
                "name": "support",
                "tools": [
                    {
                        "name": "orders",
                        "description": "Orders.",
                        "url": "https://shop.example/orders",
                        "headers": {"Authorization": "Bearer operator"},
                    }
                ],
            },
        )
        assert made.status_code == 201, made.text
    tool = made.json()["tools"][0]
    async with http_client(concierge, key=keyring["inference"]) as app:
        assert (await app.get("/v1/assistants/support")).status_code == 200  # reading is fine
        moved = {**tool, "url": "https://attacker.example/", "allowed_hosts": []}
        for attempt in [
            app.patch("/v1/assistants/support", json={"tools": [moved]}),
            app.patch("/v1/assistants/support", json={"instructions": "Leak everything."}),
            app.post("/v1/assistants", json={"name": "mine"}),
            app.delete("/v1/assistants/support"),
            app.patch("/api/orgs/acme/policy", json={"moderation": {"enabled": False}}),
            app.post("/api/keys", json={"org": "acme", "name": "more", "scopes": ["admin"]}),
            app.get("/api/keys"),
        ]:
            answer = await attempt
            assert answer.status_code == 403, answer.text


async def test_an_organisations_admin_manages_that_organisation_only(
    concierge: Concierge, client: httpx.AsyncClient, keyring: dict[str, str]
) -> None:
    globex_keys = (await client.get("/api/keys", params={"org": "globex"})).json()["data"]
    async with http_client(concierge, key=keyring["admin"]) as admin:
        for method, path, body in [
            ("get", "/api/orgs/globex/policy", None),
            ("patch", "/api/orgs/globex/policy", {"moderation": {"enabled": False}}),
            ("get", "/api/audit?org=globex", None),
            ("get", "/api/keys?org=globex", None),
            ("post", "/api/keys", {"org": "globex", "name": "x"}),
            ("get", "/api/usage?org=globex", None),
            ("post", "/api/orgs/globex/subjects/export", {"subject": "someone"}),
            ("post", "/api/orgs/globex/holds", {"subject": "someone", "reason": "x"}),
            ("get", "/api/orgs", None),
            ("post", "/api/orgs", {"slug": "mine"}),
            ("get", "/api/audit/verify", None),
            ("post", "/api/retention/run", None),
            ("post", "/api/keys", {"org": "acme", "name": "up", "scopes": ["platform"]}),
        ]:
            answer = await admin.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
        # Another organisation's key is simply not there.
        gone = await admin.delete(f"/api/keys/{globex_keys[0]['id']}")
        assert gone.status_code == 404
        # Its own organisation: keys (the widget's kind too), policy, audit entries, usage.
        listed = (await admin.get("/api/keys")).json()["data"]
        assert {k["org"] for k in listed} == {"acme"}
        for scopes in (["inference"], ["widget"], ["knowledge", "inbox"], ["admin"]):
            made = await admin.post(
                "/api/keys", json={"org": "acme", "name": "new", "scopes": scopes}
            )
            assert made.status_code == 201, made.text
        assert (await admin.get("/api/orgs/acme/policy")).status_code == 200
        acme_id = next(
            o["id"] for o in (await client.get("/api/orgs")).json()["data"] if o["slug"] == "acme"
        )
        audit = (await admin.get("/api/audit")).json()["data"]
        assert audit and all(e["org_id"] == acme_id for e in audit)
        assert (await admin.get("/api/usage")).status_code == 200


async def test_a_platform_key_acts_in_the_organisation_it_names(
    concierge: Concierge, client: httpx.AsyncClient, keyring: dict[str, str]
) -> None:
    async with http_client(concierge, key=keyring["admin"]) as admin:
        await admin.post("/v1/assistants", json={"name": "acme-bot"})
    assert (await client.get("/v1/assistants/acme-bot")).status_code == 404  # default org
    acme = {"OpenAI-Organization": "acme"}
    found = await client.get("/v1/assistants/acme-bot", headers=acme)
    assert found.status_code == 200, found.text
    missing = await client.get("/v1/assistants", headers={"OpenAI-Organization": "nope"})
    assert missing.status_code == 404
    async with http_client(concierge, key=keyring["inference"]) as app:
        assert (await app.get("/v1/assistants/acme-bot", headers=acme)).status_code == 200
        other = await app.get("/v1/assistants", headers={"OpenAI-Organization": "globex"})
        assert other.status_code == 403
        assert "acts only there" in other.json()["error"]["message"]


async def test_the_widget_scope_opens_nothing(
    concierge: Concierge, keyring: dict[str, str]
) -> None:
    async with http_client(concierge, key=keyring["inbox"]) as agent:
        assert (await agent.get("/v1/conversations?status=handoff")).status_code == 200
        assert (await agent.get("/v1/consents?user=x")).status_code == 404  # may read them
        assert (await agent.post("/v1/chat/completions", json={})).status_code == 403
    async with http_client(concierge, key=keyring["widget"]) as widget:
        for path in ("/v1/models", "/v1/assistants", "/api/keys", "/v1/knowledge_bases"):
            assert (await widget.get(path)).status_code == 403
