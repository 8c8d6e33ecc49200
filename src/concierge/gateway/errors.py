"""One place that turns errors into responses, always in OpenAI's error shape.

Clients see the message of a :class:`~concierge.errors.ConciergeError`; anything else is logged
with its traceback and answered with a generic 500: no exception text, stack trace or secret
leaves the server.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from concierge.errors import ConciergeError, InvalidRequest
from concierge.gateway.limits import TOO_LARGE, too_large
from concierge.gateway.responses import JSON

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSON:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSON(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "The request body is invalid.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error")
        detail = f" ({why})" if why else ""
        return f"We could not parse the JSON body of your request{detail}. Send valid JSON.", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Drop pydantic's union branch labels (e.g. "UserMessage", "str") from the path.
    param = (
        ".".join(p for p in loc if not p[:1].isupper() and p not in {"str", "list[str]"}) or None
    )
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") in {"model_attributes_type", "model_type"} and not param:
        return "The request body must be a JSON object.", None
    more = (
        f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        if len(errors) > 1
        else ""
    )
    return f"Invalid value for '{param or 'body'}': {msg}{more}", param


def install(app: FastAPI) -> None:
    @app.exception_handler(ConciergeError)
    async def _concierge(_request: Request, exc: ConciergeError) -> JSON:
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return JSON(exc.to_dict(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSON:
        message, param = _validation_message(exc)
        return JSON(InvalidRequest(message, param=param).to_dict(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSON:
        if request.scope.get(TOO_LARGE):
            big = too_large()
            return JSON(big.to_dict(), status_code=big.status)
        detail: Any = exc.detail
        message = detail if isinstance(detail, str) else "request failed"
        if exc.status_code == 404:
            message = "Not found. See /docs for the endpoints this server offers."
        return error_response(
            exc.status_code,
            message,
            _HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500, "The server had an error while processing your request.", "server_error"
        )


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Describe errors as this server sends them: a 400 in OpenAI's shape where FastAPI would
    list its own 422, and on every operation that takes input."""
    document.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    bad_request = {
        "description": "Invalid request",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            takes_input = "requestBody" in operation or operation.get("parameters")
            if responses.pop("422", None) is not None or takes_input:
                responses["400"] = bad_request
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document
