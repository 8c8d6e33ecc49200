"""Any OpenAI-compatible server as a backend: vLLM, Ollama, llama-server, hosted APIs.

- Connection errors are retried (``connect_retries``) by the HTTP transport, which only ever
  retries a connection that could not be made, so nothing is retried once a request was sent,
  and never after a token arrived.
- Upstream failures become gateway errors a client can act on: an upstream 400 is the client's
  bad request (its message passed on), an upstream 429 a rate limit with its Retry-After, a
  refused or timed-out connection a 502/504. Upstream credentials never appear in an error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import orjson

from concierge.config import UpstreamConfig
from concierge.errors import (
    ConciergeError,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from concierge.models.base import (
    EmbeddingModel,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    Model,
    TextDelta,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)
_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def make_client(
    upstream: UpstreamConfig, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The pooled client for one upstream. Tests pass an ``httpx.MockTransport``."""
    headers = {}
    key = upstream.resolved_api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.AsyncClient(
        base_url=upstream.base_url,
        headers=headers,
        timeout=httpx.Timeout(upstream.timeout, connect=min(10.0, upstream.timeout)),
        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        transport=transport or httpx.AsyncHTTPTransport(retries=upstream.connect_retries),
    )


def request_body(req: GenerationRequest, upstream_model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {**req.extra, "model": upstream_model, "stream": stream}
    if req.messages is not None:
        body["messages"] = [m.to_dict() for m in req.messages]
    else:
        body["prompt"] = req.prompt or ""
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
    ):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.stop:
        body["stop"] = req.stop
    if req.tools:
        body["tools"] = [t.to_dict() for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = (
            req.tool_choice
            if req.tool_choice in ("auto", "none", "required")
            else {"type": "function", "function": {"name": req.tool_choice}}
        )
    if req.response_format is not None:
        fmt = req.response_format
        if fmt.type == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name or "response", "schema": fmt.schema or {}},
            }
        else:
            body["response_format"] = {"type": fmt.type}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _usage(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


class OpenAIUpstream(Model):
    """One model id served by an OpenAI-compatible upstream."""

    def __init__(
        self,
        model_id: str,
        upstream: UpstreamConfig,
        client: httpx.AsyncClient,
        *,
        upstream_model: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.upstream = upstream
        self.owned_by = upstream.name
        self.upstream_model = upstream_model or model_id
        self.supports_tools = upstream.supports_tools
        self.supports_json = True
        self.context_length = upstream.context_length
        self._client = client

    async def execute(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        path = "/chat/completions" if request.is_chat else "/completions"
        body = request_body(request, self.upstream_model, stream=request.stream)
        try:
            if request.stream:
                async for event in self._stream(path, body, request.is_chat):
                    yield event
            else:
                for event in await self._whole(path, body, request.is_chat):
                    yield event
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"upstream '{self.upstream.name}' did not answer within {self.upstream.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"upstream '{self.upstream.name}' is unreachable ({type(exc).__name__})"
            ) from None

    async def _whole(self, path: str, body: dict[str, Any], chat: bool) -> list[Event]:
        response = await self._client.post(
            path, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        if response.status_code >= 400:
            raise self._error(response.status_code, response.content, response.headers)
        data = self._json(response.content)
        choice = (data.get("choices") or [{}])[0]
        events: list[Event] = []
        if chat:
            message = choice.get("message") or {}
            if message.get("content"):
                events.append(TextDelta(message["content"]))
            for index, call in enumerate(message.get("tool_calls") or []):
                fn = call.get("function") or {}
                events.append(
                    ToolCallDelta(index, call.get("id"), fn.get("name"), fn.get("arguments") or "")
                )
        elif choice.get("text"):
            events.append(TextDelta(choice["text"]))
        usage = _usage(data.get("usage")) or Usage()
        events.append(Finish(_FINISH.get(choice.get("finish_reason"), "stop"), usage))
        return events

    async def _stream(self, path: str, body: dict[str, Any], chat: bool) -> AsyncIterator[Event]:
        async with self._client.stream(
            "POST", path, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
        ) as response:
            if response.status_code >= 400:
                raise self._error(response.status_code, await response.aread(), response.headers)
            reason: FinishReason = "stop"
            usage: Usage | None = None
            chunks = 0
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = self._json(payload.encode())
                if "error" in data and not data.get("choices"):
                    raise UpstreamError(
                        f"upstream '{self.upstream.name}' failed mid-stream: "
                        f"{_message(data) or 'no reason given'}"
                    )
                usage = _usage(data.get("usage")) or usage
                for choice in data.get("choices") or []:
                    chunks += 1
                    if chat:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for call in delta.get("tool_calls") or []:
                            fn = call.get("function") or {}
                            yield ToolCallDelta(
                                int(call.get("index", 0)),
                                call.get("id"),
                                fn.get("name"),
                                fn.get("arguments") or "",
                            )
                    elif choice.get("text"):
                        yield TextDelta(choice["text"])
                    if choice.get("finish_reason"):
                        reason = _FINISH.get(choice["finish_reason"], "stop")
            # Upstreams that ignore include_usage: count chunks, the best estimate there is.
            yield Finish(reason, usage or Usage(0, chunks))

    def _json(self, content: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"upstream '{self.upstream.name}' sent a reply that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamError(f"upstream '{self.upstream.name}' sent an unexpected reply")
        return data

    def _error(self, status: int, content: bytes, headers: httpx.Headers) -> ConciergeError:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = {}
        message = _message(data) if isinstance(data, dict) else None
        name = self.upstream.name
        log.warning("upstream %s answered %s: %s", name, status, message)
        if status == 400:
            text = message or "the upstream rejected the request"
            if "context" in text.lower() and "length" in text.lower():
                return ContextLengthExceeded(text)
            return InvalidRequest(text)
        if status == 429:
            retry = headers.get("retry-after", "1")
            return RateLimited(
                f"upstream '{name}' is rate limiting; retry later",
                retry_after=float(retry) if retry.replace(".", "", 1).isdigit() else 1.0,
            )
        if status in (401, 403):
            return UpstreamError(f"upstream '{name}' refused the gateway's credentials")
        if status == 404:
            return UpstreamError(f"upstream '{name}' does not serve model '{self.upstream_model}'")
        return UpstreamError(f"upstream '{name}' failed with HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()


class OpenAIUpstreamEmbeddings(EmbeddingModel):
    """An embedding model served by an OpenAI-compatible upstream's /embeddings."""

    def __init__(
        self,
        model_id: str,
        upstream: UpstreamConfig,
        client: httpx.AsyncClient,
        *,
        dimensions: int = 0,
    ) -> None:
        self.model_id = model_id
        self.upstream = upstream
        self.owned_by = upstream.name
        self.dimensions = dimensions  # unknown until the first reply
        self._client = client

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        name = self.upstream.name
        try:
            response = await self._client.post(
                "/embeddings", json={"model": self.model_id, "input": list(texts)}
            )
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"upstream '{name}' did not answer in time") from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"upstream '{name}' is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise UpstreamError(f"upstream '{name}' failed with HTTP {response.status_code}")
        try:
            data = response.json()
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [list(map(float, row["embedding"])) for row in rows]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(f"upstream '{name}' sent an unexpected embeddings reply") from None
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"upstream '{name}' returned {len(vectors)} vectors for {len(texts)} inputs"
            )
        if vectors:
            self.dimensions = len(vectors[0])
        tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        return Embeddings(np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1), tokens)


def _message(data: dict[str, Any]) -> str | None:
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or "") or None
    if isinstance(error, str):
        return error
    detail = data.get("detail") or data.get("message")
    return str(detail) if detail else None
