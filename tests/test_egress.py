"""The egress policy: no URL an organisation gives reaches the server's own network.

A "secret" server on loopback stands for what an attacker wants (the metrics page, a cloud
metadata service, an admin port). Every form of its address (IDNA and full-width digits,
IPv6 and IPv4-in-IPv6 forms, names that resolve to it, redirects to it) is tried through the
knowledge URL fetcher and through an operator's HTTP tool; the secret server must see no
request at all. A "public" server on 127.0.0.2 (allowed by the machine operator's setting,
as a tenant never can) plays the attacker's site for the redirect cases.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from httpx import AsyncClient
from sqlalchemy import select

from concierge.app import Concierge
from concierge.assistants.definitions import HttpTool
from concierge.assistants.tools import call_http_tool
from concierge.config import load_settings
from concierge.egress import Egress, EgressPolicy
from concierge.errors import ConfigError
from concierge.models.registry import ModelRegistry
from concierge.store.tables import assistants
from tests.conftest import http_client, make_settings
from tests.scripted import Pipeline, calls, says, tool_messages

PUBLIC_HOST = "127.0.0.2"  # allowed in these tests by the server-level setting


@dataclass
class Secret:
    """A server whose every request is a successful attack."""

    port: int
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def secret() -> AsyncIterator[Secret]:
    found = Secret(0)

    async def anything(request: web.Request) -> web.Response:
        found.hits.append(str(request.url))
        return web.Response(text="concierge_requests_total 42\nsecret_token sk-live-123")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.port = server.port or 0
    yield found
    await server.close()


def secret_forms(port: int) -> list[str]:
    """Ways to write the secret server's address in a URL."""
    return [
        f"http://127.0.0.1:{port}/metrics",
        f"http://１２７.０.０.１:{port}/metrics",  # full-width digits, normalised by IDNA
        f"http://127。0。0。1:{port}/metrics",  # ideographic full stops
        f"http://localhost:{port}/metrics",  # a name that resolves to loopback
        f"http://LOCALHOST.:{port}/metrics",
        f"http://ｌｏｃａｌｈｏｓｔ:{port}/metrics",
        f"http://[::1]:{port}/metrics",
        f"http://[::ffff:127.0.0.1]:{port}/metrics",  # IPv4-mapped
        f"http://[::ffff:7f00:1]:{port}/metrics",
        f"http://[::127.0.0.1]:{port}/metrics",  # IPv4-compatible
        f"http://[64:ff9b::7f00:1]:{port}/metrics",  # NAT64
        f"http://[2002:7f00:1::1]:{port}/metrics",  # 6to4
        f"http://2130706433:{port}/metrics",  # 127.0.0.1 as one number
        f"http://0x7f.0.0.1:{port}/metrics",
        f"http://0177.0.0.1:{port}/metrics",
        f"http://127.1:{port}/metrics",
        f"http://0.0.0.0:{port}/metrics",  # unspecified: Linux connects it to loopback
        f"http://user:pass@127.0.0.1:{port}/metrics",
        f"http://169.254.169.254:{port}/latest/meta-data/",  # cloud metadata
        f"http://[fe80::1%25lo]:{port}/metrics",
    ]


# -- the policy itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.100.100.200", False),  # a cloud's metadata in shared address space
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),  # a cloud's IPv6 metadata address
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("2002:a9fe:a9fe::", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b:1::1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("fec0::1", False),  # site-local (deprecated, still routed inside some networks)
    ],
)
def test_only_public_addresses_pass(address: str, allowed: bool) -> None:
    assert (EgressPolicy().refusal(address) is None) is allowed


def test_the_operator_allows_networks_and_their_ipv6_forms() -> None:
    policy = EgressPolicy.from_settings(["10.20.0.0/16"])
    assert policy.refusal("10.20.3.4") is None
    assert policy.refusal("::ffff:10.20.3.4") is None
    assert policy.refusal("10.21.0.1") is not None
    assert policy.refusal("127.0.0.1") is not None


