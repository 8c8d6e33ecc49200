"""Retrieval over one knowledge base: BM25, vectors, and the two fused.

The database is the only source of truth. Each API process keeps, per knowledge base it has
searched, an in-memory index built from the database's chunks: a BM25 index (bm25s, English
stemming and stop words) over title + chunk text, and the chunks' unit vectors as one float32
matrix (exact cosine search with one matrix product). Every search first reads the knowledge
base's ``version`` with the caller's organisation in the query (which is also the tenant check)
and rebuilds the index when it changed, so every replica answers from the same data the
database holds.

Modes: ``bm25``; ``vector``; ``hybrid``, reciprocal rank fusion of the two rankings (k = 60);
``convex``, ``alpha * bm25 + (1 - alpha) * cosine`` after scaling each to [0, 1] over the
candidates. Metadata filters (see :mod:`concierge.knowledge.filters`) apply before ranking.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, select

from concierge.errors import InvalidRequest, NotFound
from concierge.knowledge.chunking import cite
from concierge.knowledge.documents import DocumentStatus
from concierge.knowledge.filters import Predicate, compile_filter
from concierge.models.base import EmbeddingModel
from concierge.store import Database
from concierge.store.tables import chunks, documents, knowledge_bases

Mode = Literal["bm25", "vector", "hybrid", "convex"]
MODES: tuple[Mode, ...] = ("bm25", "vector", "hybrid", "convex")
RRF_K = 60
CANDIDATES = 200  # per ranking, before fusion


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: int
    external_id: str
    title: str | None
    text: str
    headings: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    score: float
    source: str | None = None
    metadata: Mapping[str, Any] | None = None

    @property
    def location(self) -> str | None:
        return cite(self.page_start, self.page_end, self.headings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "external_id": self.external_id,
            "title": self.title,
            "text": self.text,
            "location": self.location,
            "headings": list(self.headings),
            "page_start": self.page_start,
            "page_end": self.page_end,
            "source": self.source,
            "metadata": dict(self.metadata or {}),
            "score": self.score,
        }


class _Index:
    """One knowledge base's chunks, held for search."""

    def __init__(self, version: int, rows: list[Any], docs: dict[int, Any]) -> None:
        import bm25s
        import Stemmer

        self.version = version
        self.rows = rows
        self.docs = docs
        self.doc_of = np.array([r.document_id for r in rows], dtype=np.int64)
        dims = len(rows[0].embedding) // 4 if rows else 0
        self.vectors: NDArray[np.float32] = (
            np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4").reshape(-1, dims)
            if rows
            else np.zeros((0, 0), dtype=np.float32)
        )
        self.stemmer = Stemmer.Stemmer("english")
        self.bm25 = bm25s.BM25()
        if rows:
            texts = [f"{docs[r.document_id].title or ''}\n{r.text}" for r in rows]
            tokens = bm25s.tokenize(
                texts, stopwords="en", stemmer=self.stemmer, show_progress=False
            )
            self.bm25.index(tokens, show_progress=False)

    def bm25_scores(self, query: str) -> NDArray[np.float32]:
        import bm25s

        if not self.rows:
            return np.zeros(0, dtype=np.float32)
        (tokens,) = bm25s.tokenize(
            [query], stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        if not tokens:
            return np.zeros(len(self.rows), dtype=np.float32)
        return np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)

    def mask(self, predicate: Predicate | None) -> NDArray[np.bool_] | None:
        if predicate is None:
            return None
        keep = {doc_id for doc_id, doc in self.docs.items() if predicate(doc.metadata or {})}
        return np.isin(self.doc_of, np.fromiter(keep, dtype=np.int64, count=len(keep)))


def _top(scores: NDArray[np.float32], k: int, allowed: NDArray[np.bool_] | None) -> list[int]:
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf).astype(np.float32)
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]


INLINE_RANK_CHUNKS = 2000  # indexes this small are ranked on the event loop (well under 1 ms)


