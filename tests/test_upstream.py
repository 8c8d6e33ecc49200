"""OpenAI-compatible upstreams: streaming, retries, error mapping, aliases and fallback.

The upstream model server is the one thing outside the machine, so it is faked: a real HTTP
server on a local port (aiohttp's test server) whose handlers play the upstream, wired in
through the real ``register_models`` hook.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from concierge.app import Concierge
from concierge.config import Settings, UpstreamConfig
from concierge.errors import UpstreamError
from concierge.hookspecs import hookimpl
from concierge.models.base import GenerationRequest, Message, Model
from concierge.models.upstream import OpenAIUpstream, UpstreamClient
from concierge.store import Database
from concierge.store.tables import usage_records
from tests.conftest import (
    ADMIN_KEY,
    LiveServer,
    free_port,
    http_client,
    make_settings,
    server_env,
)
from tests.helpers import ledger_rows, sse_payloads

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]
CHAT = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}


def chunk(content: str | None = None, finish: str | None = None, **delta: object) -> bytes:
    d: dict[str, object] = dict(delta)
    if content is not None:
        d["content"] = content
    body = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage_chunk(prompt: int, completion: int) -> bytes:
    body = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def completion_json(text: str) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def sse(*parts: bytes) -> web.Response:
    return web.Response(body=b"".join(parts), content_type="text/event-stream")


def answers(text: str) -> Handler:
    """A well-behaved upstream: SSE when asked to stream, one JSON body otherwise."""

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body.get("stream"):
            return sse(chunk(text), chunk(finish="stop"), usage_chunk(1, 1), b"data: [DONE]\n\n")
        return web.json_response(completion_json(text))

    return handler


class FakeUpstream:
    """An OpenAI-compatible server on a local port; each model id has its own handler."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []
        app = web.Application()
        app.router.add_post("/v1/{path:.*}", self._dispatch)
        self.server = TestServer(app)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((body, dict(request.headers)))
        return await self.handlers[body["model"]](request, body)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1"))


class FakeUpstreamPlugin:
    """Registers one OpenAIUpstream per model, pointing at the given base URLs."""

    def __init__(self, models: dict[str, str], timeout: float = 5, retries: int = 2) -> None:
        self.models, self.timeout, self.retries = models, timeout, retries

    @hookimpl
    def register_models(self, register: Callable[[Model], None], settings: Settings) -> None:
        for model_id, base_url in self.models.items():
            cfg = UpstreamConfig(
                name=f"up-{model_id}",
                base_url=base_url,
                models=[model_id],
                api_key="upstream-secret",
                timeout=self.timeout,
                connect_retries=self.retries,
            )
            register(OpenAIUpstream(model_id, cfg, UpstreamClient(cfg)))


