"""The embedded LLM: llama.cpp through llama-cpp-python, on one worker thread.

A llama.cpp context serves one generation at a time. Requests wait in a :class:`FairQueue`
(round-robin across API keys); one worker thread runs them and hands each token to the event
loop as it is produced, so the loop never blocks. When the caller stops reading (the HTTP
client disconnected) the job's cancel flag is set: a waiting job is dropped, a running one stops
at the next token. The queue is bounded (:class:`~concierge.models.admission.Admission`): a
request that would wait too long is answered at once with 429 or 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concierge.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable
from concierge.models.admission import Admission, QueueStats
from concierge.models.base import (
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    Model,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from concierge.models.fairqueue import FairQueue
from concierge.models.prompting import ChatFormatter, forced_call_schema, parse_tool_call

log = logging.getLogger(__name__)

# llama.cpp's tokenizer takes time quadratic in the line breaks of one call (20,000 short lines:
# 10 s): prompts are tokenised in pieces of about this many characters, each ending after a
# run of line breaks, where no token crosses (the same tokens as one call; tests check it).
TOKENIZE_PIECE_CHARS = 2000

# Sampling defaults where a request gives none (llama.cpp's own; better than OpenAI's 1.0 / 1.0
# for small local models).
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95


@dataclass
class _Prepared:
    tokens: list[int]
    stop: list[str]
    grammar: Any  # LlamaGrammar | None
    max_tokens: int
    tools: list[ToolSpec]
    tool_mode: str  # "none" | "auto" | "forced"


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    prepared: _Prepared
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Event | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    queued_at: float = field(default_factory=time.monotonic)
    released: bool = False  # its place in the queue was given back
    _release_lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self, admission: Admission) -> None:
        """Give back the job's place in the queue, once (the worker when it starts the job,
        or the caller when it gives up first)."""
        with self._release_lock:
            if self.released:
                return
            self.released = True
        admission.leave(self.request.priority_key)

    def emit(self, item: Event | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)

    def begin(self) -> None:
        self.loop.call_soon_threadsafe(self.started.set)


class LlamaModel(Model):
    owned_by = "concierge-embedded"
    supports_tools = True
    supports_json = True
    runs_locally = True
    holds_weights = True

    def __init__(
        self,
        model_id: str,
        model_path: Path | Callable[[], Path],
        *,
        context_length: int = 4096,
        threads: int | None = None,
        batch_size: int = 512,
        chat_template: str | None = None,
        max_queue: int = 16,
        max_queue_per_key: int = 4,
        max_queue_seconds: float = 30.0,
    ) -> None:
        self.model_id = model_id
        self._model_path = model_path
        self.context_length: int = context_length
        self._threads = threads or os.cpu_count() or 1
        self._batch_size = batch_size
        self._template_override = chat_template
        self._llm: Any = None
        self.formatter: ChatFormatter | None = None
        self._queue: FairQueue[_Job] = FairQueue()
        self.admission = Admission(model_id, max_queue, max_queue_per_key, max_queue_seconds)
        self._load_lock = threading.Lock()
        self._load_error: BaseException | None = None
        self._worker: threading.Thread | None = None

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the GGUF (blocking; idempotent) and start the worker thread."""
        with self._load_lock:
            if self._llm is not None:
                return
            from llama_cpp import Llama

            path = self._model_path() if callable(self._model_path) else self._model_path
            if not path.exists():
                raise ServiceUnavailable(f"model file {path.name} not found")
            log.info("loading %s from %s", self.model_id, path)
            llm = Llama(
                model_path=str(path),
                n_ctx=self.context_length,
                n_threads=self._threads,
                n_batch=self._batch_size,
                verbose=False,
            )
            template = self._template_override or llm.metadata.get("tokenizer.chat_template")
            vocab_bos = llm.token_bos()
            vocab_eos = llm.token_eos()
            self.formatter = ChatFormatter(
                template,
                bos_token=llm.detokenize([vocab_bos], special=True).decode("utf-8", "replace"),
                eos_token=llm.detokenize([vocab_eos], special=True).decode("utf-8", "replace"),
            )
            self._llm = llm
            self._worker = threading.Thread(target=self._run, name="llama-worker", daemon=True)
            self._worker.start()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    async def _ensure_loaded(self) -> None:
        if self._llm is None:
            await asyncio.to_thread(self.load)

    # -- request preparation (on a thread: tokenising a large prompt takes time) -------------

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        llm, formatter = self._llm, self.formatter
        assert llm is not None and formatter is not None
        tools = list(request.tools)
        tool_mode = "none"
        if tools and request.tool_choice != "none":
            tool_mode = "auto"
            if request.tool_choice == "required":
                tool_mode = "forced"
            elif request.tool_choice not in (None, "auto"):
                tools = [t for t in tools if t.name == request.tool_choice]
                if not tools:
                    raise InvalidRequest(
                        f"tool_choice names '{request.tool_choice}', which is not in tools",
                        param="tool_choice",
                    )
                tool_mode = "forced"
        if request.messages is not None:
            formatted = formatter.format(request.messages, tools if tool_mode != "none" else [])
            text, stop, add_bos = formatted.text, formatted.stop, formatted.add_bos
        else:
            text, stop, add_bos = request.prompt or "", [], True
        tokens = tokenize(llm, text, add_bos=add_bos, limit=self.context_length)
        n_prompt = len(tokens)
        if n_prompt >= self.context_length:
            more = "at least " if n_prompt > self.context_length else ""
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.context_length} tokens. "
                f"However, your prompt has {more}{n_prompt} tokens. Shorten the messages.",
                param="messages" if request.messages is not None else "prompt",
            )
        room = self.context_length - n_prompt
        if request.max_tokens is not None and request.max_tokens > room:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.context_length} tokens. "
                f"However, you requested {n_prompt + request.max_tokens} tokens "
                f"({n_prompt} in the prompt, {request.max_tokens} for the completion).",
                param="max_tokens",
            )
        grammar = self._grammar(request, tools, tool_mode)
        if grammar is not None:
            self._check_grammar(grammar, "tools" if tool_mode == "forced" else "response_format")
        return _Prepared(
            tokens=tokens,
            stop=[*stop, *request.stop],
            grammar=grammar,
            max_tokens=request.max_tokens if request.max_tokens is not None else room,
            tools=tools,
            tool_mode=tool_mode,
        )

    @staticmethod
    def _grammar(request: GenerationRequest, tools: list[ToolSpec], tool_mode: str) -> Any:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        schema: dict[str, Any] | None = None
        if tool_mode == "forced":
            schema = forced_call_schema(tools)
        elif request.response_format is not None and request.response_format.type != "text":
            if request.response_format.schema is None:
                return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
            schema = request.response_format.schema
        if schema is None:
            return None
        param = "response_format" if tool_mode != "forced" else "tools"
        try:
            grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the converter asserts, raises anything: each is a bad schema
            reason = str(exc).split("\n", 1)[0][:300] or type(exc).__name__
            raise InvalidRequest(
                f"the JSON schema cannot be enforced by the embedded model: {reason}", param=param
            ) from None
        return grammar

    def _check_grammar(self, grammar: Any, param: str) -> None:
        """Build the grammar's sampler once and free it: llama.cpp returns none for a grammar it
        cannot parse (too many repetitions, say), and sampling with none crashes the process."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(
            self._llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        if not sampler:
            raise InvalidRequest(
                "the JSON schema is too complex for the embedded model to enforce (its grammar "
                "has too many repetitions or rules); simplify it",
                param=param,
            )
        llama_cpp.llama_sampler_free(sampler)

    # -- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled.is_set():
                continue
            started = time.monotonic()
            self.admission.stats.waited(started - job.queued_at)
            self.admission.running = 1
            job.release(self.admission)
            job.begin()
            try:
                self._generate(job)
            except Exception as exc:  # a failed generation must not kill the worker
                log.exception("embedded generation failed")
                job.emit(ServiceUnavailable(f"the embedded model failed: {type(exc).__name__}"))
            finally:
                self.admission.running = 0
                if not job.cancelled.is_set():
                    self.admission.served(time.monotonic() - started)

    def _generate(self, job: _Job) -> None:
        from llama_cpp import StoppingCriteriaList

        req, prep, llm = job.request, job.prepared, self._llm
        generated = 0

        tokens = req.tokens
        tokens.prompt_tokens = len(prep.tokens)  # read now, whatever happens next

        def stopping(_ids: Any, _logits: Any) -> bool:
            nonlocal generated
            generated += 1
            tokens.completion_tokens = min(generated, prep.max_tokens)  # metered if cut short
            return job.cancelled.is_set()

        stream = llm.create_completion(
            prep.tokens,
            max_tokens=prep.max_tokens,
            temperature=req.temperature if req.temperature is not None else DEFAULT_TEMPERATURE,
            top_p=req.top_p if req.top_p is not None else DEFAULT_TOP_P,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=prep.stop or None,
            seed=req.seed,
            grammar=prep.grammar,
            stopping_criteria=StoppingCriteriaList([stopping]),
            stream=True,
        )
        reason: FinishReason = "stop"
        hold = prep.tool_mode != "none"  # may be a tool call: keep text until we know
        held: list[str] = []
        try:
            for chunk in stream:
                if job.cancelled.is_set():
                    break
                choice = chunk["choices"][0]
                text = choice["text"]
                if text:
                    if hold:
                        held.append(text)
                        so_far = "".join(held).lstrip()
                        if prep.tool_mode == "auto" and so_far and not so_far.startswith("{"):
                            hold = False
                            job.emit(TextDelta("".join(held)))
                            held.clear()
                    else:
                        job.emit(TextDelta(text))
                if choice.get("finish_reason") == "length":
                    reason = "length"
        finally:
            stream.close()
        if job.cancelled.is_set():
            return
        if held:
            call = parse_tool_call("".join(held), prep.tools)
            if call is not None:
                job.emit(ToolCallDelta(0, call.id, call.name, call.arguments))
                reason = "tool_calls"
            else:
                job.emit(TextDelta("".join(held)))
        # The criteria also runs for the token that hits max_tokens, which is never emitted.
        usage = Usage(len(prep.tokens), min(generated, prep.max_tokens))
        tokens.set(usage)
        job.emit(Finish(reason, usage))

    # -- the Model contract ------------------------------------------------------------------

    async def execute(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        key = request.priority_key
        # At the door, before any work: 429 for a key with too many waiting, 503 when full.
        self.admission.enter(key)
        job: _Job | None = None
        try:
            await self._ensure_loaded()
            prepared = await asyncio.to_thread(self._prepare, request)
            job = _Job(request, prepared, asyncio.get_running_loop())
            self._queue.put(key, job)
            try:
                async with asyncio.timeout(self.admission.max_wait):
                    await job.started.wait()
            except TimeoutError:
                if self._queue.discard(key, job):  # still waiting: it leaves with a 503
                    raise self.admission.timed_out(self.admission.max_wait) from None
            while True:
                item = await job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finish):
                    return
        finally:
            if job is None:
                self.admission.leave(key)
            else:
                job.cancelled.set()
                self._queue.discard(key, job)
                job.release(self.admission)  # its place, unless the worker took it already

    def count_tokens(self, text: str) -> int:
        """Exactly, with the model's own tokenizer (once loaded; thread-safe, linear time)."""
        if self._llm is None:
            return super().count_tokens(text)
        return len(tokenize(self._llm, text, add_bos=False))

    def queue_depth(self) -> int:
        return len(self._queue)

    def queue_stats(self) -> QueueStats:
        return self.admission.stats

    async def aclose(self) -> None:
        self._queue.close()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 30)
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def _pieces(text: str, size: int = TOKENIZE_PIECE_CHARS) -> list[str]:
    """``text`` cut after a run of line breaks about every ``size`` characters."""
    out: list[str] = []
    start = 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        if cut == -1:
            break
        while cut + 1 < len(text) and text[cut + 1] == "\n":
            cut += 1
        out.append(text[start : cut + 1])
        start = cut + 1
    if start < len(text) or not out:
        out.append(text[start:])
    return out


def tokenize(llm: Any, text: str, *, add_bos: bool, limit: int | None = None) -> list[int]:
    """``text``'s tokens, as one ``llm.tokenize`` call gives them, in linear time; with
    ``limit``, stopping once there are more than that many (the prompt cannot fit anyway)."""
    tokens: list[int] = []
    for number, piece in enumerate(_pieces(text)):
        tokens += llm.tokenize(piece.encode("utf-8"), add_bos=add_bos and number == 0, special=True)
        if limit is not None and len(tokens) > limit:
            break
    return tokens
