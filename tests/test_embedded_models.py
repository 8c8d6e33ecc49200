"""The embedded backends: llama.cpp queueing and cancellation, MiniLM against its reference."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from concierge.models.base import GenerationRequest, Message, ToolSpec
from concierge.models.fairqueue import FairQueue
from concierge.models.llama import LlamaModel
from concierge.models.prompting import ChatFormatter, parse_tool_call
from concierge.models.registry import ModelRegistry
from tests.conftest import EMBEDDER, LLM

FIXTURES = Path(__file__).parent / "fixtures"


def test_fair_queue_round_robin() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.put("busy", f"busy-{i}")
    q.put("quiet", "quiet-0")
    q.put("other", "other-0")
    order = [q.get() for _ in range(5)]
    assert order == ["busy-0", "quiet-0", "other-0", "busy-1", "busy-2"]
    q.put("a", "x")
    assert q.discard("a", "x") and len(q) == 0
    q.close()
    assert q.get() is None


def test_transcript_fallback_for_base_models() -> None:
    f = ChatFormatter(None, bos_token="<bos>", eos_token="<eos>")
    prompt = f.format(
        [
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            Message("user", "Bye"),
        ],
        [],
    )
    assert f.uses_fallback
    assert prompt.text == "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:"
    assert "\nUser:" in prompt.stop


def test_jinja_template_when_present() -> None:
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt = ChatFormatter(template, "<s>", "</s>").format([Message("user", "Hi")], [])
    assert prompt.text == "<|user|>Hi<|assistant|>"


def test_tool_call_parsing() -> None:
    tools = [ToolSpec("lookup")]
    call = parse_tool_call(' {"tool_call": {"name": "lookup", "arguments": {"q": 1}}}', tools)
    assert call is not None and call.name == "lookup" and call.arguments == '{"q": 1}'
    assert parse_tool_call('{"tool_call": {"name": "other"}}', tools) is None
    assert parse_tool_call("Just text", tools) is None
    assert parse_tool_call("{not json", tools) is None


def llama(registry: ModelRegistry) -> LlamaModel:
    model = registry.models[LLM]
    assert isinstance(model, LlamaModel)
    return model


async def test_waiting_requests_are_served_in_turn(registry: ModelRegistry) -> None:
    model = llama(registry)
    await asyncio.to_thread(model.load)
    finished: list[str] = []

    async def ask(who: str, n: int) -> None:
        req = GenerationRequest(
            model=LLM, prompt="Count:", max_tokens=6, temperature=0, priority_key=who
        )
        async for _ in model.execute(req):
            pass
        finished.append(f"{who}-{n}")

    async def queued(n: int) -> None:
        while model.queue_depth() < n:
            await asyncio.sleep(0.01)

    # Hold the worker with a long request, queue three requests of a busy key, then one of a
    # quiet key; release the worker. The quiet key is served second, not fourth.
    blocker = model.execute(
        GenerationRequest(model=LLM, prompt="Story:", max_tokens=500, priority_key="blocker")
    )
    await anext(blocker)
    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(ask("busy", i)))
        await queued(i + 1)
    tasks.append(asyncio.create_task(ask("quiet", 0)))
    await queued(4)
    await blocker.aclose()
    await asyncio.gather(*tasks)
    assert finished == ["busy-0", "quiet-0", "busy-1", "busy-2"]


async def test_disconnect_stops_generation(registry: ModelRegistry) -> None:
    model = llama(registry)
    await asyncio.to_thread(model.load)
    req = GenerationRequest(
        model=LLM, prompt="Once upon a time", max_tokens=1500, temperature=0.9, seed=1
    )
    stream = model.execute(req)
    got = 0
    async for _ in stream:
        got += 1
        if got == 3:
            break
    started = time.perf_counter()
    await stream.aclose()  # what the gateway does when the client goes away
    # The worker is free at once: a short request does not wait for 1,500 tokens.
    quick = GenerationRequest(model=LLM, prompt="Hi", max_tokens=2, temperature=0)
    events = [e async for e in model.execute(quick)]
    assert time.perf_counter() - started < 5
    assert events[-1].usage.completion_tokens <= 2  # type: ignore[union-attr]
    assert model.queue_depth() == 0


async def test_the_event_loop_is_never_blocked(registry: ModelRegistry) -> None:
    model = llama(registry)
    await asyncio.to_thread(model.load)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    req = GenerationRequest(model=LLM, prompt="word " * 600, max_tokens=20, temperature=0)
    async for _ in model.execute(req):
        pass
    tick.cancel()
    assert max(gaps) < 0.25, f"loop stalled for {max(gaps):.3f}s"


def test_minilm_matches_sentence_transformers(registry: ModelRegistry) -> None:
    ref = np.load(FIXTURES / "minilm_reference.npz")
    sentences = [str(s) for s in ref["sentences"]]
    assert len(sentences) >= 50
    embedder = registry.embedding_models[EMBEDDER]
    result = asyncio.run(embedder.embed(sentences))
    expected = ref["vectors"] / np.linalg.norm(ref["vectors"], axis=1, keepdims=True)
    cosines = (result.vectors * expected).sum(axis=1)
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.6f}"
    # Order and batching do not change a vector.
    single = asyncio.run(embedder.embed([sentences[7]])).vectors[0]
    assert np.allclose(single, result.vectors[7], atol=1e-5)


def test_minilm_int8_stays_close_to_the_reference(registry: ModelRegistry) -> None:
    """The quantized encoder knowledge bases use by default: close to, not equal to, the
    reference (its retrieval quality is measured in benchmarks/retrieval_scifact.py)."""
    ref = np.load(FIXTURES / "minilm_reference.npz")
    sentences = [str(s) for s in ref["sentences"]]
    result = asyncio.run(registry.embedding_models[EMBEDDER + "-int8"].embed(sentences))
    expected = ref["vectors"] / np.linalg.norm(ref["vectors"], axis=1, keepdims=True)
    cosines = (result.vectors * expected).sum(axis=1)
    # Measured here: min 0.972, median 0.992 (60 sentences).
    assert cosines.min() >= 0.95 and np.median(cosines) >= 0.985, cosines.min()
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-4)


@pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER + "-int8"])
@pytest.mark.parametrize("text", ["", " ", "\u200b"])
def test_minilm_degenerate_inputs(registry: ModelRegistry, model: str, text: str) -> None:
    vec = asyncio.run(registry.embedding_models[model].embed([text])).vectors[0]
    assert np.isfinite(vec).all() and abs(np.linalg.norm(vec) - 1) < 1e-4


def test_minilm_batches_by_length_without_changing_vectors(registry: ModelRegistry) -> None:
    """Mixed lengths (some past the 256-token window) batched together give the vectors each
    text gets alone."""
    embedder = registry.embedding_models[EMBEDDER]
    texts = [" ".join(["refund policy"] * n) for n in (1, 3, 40, 90, 200, 7, 130)]
    together = asyncio.run(embedder.embed(texts)).vectors
    alone = np.stack([asyncio.run(embedder.embed([t])).vectors[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-4)
