"""Every extension point of Concierge, in one place.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the
specs below. Everything built in is a plugin too (the modules of :mod:`concierge.default_plugins`:
models, tools, document parsers, routes, commands, recognisers), registered through the same
hooks. Third-party plugins are found through the ``concierge`` entry-point group. Plugins
receive a ``register`` callback (or the object to extend) and never touch globals::

    from concierge.hookspecs import hookimpl

    @hookimpl
    def register_models(register, settings):
        register(MyModel())

Later capabilities add their hooks here the same way (``register_recommenders``,
``register_graders``). docs/plugins.md documents every hook; a test
keeps it complete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from concierge.app import Concierge
    from concierge.assistants.toolbox import Tool
    from concierge.channels.base import ChannelType
    from concierge.channels.media import MediaReader
    from concierge.config import Settings
    from concierge.gateway.routes import Routes
    from concierge.governance.moderation import Classifier
    from concierge.governance.pii import Recognizer
    from concierge.knowledge.parsers import DocumentParser
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


@hookspec
def register_tools(register: Callable[[Tool], None], settings: Settings) -> None:
    """Register tools an assistant can turn on by name (its ``builtin_tools``)."""


@hookspec
def register_document_parsers(
    register: Callable[[DocumentParser], None], settings: Settings
) -> None:
    """Register parsers that turn a document format into text blocks for knowledge bases."""


@hookspec
def register_channels(register: Callable[[ChannelType], None], settings: Settings) -> None:
    """Register messaging channel types (a platform's webhooks and send API) with ``register``."""


@hookspec
def register_media_readers(register: Callable[[MediaReader], None], settings: Settings) -> None:
    """Register readers that turn a customer's voice note, image or file into text."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``concierge`` command line with ``cli.add_command(command)``."""


@hookspec
def register_routes(routes: Routes, concierge: Concierge) -> None:
    """Add HTTP routes: ``routes.include(router, body_models=[...])``, ``routes.mount(...)``."""


@hookspec
def startup(concierge: Concierge) -> Awaitable[None] | None:
    """Run when the server has started its services; may return an awaitable to wait for."""


@hookspec
def shutdown(concierge: Concierge) -> Awaitable[None] | None:
    """Run when the server stops, before its services close; may return an awaitable."""