class SlowUpstream:
    """An upstream that streams 200 chunks over ~10 s unless the caller hangs up; it records
    how many it wrote (``written``) and when it stopped (``ended``)."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.ended = asyncio.Event()
        app = web.Application(handler_args={"handler_cancellation": True})
        app.router.add_post("/v1/chat/completions", self._stream)
        self.server = TestServer(app)

    @classmethod
    async def start(cls) -> SlowUpstream:
        upstream = cls()
        await upstream.server.start_server()
        return upstream

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1"))

    def server_env(
        self, tmp_path: Path, db_url: str, models_dir: Path, **settings: str
    ) -> dict[str, str]:
        """A `concierge serve` environment whose only model is this upstream's ``big``."""
        upstream = {"name": "slow", "base_url": self.base_url, "models": ["big"]}
        return server_env(
            tmp_path,
            db_url,
            models_dir,
            llm_enabled="false",
            embedding_enabled="false",
            upstreams=json.dumps([upstream]),
            **settings,
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        n = 0
        try:
            for n in range(1, 201):
                await response.write(chunk(f"t{n} "))
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.written.append(n)
            self.ended.set()
        return response


@pytest.fixture
async def upstream_factory(tmp_path: Path, db_url: str, models_dir: Path):
    started: list[Any] = []

    async def start(
        handlers: dict[str, Handler],
        *,
        down: tuple[str, ...] = (),
        timeout: float = 5,
        **settings: object,
    ) -> tuple[Concierge, FakeUpstream]:
        fake = FakeUpstream(handlers)
        await fake.server.start_server()
        started.append(fake.server)
        closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        models = {m: fake.base_url for m in handlers} | {m: closed for m in down}
        s = make_settings(
            tmp_path, db_url, models_dir, llm_enabled=False, embedding_enabled=False, **settings
        )
        app = Concierge(s, plugins=[FakeUpstreamPlugin(models, timeout)], entry_points=False)
        await app.startup()
        started.append(app)
        return app, fake

    yield start
    for thing in reversed(started):
        await (thing.shutdown() if isinstance(thing, Concierge) else thing.close())


async def test_stream_passes_through_with_usage(upstream_factory) -> None:
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return sse(
            chunk("", role="assistant"),
            chunk("Hel"),
            chunk("lo"),
            chunk(finish="stop"),
            usage_chunk(7, 2),
            b"data: [DONE]\n\n",
        )

    app, fake = await upstream_factory({"big": handler})
    async with http_client(app) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}, "seed": 5},
        )
    events = sse_payloads(response.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "Hello"
    assert events[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    sent, headers = fake.requests[0]
    assert sent["stream"] is True and sent["seed"] == 5
    assert sent["stream_options"] == {"include_usage": True}
    assert headers["Authorization"] == "Bearer upstream-secret"
    rows = await ledger_rows(app)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [(200, 7, 2)]


async def test_non_streaming_and_tool_calls(upstream_factory) -> None:
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        assert body["stream"] is False
        assert body["tools"][0]["function"]["name"] == "lookup"
        assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        }
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "big",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    app, _ = await upstream_factory({"big": handler})
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    async with http_client(app) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                **CHAT,
                "tools": tools,
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            },
        )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"q": "x"}',
    }


async def test_streamed_events_of_any_size_and_split_anywhere(upstream_factory) -> None:
    """A 1.2 MB tool-call chunk, and events cut mid-line across writes, arrive whole."""
    arguments = json.dumps({"text": "x" * 1_200_000})
    call = {"index": 0, "id": "call_9", "type": "function"}
    call["function"] = {"name": "save", "arguments": arguments}

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        payload = b"".join(
            [
                chunk("", role="assistant", tool_calls=[call]),
                chunk(finish="tool_calls"),
                usage_chunk(4, 3),
                b"data: [DONE]\n\n",
            ]
        )
        for start in range(0, len(payload), 7001):  # odd sizes: splits land inside lines
            await response.write(payload[start : start + 7001])
        return response

    app, _ = await upstream_factory({"big": handler})
    async with http_client(app) as client:
        streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200
    events = sse_payloads(streamed.text)
    assert events[-1] == "[DONE]"
    events = events[:-1]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    got = "".join(
        c["function"].get("arguments", "") for d in deltas for c in d.get("tool_calls", [])
    )
    assert got == arguments
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "tool_calls"
    rows = await ledger_rows(app)
    assert rows[0].status == 200 and rows[0].completion_tokens == 3


async def test_an_oversized_event_is_a_clear_502(upstream_factory, monkeypatch) -> None:
    monkeypatch.setattr("concierge.models.upstream.MAX_EVENT_BYTES", 1000)

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return sse(chunk("y" * 5000), b"data: [DONE]\n\n")

    app, _ = await upstream_factory({"big": handler})
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 502
    assert "sent an event over 1,000 bytes" in response.json()["error"]["message"]
    assert [r.status for r in await ledger_rows(app)] == [502]


