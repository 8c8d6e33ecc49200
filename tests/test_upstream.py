"""OpenAI-compatible upstreams: streaming, retries, error mapping, aliases and fallback.

The upstream server is the one thing outside the machine, so it is faked, with an
``httpx.MockTransport``, and registered through the real ``register_models`` hook.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from concierge.app import Concierge
from concierge.config import Settings, UpstreamConfig
from concierge.hookspecs import hookimpl
from concierge.models.base import Model
from concierge.models.upstream import OpenAIUpstream, make_client
from tests.conftest import http_client, make_settings
from tests.helpers import ledger_rows, sse_payloads

Handler = Callable[[httpx.Request], httpx.Response]


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


def completion_json(text: str) -> dict:
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


class FakeUpstreams:
    """A plugin that serves each model id from its own handler."""

    def __init__(self, handlers: dict[str, Handler], retries: int = 2) -> None:
        self.handlers = handlers
        self.retries = retries
        self.requests: list[httpx.Request] = []

    @hookimpl
    def register_models(self, register: Callable[[Model], None], settings: Settings) -> None:
        for model_id, handler in self.handlers.items():
            cfg = UpstreamConfig(
                name=f"up-{model_id}",
                base_url="http://upstream.test/v1",
                models=[model_id],
                api_key="upstream-secret",
                timeout=5,
                connect_retries=self.retries,
            )

            def recorded(request: httpx.Request, handler: Handler = handler) -> httpx.Response:
                self.requests.append(request)
                return handler(request)

            transport = httpx.MockTransport(recorded)
            register(OpenAIUpstream(model_id, cfg, make_client(cfg, transport)))


@pytest.fixture
async def shutdown_apps() -> AsyncIterator[list[Concierge]]:
    apps: list[Concierge] = []
    yield apps
    for app in apps:
        await app.shutdown()


async def start(
    tmp_path: Path,
    db_url: str,
    models_dir: Path,
    apps: list[Concierge],
    handlers: dict[str, Handler],
    **settings: object,
) -> Concierge:
    plugin = FakeUpstreams(handlers)
    s = make_settings(
        tmp_path, db_url, models_dir, llm_enabled=False, embedding_enabled=False, **settings
    )
    app = Concierge(s, plugins=[plugin], entry_points=False)
    app.fake = plugin  # type: ignore[attr-defined]
    await app.startup()
    apps.append(app)
    return app


CHAT = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}


def streaming(*parts: bytes) -> Handler:
    return lambda request: httpx.Response(
        200, content=b"".join(parts), headers={"content-type": "text/event-stream"}
    )


def answers(text: str) -> Handler:
    """A well-behaved upstream: SSE when asked to stream, one JSON body otherwise."""

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["stream"]:
            return streaming(
                chunk(text), chunk(finish="stop"), usage_chunk(1, 1), b"data: [DONE]\n\n"
            )(request)
        return httpx.Response(200, json=completion_json(text))

    return handler


async def test_stream_passes_through_with_usage(tmp_path, db_url, models_dir, shutdown_apps):
    handler = streaming(
        chunk("", role="assistant"),
        chunk("Hel"),
        chunk("lo"),
        chunk(finish="stop"),
        usage_chunk(7, 2),
        b"data: [DONE]\n\n",
    )
    app = await start(tmp_path, db_url, models_dir, shutdown_apps, {"big": handler})
    async with http_client(app) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}, "seed": 5},
        )
    events = sse_payloads(response.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "Hello"
    assert events[-2]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    sent = json.loads(app.fake.requests[0].content)  # type: ignore[attr-defined]
    assert sent["stream"] is True and sent["seed"] == 5
    assert sent["stream_options"] == {"include_usage": True}
    assert app.fake.requests[0].headers["authorization"] == "Bearer upstream-secret"  # type: ignore[attr-defined]
    rows = await ledger_rows(app)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [(200, 7, 2)]


async def test_non_streaming_and_tool_calls(tmp_path, db_url, models_dir, shutdown_apps):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
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
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "big",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    app = await start(tmp_path, db_url, models_dir, shutdown_apps, {"big": handler})
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


async def test_connection_errors_are_retried_before_sending(
    tmp_path, db_url, models_dir, shutdown_apps
):
    # httpx's transport retries refused connections; a MockTransport stands for the network,
    # so the retry loop is exercised with a transport that refuses twice then answers.
    attempts = {"n": 0}

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            attempts["n"] += 1
            if attempts["n"] <= 2:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, json=completion_json("ok"))

    cfg = UpstreamConfig(name="flaky", base_url="http://upstream.test/v1", models=["big"])
    model = OpenAIUpstream("big", cfg, make_client(cfg, RetryingTransport(Flaky(), retries=2)))
    from concierge.models.base import GenerationRequest, Message

    events = [
        e
        async for e in model.execute(
            GenerationRequest(model="big", messages=[Message("user", "hi")], stream=False)
        )
    ]
    assert attempts["n"] == 3
    assert events[0].text == "ok"  # type: ignore[union-attr]


class RetryingTransport(httpx.AsyncBaseTransport):
    """The same policy as httpx.AsyncHTTPTransport(retries=N): retry only ConnectError."""

    def __init__(self, inner: httpx.AsyncBaseTransport, retries: int) -> None:
        self.inner, self.retries = inner, retries

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                return await self.inner.handle_async_request(request)
            except httpx.ConnectError:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")


async def test_real_transport_gives_up_on_a_closed_port():
    """Against a closed local port, the real transport retries, then reports a 502."""
    from tests.conftest import free_port

    cfg = UpstreamConfig(
        name="down",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        models=["m"],
        connect_retries=2,
        timeout=2,
    )
    model = OpenAIUpstream("m", cfg, make_client(cfg))
    from concierge.errors import UpstreamError
    from concierge.models.base import GenerationRequest, Message

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
        (503, "not json at all", 502, "upstream_error"),
    ],
)
async def test_upstream_errors_are_mapped(
    tmp_path, db_url, models_dir, shutdown_apps, status, body, expected_status, expected_type
):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers={"retry-after": "7"})
        return httpx.Response(status, json=body, headers={"retry-after": "7"})

    app = await start(tmp_path, db_url, models_dir, shutdown_apps, {"big": handler})
    async with http_client(app) as client:
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == expected_status, response.text
            error = response.json()["error"]
            assert error["type"] == expected_type
            assert "upstream-secret" not in response.text
            if status == 429:
                assert response.headers["retry-after"] == "7"
            if status == 400:
                assert error["message"] == "bad things in your request"
    rows = await ledger_rows(app)
    assert [r.status for r in rows] == [expected_status] * 2


async def test_timeout_is_504(tmp_path, db_url, models_dir, shutdown_apps):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    app = await start(tmp_path, db_url, models_dir, shutdown_apps, {"big": handler})
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


async def test_fallback_before_output_only(tmp_path, db_url, models_dir, shutdown_apps):
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    app = await start(
        tmp_path,
        db_url,
        models_dir,
        shutdown_apps,
        {"big": down, "backup": answers("from backup")},
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


async def test_no_fallback_after_first_token(tmp_path, db_url, models_dir, shutdown_apps):
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield chunk("partial ")
            raise httpx.ReadError("connection reset")

    def dies_midway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Broken(), headers={"content-type": "text/event-stream"})

    app = await start(
        tmp_path,
        db_url,
        models_dir,
        shutdown_apps,
        {"big": dies_midway, "backup": answers("backup")},
        model_fallbacks={"big": ["backup"]},
    )
    async with http_client(app) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_payloads(response.text)
    assert events[1]["choices"][0]["delta"]["content"] == "partial "
    assert events[-1]["error"]["type"] == "upstream_error"  # reported, not replaced by backup
    assert not any("backup" in json.dumps(e) for e in events)
    app_requests = app.fake.requests  # type: ignore[attr-defined]
    assert len(app_requests) == 1
    rows = await ledger_rows(app)
    assert [r.status for r in rows] == [502]


def test_bad_routing_config_fails_at_start(tmp_path, models_dir):
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
