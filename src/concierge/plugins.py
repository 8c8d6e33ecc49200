"""The plugin manager: built-in plugins plus those installed under the ``concierge`` group."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from concierge import hookspecs

# Everything built in that a plugin could provide (concierge/default_plugins), by name: they
# are imported when a plugin manager is made, never by the modules they extend.
DEFAULT_PLUGINS = (
    "concierge.default_plugins.models",
    "concierge.default_plugins.recognizers",
    "concierge.default_plugins.tools",
    "concierge.default_plugins.parsers",
    "concierge.default_plugins.channels",
    "concierge.default_plugins.routes",
    "concierge.default_plugins.commands",
)


def plugin_manager(
    extra: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A fresh plugin manager (one per app, no global state) with built-ins and ``extra``."""
    pm = pluggy.PluginManager("concierge")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name)
    if entry_points:
        pm.load_setuptools_entrypoints("concierge")
    for plugin in extra:
        pm.register(plugin)
    return pm
