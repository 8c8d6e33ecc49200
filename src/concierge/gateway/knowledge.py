"""The knowledge base API: knowledge bases, their documents, ingestion jobs, and search.

Every route works inside the organisation of the caller's API key: another organisation's
knowledge base is "not found", exactly like one that does not exist. Documents are added as
uploaded files (multipart), as text, or as URLs the server fetches; the answer (202) is the
ingestion job, which reports progress until every document is searchable or failed.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from concierge.errors import InvalidRequest, NotFound, UnsupportedDocumentType
from concierge.gateway.auth import InferenceKey, KnowledgeKey
from concierge.gateway.body import form_body, parse
from concierge.gateway.knowledge_schemas import (
    DocumentsIn,
    KnowledgeBaseIn,
    KnowledgeBaseUpdate,
    SearchIn,
)
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import MAX_ID, RowId, check_text
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.knowledge import bases, documents
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.corpus import CorpusRecord
from concierge.knowledge.service import Knowledge
from concierge.knowledge.sources import Source, corpus_sources

router = APIRouter(prefix="/v1/knowledge_bases", tags=["Knowledge bases"])
MAX_FILES = 1000
# Read with gateway.body.parse (the body is JSON or multipart); declared in _DOCUMENTS_BODY.
BODY_MODELS: list[type[BaseModel]] = [DocumentsIn]

_DOCUMENTS_BODY = form_body(
    {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more files (PDF, DOCX, HTML, Markdown, text, JSON Lines). A "
            "file's id is its name; a .jsonl file holds one document per line, each with its "
            "own _id.",
        },
        "metadata": {
            "type": "string",
            "description": "A JSON object of metadata for every file.",
        },
    },
    ["file"],
    or_json=DocumentsIn,
)


def _knowledge(request: Request) -> Knowledge:
    knowledge = concierge(request).knowledge
    return knowledge


async def _kb(request: Request, key: ApiKey, ref: str) -> KnowledgeBase:
    return await _knowledge(request).get(key.org_id, ref)


async def _described(request: Request, kb: KnowledgeBase) -> dict[str, Any]:
    counts = await _knowledge(request).db.read(lambda conn: documents.counts(conn, kb))
    size = counts.pop("bytes")
    return {**kb.to_dict(), "document_counts": counts, "bytes": size}


@router.post("", status_code=201, summary="Create a knowledge base")
async def create_kb(body: KnowledgeBaseIn, request: Request, key: KnowledgeKey) -> JSON:
    options = body.model_dump(exclude_none=True, exclude={"name"})
    kb = await _knowledge(request).create(key.org_id, body.name, **options)
    return JSON(await _described(request, kb), status_code=201)


@router.get("", summary="List knowledge bases")
async def list_kbs(request: Request, key: InferenceKey) -> JSON:
    rows = await _knowledge(request).db.read(lambda conn: bases.list_all(conn, key.org_id))
    return JSON({"object": "list", "data": [await _described(request, kb) for kb in rows]})


@router.get("/{kb}", summary="Retrieve a knowledge base (by id or name)")
async def get_kb(kb: str, request: Request, key: InferenceKey) -> JSON:
    return JSON(await _described(request, await _kb(request, key, kb)))


@router.patch("/{kb}", summary="Rename a knowledge base or change its description or metadata")
async def update_kb(
    kb: str, body: KnowledgeBaseUpdate, request: Request, key: KnowledgeKey
) -> JSON:
    found = await _kb(request, key, kb)
    updated = await _knowledge(request).db.write(
        lambda conn: bases.update_kb(
            conn,
            key.org_id,
            found.id,
            name=body.name,
            description=body.description,
            metadata=body.metadata,
        )
    )
    return JSON(await _described(request, updated))


@router.delete("/{kb}", summary="Delete a knowledge base, its documents and chunks")
async def delete_kb(kb: str, request: Request, key: KnowledgeKey) -> JSON:
    found = await _kb(request, key, kb)
    await _knowledge(request).db.write(lambda conn: bases.delete_kb(conn, key.org_id, found.id))
    return JSON({"id": found.id, "object": "knowledge_base.deleted", "deleted": True})


# -- documents ------------------------------------------------------------------------------


@router.post(
    "/{kb}/documents",
    status_code=202,
    summary="Add or replace documents (files, text or URLs); returns the ingestion job",
    openapi_extra=_DOCUMENTS_BODY,
)
async def add_documents(kb: str, request: Request, key: KnowledgeKey) -> JSON:
    found = await _kb(request, key, kb)
    knowledge = _knowledge(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        sources = await _uploaded(request)
    elif kind in ("application/json", ""):
        body = await parse(request, DocumentsIn)
        sources = [
            Source(
                d.id,
                record=CorpusRecord(0, d.id, d.title, d.text, dict(d.metadata)),
                metadata=dict(d.metadata),
                source="api",
            )
            for d in body.documents
        ]
        # Fetched when staged (under the egress policy), so they are on record first.
        sources += [
            Source(u.id or u.url, url=u.url, source=u.url, metadata=dict(u.metadata))
            for u in body.urls
        ]
    else:
        raise UnsupportedDocumentType(
            f"send documents as multipart/form-data (files) or application/json, not {kind}"
        )
    job = await knowledge.add(found, sources)
    return JSON(job.to_dict(), status_code=202)


async def _uploaded(request: Request) -> list[Source]:
    async with request.form(max_files=MAX_FILES, max_fields=100) as form:
        raw_metadata = form.get("metadata")
        uploads = [f for name in ("file", "files") for f in form.getlist(name)]
        files = [f for f in uploads if isinstance(f, UploadFile)]
        if not files or len(files) != len(uploads):
            raise InvalidRequest("send one or more files in the form field 'file'", param="file")
        metadata = _form_metadata(raw_metadata)
        sources: list[Source] = []
        seen: set[str] = set()
        for upload in files:
            name = (upload.filename or "").strip()
            if not name:
                raise InvalidRequest("every uploaded file needs a file name", param="file")
            if len(name) > 500:
                raise InvalidRequest("a file name has at most 500 characters", param="file")
            if name in seen:
                raise InvalidRequest(f"the file '{name}' was sent twice", param="file")
            seen.add(name)
            data = await upload.read()
            if name.lower().endswith(".jsonl"):
                sources += corpus_sources(data, name, metadata)
                continue
            sources.append(
                Source(
                    name,
                    data,
                    filename=name,
                    content_type=upload.content_type,
                    source=name,
                    metadata=dict(metadata),
                )
            )
        return sources


def _form_metadata(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        metadata = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("metadata must be a JSON object", param="metadata") from None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be a JSON object", param="metadata")
    try:
        check_text(metadata)
    except ValueError as exc:
        raise InvalidRequest(f"metadata: {exc}", param="metadata") from None
    return metadata


@router.get("/{kb}/documents", summary="List documents")
async def list_documents(
    kb: str,
    request: Request,
    key: InferenceKey,
    limit: int = Query(100, ge=1, le=1000),
    after: int | None = Query(
        None, ge=0, le=MAX_ID, description="The last id of the previous page."
    ),
    status: str | None = Query(None, pattern="^(pending|ready|failed)$"),
    external_id: str | None = Query(None, max_length=500),
) -> JSON:
    found = await _kb(request, key, kb)
    rows, more = await _knowledge(request).db.read(
        lambda conn: documents.list_page(
            conn, found, limit=limit, after=after, status=status, external_id=external_id
        )
    )
    return JSON(
        {
            "object": "list",
            "data": [d.to_dict() for d in rows],
            "has_more": more,
            "last_id": rows[-1].id if rows else None,
        }
    )


@router.get("/{kb}/documents/{document_id}", summary="Retrieve a document")
async def get_document(
    kb: str,
    document_id: RowId,
    request: Request,
    key: InferenceKey,
    include_text: bool = Query(False, description="Add the extracted text."),
) -> JSON:
    found = await _kb(request, key, kb)

    def read(conn: Any) -> dict[str, Any]:
        out = documents.get(conn, found, document_id).to_dict()
        if include_text:
            out["text"] = documents.text(conn, found, document_id)
        return out

    return JSON(await _knowledge(request).db.read(read))


@router.delete("/{kb}/documents/{document_id}", summary="Delete a document (and its chunks)")
async def delete_document(kb: str, document_id: RowId, request: Request, key: KnowledgeKey) -> JSON:
    found = await _kb(request, key, kb)
    gone = await _knowledge(request).db.write(
        lambda conn: documents.delete(conn, found, document_id)
    )
    return JSON({"id": gone.id, "object": "knowledge_base.document.deleted", "deleted": True})


@router.get("/{kb}/jobs/{job_id}", summary="An ingestion job's progress")
async def get_job(kb: str, job_id: RowId, request: Request, key: InferenceKey) -> JSON:
    found = await _kb(request, key, kb)
    job = await _knowledge(request).job(key.org_id, job_id)
    if job.kb_id != found.id:
        raise NotFound(f"ingestion job {job_id} not found", param="job")
    return JSON(job.to_dict())


# -- search ---------------------------------------------------------------------------------


@router.post("/{kb}/search", summary="Search a knowledge base")
async def search(kb: str, body: SearchIn, request: Request, key: InferenceKey) -> JSON:
    found = await _kb(request, key, kb)
    hits = await _knowledge(request).search(
        found, body.query, k=body.k, mode=body.mode, filters=body.filters, alpha=body.alpha
    )
    return JSON(
        {
            "object": "list",
            "knowledge_base_id": found.id,
            "query": body.query,
            "mode": body.mode,
            "data": [hit.to_dict() for hit in hits],
        }
    )