def test_the_setting_is_validated_and_the_old_one_explained(tmp_path: Path) -> None:
    assert load_settings(env={"CONCIERGE_EGRESS_ALLOWED_NETWORKS": '["10.0.0.1"]'}).model_dump()[
        "egress_allowed_networks"
    ] == ["10.0.0.1/32"]
    with pytest.raises(ConfigError, match="not a network"):
        load_settings(env={"CONCIERGE_EGRESS_ALLOWED_NETWORKS": '["intranet"]'})
    with pytest.raises(ConfigError, match="egress_allowed_networks"):
        load_settings(env={"CONCIERGE_FETCH_PRIVATE_NETWORKS": "true"})
    config = tmp_path / "c.toml"
    config.write_text("fetch_private_networks = true\n")
    with pytest.raises(ConfigError, match="egress_allowed_networks"):
        load_settings(config, env={})


# -- the knowledge URL fetcher -------------------------------------------------------------


async def _fetch_all(client: AsyncClient, urls: list[str]) -> dict[str, Any]:
    kb = (await client.post("/v1/knowledge_bases", json={"name": "web"})).json()
    sent = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={"urls": [{"url": u, "id": f"u{i}"} for i, u in enumerate(urls)]},
    )
    assert sent.status_code == 202, sent.text
    job = sent.json()
    for _ in range(200):
        job = (await client.get(f"/v1/knowledge_bases/{kb['id']}/jobs/{job['id']}")).json()
        if job["status"] == "done":
            break
        await asyncio.sleep(0.05)
    search = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/search", json={"query": "secret token", "mode": "bm25"}
    )
    return {"job": job, "hits": search.json()["data"]}


async def test_no_form_of_a_private_address_is_fetched(client: AsyncClient, secret: Secret) -> None:
    urls = secret_forms(secret.port)
    found = await _fetch_all(client, urls)
    job = found["job"]
    assert (job["failed"], job["done"]) == (len(urls), 0), job
    assert secret.hits == []
    assert found["hits"] == []  # nothing became a searchable document
    errors = {e["document"]: e["error"] for e in job["errors"]}
    print(json.dumps(errors, indent=1, ensure_ascii=False))
    # Refused by the policy, or not a URL at all; never "connection refused" by a socket.
    refused = [e for e in errors.values() if "egress policy" in e]
    assert len(refused) >= len(urls) - 4, errors


@pytest.fixture
async def public_site(secret: Secret) -> AsyncIterator[str]:
    """The attacker's public site: every path redirects somewhere private."""

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text="<h1>Hello</h1><p>Public page about boots.</p>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/hop", hop)
    app.router.add_get("/page", page)
    server = TestServer(app, host=PUBLIC_HOST)
    await server.start_server()
    yield f"http://{PUBLIC_HOST}:{server.port}"
    await server.close()


@pytest.fixture
async def operator_client(
    tmp_path: Path, db_url: str, models_dir: Path, registry: ModelRegistry
) -> AsyncIterator[AsyncClient]:
    """A server whose operator allowed one intranet host (the 'public' site) and nothing else."""
    settings = make_settings(
        tmp_path, db_url, models_dir, egress_allowed_networks=[f"{PUBLIC_HOST}/32"]
    )
    app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await app.startup()
    async with http_client(app) as client:
        yield client
    await app.shutdown()


async def test_redirects_are_checked_on_every_hop(
    operator_client: AsyncClient, public_site: str, secret: Secret
) -> None:
    from urllib.parse import quote

    targets = secret_forms(secret.port)
    urls = [f"{public_site}/hop?to={quote(t, safe='')}" for t in targets]
    # Two hops: public -> public -> private.
    urls.append(
        f"{public_site}/hop?to="
        + quote(f"{public_site}/hop?to={quote(targets[0], safe='')}", safe="")
    )
    urls.append(f"{public_site}/page")  # the allowed site itself still works
    found = await _fetch_all(operator_client, urls)
    job = found["job"]
    assert (job["done"], job["failed"]) == (1, len(urls) - 1), job
    assert secret.hits == []


# -- operators' HTTP tools -----------------------------------------------------------------


def _tool(url: str, **fields: Any) -> HttpTool:
    values: dict[str, Any] = {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "url": url,
        "method": "GET",
        "headers": {"Authorization": "Bearer operator-secret"},
        **fields,
    }
    return HttpTool.model_validate(values)


async def test_tools_cannot_reach_private_addresses(secret: Secret) -> None:
    egress = Egress(EgressPolicy())
    errors: dict[str, str | None] = {}
    try:
        for url in secret_forms(secret.port):
            try:
                tool = _tool(url)
            except ValueError as exc:  # refused when defined: also fine
                errors[url] = str(exc)
                continue
            result = await call_http_tool(tool, '{"q": "x"}', egress.session())
            errors[url] = result.error
    finally:
        await egress.close()
    assert secret.hits == []
    assert all(errors.values()), errors
    # The rest: numeric forms the client refuses to parse, a name that does not resolve here.
    assert sum("egress policy" in str(e) for e in errors.values()) >= len(errors) - 5, errors


