"""The OpenAI-compatible endpoints: models, chat completions, completions, embeddings.

Every request is authenticated, admitted by the limiter, routed, and metered exactly once,
however it ends (success, error, client gone). Generation errors that happen before the first
token become ordinary HTTP errors, also for streaming requests; after the first token they are
sent as an SSE ``error`` event, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from concierge.errors import ConciergeError, InvalidRequest, ModelNotFound
from concierge.gateway.auth import InferenceKey, inference_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.conversations import ASSISTANT_PREFIX, chat_with_assistant
from concierge.gateway.disconnect import ClientDisconnected, until_disconnect
from concierge.gateway.responses import AI_HEADERS, JSON, SSE_DONE, EventStream, sse_event
from concierge.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from concierge.gateway.state import concierge
from concierge.governance.labels import Labeller
from concierge.metering import Meter
from concierge.models.base import (
    Event,
    Finish,
    Model,
    TextDelta,
    TokenCount,
    ToolCallDelta,
    Usage,
)
from concierge.models.registry import generate_batches

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
T = TypeVar("T")
STARTED = int(time.time())
CLIENT_CLOSED = 499  # nginx's code for "client closed request", used in the ledger


@dataclass
class _Reply:
    """What a generation produced, gathered from its events."""

    model: str
    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: Finish | None = None
    tokens: TokenCount = field(default_factory=TokenCount)  # the backend's running count

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(
                event.index,
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if event.id:
                call["id"] = event.id
            if event.name:
                call["function"]["name"] = event.name
            call["function"]["arguments"] += event.arguments
        else:
            self.finish = event

    @property
    def usage(self) -> Usage:
        # A reply cut short has no Finish: the tokens the backend had read and written by then
        # (a client cannot dodge its quota by hanging up).
        return self.finish.usage if self.finish else self.tokens.usage()


@router.get("/models", summary="List models")
async def list_models(request: Request, _key: InferenceKey) -> JSON:
    data = [
        {"id": info.id, "object": "model", "created": STARTED, "owned_by": info.owned_by}
        for info in concierge(request).registry.infos()
    ]
    return JSON({"object": "list", "data": data})


@router.get("/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(model_id: str, request: Request, _key: InferenceKey) -> JSON:
    for info in concierge(request).registry.infos():
        if info.id == model_id:
            return JSON(
                {"id": info.id, "object": "model", "created": STARTED, "owned_by": info.owned_by}
            )
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")


# The inference endpoints parse their bodies themselves, in one pass (see gateway/body.py).
BODY_MODELS: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, EmbeddingRequest]


@router.post(
    "/chat/completions",
    summary="Create a chat completion",
    openapi_extra=json_body(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> Response:
    key = await inference_key(request)
    body = await parse(request, ChatCompletionRequest)
    concierge(request).bounds.chat(body)
    if body.model.startswith(ASSISTANT_PREFIX):
        return await chat_with_assistant(request, key, body)
    return await _generate(request, key, "chat.completions", body, chat=True)


@router.post(
    "/completions", summary="Create a text completion", openapi_extra=json_body(CompletionRequest)
)
async def completions(request: Request) -> Response:
    key = await inference_key(request)
    body = await parse(request, CompletionRequest)
    concierge(request).bounds.completion(body)
    return await _generate(request, key, "completions", body, chat=False)


async def _generate(
    request: Request,
    key: Any,
    endpoint: str,
    body: ChatCompletionRequest | CompletionRequest,
    *,
    chat: bool,
) -> Response:
    meter: Meter = await concierge(request).metering.begin(key, endpoint, body.model)
    batches: AsyncGenerator[tuple[Model, list[Event]], None] | None = None
    reply = _Reply(model=body.model)
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    governance = concierge(request).governance
    labeller = _Labelling(governance.labeller, await governance.producer_for(key.org_id), ident)

    async def first_batch() -> list[Event]:
        assert batches is not None
        model, batch = await anext(batches)
        reply.model = model.model_id
        return batch

    async def whole() -> None:
        assert batches is not None
        async for model, batch in batches:
            reply.model = model.model_id
            meter.mark_first_token()
            for event in batch:
                reply.add(event)

    try:
        route = concierge(request).registry.route(body.model)
        generation = body.to_generation(priority_key=f"key:{key.id}")
        reply.tokens = generation.tokens
        batches = generate_batches(route, generation)
        if body.stream:
            # Wait for the first event before answering: a failure up to here (unknown model,
            # context too long, upstream down) is a plain HTTP error, not a broken stream.
            first = await until_disconnect(request.receive, first_batch())
            return EventStream(
                _stream(meter, batches, first, reply, ident, body.include_usage, chat, labeller),
                headers=AI_HEADERS,
            )
        await until_disconnect(request.receive, whole())
    except ClientDisconnected:
        await _close(batches)
        await meter.finish(CLIENT_CLOSED, reply.usage, model=reply.model)
        return Response(status_code=CLIENT_CLOSED)
    except BaseException as exc:
        await _close(batches)
        await meter.fail(exc)
        raise
    await meter.finish(200, reply.usage, model=reply.model)
    return JSON(_whole_body(reply, ident, chat, labeller), headers=AI_HEADERS)


async def _close(events: AsyncGenerator[Any, None] | None) -> None:
    if events is not None:
        with anyio.CancelScope(shield=True):
            await events.aclose()


@dataclass(frozen=True)
class _Labelling:
    """Signs a generation's provenance label (its ProduceID is the completion's id)."""

    labeller: Labeller
    producer: str
    ident: str

    def __call__(self, reply: _Reply) -> dict[str, str]:
        content: str | bytes = "".join(reply.text)
        if not content and reply.calls:
            content = orjson.dumps([reply.calls[i] for i in sorted(reply.calls)])
        return self.labeller.label(content, self.ident, producer=self.producer)


def _whole_body(reply: _Reply, ident: str, chat: bool, labelling: _Labelling) -> dict[str, Any]:
    finish = reply.finish.reason if reply.finish else "stop"
    text = "".join(reply.text)
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if reply.calls:
            message["tool_calls"] = [reply.calls[i] for i in sorted(reply.calls)]
        else:
            message["content"] = text
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": reply.usage.to_dict(),
        "aigc": labelling(reply),
    }


async def _stream(
    meter: Meter,
    batches: AsyncGenerator[tuple[Model, list[Event]], None],
    first: list[Event],
    reply: _Reply,
    ident: str,
    include_usage: bool,
    chat: bool,
    labelling: _Labelling,
) -> AsyncGenerator[bytes, None]:
    """The SSE body: one chunk per event, in one write per batch of events."""
    created = int(time.time())
    base = {
        "id": ident,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": reply.model,
        "system_fingerprint": None,
    }
    # Every chunk is ``{**base, "choices": [choice], "usage": null?}``: the fixed parts are
    # encoded once, and each event encodes only its choice.
    head = b"data: " + orjson.dumps(base)[:-1] + b',"choices":['
    tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def chunk(payload: dict[str, Any], finish: str | None = None) -> bytes:
        if chat:
            choice = {"index": 0, "delta": payload, "logprobs": None, "finish_reason": finish}
        else:
            choice = {
                "index": 0,
                "text": payload.get("content", ""),
                "logprobs": None,
                "finish_reason": finish,
            }
        return head + orjson.dumps(choice) + tail

    def encode(event: Event) -> bytes:
        reply.add(event)
        if isinstance(event, TextDelta):
            meter.mark_first_token()
            return chunk({"content": event.text})
        if isinstance(event, ToolCallDelta):
            meter.mark_first_token()
            call: dict[str, Any] = {
                "index": event.index,
                "function": {"arguments": event.arguments},
            }
            if event.id:
                call.update(id=event.id, type="function")
            if event.name:
                call["function"]["name"] = event.name
            return chunk({"tool_calls": [call]})
        # The last chunk carries the provenance label of everything before it.
        closing = chunk({}, finish=event.reason)
        label = b',"aigc":' + orjson.dumps(labelling(reply)) + b"}\n\n"
        return closing[: -len(b"}\n\n")] + label

    status = 200
    try:
        opening = chunk({"role": "assistant", "content": ""}) if chat else b""
        yield opening + b"".join(map(encode, first))
        async for _model, batch in batches:
            yield b"".join(map(encode, batch))
        closing = [SSE_DONE]
        if include_usage:
            closing.insert(0, sse_event({**base, "choices": [], "usage": reply.usage.to_dict()}))
        yield b"".join(closing)
    except ConciergeError as exc:
        status = exc.status
        yield sse_event(exc.to_dict())
    except (asyncio.CancelledError, GeneratorExit):
        status = CLIENT_CLOSED
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await _close(batches)
            await meter.finish(status, reply.usage, model=reply.model)


@router.post("/embeddings", summary="Create embeddings", openapi_extra=json_body(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    key = await inference_key(request)
    body = await parse(request, EmbeddingRequest)
    meter: Meter = await concierge(request).metering.begin(key, "embeddings", body.model)
    try:
        embedder = concierge(request).registry.embedder(body.model)
        texts = body.texts
        concierge(request).bounds.embeddings(texts)
        if (
            body.dimensions is not None
            and embedder.dimensions
            and body.dimensions != embedder.dimensions
        ):
            raise InvalidRequest(
                f"{embedder.model_id} produces {embedder.dimensions}-dimensional vectors; "
                "it cannot shorten them",
                param="dimensions",
            )
        # The embedder stops between batches once the client has gone away.
        result = await until_disconnect(request.receive, embedder.embed(texts))
    except ClientDisconnected:
        await meter.finish(CLIENT_CLOSED, model=body.model)
        return JSON({}, status_code=CLIENT_CLOSED)  # nobody reads it
    except BaseException as exc:
        await meter.fail(exc)
        raise
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    if body.encoding_format == "base64":
        rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        rows = list(vectors)
    await meter.finish(200, Usage(result.prompt_tokens, 0), model=embedder.model_id)
    return JSON(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)
            ],
            "model": embedder.model_id,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )
