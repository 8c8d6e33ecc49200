"""``concierge models``: the models this configuration serves."""

from __future__ import annotations

import click
from rich.table import Table

from concierge.cli import Context, pass_context, print_table
from concierge.models.registry import ModelRegistry
from concierge.plugins import plugin_manager


@click.group("models")
def command() -> None:
    """Inspect models."""


@command.command("list")
@pass_context
def list_models(ctx: Context) -> None:
    """Models and aliases served, with their backend (nothing is loaded)."""
    registry = ModelRegistry.from_plugins(plugin_manager(), ctx.settings())
    table = Table("id", "kind", "backend", "alias of", "fallbacks")
    for info in registry.infos():
        fallbacks = ", ".join(registry.fallbacks.get(info.id, []))
        table.add_row(info.id, info.kind, info.owned_by, info.alias_of or "", fallbacks)
    print_table(table)
