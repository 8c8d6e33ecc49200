"""The OpenAI-compatible gateway through real HTTP (ASGI), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from httpx import AsyncClient

from concierge.app import Concierge
from tests.conftest import EMBEDDER, LLM, http_client
from tests.helpers import ledger_rows, sse_payloads

CHAT = {
    "model": LLM,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 8,
    "temperature": 0,
}


def assert_openai_error(response, status: int, type_: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if type_:
        assert body["error"]["type"] == type_
    return body["error"]


async def test_models_lists_embedded_models(client: AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    ids = {m["id"] for m in response.json()["data"]}
    assert {LLM, EMBEDDER} <= ids
    one = await client.get(f"/v1/models/{LLM}")
    assert one.json()["id"] == LLM
    assert_openai_error(await client.get("/v1/models/nope"), 404, "not_found_error")


async def test_chat_completion_and_ledger(client: AsyncClient, concierge: Concierge) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == LLM
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    rows = await ledger_rows(concierge)
    assert len(rows) == 1
    row = rows[0]
    assert (row.endpoint, row.model, row.status) == ("chat.completions", LLM, 200)
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


async def test_chat_streaming_with_usage(client: AsyncClient, concierge: Concierge) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = (await response.aread()).decode()
    events = sse_payloads(body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text  # something was generated
    rows = await ledger_rows(concierge)
    assert [r.status for r in rows] == [200]
    assert rows[0].completion_tokens == usage_chunk["usage"]["completion_tokens"]


async def test_stream_without_include_usage_has_no_usage(client: AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    chunks = sse_payloads(response.text)[:-1]
    assert all("usage" not in c for c in chunks)


async def test_text_completion(client: AsyncClient) -> None:
    response = await client.post(
        "/v1/completions",
        json={
            "model": LLM,
            "prompt": "The capital of France is",
            "max_tokens": 5,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] <= 5
    streamed = await client.post(
        "/v1/completions",
        json={"model": LLM, "prompt": "Once upon a time", "max_tokens": 4, "stream": True},
    )
    events = sse_payloads(streamed.text)
    assert events[-1] == "[DONE]" and events[0]["object"] == "text_completion"


async def test_same_seed_same_answer(client: AsyncClient) -> None:
    payload = {**CHAT, "temperature": 1.0, "seed": 1234, "max_tokens": 12}
    first = (await client.post("/v1/chat/completions", json=payload)).json()
    second = (await client.post("/v1/chat/completions", json=payload)).json()
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


async def test_stop_sequence(client: AsyncClient) -> None:
    response = await client.post(
        "/v1/completions",
        json={
            "model": LLM,
            "prompt": "1, 2, 3, 4, 5, 6,",
            "max_tokens": 30,
            "temperature": 0,
            "stop": ["9"],
        },
    )
    assert "9" not in response.json()["choices"][0]["text"]


async def test_json_response_format(client: AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={
            **CHAT,
            "max_tokens": 40,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 12}},
                        "required": ["city"],
                    },
                },
            },
        },
    )
    assert response.status_code == 200, response.text
    import json

    data = json.loads(response.json()["choices"][0]["message"]["content"])
    assert isinstance(data["city"], str)


async def test_forced_tool_call(client: AsyncClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20}},
                    "required": ["city"],
                },
            },
        }
    ]
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": LLM,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 60,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    import json

    assert "city" in json.loads(call["function"]["arguments"])


async def test_embeddings_float_and_base64(client: AsyncClient, concierge: Concierge) -> None:
    texts = ["hello world", "a second sentence"]
    floats = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": texts})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    vec = np.array(body["data"][0]["embedding"], dtype=np.float32)
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    assert body["usage"]["prompt_tokens"] > 0
    b64 = await client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": texts, "encoding_format": "base64"}
    )
    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vec, atol=1e-6)
    rows = await ledger_rows(concierge)
    assert [r.endpoint for r in rows] == ["embeddings", "embeddings"]
    assert (
        rows[0].completion_tokens == 0 and rows[0].prompt_tokens == body["usage"]["prompt_tokens"]
    )


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": EMBEDDER, "input": ""}, "input"),
        ({"model": EMBEDDER, "input": []}, "input"),
        ({"model": EMBEDDER, "input": ["ok"], "dimensions": 12}, "dimensions"),
        ({"model": EMBEDDER, "input": ["ok"], "encoding_format": "int8"}, "encoding_format"),
        ({"model": LLM, "input": ["ok"]}, "model"),
    ],
)
async def test_embeddings_bad_input(client: AsyncClient, payload: dict, param: str) -> None:
    error = assert_openai_error(await client.post("/v1/embeddings", json=payload), 400)
    assert error["param"].startswith(param)


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        ("/v1/chat/completions", b'{"model": ', "could not parse the JSON body"),
        ("/v1/chat/completions", b"", "could not parse the JSON body"),
        ("/v1/completions", b"\xff\xfe{}", "could not parse the JSON body"),
        ("/v1/embeddings", b'{"input": "\\ud800"}', "could not parse the JSON body"),
        ("/v1/chat/completions", b"[1, 2]", "must be a JSON object"),
        ("/v1/embeddings", b"null", "must be a JSON object"),
    ],
)
async def test_malformed_json(
    client: AsyncClient, concierge: Concierge, endpoint: str, body: bytes, message: str
) -> None:
    response = await client.post(
        endpoint, content=body, headers={"Content-Type": "application/json"}
    )
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert message in error["message"]
    assert await ledger_rows(concierge) == []  # nothing recorded for a request never run


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": LLM}, "messages"),
        ({"model": LLM, "messages": []}, "messages"),
        ({"model": LLM, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "unknown_field": 1}, "unknown_field"),
        ({**CHAT, "tool_choice": "required"}, "tool_choice"),
    ],
)
async def test_chat_bad_input(
    client: AsyncClient, concierge: Concierge, payload: dict, param: str
) -> None:
    error = assert_openai_error(await client.post("/v1/chat/completions", json=payload), 400)
    assert (error["param"] or "").startswith(param), error


async def test_unknown_model_is_404_and_recorded_without_tokens(
    client: AsyncClient, concierge: Concierge
) -> None:
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404
    )
    assert error["code"] == "model_not_found" and error["param"] == "model"
    rows = await ledger_rows(concierge)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [(404, 0, 0)]


async def test_prompt_over_context(client: AsyncClient, concierge: Concierge) -> None:
    long = "word " * 3000  # > 2048 tokens of context in tests
    error = assert_openai_error(
        await client.post(
            "/v1/chat/completions",
            json={"model": LLM, "messages": [{"role": "user", "content": long}]},
        ),
        400,
    )
    assert error["code"] == "context_length_exceeded"
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000}), 400
    )
    assert error["code"] == "context_length_exceeded"
    rows = await ledger_rows(concierge)
    assert [(r.status, r.prompt_tokens + r.completion_tokens) for r in rows] == [(400, 0)] * 2


async def test_oversized_body(concierge: Concierge) -> None:
    limit = concierge.settings.max_body_bytes
    async with http_client(concierge) as c:
        big = {"model": LLM, "messages": [{"role": "user", "content": "x" * (limit + 10)}]}
        error = assert_openai_error(await c.post("/v1/chat/completions", json=big), 413)
        assert error["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: counted while reading
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536

        response = await c.post(
            "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_openai_error(response, 413)
    assert await ledger_rows(concierge) == []


async def test_authentication(concierge: Concierge) -> None:
    async with http_client(concierge, key=None) as anonymous:
        error = assert_openai_error(await anonymous.get("/v1/models"), 401, "authentication_error")
        assert "API key" in error["message"]
    async with http_client(concierge, key="sk-cc-not-a-real-key-at-all") as wrong:
        error = assert_openai_error(await wrong.get("/v1/models"), 401)
        assert "sk-cc-not-a-real-key" not in error["message"]  # never echo the whole secret
    assert await ledger_rows(concierge) == []


async def test_revoked_key_is_refused(client: AsyncClient, concierge: Concierge) -> None:
    created = await client.post("/api/keys", json={"org": "default", "name": "app"})
    assert created.status_code == 201, created.text
    secret, key_id = created.json()["key"], created.json()["id"]
    async with http_client(concierge, key=secret) as app_client:
        assert (await app_client.get("/v1/models")).status_code == 200
        assert (await client.delete(f"/api/keys/{key_id}")).status_code == 200
        assert_openai_error(await app_client.get("/v1/models"), 401)


async def test_limits_beyond_their_columns_are_refused_not_a_500(client: AsyncClient) -> None:
    """Found by schemathesis on PostgreSQL: a per-minute limit past 32 bits reached the
    database (a 500). Each limit is bounded where it is read."""
    for field, value in (("tokens_per_minute", 2**31), ("requests_per_minute", 10**9 + 1)):
        answer = await client.post(
            "/api/keys", json={"org": "default", "name": "big", field: value}
        )
        assert_openai_error(answer, 400)
    largest = await client.post(
        "/api/keys",
        json={"org": "default", "name": "big", "tokens_per_minute": 2**31 - 1,
              "tokens_per_day": 10**15},
    )  # fmt: skip
    assert largest.status_code == 201, largest.text


async def test_scopes(client: AsyncClient, concierge: Concierge) -> None:
    created = (await client.post("/api/keys", json={"org": "default", "name": "inf"})).json()
    async with http_client(concierge, key=created["key"]) as inference:
        assert_openai_error(await inference.get("/api/keys"), 403, "permission_error")
        assert (await inference.get("/v1/models")).status_code == 200


async def test_rate_limit_429_with_retry_after(client: AsyncClient, concierge: Concierge) -> None:
    created = (
        await client.post(
            "/api/keys", json={"org": "default", "name": "limited", "requests_per_minute": 2}
        )
    ).json()
    async with http_client(concierge, key=created["key"]) as limited:
        body = {"model": EMBEDDER, "input": "hi"}
        assert (await limited.post("/v1/embeddings", json=body)).status_code == 200
        assert (await limited.post("/v1/embeddings", json=body)).status_code == 200
        response = await limited.post("/v1/embeddings", json=body)
        error = assert_openai_error(response, 429, "rate_limit_error")
        assert error["code"] == "requests_per_minute_exceeded"
        assert 1 <= int(response.headers["Retry-After"]) <= 30
    rows = await ledger_rows(concierge)
    assert [r.status for r in rows] == [200, 200, 429]
    assert rows[2].prompt_tokens == rows[2].completion_tokens == 0


async def test_daily_token_quota(client: AsyncClient, concierge: Concierge) -> None:
    created = (
        await client.post(
            "/api/keys", json={"org": "default", "name": "quota", "tokens_per_day": 10}
        )
    ).json()
    async with http_client(concierge, key=created["key"]) as limited:
        first = await limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
        assert first.status_code == 200  # under quota when it started
        used = first.json()["usage"]["total_tokens"]
        assert used >= 10
        response = await limited.post("/v1/chat/completions", json=CHAT)
        assert_openai_error(response, 429, "insufficient_quota")
        assert int(response.headers["Retry-After"]) <= 86400
    rows = await ledger_rows(concierge)
    assert [r.status for r in rows] == [200, 429]
    # Counted once: the ledger holds exactly the first request's tokens.
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == used


async def test_usage_api(client: AsyncClient, concierge: Concierge) -> None:
    await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hi"})
    await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "there"})
    rows = (await client.get("/api/usage")).json()["data"]
    assert len(rows) == 1
    assert rows[0]["requests"] == 2 and rows[0]["model"] == EMBEDDER
    assert_openai_error(await client.get("/api/usage", params={"org": "nope"}), 404)


async def test_orgs_api(client: AsyncClient) -> None:
    created = await client.post("/api/orgs", json={"slug": "acme", "name": "Acme"})
    assert created.status_code == 201
    assert_openai_error(await client.post("/api/orgs", json={"slug": "acme"}), 409)
    assert_openai_error(await client.post("/api/orgs", json={"slug": "Bad Slug!"}), 400)
    slugs = [o["slug"] for o in (await client.get("/api/orgs")).json()["data"]]
    assert slugs == ["default", "acme"]
    assert_openai_error(await client.post("/api/keys", json={"org": "ghost", "name": "x"}), 404)


async def test_health_ready_metrics_openapi(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hi"})
    metrics = (await client.get("/metrics")).text
    assert 'concierge_requests_total{endpoint="embeddings",status="200"} 1.0' in metrics
    assert "concierge_request_duration_seconds_bucket" in metrics
    assert f'concierge_tokens_total{{kind="prompt",model="{EMBEDDER}"}}' in metrics
    assert "concierge_model_queue_depth" in metrics
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["database"] == "ok"
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/models"} <= set(spec["paths"])


async def test_openapi_documents_bodies_keys_and_errors_as_served(client: AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    body_ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/ChatCompletionRequest"
    assert "messages" in spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["security"] == [{"APIKey": ["inference"]}]  # the scope it needs
    assert spec["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    error_ref = chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref == "#/components/schemas/Error"
    for operations in spec["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]  # this server answers 400, never 422
    served = (await client.post("/v1/chat/completions", json={"model": LLM})).json()
    required = spec["components"]["schemas"]["Error"]["properties"]["error"]["required"]
    assert set(required) <= set(served["error"])


async def test_unknown_route_and_method(client: AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing-here"), 404)
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (
            "/v1/chat/completions",
            b'{"model": "a\\u0000b", "messages": [{"role": "user", "content": "x"}]}',
        ),
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
        ),
        ("/v1/embeddings", b'{"model": "x", "input": "\\udfff"}'),
        ("/api/orgs", b'{"slug": "a\\u0000"}'),
        ("/api/keys", b'{"org": "default", "name": "a\\u0000"}'),
    ],
)
async def test_unstorable_text_is_a_400(
    client: AsyncClient, concierge: Concierge, path: str, raw: bytes
) -> None:
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_openai_error(response, 400, "invalid_request_error")
    assert await ledger_rows(concierge) == []
