"""OpenAI's vector stores API, over Concierge's knowledge bases (its files: ``gateway/files``).

A vector store *is* a knowledge base (``vs_<id>``), so stores made here show up in
``/v1/knowledge_bases`` and the reverse. A vector store file is a document whose external id is
the file's id. Chunking, embedding and search are Concierge's own: hybrid retrieval (BM25 +
vectors, reciprocal rank fusion) unless ``ranking_options.ranker`` picks ``bm25``, ``vector``
or ``hybrid``; a result's ``score`` is that ranking's score. Filters are OpenAI's comparison
and compound filters over the file's attributes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from concierge.errors import InvalidRequest, NotFound
from concierge.gateway.auth import InferenceKey, KnowledgeKey
from concierge.gateway.knowledge_schemas import (
    ChunkingStrategy,
    VectorStoreFileBatchIn,
    VectorStoreFileIn,
    VectorStoreIn,
    VectorStoreSearchIn,
    VectorStoreUpdate,
)
from concierge.gateway.responses import JSON
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.knowledge import bases, documents, files
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.documents import Document, DocumentStatus
from concierge.knowledge.jobs import JobStatus
from concierge.knowledge.service import Knowledge
from concierge.knowledge.sources import Source

router = APIRouter(prefix="/v1")
STORE_ID = re.compile(r"^vs_([0-9]{1,18})$")
BATCH_ID = re.compile(r"^vsfb_([0-9]{1,18})$")
_FILE_STATUS = {"pending": "in_progress", "ready": "completed", "failed": "failed"}


def _knowledge(request: Request) -> Knowledge:
    knowledge = concierge(request).knowledge
    return knowledge


def _page(data: list[dict[str, Any]], has_more: bool) -> JSON:
    """A list page in OpenAI's cursor shape."""
    return JSON(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


def _ts(value: Any) -> int:
    return int(value.timestamp())


# -- vector stores --------------------------------------------------------------------------


async def _store(request: Request, key: ApiKey, store_id: str) -> KnowledgeBase:
    match = STORE_ID.match(store_id)
    if match is None:
        raise NotFound(f"No vector store found with id '{store_id}'.", param="vector_store_id")
    try:
        return await _knowledge(request).get(key.org_id, int(match[1]))
    except NotFound:
        raise NotFound(
            f"No vector store found with id '{store_id}'.", param="vector_store_id"
        ) from None


async def _store_dict(request: Request, kb: KnowledgeBase) -> dict[str, Any]:
    counts = await _knowledge(request).db.read(lambda conn: documents.counts(conn, kb))
    created = _ts(kb.created_at)
    return {
        "id": f"vs_{kb.id}",
        "object": "vector_store",
        "created_at": created,
        "name": kb.name,
        "description": kb.description,
        "usage_bytes": counts["bytes"],
        "file_counts": {
            "in_progress": counts["pending"],
            "completed": counts["ready"],
            "failed": counts["failed"],
            "cancelled": 0,
            "total": counts["pending"] + counts["ready"] + counts["failed"],
        },
        "status": "in_progress" if counts["pending"] else "completed",
        "expires_after": None,
        "expires_at": None,
        "last_active_at": created,
        "metadata": kb.metadata or {},
    }


def _chunking(kb: KnowledgeBase) -> dict[str, Any]:
    return {
        "type": "static",
        "static": {
            "max_chunk_size_tokens": kb.chunk_tokens,
            "chunk_overlap_tokens": kb.chunk_overlap,
        },
    }


def _file_dict(kb: KnowledgeBase, doc: Document) -> dict[str, Any]:
    error = None
    if doc.status == DocumentStatus.FAILED:
        code = "unsupported_file" if "not supported" in (doc.error or "") else "invalid_file"
        error = {"code": code, "message": doc.error or "the file could not be read"}
    return {
        "id": doc.external_id,
        "object": "vector_store.file",
        "usage_bytes": doc.size_bytes,
        "created_at": _ts(doc.created_at),
        "vector_store_id": f"vs_{kb.id}",
        "status": _FILE_STATUS.get(doc.status, doc.status),
        "last_error": error,
        "chunking_strategy": _chunking(kb),
        "attributes": doc.metadata,
    }


def _sizes(strategy: ChunkingStrategy | None) -> dict[str, int]:
    if strategy is None or strategy.type == "auto" or strategy.static is None:
        return {}
    static = strategy.static
    if static.chunk_overlap_tokens >= static.max_chunk_size_tokens // 2:
        raise InvalidRequest(
            "chunk_overlap_tokens must be less than half of max_chunk_size_tokens",
            param="chunking_strategy",
        )
    return {
        "chunk_tokens": static.max_chunk_size_tokens,
        "chunk_overlap": static.chunk_overlap_tokens,
    }


async def _file_sources(
    request: Request, key: ApiKey, file_ids: list[str], attributes: dict[str, Any] | None
) -> list[Source]:
    """The uploaded files ``file_ids`` as sources; 404 for one that is not the caller's."""
    if len(set(file_ids)) != len(file_ids):
        raise InvalidRequest("file_ids must be unique", param="file_ids")

    def load(conn: Any) -> list[Source]:
        sources = []
        for file_id in file_ids:
            found = files.get(conn, key.org_id, file_id)
            sources.append(
                Source(
                    file_id,
                    files.content(conn, key.org_id, file_id),
                    filename=found.filename,
                    content_type=found.content_type,
                    source=found.filename,
                    metadata=dict(attributes or {}),
                )
            )
        return sources

    return await _knowledge(request).db.read(load)


async def _add_files(
    request: Request,
    key: ApiKey,
    kb: KnowledgeBase,
    file_ids: list[str],
    attributes: dict[str, Any] | None,
) -> JobStatus:
    sources = await _file_sources(request, key, file_ids, attributes)
    return await _knowledge(request).add(kb, sources)


@router.post("/vector_stores", tags=["Vector stores (OpenAI)"], summary="Create a vector store")
async def create_store(body: VectorStoreIn, request: Request, key: KnowledgeKey) -> JSON:
    import secrets

    name = body.name or f"vector-store-{secrets.token_hex(4)}"
    # Files first: an unknown one is a 404 before anything is created.
    sources = await _file_sources(request, key, body.file_ids, None)
    kb = await _knowledge(request).create(
        key.org_id,
        name,
        description=body.description,
        metadata=body.metadata,
        **_sizes(body.chunking_strategy),
    )
    if sources:
        await _knowledge(request).add(kb, sources)
    return JSON(await _store_dict(request, kb))


@router.get("/vector_stores", tags=["Vector stores (OpenAI)"], summary="List vector stores")
async def list_stores(
    request: Request,
    key: InferenceKey,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = Query(None, max_length=64),
    before: str | None = Query(None, max_length=64),
) -> JSON:
    rows = await _knowledge(request).db.read(lambda conn: bases.list_all(conn, key.org_id))
    rows.sort(key=lambda kb: kb.id, reverse=order == "desc")
    ids = [f"vs_{kb.id}" for kb in rows]
    if after in ids:
        rows = rows[ids.index(after) + 1 :]
    elif before in ids:
        rows = rows[: ids.index(before)]
    page = rows[:limit]
    data = [await _store_dict(request, kb) for kb in page]
    return _page(data, len(rows) > limit)


@router.get(
    "/vector_stores/{vector_store_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Retrieve a vector store",
)
async def get_store(vector_store_id: str, request: Request, key: InferenceKey) -> JSON:
    return JSON(await _store_dict(request, await _store(request, key, vector_store_id)))


@router.post(
    "/vector_stores/{vector_store_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Modify a vector store",
)
async def modify_store(
    vector_store_id: str, body: VectorStoreUpdate, request: Request, key: KnowledgeKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    updated = await _knowledge(request).db.write(
        lambda conn: bases.update_kb(
            conn, key.org_id, kb.id, name=body.name, metadata=body.metadata
        )
    )
    return JSON(await _store_dict(request, updated))


@router.delete(
    "/vector_stores/{vector_store_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Delete a vector store",
)
async def delete_store(vector_store_id: str, request: Request, key: KnowledgeKey) -> JSON:
    kb = await _store(request, key, vector_store_id)
    await _knowledge(request).db.write(lambda conn: bases.delete_kb(conn, key.org_id, kb.id))
    return JSON({"id": vector_store_id, "object": "vector_store.deleted", "deleted": True})


# -- vector store files ---------------------------------------------------------------------


@router.post(
    "/vector_stores/{vector_store_id}/files",
    tags=["Vector stores (OpenAI)"],
    summary="Add a file to a vector store",
)
async def add_store_file(
    vector_store_id: str, body: VectorStoreFileIn, request: Request, key: KnowledgeKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    await _add_files(request, key, kb, [body.file_id], body.attributes)
    doc = await _knowledge(request).db.read(lambda conn: documents.get(conn, kb, body.file_id))
    return JSON(_file_dict(kb, doc))


@router.get(
    "/vector_stores/{vector_store_id}/files",
    tags=["Vector stores (OpenAI)"],
    summary="List a vector store's files",
)
async def list_store_files(
    vector_store_id: str,
    request: Request,
    key: InferenceKey,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    status = {v: k for k, v in _FILE_STATUS.items()}.get(filter) if filter else None
    if filter == "cancelled":
        return JSON({"object": "list", "data": [], "has_more": False})

    def read(conn: Any) -> tuple[list[Document], bool]:
        start = None
        if after:
            start = documents.get(conn, kb, after).id
        return documents.list_page(conn, kb, limit=limit, after=start, status=status)

    rows, more = await _knowledge(request).db.read(read)
    data = [_file_dict(kb, d) for d in rows]
    return _page(data, more)


@router.get(
    "/vector_stores/{vector_store_id}/files/{file_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Retrieve a vector store file",
)
async def get_store_file(
    vector_store_id: str, file_id: str, request: Request, key: InferenceKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    doc = await _knowledge(request).db.read(lambda conn: documents.get(conn, kb, file_id))
    return JSON(_file_dict(kb, doc))


@router.delete(
    "/vector_stores/{vector_store_id}/files/{file_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Remove a file from a vector store",
)
async def delete_store_file(
    vector_store_id: str, file_id: str, request: Request, key: KnowledgeKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    await _knowledge(request).db.write(lambda conn: documents.delete(conn, kb, file_id))
    return JSON({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})


# -- file batches ---------------------------------------------------------------------------


def _batch_dict(kb: KnowledgeBase, job: JobStatus) -> dict[str, Any]:
    completed = job.done + job.skipped
    return {
        "id": f"vsfb_{job.id}",
        "object": "vector_store.files_batch",
        "created_at": _ts(job.created_at),
        "vector_store_id": f"vs_{kb.id}",
        "status": "completed" if job.status == "done" else "in_progress",
        "file_counts": {
            "in_progress": job.pending,
            "completed": completed,
            "failed": job.failed,
            "cancelled": 0,
            "total": job.total,
        },
    }


async def _batch(request: Request, key: ApiKey, kb: KnowledgeBase, batch_id: str) -> JobStatus:
    match = BATCH_ID.match(batch_id)
    job = None
    if match is not None:
        try:
            job = await _knowledge(request).job(key.org_id, int(match[1]))
        except NotFound:
            job = None
    if job is None or job.kb_id != kb.id:
        raise NotFound(f"No file batch found with id '{batch_id}'.", param="batch_id")
    return job


@router.post(
    "/vector_stores/{vector_store_id}/file_batches",
    tags=["Vector stores (OpenAI)"],
    summary="Add several files to a vector store",
)
async def create_batch(
    vector_store_id: str, body: VectorStoreFileBatchIn, request: Request, key: KnowledgeKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    job = await _add_files(request, key, kb, body.file_ids, body.attributes)
    return JSON(_batch_dict(kb, job))


@router.get(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}",
    tags=["Vector stores (OpenAI)"],
    summary="Retrieve a file batch",
)
async def get_batch(
    vector_store_id: str, batch_id: str, request: Request, key: InferenceKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    return JSON(_batch_dict(kb, await _batch(request, key, kb, batch_id)))


@router.get(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
    tags=["Vector stores (OpenAI)"],
    summary="List the files of a file batch",
)
async def list_batch_files(
    vector_store_id: str,
    batch_id: str,
    request: Request,
    key: InferenceKey,
    limit: int = Query(20, ge=1, le=100),
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    job = await _batch(request, key, kb, batch_id)

    rows, more = await _knowledge(request).db.read(
        lambda conn: documents.list_page(conn, kb, limit=limit, job_id=job.id)
    )
    data = [_file_dict(kb, d) for d in rows]
    return _page(data, more)


# -- search ---------------------------------------------------------------------------------


@router.post(
    "/vector_stores/{vector_store_id}/search",
    tags=["Vector stores (OpenAI)"],
    summary="Search a vector store",
)
async def search_store(
    vector_store_id: str, body: VectorStoreSearchIn, request: Request, key: InferenceKey
) -> JSON:
    kb = await _store(request, key, vector_store_id)
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    ranking = body.ranking_options
    ranker = ranking.ranker if ranking else "auto"
    mode = ranker if ranker in ("bm25", "vector", "hybrid") else "hybrid"
    threshold = ranking.score_threshold if ranking else 0.0
    hits = await _knowledge(request).search(
        kb,
        " ".join(queries),
        k=body.max_num_results,
        mode=mode,
        filters=body.filters,
    )
    data = [
        {
            "file_id": hit.external_id,
            "filename": hit.source or hit.title or hit.external_id,
            "score": hit.score,
            "attributes": hit.metadata,
            "content": [{"type": "text", "text": hit.text}],
        }
        for hit in hits
        if hit.score >= threshold
    ]
    return JSON(
        {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": data,
            "has_more": False,
            "next_page": None,
        }
    )
