"""Operator HTTP tools against a real local server: arguments checked, secrets sent, limits
kept, and every failure a result the model can read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from concierge.assistants.definitions import HttpTool
from concierge.assistants.tools import MAX_RESPONSE_BYTES, call_http_tool

SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string", "pattern": "^[0-9]{4}$"}},
    "required": ["order"],
    "additionalProperties": False,
}


async def order(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Bearer s3cret":
        return web.json_response({"error": "unauthorised"}, status=401)
    number = request.query.get("order") or (await request.json())["order"]
    return web.json_response({"order": number, "status": "shipped"})


async def slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def broken(_request: web.Request) -> web.Response:
    return web.Response(text="{not json", content_type="application/json")


async def huge(_request: web.Request) -> web.Response:
    return web.Response(text="x" * (MAX_RESPONSE_BYTES + 10))


async def away(_request: web.Request) -> web.Response:
    raise web.HTTPFound("http://elsewhere.example/steal")


async def fails(_request: web.Request) -> web.Response:
    return web.Response(text="database exploded", status=500)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    app = web.Application()
    app.router.add_route("*", "/order", order)
    for path, handler in [("/slow", slow), ("/broken", broken), ("/huge", huge)]:
        app.router.add_get(path, handler)
    app.router.add_get("/away", away)
    app.router.add_get("/fails", fails)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{test_server.port}", session
    await test_server.close()


def tool(base: str, path: str, **fields: Any) -> HttpTool:
    values: dict[str, Any] = {
        "name": "order_status",
        "description": "An order's status.",
        "parameters": SCHEMA,
        "url": base + path,
        "method": "GET",
        "headers": {"Authorization": "Bearer s3cret"},
        **fields,
    }
    return HttpTool.model_validate(values)


async def test_a_valid_call_sends_the_secret_and_returns_json(
    server: tuple[str, aiohttp.ClientSession],
) -> None:
    base, session = server
    for method in ("GET", "POST"):
        result = await call_http_tool(
            tool(base, "/order", method=method), '{"order": "1234"}', session
        )
        assert result.ok, result
        assert result.content == '{"order": "1234", "status": "shipped"}'
        assert result.record().result == result.content and result.record().ms >= 0


@pytest.mark.parametrize(
    ("path", "arguments", "fields", "error"),
    [
        ("/order", "{nope", {}, "not valid JSON"),
        ("/order", "[1]", {}, "must be a JSON object"),
        ("/order", '{"order": "12"}', {}, "schema at order"),
        ("/order", '{"order": "1234", "x": 1}', {}, "schema at (top level)"),
        ("/order", '{"order": "1234"}', {"headers": {}}, "HTTP 401"),
        ("/slow", '{"order": "1234"}', {"timeout_seconds": 0.3}, "no answer within 0.3 s"),
        ("/broken", '{"order": "1234"}', {}, "not valid JSON"),
        ("/huge", '{"order": "1234"}', {}, "over 65536 bytes"),
        ("/away", '{"order": "1234"}', {}, "elsewhere.example is not an allowed host"),
        ("/fails", '{"order": "1234"}', {}, "HTTP 500: database exploded"),
    ],
)
async def test_failures_are_results_with_a_reason_and_no_secret(
    server: tuple[str, aiohttp.ClientSession],
    path: str,
    arguments: str,
    fields: dict[str, Any],
    error: str,
) -> None:
    base, session = server
    result = await call_http_tool(tool(base, path, **fields), arguments, session)
    assert not result.ok and result.error is not None and error in result.error, result
    assert result.content.startswith("The tool order_status failed: ")
    assert "s3cret" not in repr(result) and "s3cret" not in str(result.record())


async def test_the_turn_time_budget_caps_each_call(
    server: tuple[str, aiohttp.ClientSession],
) -> None:
    base, session = server
    spent = await call_http_tool(tool(base, "/slow"), '{"order": "1234"}', session, seconds_left=0)
    assert spent.error == "no tool time left in this turn"
    capped = await call_http_tool(
        tool(base, "/slow"), '{"order": "1234"}', session, seconds_left=0.2
    )
    assert capped.error == "no answer within 0.2 s"


async def test_nothing_listens_gives_a_connection_error() -> None:
    async with aiohttp.ClientSession() as session:
        result = await call_http_tool(
            tool("http://127.0.0.1:9", "/x"), '{"order": "1234"}', session
        )
    assert result.error == "could not connect to 127.0.0.1"
