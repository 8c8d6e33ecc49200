"""``concierge config``: what the settings are, and where each can be set."""

from __future__ import annotations

import json

import click

from concierge.cli import Context, pass_context
from concierge.config import redacted, setting_infos


@click.group("config")
def command() -> None:
    """Inspect the configuration."""


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def show(ctx: Context, as_json: bool) -> None:
    """Print the effective settings (secrets hidden)."""
    data = redacted(ctx.settings())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for name, value in data.items():
        click.echo(f"{name} = {json.dumps(value)}")


@command.command("list")
def list_settings() -> None:
    """Every setting: its environment variable, type, default and meaning."""
    for info in setting_infos():
        default = (
            info.default if not isinstance(info.default, (list, dict)) else json.dumps(info.default)
        )
        click.echo(f"{info.name}  ({info.env_var}, {info.type}, default {default!s})")
        click.echo(f"    {info.help}")
