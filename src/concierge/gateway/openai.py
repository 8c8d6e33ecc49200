"""The OpenAI-compatible endpoints: models, chat completions, completions, embeddings.

Every request is authenticated, admitted by the limiter, routed, and metered exactly once,
however it ends (success, error, client gone). Generation errors that happen before the first
token become ordinary HTTP errors, also for streaming requests; after the first token they are
sent as an SSE ``error`` event, as OpenAI does.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from concierge.errors import ConciergeError, InvalidRequest, ModelNotFound
from concierge.gateway import streaming
from concierge.gateway.assistant_door import ASSISTANT_PREFIX, chat_with_assistant
from concierge.gateway.auth import InferenceKey, inference_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.disconnect import ClientDisconnected, until_disconnect
from concierge.gateway.responses import AI_HEADERS, JSON, SSE_DONE, ChunkEncoder, sse_event
from concierge.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from concierge.gateway.state import concierge
from concierge.gateway.streaming import CLIENT_CLOSED
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
    governance = concierge(request).governance
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    producer = await governance.producer_for(key.org_id)
    answer = _Completion(body.model, ident, chat, body.include_usage, governance.labeller, producer)
    batches: AsyncGenerator[tuple[Model, list[Event]], None] | None = None
    try:
        route = concierge(request).registry.route(body.model)
        generation = body.to_generation(priority_key=f"key:{key.id}")
        answer.tokens = generation.tokens
        batches = generate_batches(route, generation)
    except BaseException as exc:
        await streaming.close(batches)
        await meter.fail(exc)
        raise
    return await streaming.respond(request, meter, batches, answer, stream=body.stream)


class _Completion:
    """A completion's events gathered, and spelled as OpenAI does (whole or as chunks)."""

    def __init__(
        self,
        model: str,
        ident: str,
        chat: bool,
        include_usage: bool,
        labeller: Labeller,
        producer: str,
    ) -> None:
        self.model = model
        self.ident = ident
        self.chat = chat
        self.include_usage = include_usage
        self.labeller = labeller
        self.producer = producer
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: Finish | None = None
        self.tokens = TokenCount()  # the backend's running count
        self.headers = AI_HEADERS
        self._chunks: ChunkEncoder | None = None

    def add(self, item: tuple[Model, list[Event]]) -> bool:
        model, batch = item
        self.model = model.model_id
        output = False
        for event in batch:
            if isinstance(event, TextDelta):
                self.text.append(event.text)
                output = True
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
                output = True
            else:
                self.finish = event
        return output

    def usage(self) -> Usage:
        # A reply cut short has no Finish: the tokens the backend had read and written by then
        # (a client cannot dodge its quota by hanging up).
        return self.finish.usage if self.finish else self.tokens.usage()

    def label(self) -> dict[str, str]:
        """The provenance label of everything generated (its ProduceID is the completion's
        id)."""
        content: str | bytes = "".join(self.text)
        if not content and self.calls:
            content = orjson.dumps([self.calls[i] for i in sorted(self.calls)])
        return self.labeller.label(content, self.ident, producer=self.producer)

    def body(self) -> dict[str, Any]:
        finish = self.finish.reason if self.finish else "stop"
        text = "".join(self.text)
        if self.chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text or None,
                "refusal": None,
            }
            if self.calls:
                message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
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
            "id": self.ident,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": None,
            "choices": [choice],
            "usage": self.usage().to_dict(),
            "aigc": self.label(),
        }

    # -- streamed: one chunk per event, one write per batch -------------------------------

    @property
    def chunks(self) -> ChunkEncoder:
        if self._chunks is None:  # made once the model that answers is known
            self._chunks = ChunkEncoder(
                self.ident, self.model, chat=self.chat, include_usage=self.include_usage
            )
        return self._chunks

    def opening(self) -> bytes:
        return self.chunks.chunk({"role": "assistant", "content": ""}) if self.chat else b""

    def encode(self, item: tuple[Model, list[Event]]) -> bytes:
        return b"".join(self._encode(event) for event in item[1])

    def _encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self.chunks.chunk({"content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {
                "index": event.index,
                "function": {"arguments": event.arguments},
            }
            if event.id:
                call.update(id=event.id, type="function")
            if event.name:
                call["function"]["name"] = event.name
            return self.chunks.chunk({"tool_calls": [call]})
        # The last chunk carries the provenance label of everything before it.
        return self.chunks.chunk({}, finish=event.reason, extra={"aigc": self.label()})

    def closing(self) -> bytes:
        usage = self.chunks.usage(self.usage()) if self.include_usage else b""
        return usage + SSE_DONE

    def error(self, exc: ConciergeError) -> bytes:
        return sse_event(exc.to_dict())


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
