"""Bounded work per request: abusive requests are refused before the expensive part, stopped
when their client leaves, or parsed where they cannot hurt the server; the server answers
ordinary requests all along. Each test is bounded in time: it fails rather than hangs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from concierge import regex
from concierge.app import Concierge
from concierge.assistants.tools import parse_arguments
from concierge.knowledge.sandbox import Limits, Sandbox
from concierge.models.admission import Admission, Busy
from concierge.models.llama import _pieces, tokenize
from concierge.models.registry import ModelRegistry
from tests.conftest import (
    ADMIN_KEY,
    EMBEDDER,
    LLM,
    LiveServer,
    http_client,
    make_settings,
    server_env,
)
from tests.helpers import PARSERS, docx_bomb

CHAT = {"model": LLM, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# -- chat requests: size and shape ---------------------------------------------------------


async def test_too_many_messages_are_refused_at_once(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    body = {"model": LLM, "messages": [{"role": "user", "content": "a"}] * 100_000}
    error = error_of(await client.post("/v1/chat/completions", json=body))
    assert "max_messages" in error["message"] and error["param"] == "messages"
    assert time.perf_counter() - started < 10  # it took 462 s of tokenising before


async def test_too_much_text_is_refused_at_once(client: httpx.AsyncClient) -> None:
    body = {"model": LLM, "messages": [{"role": "user", "content": "word " * 210_000}]}
    error = error_of(await client.post("/v1/chat/completions", json=body))
    assert "max_input_characters" in error["message"]
    prompt = {"model": LLM, "prompt": "x" * 1_000_001}
    assert (
        "max_input_characters"
        in error_of(await client.post("/v1/completions", json=prompt))["message"]
    )
    inputs = {"model": EMBEDDER, "input": ["y" * 600_000, "z" * 600_000]}
    assert (
        "max_input_characters"
        in error_of(await client.post("/v1/embeddings", json=inputs))["message"]
    )


async def test_many_short_lines_fail_fast_on_context_not_on_tokenising(
    client: httpx.AsyncClient,
) -> None:
    """20,000 one-line messages fit the limits but not the model: the tokenizer stops early."""
    started = time.perf_counter()
    body = {"model": LLM, "messages": [{"role": "user", "content": "a\n"}] * 2000}
    error = error_of(await client.post("/v1/chat/completions", json=body))
    assert error["code"] == "context_length_exceeded"
    assert time.perf_counter() - started < 10


def test_tokenising_in_pieces_gives_the_same_tokens(registry: ModelRegistry) -> None:
    model: Any = registry.models[LLM]
    model.load()
    llm = model._llm
    texts = [
        "",
        "User: hi\nAssistant:",
        "\n\n\n" + "line\n" * 3000 + "\n\n" + "end",
        ("para " * 500 + "\n\n") * 20,
        "Ünïcödé 日本語\n" * 700,
        (Path(__file__).parent.parent / "docs" / "assistants.md").read_text(),
    ]
    for text in texts:
        assert tokenize(llm, text, add_bos=True) == llm.tokenize(
            text.encode(), add_bos=True, special=True
        ), text[:40]
    assert all(len(p) <= 4000 or "\n" not in p[2000:] for p in _pieces("x\n" * 10_000))


# -- JSON Schemas the embedded model would enforce ------------------------------------------


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def _schema_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        **CHAT,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "string", "enum": [f"v{i}" for i in range(50_000)]}, "max_schema_bytes"),
        ({"type": "string", "enum": [f"v{i}" for i in range(2000)]}, "max_schema_choices"),
        ({"anyOf": [{"const": i} for i in range(300)]}, "max_schema_choices"),
        (_nested(20), "max_schema_depth"),
        ({"type": "string", "pattern": "(a+)+"}, "cannot be enforced"),  # llama.cpp asserts
        ({"type": "string", "pattern": "^a{1,2000}$"}, "too complex"),  # crashed the process
        ({"$ref": "#/nowhere"}, "cannot be enforced"),
    ],
)
async def test_schemas_that_would_hold_or_crash_the_model_are_a_400(
    client: httpx.AsyncClient, schema: dict[str, Any], needle: str
) -> None:
    error = error_of(await client.post("/v1/chat/completions", json=_schema_body(schema)))
    assert needle in error["message"], error
    assert error["param"].startswith("response_format")
    # The server is alive and serves the next request.
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_tool_schemas_count_too(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "pick",
            "parameters": {
                "type": "object",
                "properties": {"x": {"enum": [f"v{i}" for i in range(200)]}},
            },
        },
    }
    body = {**CHAT, "tools": [tool, {**tool, "function": {**tool["function"], "name": "pick2"}}]}
    error = error_of(await client.post("/v1/chat/completions", json=body))
    assert "max_schema_choices" in error["message"]


# -- regular expressions from operators -----------------------------------------------------


def test_operator_patterns_run_in_linear_time() -> None:
    evil = "(a+)+$"
    started = time.perf_counter()
    assert regex.compile(evil).search("a" * 200_000 + "b") is None
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": evil}}}
    refused = parse_arguments("lookup", schema, '{"code": "' + "a" * 100_000 + 'b"}')
    assert isinstance(refused, str) and "does not match" in refused
    assert time.perf_counter() - started < 5  # Python's re: hours
    with pytest.raises(regex.PatternError, match="lookaround"):
        regex.check("(?=x)y")


async def test_a_moderation_pattern_cannot_freeze_the_server(pipeline: Any) -> None:
    client = pipeline.client
    refused = await client.patch(
        "/api/orgs/default/policy", json={"moderation": {"blocked_patterns": ["(?<!x)y"]}}
    )
    assert error_of(refused)["param"].startswith("moderation")
    set_ = await client.patch(
        "/api/orgs/default/policy", json={"moderation": {"blocked_patterns": ["(a+)+$"]}}
    )
    assert set_.status_code == 200, set_.text
    await pipeline.assistant()
    cid = await pipeline.conversation()
    started = time.perf_counter()
    answer = await pipeline.send(cid, "a" * 15_000 + "b")
    assert answer.status_code == 200, answer.text
    assert time.perf_counter() - started < 10


# -- documents ------------------------------------------------------------------------------


def test_archives_are_measured_before_they_are_opened() -> None:
    bomb = docx_bomb(2_000_000)  # ~0.2 MB that expands to 70 MB
    sandbox = Sandbox(Limits(max_expanded_bytes=10_000_000), PARSERS)
    try:
        with pytest.raises(Exception, match="expands to"):
            sandbox.parse(bomb, "bomb.docx")
    finally:
        sandbox.close()


@pytest.mark.slow
def test_a_parse_that_takes_too_long_or_too_much_memory_is_stopped() -> None:
    bomb = docx_bomb(2_000_000)
    slow = Sandbox(Limits(timeout_seconds=0.5, max_expanded_bytes=10**9), PARSERS)
    hungry = Sandbox(Limits(max_memory_bytes=256 * 2**20, max_expanded_bytes=10**9), PARSERS)
    try:
        with pytest.raises(Exception, match=r"took longer than 0\.5 s"):
            slow.parse(bomb, "bomb.docx")
        with pytest.raises(Exception, match=r"bomb\.docx"):
            hungry.parse(bomb, "bomb.docx")
        # The pools still work afterwards.
        assert slow.parse(b"Hello there.", "ok.txt").text == "Hello there."
    finally:
        slow.close()
        hungry.close()


async def test_a_zip_bomb_upload_is_a_failed_document_not_a_stalled_server(
    client: httpx.AsyncClient,
) -> None:
    kb = (await client.post("/v1/knowledge_bases", json={"name": "bombs"})).json()
    started = time.perf_counter()
    sent = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[
            ("file", ("bomb.docx", docx_bomb(10_000_000), "application/octet-stream")),
            ("file", ("fine.txt", b"Our shop opens at nine.", "text/plain")),
        ],
    )
    assert sent.status_code == 202, sent.text
    assert time.perf_counter() - started < 30
    job = sent.json()
    for _ in range(200):
        job = (await client.get(f"/v1/knowledge_bases/{kb['id']}/jobs/{job['id']}")).json()
        if job["status"] == "done":
            break
        await asyncio.sleep(0.1)
    assert (job["done"], job["failed"]) == (1, 1), job
    assert "expands to" in job["errors"][0]["error"]


# -- the model's queue ---------------------------------------------------------------------


def test_admission_answers_the_excess_at_once() -> None:
    door = Admission("m", max_queue=3, max_per_key=2, max_wait=10)
    door.admit(waiting=0, waiting_for_key=0, running=1)
    with pytest.raises(Exception) as per_key:
        door.admit(waiting=2, waiting_for_key=2, running=1)
    assert getattr(per_key.value, "status", None) == 429
    with pytest.raises(Busy) as full:
        door.admit(waiting=3, waiting_for_key=0, running=1)
    assert full.value.status == 503 and "Retry-After" in full.value.headers
    door.served(4.0)  # requests take about 4 s: a wait behind 3 would be 12 s > 10
    with pytest.raises(Busy) as slow:
        door.admit(waiting=2, waiting_for_key=0, running=1)
    assert int(slow.value.headers["Retry-After"]) >= 2
    assert door.stats.snapshot()[2] == {"per_key": 1, "queue_full": 1, "expected_wait": 1}


async def test_a_burst_gets_quick_refusals_not_a_long_wait(
    tmp_path: Path, db_url: str, models_dir: Path, registry: ModelRegistry
) -> None:
    """Twelve requests at once from one key against a queue of 3 (1 per key for the rest):
    the excess is answered at once with 429/503 and Retry-After; the others are served."""
    settings = make_settings(tmp_path, db_url, models_dir)
    from concierge.models.llama import LlamaModel

    base: Any = registry.models[LLM]
    model = LlamaModel(
        "queued",
        lambda: base._model_path() if callable(base._model_path) else base._model_path,
        context_length=1024,
        max_queue=3,
        max_queue_per_key=2,
        max_queue_seconds=60,
    )
    models = ModelRegistry([model], registry.embedding_models.values())
    app = Concierge(settings, registry=models, entry_points=False, preload_models=False)
    await app.startup()
    try:
        async with http_client(app) as client:
            body = {
                "model": "queued",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 24,
                "temperature": 0,
            }

            async def one() -> tuple[int, float, str | None]:
                started = time.perf_counter()
                answer = await client.post("/v1/chat/completions", json=body)
                return (
                    answer.status_code,
                    time.perf_counter() - started,
                    answer.headers.get("retry-after"),
                )

            results = await asyncio.gather(*(one() for _ in range(12)))
        served = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] in (429, 503)]
        assert len(served) + len(refused) == 12, results
        assert 1 <= len(served) <= 3 and refused
        assert all(r[2] is not None and int(r[2]) >= 1 for r in refused)
        assert max(r[1] for r in refused) < min(r[1] for r in served) + 5
        metrics = (await http_client(app).get("/metrics")).text
        assert 'concierge_model_queue_rejected_total{model="queued",reason="per_key"}' in metrics
        assert 'concierge_model_queue_wait_seconds_count{model="queued"}' in metrics
    finally:
        await app.shutdown()
        await model.aclose()


# -- embeddings: the client leaves, the work stops -----------------------------------------


@pytest.mark.slow
async def test_embeddings_stop_when_the_client_leaves(
    tmp_path: Path, db_url: str, models_dir: Path
) -> None:
    env = server_env(tmp_path, db_url, models_dir, llm_enabled="false")
    server = await asyncio.to_thread(LiveServer, env, tmp_path)
    try:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            for _ in range(100):  # the embedder loads in the background
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            # Under every limit (2,048 inputs, 800,000 characters), and minutes of work.
            big = {"model": EMBEDDER, "input": ["many words go here " * 20] * 2048}
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/embeddings", json=big, timeout=1.0)
            # Minutes of work were asked for; once the client left, a small request gets
            # its turn within a batch or two.
            started = time.perf_counter()
            small = await client.post(
                "/v1/embeddings", json={"model": EMBEDDER, "input": "hello"}, timeout=60
            )
            assert small.status_code == 200
            assert time.perf_counter() - started < 5
    finally:
        await asyncio.to_thread(server.stop)


# -- the OpenAI door trims a long history instead of refusing it ---------------------------


async def test_the_openai_door_trims_a_long_history_to_the_budget(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(
        "/v1/assistants",
        # A small budget: the history is many times over it, and the model's prefill is short.
        json={
            "name": "talker",
            "builtin_tools": [],
            "max_reply_tokens": 4,
            "max_context_tokens": 600,
        },
    )
    assert made.status_code == 201, made.text
    english = "We talked about boots and the weather and the shipping of parcels today. " * 3
    chinese = "我们今天谈论了靴子、天气和包裹的运输。" * 15  # no spaces: a token a character
    for filler in (english, chinese, "a\n" * 300):
        history: list[dict[str, str]] = []
        for n in range(150):
            history.append({"role": "user" if n % 2 == 0 else "assistant", "content": filler})
        body = {
            "model": "assistant:talker",
            "messages": [*history, {"role": "user", "content": "And the boots?"}],
            "max_tokens": 4,
        }
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text[:300]
