"""The plugin manager: built-in plugins plus those installed under the ``concierge`` group."""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from concierge import hookspecs

BUILTIN_PLUGINS = ("concierge.models.plugins", "concierge.governance.plugins")


def plugin_manager(
    extra: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A fresh plugin manager (one per app, no global state) with built-ins and ``extra``."""
    pm = pluggy.PluginManager("concierge")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        module = __import__(name, fromlist=["_"])
        pm.register(module, name)
    if entry_points:
        pm.load_setuptools_entrypoints("concierge")
    for plugin in extra:
        pm.register(plugin)
    return pm
