"""Every extension point of Concierge, in one place.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the
specs below. Built-in backends are plugins too (``concierge.models.plugins``), registered
through the same hooks. Third-party plugins are found through the ``concierge`` entry-point
group. Plugins receive a ``register`` callback and never touch globals::

    from concierge.hookspecs import hookimpl

    @hookimpl
    def register_models(register, settings):
        register(MyModel())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from concierge.config import Settings
    from concierge.governance.moderation import Classifier
    from concierge.governance.pii import Recognizer
    from concierge.models.base import EmbeddingModel, Model

hookspec = pluggy.HookspecMarker("concierge")
hookimpl = pluggy.HookimplMarker("concierge")


@hookspec
def register_models(register: Callable[[Model], None], settings: Settings) -> None:
    """Register chat and text-completion model backends with ``register(model)``."""


@hookspec
def register_embedding_models(
    register: Callable[[EmbeddingModel], None], settings: Settings
) -> None:
    """Register embedding model backends with ``register(model)``."""


@hookspec
def register_pii_recognizers(register: Callable[[Recognizer], None], settings: Settings) -> None:
    """Register personal-data recognisers (an NER model, a local id format) with ``register``."""


@hookspec
def register_moderation_classifiers(
    register: Callable[[Classifier], None], settings: Settings
) -> None:
    """Register content classifiers that score text for moderation with ``register``."""
