"""The built-in backends, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from collections.abc import Callable

from concierge.config import Settings
from concierge.hookspecs import hookimpl
from concierge.models.assets import default_gguf, minilm_dir
from concierge.models.base import EmbeddingModel, Model


@hookimpl
def register_models(register: Callable[[Model], None], settings: Settings) -> None:
    """The embedded llama.cpp model and every chat model of every configured upstream."""
    if settings.llm_enabled:
        from concierge.models.llama import LlamaModel

        configured = settings.llm_model_path
        register(
            LlamaModel(
                settings.llm_model_name,
                configured if configured else lambda: default_gguf(settings.resolved_models_dir),
                context_length=settings.llm_context_length,
                threads=settings.llm_threads,
                batch_size=settings.llm_batch_size,
                chat_template=settings.llm_chat_template,
                max_queue=settings.llm_max_queue,
                max_queue_per_key=settings.llm_max_queue_per_key,
                max_queue_seconds=settings.llm_max_queue_seconds,
            )
        )
    from concierge.models.upstream import OpenAIUpstream, UpstreamClient

    for upstream in settings.upstreams:
        if upstream.models:
            client = UpstreamClient(upstream)
            for model_id in upstream.models:
                register(OpenAIUpstream(model_id, upstream, client))


@hookimpl
def register_embedding_models(
    register: Callable[[EmbeddingModel], None], settings: Settings
) -> None:
    """The embedded all-MiniLM-L6-v2 (float32, and int8 as ``<name>-int8``) and every upstream
    embedding model."""
    if settings.embedding_enabled:
        from concierge.models.minilm import MiniLMEmbeddings

        for int8 in (False, True):
            register(
                MiniLMEmbeddings(
                    settings.embedding_model_name + ("-int8" if int8 else ""),
                    lambda: minilm_dir(settings.resolved_models_dir),
                    batch_size=settings.embedding_batch_size,
                    int8=int8,
                )
            )
    from concierge.models.upstream import OpenAIUpstreamEmbeddings, UpstreamClient

    for upstream in settings.upstreams:
        if upstream.embedding_models:
            client = UpstreamClient(upstream)
            for model_id in upstream.embedding_models:
                register(OpenAIUpstreamEmbeddings(model_id, upstream, client))
