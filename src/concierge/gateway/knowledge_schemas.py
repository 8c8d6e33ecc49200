"""Request bodies of the knowledge-base and OpenAI vector-store routes, checked on the way in."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from concierge.gateway.schemas import Name, Strict

# -- knowledge bases ------------------------------------------------------------------------

Metadata = dict[str, Annotated[str, Field(max_length=2000)] | int | float | bool]
SearchMode = Literal["bm25", "vector", "hybrid", "convex"]


class KnowledgeBaseIn(Strict):
    name: Name
    description: Annotated[str, Field(max_length=4000)] | None = None
    embedding_model: Name | None = Field(
        None, description="An embedding model from GET /v1/models; default the server's."
    )
    chunk_tokens: int | None = Field(None, ge=32, le=8192)
    chunk_overlap: int | None = Field(None, ge=0, le=4000)
    metadata: Metadata | None = Field(None, max_length=64)


class KnowledgeBaseUpdate(Strict):
    name: Name | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None
    metadata: Metadata | None = Field(None, max_length=64)


class TextDocumentIn(Strict):
    id: Annotated[str, Field(min_length=1, max_length=500)]
    text: Annotated[str, Field(max_length=50_000_000)]
    title: Annotated[str, Field(max_length=2000)] | None = None
    metadata: Metadata = Field(default_factory=dict, max_length=64)


class UrlDocumentIn(Strict):
    url: Annotated[str, Field(min_length=1, max_length=4000)]
    id: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    metadata: Metadata = Field(default_factory=dict, max_length=64)


class DocumentsIn(Strict):
    """Documents given as text, or as URLs for the server to fetch (or both)."""

    documents: list[TextDocumentIn] = Field(default_factory=list, max_length=10_000)
    urls: list[UrlDocumentIn] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _something(self) -> DocumentsIn:
        if not self.documents and not self.urls:
            raise ValueError("give at least one document or URL")
        for u in self.urls:
            if u.id is None and len(u.url) > 500:
                raise ValueError("a URL longer than 500 characters needs an id")
        ids = [d.id for d in self.documents] + [u.id or u.url for u in self.urls]
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique within one request")
        return self


class SearchIn(Strict):
    query: Annotated[str, Field(min_length=1, max_length=10_000)]
    k: int = Field(10, ge=1, le=1000)
    mode: SearchMode = "hybrid"
    filters: dict[str, Any] | None = Field(
        None,
        description='Metadata filter: {"key": value, ...} (all must match), or OpenAI\'s '
        "comparison and compound filters.",
    )
    alpha: float | None = Field(
        None, ge=0, le=1, description="mode=convex: the weight of BM25 (default configured)."
    )


# -- OpenAI vector stores -------------------------------------------------------------------


class StaticChunking(Strict):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)


class ChunkingStrategy(Strict):
    type: Literal["auto", "static"]
    static: StaticChunking | None = None


class ExpiresAfter(Strict):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


VectorStoreMetadata = dict[
    Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]
]
Attributes = dict[
    Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)] | float | bool
]


class VectorStoreIn(Strict):
    name: Name | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None
    file_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=500
    )
    chunking_strategy: ChunkingStrategy | None = None
    expires_after: ExpiresAfter | None = Field(
        None, description="Accepted for compatibility; stores do not expire here."
    )
    metadata: VectorStoreMetadata | None = Field(None, max_length=16)


class VectorStoreUpdate(Strict):
    name: Name | None = None
    expires_after: ExpiresAfter | None = None
    metadata: VectorStoreMetadata | None = Field(None, max_length=16)


class VectorStoreFileIn(Strict):
    file_id: Annotated[str, Field(min_length=1, max_length=64)]
    attributes: Attributes | None = Field(None, max_length=16)
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileBatchIn(Strict):
    file_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=500
    )
    attributes: Attributes | None = Field(None, max_length=16)
    chunking_strategy: ChunkingStrategy | None = None


class RankingOptions(Strict):
    ranker: Literal["auto", "default-2024-11-15", "none", "bm25", "vector", "hybrid"] = "auto"
    score_threshold: float = Field(0.0, ge=0, le=1)


class VectorStoreSearchIn(Strict):
    query: (
        Annotated[str, Field(min_length=1, max_length=10_000)]
        | Annotated[
            list[Annotated[str, Field(min_length=1, max_length=10_000)]],
            Field(min_length=1, max_length=10),
        ]
    )
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = Field(False, description="Accepted; queries are not rewritten.")