async def test_tool_redirects_are_checked_and_secrets_stay_at_their_origin(
    secret: Secret, public_site: str
) -> None:
    seen: list[dict[str, str]] = []

    async def other(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", other)
    other_server = TestServer(app, host=PUBLIC_HOST)
    await other_server.start_server()
    egress = Egress(EgressPolicy.from_settings([f"{PUBLIC_HOST}/32"]))
    try:
        # An allowed host that redirects to a private one listed in allowed_hosts: refused.
        to_secret = f"http://127.0.0.1:{secret.port}/metrics"
        tool = _tool(f"{public_site}/hop?to={to_secret}", allowed_hosts=[PUBLIC_HOST, "127.0.0.1"])
        result = await call_http_tool(tool, "{}", egress.session())
        assert result.error is not None and "egress policy" in result.error, result
        assert secret.hits == []
        # A redirect to another origin the tool allows: followed, without the secret header.
        to_other = f"http://{PUBLIC_HOST}:{other_server.port}/"
        tool = _tool(f"{public_site}/hop?to={to_other}")
        result = await call_http_tool(tool, "{}", egress.session())
        assert result.ok, result
        assert seen and "Authorization" not in seen[0]
        # At the tool's own origin the header is sent.
        seen.clear()
        result = await call_http_tool(_tool(to_other), "{}", egress.session())
        assert result.ok and seen[0]["Authorization"] == "Bearer operator-secret"
    finally:
        await egress.close()
        await other_server.close()


@pytest.mark.egress([])  # the default policy: nothing but public addresses
async def test_the_pipeline_runs_tools_under_the_policy(pipeline: Pipeline, secret: Secret) -> None:
    await pipeline.assistant(tools=[_tool(f"http://localhost:{secret.port}/admin").model_dump()])
    cid = await pipeline.conversation()

    def script(body: dict[str, Any]) -> web.Response:
        if not tool_messages(body):
            return calls("lookup", {"q": "x"})
        return says("I could not look that up.")

    pipeline.script = script
    out = (await pipeline.send(cid, "Look it up")).json()
    record = out["reply"]["tool_calls"][0]
    assert "egress policy" in record["error"], record
    assert secret.hits == []


async def test_a_changed_tool_url_does_not_take_the_stored_secret_along(
    pipeline: Pipeline,
) -> None:
    made = await pipeline.assistant(tools=[_tool("https://shop.example/api").model_dump()])
    shown = made["tools"][0]
    assert shown["headers"] == {"Authorization": "********"}
    for url in [
        "https://attacker.example/api",
        "http://shop.example/api",  # a downgrade to plain HTTP
        "https://shop.example:8443/api",
        "https://shop.example.attacker.example/api",
    ]:
        moved = {**shown, "url": url, "allowed_hosts": []}
        answer = await pipeline.client.patch("/v1/assistants/support", json={"tools": [moved]})
        assert answer.status_code == 400, (url, answer.text)
        assert "send the header's value again" in answer.json()["error"]["message"]
    # Other changes to the tool keep the secret (sent back as shown).
    kept = {**shown, "description": "Look up an order.", "url": "https://SHOP.example/api/v2"}
    answer = await pipeline.client.patch("/v1/assistants/support", json={"tools": [kept]})
    assert answer.status_code == 200, answer.text
    # With the value given again, the new destination gets it.
    fresh = {
        **shown,
        "url": "https://new.example/api",
        "allowed_hosts": [],
        "headers": {"Authorization": "Bearer new"},
    }
    answer = await pipeline.client.patch("/v1/assistants/support", json={"tools": [fresh]})
    assert answer.status_code == 200, answer.text
    stored = await pipeline.app.db.read(
        lambda conn: json.dumps([r.config for r in conn.execute(select(assistants.c.config))])
    )
    assert "Bearer new" in stored and "operator-secret" not in stored


async def test_a_tool_schema_cannot_fetch_anything(pipeline: Pipeline, secret: Secret) -> None:
    """A remote ``$ref`` would have the validator fetch it, outside the egress policy."""
    remote = {
        "type": "object",
        "properties": {"q": {"$ref": f"http://127.0.0.1:{secret.port}/latest/meta-data"}},
    }
    made = await pipeline.client.post(
        "/v1/assistants",
        json={
            "name": "support",
            "tools": [
                {
                    **_tool("https://shop.example/x").model_dump(),
                    "headers": {},
                    "parameters": remote,
                }
            ],
        },
    )
    assert made.status_code == 400 and "only references within the schema" in made.text
    # One stored before the check, or one pointing nowhere: refused at call time, unfetched.
    from concierge.assistants.tools import parse_arguments

    assert "cannot be resolved" in str(parse_arguments("lookup", remote, '{"q": "x"}'))
    assert secret.hits == []


async def test_the_shared_session_keeps_no_cookies() -> None:
    """One organisation's tool must not hand a cookie it was given to another's request."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({})
        response.set_cookie("session", "tenant-a-secret")
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app, host=PUBLIC_HOST)
    await server.start_server()
    egress = Egress(EgressPolicy.from_settings([f"{PUBLIC_HOST}/32"]))
    try:
        for _ in range(2):
            async with egress.session().get(f"http://{PUBLIC_HOST}:{server.port}/") as answer:
                assert answer.status == 200
    finally:
        await egress.close()
        await server.close()
    assert seen == [None, None]


async def test_aiohttp_session_from_egress_refuses_directly() -> None:
    egress = Egress(EgressPolicy())
    try:
        with pytest.raises(aiohttp.ClientConnectorError):
            await egress.session().get("http://127.0.0.1:9/")
    finally:
        await egress.close()


# -- one session factory, one swappable transport ---------------------------------------------


class InProcess:
    """A transport that sends every connection, whatever the host, to one local test server
    (what httpx's MockTransport does for httpx clients), and records the hosts asked for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hosts: list[str] = []

    def connector(self, policy: EgressPolicy | None, **options: Any) -> aiohttp.BaseConnector:
        transport = self

        class Here(aiohttp.abc.AbstractResolver):
            async def resolve(
                self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
            ) -> list[aiohttp.abc.ResolveResult]:
                transport.hosts.append(host)
                return [
                    {
                        "hostname": host,
                        "host": "127.0.0.1",
                        "port": transport.port,
                        "family": socket.AF_INET,
                        "proto": 0,
                        "flags": 0,
                    }
                ]

            async def close(self) -> None:
                pass

        return aiohttp.TCPConnector(resolver=Here(), **options)


async def test_every_outbound_session_comes_through_one_swappable_transport(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    """Model upstreams and HTTP tools alike connect through the server's transport: a test
    swaps it and answers both in-process, with no network and no egress exception."""
    answers = iter([calls("stock", {"sku": "TB-1"}), says("Two left.")])
    seen: list[str] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        return next(answers)

    async def stock(request: web.Request) -> web.Response:
        seen.append(f"{request.host} {await request.text()}")
        return web.json_response({"in_stock": 2})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/stock", stock)
    server = TestServer(app)
    await server.start_server()
    transport = InProcess(server.port or 0)
    upstream = {"name": "up", "base_url": "http://models.internal.example/v1", "models": ["big"]}
    settings = make_settings(
        tmp_path,
        db_url,
        models_dir,
        llm_enabled=False,
        embedding_enabled=False,
        upstreams=[upstream],
    )
    concierge = Concierge(settings, entry_points=False, preload_models=False, transport=transport)
    await concierge.startup()
    try:
        async with http_client(concierge) as client:
            tool = {
                "name": "stock",
                "description": "Units in stock for a SKU.",
                "url": "http://shop.example/stock",
                "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}},
            }
            made = await client.post(
                "/v1/assistants",
                json={"name": "s", "model": "big", "tools": [tool], "builtin_tools": []},
            )
            assert made.status_code == 201, made.text
            reply = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "assistant:s",
                    "user": "u",
                    "messages": [{"role": "user", "content": "Boots in stock?"}],
                },
            )
            assert reply.status_code == 200, reply.text
    finally:
        await concierge.shutdown()
        await server.close()
    assert "Two left." in reply.json()["choices"][0]["message"]["content"]
    assert transport.hosts.count("models.internal.example") >= 1
    assert "shop.example" in transport.hosts
    assert seen and '"TB-1"' in seen[0]
