"""The model registry: every backend that plugins registered, routing by name, fallback.

A request names a model id or an alias. Its route is the model followed by the ordered
fallbacks configured for it (``model_fallbacks``). :func:`generate` tries the route in order
and moves on only when a backend fails *before producing any output*; once a token has gone to
the client, a failure is reported, never papered over by another model's answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

import pluggy

from concierge.config import Settings
from concierge.errors import (
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamError,
)
from concierge.models.admission import QueueStats
from concierge.models.base import EmbeddingModel, Event, GenerationRequest, Model

log = logging.getLogger(__name__)
B = TypeVar("B", Model, EmbeddingModel)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owned_by: str
    kind: str  # "chat" | "embedding"
    alias_of: str | None = None


class ModelRegistry:
    def __init__(
        self,
        models: Iterable[Model] = (),
        embedding_models: Iterable[EmbeddingModel] = (),
        *,
        aliases: dict[str, str] | None = None,
        fallbacks: dict[str, list[str]] | None = None,
    ) -> None:
        self.models: dict[str, Model] = {}
        self.embedding_models: dict[str, EmbeddingModel] = {}
        for model in models:
            self._add(self.models, model.model_id, model)
        for embedder in embedding_models:
            self._add(self.embedding_models, embedder.model_id, embedder)
        self.aliases = dict(aliases or {})
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        known = set(self.models) | set(self.embedding_models)
        for alias, target in self.aliases.items():
            if target not in known:
                raise ConfigError(f"model alias '{alias}' points to unknown model '{target}'")
            if alias in known:
                raise ConfigError(f"model alias '{alias}' hides a real model of the same name")
        for model_id, chain in self.fallbacks.items():
            for name in [model_id, *chain]:
                if self.resolve(name) not in self.models:
                    raise ConfigError(f"model_fallbacks names unknown chat model '{name}'")

    @staticmethod
    def _add(table: dict[str, B], model_id: str, backend: B) -> None:
        if model_id in table:
            raise ConfigError(f"two backends registered the model id '{model_id}'")
        table[model_id] = backend

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, settings: Settings) -> ModelRegistry:
        models: list[Model] = []
        embedders: list[EmbeddingModel] = []
        pm.hook.register_models(register=models.append, settings=settings)
        pm.hook.register_embedding_models(register=embedders.append, settings=settings)
        return cls(
            models,
            embedders,
            aliases=settings.model_aliases,
            fallbacks=settings.model_fallbacks,
        )

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)

    def route(self, name: str) -> list[Model]:
        """The chat model for ``name`` and its fallbacks, in the order to try them."""
        model_id = self.resolve(name)
        if model_id not in self.models:
            if model_id in self.embedding_models:
                raise InvalidRequest(
                    f"'{name}' is an embedding model; it cannot generate text", param="model"
                )
            raise ModelNotFound(
                f"The model '{name}' does not exist. GET /v1/models lists the available ones.",
                param="model",
            )
        chain = [model_id, *(self.resolve(n) for n in self.fallbacks.get(model_id, []))]
        return [self.models[m] for m in dict.fromkeys(chain)]

    def embedder(self, name: str) -> EmbeddingModel:
        model_id = self.resolve(name)
        if model_id not in self.embedding_models:
            if model_id in self.models:
                raise InvalidRequest(
                    f"'{name}' is not an embedding model; GET /v1/models lists them", param="model"
                )
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        return self.embedding_models[model_id]

    def infos(self) -> list[ModelInfo]:
        rows = [ModelInfo(m.model_id, m.owned_by, "chat") for m in self.models.values()]
        rows += [
            ModelInfo(e.model_id, e.owned_by, "embedding") for e in self.embedding_models.values()
        ]
        rows += [
            ModelInfo(alias, self._owner(target), self._kind(target), alias_of=target)
            for alias, target in self.aliases.items()
        ]
        return sorted(rows, key=lambda r: r.id)

    def _owner(self, model_id: str) -> str:
        backend = self.models.get(model_id) or self.embedding_models.get(model_id)
        return backend.owned_by if backend else "concierge"

    def _kind(self, model_id: str) -> str:
        return "chat" if model_id in self.models else "embedding"

    def queue_depth(self) -> dict[str, int]:
        return {m.model_id: m.queue_depth() for m in self.models.values()}

    def queue_stats(self) -> dict[str, QueueStats]:
        found = {m.model_id: m.queue_stats() for m in self.models.values()}
        return {model: stats for model, stats in found.items() if stats is not None}

    async def aclose(self) -> None:
        for model in self.models.values():
            await model.aclose()
        for embedder in self.embedding_models.values():
            await embedder.aclose()


async def generate(
    route: list[Model], request: GenerationRequest
) -> AsyncGenerator[tuple[Model, Event], None]:
    """Run ``request`` on the first model of ``route`` that starts answering.

    Yields ``(model, event)`` so callers know which backend answered. Falls back to the next
    model only on an upstream or availability failure before the first event.
    """
    batches = generate_batches(route, request)
    try:
        async for model, batch in batches:
            for event in batch:
                yield model, event
    finally:
        await batches.aclose()


async def generate_batches(
    route: list[Model], request: GenerationRequest
) -> AsyncGenerator[tuple[Model, list[Event]], None]:
    """:func:`generate`, with the events grouped as they became available
    (:meth:`Model.execute_batches`)."""
    last_error: Exception | None = None
    for model in route:
        started = False
        stream = model.execute_batches(replace(request, model=model.model_id))
        try:
            async for batch in stream:
                started = True
                yield model, batch
            return
        except (UpstreamError, ServiceUnavailable) as exc:
            if started:
                raise
            log.warning("model %s failed before output (%s); trying the next", model.model_id, exc)
            last_error = exc
        finally:
            await stream.aclose()
    assert last_error is not None
    raise last_error
