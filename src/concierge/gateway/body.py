"""JSON request bodies parsed and validated in one pass by pydantic-core.

FastAPI's own body handling sniffs the content type, decodes JSON with the standard library
and then validates the Python objects, and its dependency solving costs as much again. On the
inference endpoints, which every request goes through, the two together were about a tenth of
a request's CPU time (benchmarks/README.md). Those routes read their body with :func:`parse`
and check the key with a direct call rather than through dependency injection, and declare
both for the OpenAPI document with :func:`json_body`;
:func:`add_schemas` puts the models' schemas where those declarations point. Errors are the same
``RequestValidationError`` FastAPI raises, so they get the same 400 in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from concierge.gateway.auth import inference_key

M = TypeVar("M", bound=BaseModel)
REF = "#/components/schemas/{model}"


# Bodies larger than this are validated off the event loop: 2 MB of small messages take a few
# hundred milliseconds to validate, which other requests would otherwise wait out.
THREAD_PARSE_BYTES = 256 * 1024


async def parse(request: Request, model: type[M]) -> M:
    """The request body as ``model``; a 400 (via RequestValidationError) if it is not one."""
    raw = await request.body()
    try:
        if len(raw) > THREAD_PARSE_BYTES:
            return await asyncio.to_thread(model.model_validate_json, raw)
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def json_body(model: type[BaseModel], *scopes: str) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose body is ``model``, read with :func:`parse`, and
    which checks the API key itself (``await inference_key(request)``) for one of ``scopes``
    (default ``inference``; ``json_body(model, "public")`` for a route without a key)."""
    scopes = scopes or ("inference",)
    schema = {"$ref": REF.format(model=model.__name__)}
    extra: dict[str, Any] = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
    }
    if scopes != ("public",):
        extra["security"] = [{"APIKey": [scope]} for scope in scopes]
    return extra


def form_body(
    fields: dict[str, Any], required: list[str], *, or_json: type[BaseModel] | None = None
) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that reads a multipart form with ``fields`` (and, with
    ``or_json``, that model as a JSON body instead)."""
    form = {"schema": {"type": "object", "properties": fields, "required": required}}
    content: dict[str, Any] = {"multipart/form-data": form}
    if or_json is not None:
        content["application/json"] = {"schema": {"$ref": REF.format(model=or_json.__name__)}}
    return {"requestBody": {"required": True, "content": content}}


def add_schemas(document: dict[str, Any], models: list[type[BaseModel]]) -> dict[str, Any]:
    """Add ``models`` (and the models they use) to an OpenAPI document's components."""
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    components.setdefault("securitySchemes", {}).setdefault(
        "APIKey", inference_key.model.model_dump(by_alias=True, exclude_none=True)
    )
    return document