class SearchIndex:
    """Search over knowledge bases, with a per-process cache of their indexes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._indexes: dict[int, _Index] = {}
        self._lock = threading.Lock()

    async def search(
        self,
        org_id: int,
        kb_id: int,
        query: str,
        embedder: EmbeddingModel,
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        alpha: float = 0.5,
        query_vector: NDArray[np.float32] | None = None,
        version: int | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``; ``query_vector``: its embedding, if the caller
        already has it (batch evaluation embeds all queries at once)."""
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}", param="mode")
        if not 1 <= k <= 1000:
            raise InvalidRequest("k must be between 1 and 1000", param="k")
        if not query.strip():
            raise InvalidRequest("the query is empty", param="query")
        if not 0 <= alpha <= 1:
            raise InvalidRequest("alpha must be between 0 and 1", param="alpha")
        predicate = compile_filter(filters)
        if version is None:
            version = await self.db.read(lambda conn: self._version(conn, org_id, kb_id))
        index = self._indexes.get(kb_id)
        if index is None or index.version != version:
            index = await self.db.read(lambda conn: self._load(conn, kb_id, version))
            with self._lock:
                self._indexes[kb_id] = index
        qvec = query_vector
        if mode != "bm25" and qvec is None:
            qvec = (await embedder.embed([query])).vectors[0].astype(np.float32)
        if len(index.rows) <= INLINE_RANK_CHUNKS:  # cheaper than the hop to a thread
            return self._rank(index, query, qvec, k, mode, predicate, alpha)
        return await asyncio.to_thread(self._rank, index, query, qvec, k, mode, predicate, alpha)

    def _version(self, conn: Connection, org_id: int, kb_id: int) -> int:
        row = conn.execute(
            select(knowledge_bases.c.version).where(
                knowledge_bases.c.id == kb_id, knowledge_bases.c.org_id == org_id
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"knowledge base '{kb_id}' not found", param="knowledge_base")
        return int(row.version)

    def _load(self, conn: Connection, kb_id: int, version: int) -> _Index:
        docs = {
            row.id: row
            for row in conn.execute(
                select(
                    documents.c.id,
                    documents.c.external_id,
                    documents.c.title,
                    documents.c.source,
                    documents.c.metadata,
                ).where(documents.c.kb_id == kb_id, documents.c.status == DocumentStatus.READY)
            )
        }
        rows = [
            row
            for row in conn.execute(
                select(
                    chunks.c.id,
                    chunks.c.document_id,
                    chunks.c.text,
                    chunks.c.headings,
                    chunks.c.page_start,
                    chunks.c.page_end,
                    chunks.c.embedding,
                )
                .where(chunks.c.kb_id == kb_id)
                .order_by(chunks.c.id)
            )
            if row.document_id in docs
        ]
        return _Index(version, rows, docs)

    def _rank(
        self,
        index: _Index,
        query: str,
        qvec: NDArray[np.float32] | None,
        k: int,
        mode: Mode,
        predicate: Predicate | None,
        alpha: float,
    ) -> list[Hit]:
        allowed = index.mask(predicate)
        if mode == "bm25":
            scores = index.bm25_scores(query)
            order = [i for i in _top(scores, k, allowed) if scores[i] > 0]  # no term: no hit
            return [self._hit(index, i, float(scores[i])) for i in order]
        assert qvec is not None
        cosine = index.vectors @ qvec if len(index.rows) else np.zeros(0, dtype=np.float32)
        if mode == "vector":
            order = _top(cosine, k, allowed)
            return [self._hit(index, i, float(cosine[i])) for i in order]
        bm25 = index.bm25_scores(query)
        depth = max(CANDIDATES, k)
        by_bm25 = [i for i in _top(bm25, depth, allowed) if bm25[i] > 0]
        by_vector = _top(cosine, depth, allowed)
        fused: dict[int, float] = {}
        if mode == "hybrid":
            for ranking in (by_bm25, by_vector):
                for rank, i in enumerate(ranking):
                    fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        else:
            candidates = list(dict.fromkeys(by_bm25 + by_vector))
            b, c = bm25[candidates], cosine[candidates]
            b = (b - b.min()) / ((b.max() - b.min()) or 1.0)
            c = (c - c.min()) / ((c.max() - c.min()) or 1.0)
            fused = {
                i: float(alpha * x + (1 - alpha) * y)
                for i, x, y in zip(candidates, b, c, strict=True)
            }
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        return [self._hit(index, i, fused[i]) for i in best]

    def _hit(self, index: _Index, i: int, score: float) -> Hit:
        row = index.rows[i]
        doc = index.docs[row.document_id]
        return Hit(
            chunk_id=row.id,
            document_id=row.document_id,
            external_id=doc.external_id,
            title=doc.title,
            text=row.text,
            headings=tuple(row.headings or ()),
            page_start=row.page_start,
            page_end=row.page_end,
            score=score,
            source=doc.source,
            metadata=doc.metadata or {},
        )


def best_per_document(hits: list[Hit], k: int) -> list[Hit]:
    """Each document once, at its best chunk's rank: a ranking of documents."""
    seen: set[int] = set()
    out = []
    for hit in hits:
        if hit.document_id not in seen:
            seen.add(hit.document_id)
            out.append(hit)
    return out[:k]
