"""Everything built in that a plugin could provide, provided the way a plugin would.

Each module here implements hooks from :mod:`concierge.hookspecs` and is registered by
:func:`concierge.plugins.plugin_manager` before third-party plugins (as datasette's
``DEFAULT_PLUGINS`` are). Nothing else in Concierge imports these modules: replacing one means
registering a plugin for the same hook, never editing the core.
"""

DEFAULT_PLUGINS = (
    "concierge.default_plugins.models",
    "concierge.default_plugins.recognizers",
    "concierge.default_plugins.tools",
    "concierge.default_plugins.parsers",
    "concierge.default_plugins.routes",
    "concierge.default_plugins.commands",
)
