"""Knowledge bases as one server process runs them: ingestion in the background, search.

A request that adds documents is answered once they are *staged* (parsed and stored as
pending, see :mod:`concierge.knowledge.ingest`); chunking and embedding continue in a
background task per knowledge base, and the job's status says how far they got. Pending work
is in the database, so a process that stops (or is killed) mid-way leaves nothing lost:
:meth:`Knowledge.resume` at the next start-up finishes it. The API, the CLI and, later, the
reply pipeline all go through this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from concierge.config import Settings
from concierge.egress import Egress, EgressPolicy
from concierge.errors import ConciergeError
from concierge.knowledge import bases, staging
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.documents import DocumentStatus
from concierge.knowledge.fetch import fetch
from concierge.knowledge.ingest import Ingestor, Progress
from concierge.knowledge.jobs import JobStatus, get_job
from concierge.knowledge.parsers import Parsers
from concierge.knowledge.sandbox import Limits, Sandbox
from concierge.knowledge.search import Hit, Mode, SearchIndex, best_per_document
from concierge.knowledge.sources import Source
from concierge.models.base import EmbeddingModel
from concierge.models.registry import ModelRegistry
from concierge.store import Database
from concierge.store.tables import documents, knowledge_bases

log = logging.getLogger(__name__)
RETRY_SECONDS = (5.0, 30.0, 120.0)  # after a failed background run (an embedder error, say)


class Knowledge:
    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        settings: Settings,
        *,
        parsers: Parsers,
        egress: Egress | None = None,
    ) -> None:
        """``egress``: the server's outbound sessions (URL fetches); None: one of its own
        under the settings' policy, closed with this object. ``parsers``: the document formats
        it reads (``Parsers.from_plugins``: those the plugins register)."""
        self.db = db
        self.registry = registry
        self.settings = settings
        self._owns_egress = egress is None
        self.egress = egress or Egress(EgressPolicy.from_settings(settings.egress_allowed_networks))
        self.sandbox = Sandbox(
            Limits(
                timeout_seconds=settings.knowledge_parse_timeout_seconds,
                max_memory_bytes=settings.knowledge_parse_max_memory_mb * 1024 * 1024,
                max_expanded_bytes=settings.knowledge_max_expanded_bytes,
                max_document_bytes=settings.knowledge_max_document_bytes,
            ),
            parsers,
        )
        self.index = SearchIndex(db)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._staging: set[asyncio.Task[None]] = set()
        self._dirty: set[int] = set()

    # -- knowledge bases -------------------------------------------------------------------

    @property
    def default_embedding_model(self) -> str:
        if self.settings.knowledge_embedding_model:
            return self.settings.knowledge_embedding_model
        # The int8 encoder ingests ~1.4x faster with the same retrieval quality on SciFact
        # (benchmarks/README.md); the float32 one stays the reference for /v1/embeddings.
        return self.settings.embedding_model_name + "-int8"

    async def create(self, org_id: int, name: str, **options: Any) -> KnowledgeBase:
        model = options.pop("embedding_model", None) or self.default_embedding_model
        self.registry.embedder(model)  # an unknown model is refused before anything is stored
        options.setdefault("chunk_tokens", self.settings.knowledge_chunk_tokens)
        options.setdefault("chunk_overlap", self.settings.knowledge_chunk_overlap)
        return await self.db.write(
            lambda conn: bases.create(conn, org_id, name, embedding_model=model, **options)
        )

    async def get(self, org_id: int, ref: int | str) -> KnowledgeBase:
        return await self.db.read(lambda conn: bases.get(conn, org_id, ref))

    def embedder(self, kb: KnowledgeBase) -> EmbeddingModel:
        return self.registry.embedder(kb.embedding_model)

    def ingestor(self, kb: KnowledgeBase) -> Ingestor:
        embedder = self.embedder(kb)
        return Ingestor(
            self.db,
            embedder,
            count_tokens=embedder.count_tokens,
            sandbox=self.sandbox,
            batch_documents=self.settings.knowledge_batch_documents,
            fetch=self.fetch_source,
        )

    # -- ingestion -------------------------------------------------------------------------

    async def add(self, kb: KnowledgeBase, sources: Sequence[Source]) -> JobStatus:
        """Record ``sources`` as one job (atomically), stage them and process them in the
        background; the job as staged (each source that could not be fetched or parsed is
        already counted as failed, with its error).

        Staging runs in a task of its own: a caller that goes away (a client that hangs up)
        does not stop it, and one that a crash stops is resumed at the next start."""
        ingestor = self.ingestor(kb)
        job_id = await self.db.write(lambda conn: ingestor.create_job(conn, kb, sources))
        await asyncio.shield(self._stage(kb, job_id))
        return await self.job(kb.org_id, job_id)

    def _stage(self, kb: KnowledgeBase, job_id: int) -> asyncio.Task[None]:
        """A task that stages the job, then has its documents processed."""

        async def run() -> None:
            try:
                await self.ingestor(kb).stage(kb, job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("staging job %s failed; it resumes at the next start", job_id)
                raise
            self.schedule(kb)

        task = asyncio.create_task(run(), name=f"staging-{job_id}")
        self._staging.add(task)
        task.add_done_callback(self._staging.discard)
        return task

    async def fetch_source(
        self, url: str, external_id: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Source:
        """A URL's document as a source; a failed fetch becomes that source's error."""
        from concierge.errors import InvalidDocument

        try:
            got = await fetch(
                url,
                self.egress,
                max_bytes=self.settings.knowledge_max_document_bytes,
                timeout=self.settings.fetch_timeout_seconds,
            )
        except InvalidDocument as exc:
            return Source(external_id or url, source=url, error=exc)
        return Source(
            external_id or url,
            got.data,
            filename=got.filename,
            content_type=(got.content_type or "")[:200] or None,  # a header: any length
            source=got.url,
            metadata={"url": got.url, **(metadata or {})},
        )

    async def job(self, org_id: int, job_id: int) -> JobStatus:
        return await self.db.read(lambda conn: get_job(conn, org_id, job_id))

    def schedule(self, kb: KnowledgeBase) -> None:
        """Make sure a background task processes ``kb``'s pending documents."""
        self._dirty.add(kb.id)
        if kb.id not in self._tasks:
            task = asyncio.create_task(self._run(kb), name=f"knowledge-base-{kb.id}")
            self._tasks[kb.id] = task

    async def _run(self, kb: KnowledgeBase) -> None:
        failures = 0
        try:
            while kb.id in self._dirty:
                self._dirty.discard(kb.id)
                try:
                    await self.ingestor(kb).process(kb)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if failures == len(RETRY_SECONDS):
                        log.exception(
                            "knowledge base %s: ingestion failed; it resumes at the next start",
                            kb.id,
                        )
                        return
                    log.warning(
                        "knowledge base %s: ingestion failed; retrying in %.0f s",
                        kb.id,
                        RETRY_SECONDS[failures],
                        exc_info=True,
                    )
                    await asyncio.sleep(RETRY_SECONDS[failures])
                    failures += 1
                    self._dirty.add(kb.id)
        finally:
            self._tasks.pop(kb.id, None)

    async def resume(self) -> int:
        """Stage every job a stopped process left staging, and schedule every knowledge base
        with pending documents; how many knowledge bases there were."""

        def pending(conn: Connection) -> list[Any]:
            ids = (
                select(documents.c.kb_id)
                .where(documents.c.status == DocumentStatus.PENDING)
                .distinct()
            )
            return list(conn.execute(select(knowledge_bases).where(knowledge_bases.c.id.in_(ids))))

        for org_id, kb_id, job_id in await self.db.read(staging.unfinished):
            try:
                kb = await self.get(org_id, kb_id)
                self.embedder(kb)
            except ConciergeError as exc:
                log.warning("ingestion job %s cannot resume: %s", job_id, exc)
                continue
            self._stage(kb, job_id)
        rows = await self.db.read(pending)
        for row in rows:
            kb = await self.get(row.org_id, row.id)
            try:
                self.embedder(kb)
            except ConciergeError as exc:  # its model is not configured on this server
                log.warning("knowledge base %s cannot resume ingestion: %s", kb.id, exc)
                continue
            self.schedule(kb)
        return len(rows)

    async def wait(self, kb_id: int | None = None) -> None:
        """Wait until background ingestion (of one knowledge base, or all) is idle."""
        while True:
            tasks = [t for k, t in self._tasks.items() if kb_id is None or k == kb_id]
            tasks += list(self._staging)
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop background work; what is left stays pending for the next start."""
        tasks = [*self._tasks.values(), *self._staging]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_egress:
            await self.egress.close()
        await asyncio.to_thread(self.sandbox.close)

    # -- search ----------------------------------------------------------------------------

    async def search(
        self,
        kb: KnowledgeBase,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        alpha: float | None = None,
        query_vector: Any = None,
        version: int | None = None,
    ) -> list[Hit]:
        """``version``: the knowledge base's version as the caller just read it (saves a
        database round trip); by default it is read here."""
        return await self.index.search(
            kb.org_id,
            kb.id,
            query,
            self.embedder(kb),
            k=k,
            mode=mode,
            filters=filters,
            alpha=self.settings.knowledge_convex_alpha if alpha is None else alpha,
            query_vector=query_vector,
            version=version,
        )

    async def search_documents(
        self,
        kb: KnowledgeBase,
        queries: Sequence[str],
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        alpha: float | None = None,
    ) -> list[list[Hit]]:
        """For each query, its ``k`` best documents (each at its best chunk), for evaluation
        runs; the queries are embedded together."""
        vectors: list[Any] = [None] * len(queries)
        if mode != "bm25" and queries:
            vectors = list((await self.embedder(kb).embed(list(queries))).vectors)
        out = []
        for query, vector in zip(queries, vectors, strict=True):
            # Chunks of one document crowd each other out: ask for more, keep one per document.
            hits = await self.search(
                kb,
                query,
                k=min(1000, k * 4),
                mode=mode,
                filters=filters,
                alpha=alpha,
                query_vector=vector,
            )
            out.append(best_per_document(hits, k))
        return out


async def ingest_now(
    knowledge: Knowledge,
    kb: KnowledgeBase,
    sources: Sequence[Source],
    progress: Progress | None = None,
) -> JobStatus:
    """Ingest in the foreground (the CLI): pending work of earlier runs first, then ``sources``."""
    ingestor = knowledge.ingestor(kb)
    await ingestor.process(kb, progress)
    return await ingestor.ingest(kb, sources, progress)
