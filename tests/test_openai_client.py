"""The official openai client against `concierge serve` running in a subprocess (one server
per backend for the module: these tests do not depend on each other's data)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import ADMIN_KEY, EMBEDDER, LLM, LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def live_server(shared_server: LiveServer) -> LiveServer:
    return shared_server


@pytest.fixture
def oai(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def test_models(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {LLM, EMBEDDER} <= ids
    assert oai.models.retrieve(LLM).owned_by == "concierge-embedded"


def test_chat_and_streaming_with_usage(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = oai.chat.completions.create(
        model=LLM,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_completions(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=LLM, prompt="One, two,", max_tokens=4, temperature=0)
    assert reply.choices[0].text is not None


def test_embeddings(oai: openai.OpenAI) -> None:
    # The client asks for base64 by default and decodes it; both forms must agree.
    b64 = oai.embeddings.create(model=EMBEDDER, input=["red shoes", "blue boots"])
    floats = oai.embeddings.create(
        model=EMBEDDER, input=["red shoes", "blue boots"], encoding_format="float"
    )
    assert len(b64.data) == 2 and len(b64.data[0].embedding) == 384
    assert np.allclose(b64.data[1].embedding, floats.data[1].embedding, atol=1e-6)


def test_errors(oai: openai.OpenAI, live_server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=LLM, messages=[], max_tokens=3)
    with (
        openai.OpenAI(
            base_url=live_server.url + "/v1", api_key="sk-cc-wrong", max_retries=0
        ) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()
    created = httpx.post(
        live_server.url + "/api/keys",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"org": "default", "name": "tiny", "tokens_per_day": 1},
    ).json()
    with openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=created["key"], max_retries=0
    ) as tiny:
        tiny.embeddings.create(model=EMBEDDER, input="uses the whole quota")
        with pytest.raises(openai.RateLimitError) as rl:
            tiny.embeddings.create(model=EMBEDDER, input="over")
    assert rl.value.response.headers["retry-after"]
