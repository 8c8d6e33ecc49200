"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from concierge.gateway.responses import JSON
from concierge.gateway.state import concierge
from concierge.models.base import EmbeddingModel, Model

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> JSON:
    return JSON({"status": "ok"})


@router.get("/readyz", summary="Readiness: database reachable, embedded models loaded")
async def readyz(request: Request) -> JSON:
    c = concierge(request)
    checks: dict[str, str] = {}
    try:
        await c.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
        checks["database"] = "ok"
    except SQLAlchemyError:
        checks["database"] = "unreachable"
    backends: list[Model | EmbeddingModel] = [
        *c.registry.models.values(),
        *c.registry.embedding_models.values(),
    ]
    for backend in backends:
        if backend.holds_weights:
            checks[f"model:{backend.model_id}"] = "ok" if backend.loaded else "loading"
    ready = all(v == "ok" for v in checks.values())
    return JSON(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    body = concierge(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
