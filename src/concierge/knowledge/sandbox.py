"""Untrusted documents parsed in worker processes, each within time and memory limits.

A document is whatever an organisation (or a URL it names) sends: a 185 KB DOCX can expand to
gigabytes, a PDF can hold a decompression bomb or a structure that sends a parser into a loop
for many minutes. Parsing inside the server would hold its memory and a core for as long as
that takes, whatever the client does. Here each document is parsed by a worker process
(pebble's pool, started with ``spawn``: a fresh interpreter, none of the server's threads or
open files):

- the worker's address space is capped (``RLIMIT_AS``, ``knowledge_parse_max_memory_mb``), so
  an allocation past it fails inside the worker, not in the server;
- a parse that takes longer than ``knowledge_parse_timeout_seconds`` is stopped by killing its
  worker (the pool starts another);
- archives are measured before they are opened (``knowledge_max_expanded_bytes``,
  :meth:`concierge.knowledge.parsers.Parsers.parse`);
- a worker that dies (killed for memory, crashed in a native library) costs that one document,
  reported as its error.

Workers are started on first use and kept (recycled after a number of documents). Each is given
the server's document parsers (plugins' included) when it starts.
"""

from __future__ import annotations

import logging
import resource
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from pebble import ProcessExpired, ProcessPool

from concierge.errors import DocumentTooLarge, InvalidDocument, UnsupportedDocumentType
from concierge.knowledge.parsers import ParsedDocument, Parsers

log = logging.getLogger(__name__)
TASKS_PER_WORKER = 200  # a worker is replaced after this many documents
STARTUP_SECONDS = 60.0  # a worker being started (or replaced) on a busy machine
_ERRORS: dict[str, type[InvalidDocument]] = {
    cls.__name__: cls for cls in (InvalidDocument, UnsupportedDocumentType, DocumentTooLarge)
}


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 60.0
    max_memory_bytes: int = 1024 * 1024 * 1024
    max_expanded_bytes: int = 256 * 1024 * 1024
    max_document_bytes: int | None = None
    workers: int = 1


_worker_parsers: Parsers | None = None  # in a worker process: the parsers it was started with


def _start_worker(max_bytes: int, parsers: Parsers) -> None:
    """The worker's initializer: cap its address space, keep the parsers."""
    global _worker_parsers
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    _worker_parsers = parsers


def _parse(
    data: bytes,
    filename: str | None,
    content_type: str | None,
    known_format: str | None,
    max_bytes: int | None,
    max_expanded: int,
) -> tuple[str, Any]:
    """In the worker: ``("ok", document)`` or ``(error class name, message)``."""
    assert _worker_parsers is not None, "the worker was started without parsers"
    try:
        doc = _worker_parsers.parse(
            data,
            filename,
            content_type,
            max_bytes=max_bytes,
            known_format=known_format,
            max_expanded_bytes=max_expanded,
        )
    except InvalidDocument as exc:
        return type(exc).__name__, exc.message
    except MemoryError:
        return "DocumentTooLarge", "needs more memory to parse than the limit allows"
    return "ok", doc


class Sandbox:
    """The pool of parser processes of one server (or CLI run)."""

    def __init__(self, limits: Limits, parsers: Parsers) -> None:
        self.limits = limits
        self.parsers = parsers
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._waiting: set[Future[Any]] = set()

    def _workers(self) -> ProcessPool:
        with self._lock:
            if self._pool is None or not self._pool.active:
                self._pool = ProcessPool(
                    max_workers=self.limits.workers,
                    max_tasks=TASKS_PER_WORKER,
                    initializer=_start_worker,
                    initargs=(self.limits.max_memory_bytes, self.parsers),
                    context=get_context("spawn"),
                )
            return self._pool

    def parse(
        self,
        data: bytes,
        filename: str | None = None,
        content_type: str | None = None,
        *,
        known_format: str | None = None,
    ) -> ParsedDocument:
        """Parse in a worker (blocking: call it from a thread). :class:`InvalidDocument` for a
        document that is bad, too large, too slow or too hungry to parse."""
        name = filename or "the document"
        limits = self.limits
        if limits.max_document_bytes is not None and len(data) > limits.max_document_bytes:
            raise DocumentTooLarge(
                f"{name} is {len(data):,} bytes, over the limit of {limits.max_document_bytes:,}"
            )
        future = self._workers().schedule(
            _parse,
            args=(
                data,
                filename,
                content_type,
                known_format,
                limits.max_document_bytes,
                limits.max_expanded_bytes,
            ),
            timeout=limits.timeout_seconds,
        )
        self._waiting.add(future)
        try:
            # The pool times the parse itself; this bounds the wait for a worker to start too.
            kind, value = future.result(timeout=limits.timeout_seconds + STARTUP_SECONDS)
        except CancelledError:
            raise InvalidDocument(f"{name} was not parsed: the server is stopping") from None
        except FutureTimeout:
            future.cancel()  # type: ignore[no-untyped-call]  # no worker took it: drop it
            raise InvalidDocument(
                f"{name} took longer than {limits.timeout_seconds:g} s to parse; it was stopped"
            ) from None
        except ProcessExpired as exc:
            log.warning("a parser process died on %s (exit code %s)", name, exc.exitcode)
            raise InvalidDocument(
                f"{name} could not be parsed: the parser stopped (it may need more than "
                f"{limits.max_memory_bytes // 2**20} MB of memory)"
            ) from None
        finally:
            self._waiting.discard(future)
        if kind == "ok":
            assert isinstance(value, ParsedDocument)
            return value
        raise _ERRORS.get(kind, InvalidDocument)(f"{value}")

    def close(self) -> None:
        """Stop the workers; a parse still waiting ends with an error, never hangs."""
        for future in list(self._waiting):
            future.cancel()
        with self._lock:
            if self._pool is not None:
                self._pool.stop()  # type: ignore[no-untyped-call]
                self._pool.join(timeout=10)
                self._pool = None
