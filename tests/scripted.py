"""A Concierge whose chat model is a scripted OpenAI-compatible upstream on a local port (it
stands for vLLM or a hosted API): the ``pipeline`` fixture, and helpers to script answers.

Registered as a pytest plugin by conftest.py, so every test module can use the fixture.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import func, select

from concierge.app import Concierge
from concierge.config import UpstreamConfig
from concierge.governance.policy import DISCLOSURE_TEXTS
from concierge.models.registry import ModelRegistry
from concierge.models.upstream import OpenAIUpstream, UpstreamClient
from tests.conftest import http_client, make_settings
from tests.test_upstream import FakeUpstream, chunk, usage_chunk

# The first assistant message of a conversation tells the user it is an AI (on by default).
DISCLOSED = DISCLOSURE_TEXTS["en"] + "\n\n"

Script = Callable[[dict[str, Any]], Awaitable[web.StreamResponse] | web.StreamResponse]
DONE = b"data: [DONE]\n\n"
POLICY = (
    "# Returns\n\nUnworn items can be returned within 30 days of delivery for a full refund. "
    "Sale items are final.\n\n# Shipping\n\nStandard shipping takes 3 to 5 working days."
)


def says(text: str, prompt: int = 40, completion: int = 8) -> web.Response:
    pieces = [chunk(w) for w in text.split(" ") for w in [w + " "]] if text else []
    body = [*pieces, chunk(finish="stop"), usage_chunk(prompt, completion), DONE]
    return web.Response(body=b"".join(body), content_type="text/event-stream")


def calls(name: str, arguments: dict[str, Any], ident: str = "call_1") -> web.Response:
    call = {
        "index": 0,
        "id": ident,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    body = [chunk(tool_calls=[call]), chunk(finish="tool_calls"), usage_chunk(30, 5), DONE]
    return web.Response(body=b"".join(body), content_type="text/event-stream")


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def system_of(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


class Pipeline:
    """A Concierge whose chat model is a scripted upstream."""

    def __init__(self, app: Concierge, fake: FakeUpstream, client: httpx.AsyncClient) -> None:
        self.app, self.fake, self.client = app, fake, client
        self.script: Script = lambda body: says("Hello.")

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for body, _headers in self.fake.requests]

    async def knowledge(self, text: str = POLICY) -> int:
        kb = (await self.client.post("/v1/knowledge_bases", json={"name": "policies"})).json()
        added = await self.client.post(
            f"/v1/knowledge_bases/{kb['id']}/documents",
            json={"documents": [{"id": "policy", "title": "Returns and shipping", "text": text}]},
        )
        assert added.status_code in (200, 201, 202), added.text
        await self.app.knowledge.wait()
        return int(kb["id"])

    async def assistant(self, **fields: Any) -> dict[str, Any]:
        made = await self.client.post(
            "/v1/assistants",
            json={"name": "support", "model": "big", "instructions": "Be brief.", **fields},
        )
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def conversation(self, user: str = "cust-1", assistant: str = "support") -> int:
        made = await self.client.post(
            f"/v1/assistants/{assistant}/conversations", json={"user": user}
        )
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    async def send(self, cid: int, content: str, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/assistants/support/conversations/{cid}/messages",
            json={"content": content, **extra},
        )

    async def count(self, table: Any) -> int:
        return int(
            await self.app.db.read(
                lambda conn: conn.execute(select(func.count()).select_from(table)).scalar_one()
            )
        )


@pytest.fixture
async def pipeline(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    models_dir: Path,
    registry: ModelRegistry,
) -> AsyncIterator[Pipeline]:
    holder: dict[str, Pipeline] = {}

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        answer = holder["p"].script(body)
        return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]

    fake = FakeUpstream({"big": handler})
    await fake.server.start_server()
    cfg = UpstreamConfig(name="up", base_url=fake.base_url, models=["big"], timeout=5)
    model = OpenAIUpstream("big", cfg, UpstreamClient(cfg))
    # The embedded embedders of the session, so knowledge bases embed for real.
    models = ModelRegistry([model], registry.embedding_models.values())
    # The operator's tools in these tests are servers on this machine: an exception the
    # machine's operator makes (tenants cannot), as for an intranet service. A test marked
    # ``@pytest.mark.egress(networks)`` sets its own; ``@pytest.mark.settings(**values)``
    # sets any other setting; ``@pytest.mark.plugins(*plugins)`` registers plugins.
    marker = request.node.get_closest_marker("egress")
    networks = list(marker.args[0]) if marker else ["127.0.0.1"]
    more = request.node.get_closest_marker("settings")
    settings = make_settings(
        tmp_path,
        db_url,
        models_dir,
        llm_enabled=False,
        egress_allowed_networks=networks,
        **(more.kwargs if more else {}),
    )
    extra = request.node.get_closest_marker("plugins")
    app = Concierge(
        settings,
        registry=models,
        plugins=extra.args if extra else (),
        entry_points=False,
        preload_models=False,
    )
    await app.startup()
    async with http_client(app) as client:
        holder["p"] = Pipeline(app, fake, client)
        yield holder["p"]
    await app.shutdown()
    await model.aclose()
    await fake.server.close()
