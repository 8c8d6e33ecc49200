"""What the ``register_routes`` hook fills: the routers and sub-applications of one app.

Plugins (the built-in :mod:`concierge.default_plugins.routes` among them) add routers with
:meth:`Routes.include` and whole ASGI applications with :meth:`Routes.mount`; the app adds them
in the order they were registered. Request models a route reads itself (through
:func:`concierge.gateway.body.parse`) are named with ``body_models`` so the OpenAPI document
describes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.types import ASGIApp


@dataclass
class Routes:
    routers: list[APIRouter] = field(default_factory=list)
    mounts: list[tuple[str, ASGIApp]] = field(default_factory=list)
    body_models: list[type[BaseModel]] = field(default_factory=list)

    def include(self, router: APIRouter, *, body_models: Iterable[type[BaseModel]] = ()) -> None:
        """Serve ``router``'s routes; ``body_models``: the request bodies it parses itself."""
        self.routers.append(router)
        self.body_models.extend(body_models)

    def mount(self, path: str, app: ASGIApp) -> None:
        """Serve ``app`` under ``path`` (its own middleware, errors and documentation)."""
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"mount paths start with / and do not end with one: {path!r}")
        self.mounts.append((path, app))
