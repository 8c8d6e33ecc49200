"""Any OpenAI-compatible server as a backend: vLLM, Ollama, llama-server, hosted APIs.

- The HTTP client is aiohttp: on this path it costs about a quarter of what httpx does per
  request (``benchmarks/README.md``); with httpx this call was the largest single part of the
  gateway's overhead.
- A connection that cannot be made is retried (``connect_retries``, with a short backoff).
  Nothing is retried once a request was sent, so a request never runs twice, and a stream is
  never restarted after a token.
- Upstream failures become gateway errors a client can act on: an upstream 400 is the client's
  bad request (its message passed on), an upstream 429 a rate limit with its Retry-After, a
  refused or timed-out connection a 502/504. Upstream credentials never appear in an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import aiohttp
import numpy as np
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from concierge.config import UpstreamConfig
from concierge.egress import Egress
from concierge.errors import (
    ConciergeError,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from concierge.models.admission import Busy
from concierge.models.base import (
    EmbeddingModel,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    Model,
    TextDelta,
    TokenCount,
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


class UpstreamClient:
    """The connection pool to one upstream, shared by its models, opened on first use."""

    def __init__(self, upstream: UpstreamConfig) -> None:
        self.upstream = upstream
        self._session: aiohttp.ClientSession | None = None
        self._sessions: Egress | None = None
        headers = {"Content-Type": "application/json"}
        key = upstream.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(10.0, upstream.timeout), sock_read=upstream.timeout
        )

    def use(self, sessions: Egress) -> None:
        """Make connections through the server's session factory (and its transport)."""
        self._sessions = sessions

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options: dict[str, Any] = {
                "base_url": self.upstream.base_url + "/",
                "headers": self._headers,
                "timeout": self._timeout,
                "json_serialize": lambda obj: orjson.dumps(obj).decode(),
            }
            if self._sessions is not None:
                self._session = self._sessions.server_session(**options)
            else:  # a model used outside a server (the CLI's chat)
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=300), **options
                )
        return self._session

    async def post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST ``body``; retry only when the connection could not be made."""
        session = self._open()
        data = orjson.dumps(body)
        try:  # the common case, without the retry machinery's cost
            return await session.post(path, data=data)
        except aiohttp.ClientConnectorError:
            if not self.upstream.connect_retries:
                raise
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(aiohttp.ClientConnectorError),
            stop=stop_after_attempt(self.upstream.connect_retries),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await session.post(path, data=data)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _transport_error(upstream: UpstreamConfig, exc: BaseException) -> ConciergeError:
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(
            f"upstream '{upstream.name}' did not answer within {upstream.timeout:g}s"
        )
    return UpstreamError(f"upstream '{upstream.name}' is unreachable ({type(exc).__name__})")


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


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """About four characters a token: what an upstream's prompt is metered at until (or
    unless) it reports the real count."""
    if request.messages is None:
        chars = len(request.prompt or "")
    else:
        chars = sum(
            len(m.content or "") + sum(len(c.arguments) for c in m.tool_calls)
            for m in request.messages
        )
    return max(1, chars // 4)


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
        client: UpstreamClient,
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

    def use_http(self, sessions: Egress) -> None:
        self._client.use(sessions)

    async def execute(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        batches = self.execute_batches(request)
        try:
            async for batch in batches:
                for event in batch:
                    yield event
        finally:
            await batches.aclose()

    async def execute_batches(
        self, request: GenerationRequest
    ) -> AsyncGenerator[list[Event], None]:
        path = "chat/completions" if request.is_chat else "completions"
        body = request_body(request, self.upstream_model, stream=request.stream)
        try:
            response = await self._client.post(path, body)
            async with response:
                if response.status >= 400:
                    raise self._error(response.status, await response.read(), response.headers)
                # Accepted: the upstream reads the prompt. Until it reports usage (at the end),
                # an estimate is what a hang-up is metered for.
                request.tokens.prompt_tokens = estimate_prompt_tokens(request)
                if request.stream:
                    async for batch in self._stream(response, request.is_chat, request.tokens):
                        yield batch
                else:
                    events = self._whole(await response.read(), request.is_chat)
                    finish = events[-1]
                    assert isinstance(finish, Finish)
                    request.tokens.set(finish.usage)
                    yield events
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(self.upstream, exc) from None

    def _whole(self, content: bytes, chat: bool) -> list[Event]:
        data = self._json(content)
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

    async def _stream(
        self, response: aiohttp.ClientResponse, chat: bool, tokens: TokenCount
    ) -> AsyncIterator[list[Event]]:
        """One batch of events per network read (often one event; several when busy)."""
        reason: FinishReason = "stop"
        usage: Usage | None = None
        chunks = 0
        async for lines in _line_batches(response.content, self.upstream.name):
            batch: list[Event] = []
            done = False
            for raw in lines:
                if not raw.startswith(b"data:"):
                    continue
                payload = raw[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                data = self._json(payload)
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
                            batch.append(TextDelta(delta["content"]))
                        for call in delta.get("tool_calls") or []:
                            fn = call.get("function") or {}
                            batch.append(
                                ToolCallDelta(
                                    int(call.get("index", 0)),
                                    call.get("id"),
                                    fn.get("name"),
                                    fn.get("arguments") or "",
                                )
                            )
                    elif choice.get("text"):
                        batch.append(TextDelta(choice["text"]))
                    if choice.get("finish_reason"):
                        reason = _FINISH.get(choice["finish_reason"], "stop")
            tokens.completion_tokens = chunks
            if done:
                # Upstreams that ignore include_usage: count chunks, the best estimate there is.
                final = usage or Usage(tokens.prompt_tokens, chunks)
                tokens.set(final)
                batch.append(Finish(reason, final))
                yield batch
                return
            if batch:
                yield batch
        final = usage or Usage(tokens.prompt_tokens, chunks)
        tokens.set(final)
        yield [Finish(reason, final)]

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

    def _error(self, status: int, content: bytes, headers: Any) -> ConciergeError:
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
            return RateLimited(
                f"upstream '{name}' is rate limiting; retry later",
                retry_after=_seconds(headers.get("retry-after", "")),
            )
        if status == 503:  # overloaded: a fallback may answer; otherwise the client waits
            return Busy(
                f"upstream '{name}' is overloaded; try again shortly",
                _seconds(headers.get("retry-after", "")),
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
        client: UpstreamClient,
        *,
        dimensions: int = 0,
    ) -> None:
        self.model_id = model_id
        self.upstream = upstream
        self.owned_by = upstream.name
        self.dimensions = dimensions  # unknown until the first reply
        self._client = client

    def use_http(self, sessions: Egress) -> None:
        self._client.use(sessions)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        name = self.upstream.name
        try:
            response = await self._client.post(
                "embeddings", {"model": self.model_id, "input": list(texts)}
            )
            async with response:
                status, content = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(self.upstream, exc) from None
        if status >= 400:
            raise UpstreamError(f"upstream '{name}' failed with HTTP {status}")
        try:
            data = orjson.loads(content)
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

    async def aclose(self) -> None:
        await self._client.aclose()


MAX_EVENT_BYTES = 16 * 1024 * 1024


async def _line_batches(content: aiohttp.StreamReader, name: str) -> AsyncIterator[list[bytes]]:
    """The lines of an event stream, those completed by one network read together, of any
    length up to ``MAX_EVENT_BYTES``.

    (aiohttp's own line reader refuses lines over 512 KiB, which one chunk of a large tool call
    can be.)
    """
    parts: list[bytes] = []
    size = 0
    async for data in content.iter_any():
        lines: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            size += (len(data) if end == -1 else end) - start
            if size > MAX_EVENT_BYTES:
                raise UpstreamError(
                    f"upstream '{name}' sent an event over {MAX_EVENT_BYTES:,} bytes"
                )
            if end == -1:
                if start < len(data):
                    parts.append(data[start:])
                break
            line = data[start:end]
            if parts:
                line, parts = b"".join([*parts, line]), []
            size = 0
            lines.append(line)
            start = end + 1
        if lines:
            yield lines
    if parts:
        yield [b"".join(parts)]


def _message(data: dict[str, Any]) -> str | None:
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or "") or None
    if isinstance(error, str):
        return error
    detail = data.get("detail") or data.get("message")
    return str(detail) if detail else None


def _seconds(retry_after: str) -> float:
    """An upstream's Retry-After in seconds (an HTTP date or nonsense counts as 1)."""
    try:
        seconds = float(retry_after)
    except ValueError:
        return 1.0
    return seconds if 0 <= seconds < 86400 else 1.0
