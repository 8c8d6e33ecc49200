"""/v1/assistants: define, version and retire assistants (``admin``; reading: ``inference``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from concierge.assistants import definitions
from concierge.assistants.definitions import Assistant, AssistantConfig
from concierge.errors import NotFound
from concierge.gateway.auth import AdminKey, InferenceKey, admin_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.preconditions import etag, if_match
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import AssistantIn, AssistantUpdate, RowId
from concierge.gateway.state import concierge
from concierge.knowledge import bases

router = APIRouter(prefix="/v1/assistants", tags=["Assistants"])
# Read with gateway.body.parse; their schemas are added to the OpenAPI document.
BODY_MODELS: list[type[BaseModel]] = [AssistantIn, AssistantUpdate]


def _check(request: Request, conn: Any, org_id: int, config: AssistantConfig) -> None:
    """Models must be served here, tools registered here, and knowledge bases must be the
    organisation's own."""
    registry = concierge(request).registry
    concierge(request).runtime.toolbox.check(config)
    for model in [config.model, *config.fallback_models]:
        if model is not None:
            registry.route(model)  # NotFound for a model that is not served
    for kb_id in config.knowledge_bases:
        try:
            bases.get(conn, org_id, kb_id)
        except NotFound:
            raise NotFound(f"knowledge base {kb_id} not found", param="knowledge_bases") from None


@router.post(
    "",
    status_code=201,
    summary="Create an assistant",
    openapi_extra=json_body(AssistantIn, "admin"),
)
async def create_assistant(request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, AssistantIn)
    config = definitions.parse_config(body.model_dump(exclude={"name"}))

    def write(conn: Any) -> Assistant:
        _check(request, conn, key.org_id, config)
        return definitions.create(conn, key.org_id, body.name, config, actor=key.actor)

    made = await concierge(request).db.write(write)
    return JSON(made.to_dict(), status_code=201, headers=etag(made.version))


@router.get("", summary="List assistants")
async def list_assistants(request: Request, key: InferenceKey) -> JSON:
    rows = await concierge(request).db.read(lambda conn: definitions.list_all(conn, key.org_id))
    return JSON({"object": "list", "data": [a.to_dict() for a in rows]})


@router.get("/{assistant}", summary="Retrieve an assistant (by id or name)")
async def get_assistant(assistant: str, request: Request, key: InferenceKey) -> JSON:
    found = await concierge(request).db.read(
        lambda conn: definitions.get(conn, key.org_id, assistant)
    )
    return JSON(found.to_dict(), headers=etag(found.version))


@router.patch(
    "/{assistant}",
    summary="Change an assistant (writes a new version)",
    openapi_extra=json_body(AssistantUpdate, "admin"),
)
async def update_assistant(assistant: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, AssistantUpdate)
    changes = body.model_dump(exclude_unset=True)
    name = changes.pop("name", None)
    expected = if_match(request)

    def write(conn: Any) -> Assistant:
        updated = definitions.update_config(
            conn,
            key.org_id,
            assistant,
            name=name,
            changes=changes,
            actor=key.actor,
            expected_version=expected,
        )
        _check(request, conn, key.org_id, updated.config)
        return updated

    done = await concierge(request).db.write(write)
    return JSON(done.to_dict(), headers=etag(done.version))


@router.delete("/{assistant}", summary="Archive an assistant (its conversations are kept)")
async def delete_assistant(assistant: str, request: Request, key: AdminKey) -> JSON:
    expected = if_match(request)
    gone = await concierge(request).db.write(
        lambda conn: definitions.archive(
            conn, key.org_id, assistant, actor=key.actor, expected_version=expected
        )
    )
    return JSON({"id": gone.id, "object": "assistant.deleted", "deleted": True})


@router.get("/{assistant}/versions", summary="An assistant's versions")
async def list_versions(assistant: str, request: Request, key: InferenceKey) -> JSON:
    def read(conn: Any) -> list[dict[str, Any]]:
        found = definitions.get(conn, key.org_id, assistant, include_archived=True)
        return [
            {"object": "assistant.version", "version": number, "created_at": at.isoformat()}
            for number, at in definitions.versions(conn, found)
        ]

    return JSON({"object": "list", "data": await concierge(request).db.read(read)})


@router.get("/{assistant}/versions/{version}", summary="One version of an assistant")
async def get_version(assistant: str, version: RowId, request: Request, key: InferenceKey) -> JSON:
    def read(conn: Any) -> dict[str, Any]:
        found = definitions.get(conn, key.org_id, assistant, include_archived=True)
        config = definitions.version(conn, found, version)
        return {"object": "assistant.version", "version": version, **config.public()}

    return JSON(await concierge(request).db.read(read))