async def test_refused_connections_are_retried_and_the_request_sent_once() -> None:
    port = free_port()
    cfg = UpstreamConfig(
        name="late", base_url=f"http://127.0.0.1:{port}/v1", models=["m"], connect_retries=6
    )
    fake = FakeUpstream({"m": answers("ok")})
    model = OpenAIUpstream("m", cfg, UpstreamClient(cfg))

    async def come_up_late() -> None:  # refuse the first attempts, then listen
        await asyncio.sleep(0.12)
        fake.server.port = port
        await fake.server.start_server()

    starter = asyncio.create_task(come_up_late())
    events = [
        e
        async for e in model.execute(
            GenerationRequest(model="m", messages=[Message("user", "hi")], stream=False)
        )
    ]
    await starter
    assert events[0].text == "ok"  # type: ignore[union-attr]
    assert len(fake.requests) == 1
    await model.aclose()
    await fake.server.close()


async def test_a_sent_request_is_never_retried(upstream_factory) -> None:
    async def hang_up(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()  # the request arrived; the connection drops before an answer
        return web.Response()

    app, fake = await upstream_factory({"big": hang_up})
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert len(fake.requests) == 1


async def test_closed_port_gives_up_with_502() -> None:
    cfg = UpstreamConfig(
        name="down",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        models=["m"],
        connect_retries=2,
        timeout=2,
    )
    model = OpenAIUpstream("m", cfg, UpstreamClient(cfg))
    with pytest.raises(UpstreamError, match="unreachable"):
        async for _ in model.execute(GenerationRequest(model="m", messages=[Message("user", "x")])):
            pass
    await model.aclose()


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "expected_type"),
    [
        (400, {"error": {"message": "bad things in your request"}}, 400, "invalid_request_error"),
        (401, {"error": {"message": "wrong key"}}, 502, "upstream_error"),
        (404, {"error": {"message": "no such model"}}, 502, "upstream_error"),
        (429, {"error": {"message": "slow down"}}, 429, "rate_limit_error"),
        (500, {"error": {"message": "boom"}}, 502, "upstream_error"),
        (502, "not json at all", 502, "upstream_error"),
        (503, "not json at all", 503, "service_unavailable"),  # overloaded: come back later
    ],
)
async def test_upstream_errors_are_mapped(
    upstream_factory, status, body, expected_status, expected_type
) -> None:
    async def handler(request: web.Request, _body: dict[str, Any]) -> web.StreamResponse:
        headers = {"Retry-After": "7"}
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    app, _ = await upstream_factory({"big": handler})
    async with http_client(app) as client:
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == expected_status, response.text
            error = response.json()["error"]
            assert error["type"] == expected_type
            assert "upstream-secret" not in response.text
            if status in (429, 503):
                assert response.headers["retry-after"] == "7"
            if status == 400:
                assert error["message"] == "bad things in your request"
    rows = await ledger_rows(app)
    assert [r.status for r in rows] == [expected_status] * 2


async def test_timeout_is_504(upstream_factory) -> None:
    async def slow(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.json_response(completion_json("late"))

    app, _ = await upstream_factory({"big": slow}, timeout=0.3)
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


async def test_fallback_before_output_only(upstream_factory) -> None:
    app, _ = await upstream_factory(
        {"backup": answers("from backup")},
        down=("big",),
        model_fallbacks={"big": ["backup"]},
        model_aliases={"gpt-4o": "big"},
    )
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "backup"
        assert response.json()["choices"][0]["message"]["content"] == "from backup"
        models = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
        assert {"big", "backup", "gpt-4o"} <= models
    rows = await ledger_rows(app)
    assert [(r.model, r.status) for r in rows] == [("backup", 200)]  # one record, not two


async def test_no_fallback_after_first_token(upstream_factory) -> None:
    async def dies_midway(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(chunk("partial "))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # connection reset mid-stream
        return response

    app, fake = await upstream_factory(
        {"big": dies_midway, "backup": answers("backup")}, model_fallbacks={"big": ["backup"]}
    )
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_payloads(response.text)
    assert events[1]["choices"][0]["delta"]["content"] == "partial "
    assert events[-1]["error"]["type"] == "upstream_error"  # reported, not replaced by backup
    assert not any("backup" in json.dumps(e) for e in events)
    assert len(fake.requests) == 1
    rows = await ledger_rows(app)
    assert [r.status for r in rows] == [502]


def test_bad_routing_config_fails_at_start(tmp_path: Path, models_dir: Path) -> None:
    from concierge.errors import ConfigError

    s = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path}/x.db",
        models_dir,
        llm_enabled=False,
        embedding_enabled=False,
        model_aliases={"a": "missing"},
    )
    with pytest.raises(ConfigError, match="unknown model 'missing'"):
        Concierge(s, entry_points=False)


