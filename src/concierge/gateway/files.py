"""OpenAI's files API: uploads an organisation keeps to add to vector stores (or to read back).

A file's content is always served as a download (``application/octet-stream`` with
``Content-Disposition: attachment``), whatever type its uploader claimed.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from concierge.errors import InvalidRequest
from concierge.gateway.auth import InferenceKey, KnowledgeKey
from concierge.gateway.body import form_body
from concierge.gateway.responses import JSON
from concierge.gateway.state import concierge
from concierge.knowledge import files

router = APIRouter(prefix="/v1")

_UPLOAD_BODY = form_body(
    {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(files.PURPOSES)},
    },
    ["file", "purpose"],
)


@router.post("/files", tags=["Files (OpenAI)"], summary="Upload a file", openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, key: KnowledgeKey) -> JSON:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise InvalidRequest("upload the file as multipart/form-data", param="file")
    async with request.form(max_files=1, max_fields=10) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile) or not (upload.filename or "").strip():
            raise InvalidRequest(
                "send the file, with its name, in the form field 'file'", param="file"
            )
        if not isinstance(purpose, str):
            raise InvalidRequest("the form field 'purpose' is required", param="purpose")
        data = await upload.read()
    made = await concierge(request).db.write(
        lambda conn: files.create(
            conn, key.org_id, upload.filename or "", purpose, data, upload.content_type
        )
    )
    return JSON(made.to_dict())


@router.get("/files", tags=["Files (OpenAI)"], summary="List files")
async def list_files(
    request: Request, key: InferenceKey, purpose: str | None = Query(None, max_length=40)
) -> JSON:
    rows = await concierge(request).db.read(lambda conn: files.list_all(conn, key.org_id, purpose))
    return JSON({"object": "list", "data": [f.to_dict() for f in rows], "has_more": False})


@router.get("/files/{file_id}", tags=["Files (OpenAI)"], summary="Retrieve a file")
async def get_file(file_id: str, request: Request, key: InferenceKey) -> JSON:
    found = await concierge(request).db.read(lambda conn: files.get(conn, key.org_id, file_id))
    return JSON(found.to_dict())


@router.get("/files/{file_id}/content", tags=["Files (OpenAI)"], summary="A file's content")
async def file_content(file_id: str, request: Request, key: InferenceKey) -> Any:
    def read(conn: Any) -> tuple[files.File, bytes]:
        return files.get(conn, key.org_id, file_id), files.content(conn, key.org_id, file_id)

    found, data = await concierge(request).db.read(read)
    # Whatever type the uploader claimed: a download, never a page of this origin (an HTML
    # "document" opened inline could script the API with a visitor's session).
    name = quote(PurePosixPath(found.filename or found.id).name or found.id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
    )


@router.delete("/files/{file_id}", tags=["Files (OpenAI)"], summary="Delete a file")
async def delete_file(file_id: str, request: Request, key: KnowledgeKey) -> JSON:
    gone = await concierge(request).db.write(lambda conn: files.delete(conn, key.org_id, file_id))
    return JSON({"id": gone.id, "object": "file", "deleted": True})
