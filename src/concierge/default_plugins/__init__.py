"""Everything built in that a plugin could provide, provided the way a plugin would.

Each module here implements hooks from :mod:`concierge.hookspecs` and is registered by
:func:`concierge.plugins.plugin_manager` (its ``DEFAULT_PLUGINS`` names them, as datasette's
do) before third-party plugins. Nothing else in Concierge imports these modules: replacing one means
registering a plugin for the same hook, never editing the core.
"""
