"""Ingestion: documents in, searchable chunks out, in two resumable steps.

0. **The job.** The job and all its sources are written in one transaction
   (:mod:`concierge.knowledge.staging`): nothing is lost between the request and the work.
1. **Stage.** Each source is fetched (a URL), parsed (in a worker process, with time and
   memory limits: :mod:`concierge.knowledge.sandbox`) and stored with its original bytes,
   extracted text, metadata and SHA-256 as a *pending* document, in batches; each batch's
   sources leave the job in the transaction that stores their documents. An unchanged
   document (same hash, already ready) is skipped; a changed one is updated in place and stays
   searchable in its old form until step 2 replaces it. A source that cannot be parsed is an
   error of its own job and stops nothing else.
2. **Process.** Pending documents are taken in batches: chunked, embedded, and then written in
   one transaction per batch that replaces each document's chunks and marks it ready.

Everything between the steps is in the database, so a process killed at any moment
(``kill -9`` included) leaves no half-written document and no source forgotten: on the next
run, :meth:`stage` takes the job's remaining sources and :meth:`process` the pending
documents, and the result is the same as an uninterrupted run, with no chunk missing or
doubled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, func, insert, select, update

from concierge.errors import InvalidDocument
from concierge.knowledge import bases, staging
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.chunking import Chunk, TokenCounter, chunk_document
from concierge.knowledge.corpus import CorpusRecord, parse_record
from concierge.knowledge.documents import DocumentStatus
from concierge.knowledge.jobs import JobStatus, get_job, job_of
from concierge.knowledge.parsers import ParsedDocument
from concierge.knowledge.sandbox import Sandbox
from concierge.knowledge.sources import Fetcher, Source
from concierge.models.base import EmbeddingModel
from concierge.store import Database, lock
from concierge.store.tables import chunks, documents, ingestion_jobs

log = logging.getLogger(__name__)

Progress = Callable[["JobStatus"], None]
# A pending document's row, its chunks with the text to embed for each, or why it failed.
_Prepared = tuple[Any, list[tuple[Chunk, str]], str | None]


@dataclass
class _Parsed:
    source: Source
    doc: ParsedDocument | None
    error: InvalidDocument | None
    content_hash: str
    size: int


class Ingestor:
    def __init__(
        self,
        db: Database,
        embedder: EmbeddingModel,
        *,
        count_tokens: TokenCounter,
        sandbox: Sandbox,
        batch_documents: int = 64,
        fetch: Fetcher | None = None,
    ) -> None:
        """``sandbox``: the worker processes documents are parsed in (never this process);
        ``fetch``: how URL sources are fetched (under the server's egress policy)."""
        self.db = db
        self.embedder = embedder
        self.count_tokens = count_tokens
        self.sandbox = sandbox
        self.batch_documents = batch_documents
        self.fetch = fetch

    # -- the whole thing -------------------------------------------------------------------

    async def ingest(
        self, kb: KnowledgeBase, sources: Iterable[Source], progress: Progress | None = None
    ) -> JobStatus:
        items = list(sources)
        job_id = await self.db.write(lambda conn: self.create_job(conn, kb, items))
        await self.stage(kb, job_id, progress)
        await self.process(kb, progress)
        return await self.db.read(lambda conn: get_job(conn, kb.org_id, job_id))

    # -- step 1: parse and store -----------------------------------------------------------

    def create_job(self, conn: Connection, kb: KnowledgeBase, sources: Sequence[Source]) -> int:
        """The job with all its sources, in the caller's transaction (``staging``)."""
        return staging.create_job(conn, kb, sources)

    async def stage(self, kb: KnowledgeBase, job_id: int, progress: Progress | None = None) -> None:
        """Stage the job's sources still waiting, a batch per transaction, until none is left
        (a later call, after a crash, goes on where this one stopped)."""
        while batch := await self.db.read(lambda conn: staging.next_batch(conn, job_id)):
            sources = [await self._source(item) for item in batch]
            parsed = await asyncio.to_thread(lambda s=sources: [self._parse(x) for x in s])  # type: ignore[misc]
            ids = [item.id for item in batch]
            status = await self.db.write(
                lambda conn, p=parsed, i=ids: self._store(conn, kb, job_id, p, i)  # type: ignore[misc]
            )
            if progress:
                progress(status)
        await self.db.write(lambda conn: staging.staged(conn, job_id))

    async def _source(self, item: staging.Item) -> Source:
        source = Source(
            item.external_id,
            item.data,
            record=item.record,
            filename=item.filename,
            content_type=item.content_type,
            source=item.source,
            metadata=item.metadata,
            error=staging.error_of(item),
        )
        if item.url is None or source.error is not None:
            return source
        if self.fetch is None:
            source.error = InvalidDocument("URLs cannot be fetched here", param="url")
            return source
        try:
            return await self.fetch(item.url, item.external_id, item.metadata)
        except Exception:  # one source's failure is its own, never the job's
            log.exception("fetching %s failed", item.url)
            source.error = InvalidDocument(f"fetching {item.url} failed (internal error)")
            return source

    def _parse(self, source: Source) -> _Parsed:
        raw = source.data
        if raw is None and source.record is not None:
            raw = (source.record.title or "").encode() + b"\n" + source.record.text.encode()
        digest = hashlib.sha256(raw or b"").hexdigest()
        size = len(raw or b"")
        if source.error is not None:
            return _Parsed(source, None, source.error, digest, size)
        try:
            if source.record is not None:
                doc = parse_record(source.record)
            else:
                doc = self.sandbox.parse(source.data or b"", source.filename, source.content_type)
        except InvalidDocument as exc:
            return _Parsed(source, None, exc, digest, size)
        except Exception:  # one source's failure is its own, never the job's
            log.exception("parsing %s failed", source.external_id)
            failed = InvalidDocument(f"{source.external_id} could not be parsed (internal error)")
            return _Parsed(source, None, failed, digest, size)
        return _Parsed(source, doc, None, digest, size)

    def _store(
        self,
        conn: Connection,
        kb: KnowledgeBase,
        job_id: int,
        parsed: list[_Parsed],
        item_ids: Sequence[int],
    ) -> JobStatus:
        # One staging writer per knowledge base at a time (two jobs may carry the same
        # document), and only the sources this transaction takes off the job.
        lock(conn, "kb_documents", kb.id)
        mine = staging.take(conn, item_ids)
        batch = [p for p, item in zip(parsed, item_ids, strict=True) if item in mine]
        ids = [p.source.external_id for p in batch]
        existing = {
            row.external_id: row
            for row in conn.execute(
                select(
                    documents.c.id,
                    documents.c.external_id,
                    documents.c.content_hash,
                    documents.c.status,
                ).where(documents.c.kb_id == kb.id, documents.c.external_id.in_(ids))
            )
        }
        now = datetime.now(UTC)
        failed, skipped = 0, 0
        errors: list[dict[str, str]] = []
        for item in batch:
            source = item.source
            old = existing.get(source.external_id)
            if item.doc is None:
                failed += 1
                assert item.error is not None
                errors.append({"document": source.external_id, "error": item.error.message})
                if old is None:  # recorded, so that it can be listed; an older version stays
                    conn.execute(
                        insert(documents).values(
                            kb_id=kb.id,
                            org_id=kb.org_id,
                            external_id=source.external_id,
                            title=None,
                            source=source.source or source.filename,
                            content_type=source.content_type,
                            format="unknown",
                            content_hash=item.content_hash,
                            size_bytes=item.size,
                            original=None,
                            text="",
                            metadata=source.metadata,
                            status=DocumentStatus.FAILED,
                            error=item.error.message,
                            chunk_count=0,
                            job_id=job_id,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                continue
            doc = item.doc
            if (
                old is not None
                and old.content_hash == item.content_hash
                and old.status == DocumentStatus.READY
            ):
                skipped += 1
                continue
            values = {
                "title": doc.title,
                "source": source.source or source.filename,
                "content_type": source.content_type,
                "format": doc.format,
                "content_hash": item.content_hash,
                "size_bytes": item.size,
                "original": source.data,
                "text": doc.text,
                "metadata": {**doc.metadata, **source.metadata},
                "status": DocumentStatus.PENDING,
                "error": None,
                "job_id": job_id,
                "updated_at": now,
            }
            if old is None:
                conn.execute(
                    insert(documents).values(
                        kb_id=kb.id,
                        org_id=kb.org_id,
                        external_id=source.external_id,
                        chunk_count=0,
                        created_at=now,
                        **values,
                    )
                )
            else:
                conn.execute(update(documents).where(documents.c.id == old.id).values(**values))
        job = conn.execute(
            select(ingestion_jobs).where(ingestion_jobs.c.id == job_id).with_for_update()
        ).one()
        conn.execute(
            update(ingestion_jobs)
            .where(ingestion_jobs.c.id == job_id)
            .values(
                failed=job.failed + failed,
                skipped=job.skipped + skipped,
                errors=[*(job.errors or []), *errors],
            )
        )
        return job_of(
            conn.execute(select(ingestion_jobs).where(ingestion_jobs.c.id == job_id)).one()
        )

    # -- step 2: chunk, embed, index -------------------------------------------------------

    async def process(self, kb: KnowledgeBase, progress: Progress | None = None) -> int:
        """Make every pending document of ``kb`` searchable; returns how many were.

        Each pass walks the pending documents in id order, batch by batch, with three stages
        at work at once: the next batch is read and chunked while this one is embedded, and
        the one before is written. Passes repeat until one finds nothing, which picks up a
        document staged again while a pass was running."""
        total = 0
        while processed := await self._pass(kb, progress):
            total += processed
        await self.db.write(lambda conn: self._finish_jobs(conn, kb))
        return total

    async def _pass(self, kb: KnowledgeBase, progress: Progress | None) -> int:
        async def prepare(after: int) -> list[_Prepared] | None:
            rows = await self.db.read(lambda conn: self._pending(conn, kb, after))
            if not rows:
                return None
            return await asyncio.to_thread(lambda: [self._chunk(kb, row) for row in rows])

        def report(statuses: list[JobStatus]) -> None:
            if progress:
                for status in statuses:
                    progress(status)

        count = 0
        writing: asyncio.Future[list[JobStatus]] | None = None
        upcoming: asyncio.Future[list[_Prepared] | None] = asyncio.ensure_future(prepare(0))
        try:
            while (prepared := await upcoming) is not None:
                upcoming = asyncio.ensure_future(prepare(prepared[-1][0].id))
                texts = [text for _row, pieces, _err in prepared for _c, text in pieces]
                vectors = (await self.embedder.embed(texts)).vectors if texts else np.zeros((0, 0))
                if writing is not None:
                    report(await writing)
                writing = asyncio.ensure_future(
                    self.db.write(
                        lambda conn, p=prepared, v=vectors: self._index(conn, kb, p, v)  # type: ignore[misc]
                    )
                )
                count += len(prepared)
            if writing is not None:
                report(await writing)
        finally:
            upcoming.cancel()
        return count

    def _pending(self, conn: Connection, kb: KnowledgeBase, after: int) -> list[Any]:
        return list(
            conn.execute(
                select(
                    documents.c.id,
                    documents.c.external_id,
                    documents.c.title,
                    documents.c.text,
                    documents.c.original,
                    documents.c.source,
                    documents.c.content_type,
                    documents.c.format,
                    documents.c.content_hash,
                    documents.c.job_id,
                )
                .where(
                    documents.c.kb_id == kb.id,
                    documents.c.status == DocumentStatus.PENDING,
                    documents.c.id > after,
                )
                .order_by(documents.c.id)
                .limit(self.batch_documents)
            )
        )

    def _chunk(self, kb: KnowledgeBase, row: Any) -> _Prepared:
        """The row's chunks, each with the text to embed (title first, for context)."""
        try:
            if row.original is not None:
                doc = self.sandbox.parse(
                    row.original, row.source, row.content_type, known_format=row.format
                )
            else:
                record = CorpusRecord(0, row.external_id, row.title, row.text, {})
                doc = parse_record(record)
        except InvalidDocument as exc:  # it parsed when staged; a parser change could break it
            return row, [], exc.message
        pieces = chunk_document(
            doc,
            max_tokens=kb.chunk_tokens,
            overlap_tokens=kb.chunk_overlap,
            count=self.count_tokens,
        )
        title = (row.title or "").strip()
        return row, [(c, f"{title}\n{c.text}" if title else c.text) for c in pieces], None

    def _index(
        self,
        conn: Connection,
        kb: KnowledgeBase,
        prepared: list[_Prepared],
        vectors: np.ndarray[Any, Any],
    ) -> list[JobStatus]:
        now = datetime.now(UTC)
        done: dict[int, int] = {}
        failed: dict[int, list[dict[str, str]]] = {}
        # Another worker (a second replica, say) may have indexed a document, or it may have
        # changed, while this one embedded it: the row locks (taken in id order, so two workers
        # never deadlock) order the two, and only a document still pending with the text that
        # was embedded is written. One statement per step for the whole batch.
        current = {
            r.id: (r.status, r.content_hash)
            for r in conn.execute(
                select(documents.c.id, documents.c.status, documents.c.content_hash)
                .where(documents.c.id.in_([row.id for row, _p, _e in prepared]))
                .order_by(documents.c.id)
                .with_for_update()
            )
        }
        offset = 0
        writable: list[int] = []
        chunk_rows: list[dict[str, Any]] = []
        ready: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for row, pieces, error in prepared:
            first, offset = offset, offset + len(pieces)
            if current.get(row.id) != (DocumentStatus.PENDING, row.content_hash):
                continue
            writable.append(row.id)
            if error is not None:
                failures.append({"b_id": row.id, "b_error": error})
                if row.job_id is not None:
                    failed.setdefault(row.job_id, []).append(
                        {"document": row.external_id, "error": error}
                    )
                continue
            for position, (chunk, _text) in enumerate(pieces):
                chunk_rows.append(
                    {
                        "document_id": row.id,
                        "kb_id": kb.id,
                        "org_id": kb.org_id,
                        "position": chunk.index,
                        "text": chunk.text,
                        "headings": list(chunk.headings),
                        "page_start": chunk.page_start,
                        "page_end": chunk.page_end,
                        "tokens": chunk.tokens,
                        "embedding": np.ascontiguousarray(
                            vectors[first + position], dtype="<f4"
                        ).tobytes(),
                    }
                )
            ready.append({"b_id": row.id, "b_count": len(pieces)})
            if row.job_id is not None:
                done[row.job_id] = done.get(row.job_id, 0) + 1
        if writable:
            conn.execute(chunks.delete().where(chunks.c.document_id.in_(writable)))
        if chunk_rows:
            conn.execute(insert(chunks), chunk_rows)
        if ready:
            conn.execute(
                update(documents)
                .where(documents.c.id == bindparam("b_id"))
                .values(
                    status=DocumentStatus.READY, chunk_count=bindparam("b_count"), updated_at=now
                ),
                ready,
            )
        if failures:
            conn.execute(
                update(documents)
                .where(documents.c.id == bindparam("b_id"))
                .values(
                    status=DocumentStatus.FAILED,
                    error=bindparam("b_error"),
                    chunk_count=0,
                    updated_at=now,
                ),
                failures,
            )
        bases.bump_version(conn, kb.id)
        statuses = []
        for job_id in sorted(set(done) | set(failed)):
            job = conn.execute(
                select(ingestion_jobs).where(ingestion_jobs.c.id == job_id).with_for_update()
            ).one()
            conn.execute(
                update(ingestion_jobs)
                .where(ingestion_jobs.c.id == job_id)
                .values(
                    done=job.done + done.get(job_id, 0),
                    failed=job.failed + len(failed.get(job_id, [])),
                    errors=[*(job.errors or []), *failed.get(job_id, [])],
                )
            )
            statuses.append(
                job_of(
                    conn.execute(select(ingestion_jobs).where(ingestion_jobs.c.id == job_id)).one()
                )
            )
        return statuses

    def _finish_jobs(self, conn: Connection, kb: KnowledgeBase) -> None:
        """Mark done the running jobs of ``kb`` that have nothing pending left."""
        pending = (
            select(func.count())
            .select_from(documents)
            .where(
                documents.c.job_id == ingestion_jobs.c.id,
                documents.c.status == DocumentStatus.PENDING,
            )
            .scalar_subquery()
        )
        conn.execute(
            update(ingestion_jobs)
            .where(
                ingestion_jobs.c.kb_id == kb.id,
                ingestion_jobs.c.status == "running",  # not while sources wait to be staged
                pending == 0,
            )
            .values(status="done", finished_at=datetime.now(UTC))
        )