async def test_upstream_embeddings(tmp_path: Path, db_url: str, models_dir: Path) -> None:
    async def embed(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(i), 1.0, 0.5]}
                    for i in range(len(body["input"]))
                ],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )

    web_app = web.Application()
    web_app.router.add_post("/v1/embeddings", embed)
    server = TestServer(web_app)
    await server.start_server()
    upstream = {
        "name": "emb",
        "base_url": str(server.make_url("/v1")),
        "embedding_models": ["remote-embed"],
    }
    s = make_settings(
        tmp_path,
        db_url,
        models_dir,
        llm_enabled=False,
        embedding_enabled=False,
        upstreams=[upstream],
    )
    app = Concierge(s, entry_points=False)  # built from settings by the built-in plugin
    await app.startup()
    try:
        async with http_client(app) as client:
            response = await client.post(
                "/v1/embeddings", json={"model": "remote-embed", "input": ["a", "b"]}
            )
        assert response.status_code == 200, response.text
        assert [d["embedding"] for d in response.json()["data"]] == [[0, 1, 0.5], [1, 1, 0.5]]
    finally:
        await app.shutdown()
        await server.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_hangs_up_stops_the_upstream_request(
    tmp_path: Path, db_url: str, models_dir: Path, stream: bool
) -> None:
    """Through a real server: the gateway drops the upstream call and records a 499."""
    slow = await SlowUpstream.start()
    written, ended, fake = slow.written, slow.ended, slow.server
    env = slow.server_env(tmp_path, db_url, models_dir)
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as client:
            body = {**CHAT, "stream": stream}
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _line in response.aiter_lines():
                        break  # one line, then hang up
            else:
                with pytest.raises(httpx.ReadTimeout):
                    await client.post("/v1/chat/completions", json=body, timeout=0.5)
        await asyncio.wait_for(ended.wait(), 5)
        assert written[0] < 60  # stopped within a second or two, not after all 200
        rows: list[Any] = []
        for _ in range(50):  # the ledger row lands within a flush interval
            database = Database(db_url)
            try:
                rows = await database.read(
                    lambda conn: conn.execute(select(usage_records.c.status)).all()
                )
            finally:
                database.close()
            if rows:
                break
            await asyncio.sleep(0.1)
        assert [r.status for r in rows] == [499]
    finally:
        await asyncio.to_thread(server.stop)
        await fake.close()


async def test_events_that_arrive_together_are_written_together(upstream_factory) -> None:
    """Events from one upstream read leave in one write; nothing waits to fill a batch."""

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("a") + chunk("b") + chunk("c"))
        await asyncio.sleep(0.2)
        await response.write(chunk("d"))
        await asyncio.sleep(0.2)
        await response.write(chunk(finish="stop") + usage_chunk(1, 4) + b"data: [DONE]\n\n")
        return response

    app, _ = await upstream_factory({"big": handler})
    writes: list[bytes] = []
    inner = app.app()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                writes.append(message["body"])
            await send(message)

        await inner(scope, receive, record)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=recording),
        base_url="http://test",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    texts = [
        [e["choices"][0]["delta"].get("content") for e in sse_payloads(w.decode()) if e != "[DONE]"]
        for w in writes
    ]
    assert texts[0] == ["", "a", "b", "c"]  # the role chunk and the first read's three events
    assert texts[1] == ["d"]  # sent as soon as it came, alone
    assert "".join(t or "" for w in texts for t in w) == "abcd"
