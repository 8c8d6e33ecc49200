"""The ``concierge`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from concierge import __version__
from concierge.config import Settings, load_settings
from concierge.errors import ConciergeError
from concierge.store import Database, migrate


class Context:
    """Settings are loaded lazily, so `--help` works even with a broken configuration."""

    def __init__(self, config_file: Path | None) -> None:
        self.config_file = config_file
        self._settings: Settings | None = None

    def settings(self, **overrides: Any) -> Settings:
        if overrides or self._settings is None:
            self._settings = load_settings(self.config_file, **overrides)
        return self._settings


pass_context = click.make_pass_decorator(Context)


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """The migrated database, for one CLI command."""
    db = Database(settings.resolved_database_url, pooled=False)
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.close()


def print_table(table: Table) -> None:
    """Print a table; piped output gets full-width rows instead of wrapped cells."""
    Console(width=None if sys.stdout.isatty() else 250).print(table)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConciergeError as exc:  # a readable message, never a traceback
            click.secho(f"Error: {exc.message}", fg="red", err=True)
            sys.exit(2 if exc.status < 500 else 1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="concierge")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CONCIERGE_CONFIG",
    help="TOML configuration file.",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """Concierge: a self-hosted AI assistant platform with an OpenAI-compatible API."""
    ctx.obj = Context(config_file)


COMMANDS = (
    "audit",
    "chat",
    "config",
    "db",
    "demo",
    "kb",
    "keys",
    "labels",
    "models",
    "orgs",
    "policy",
    "serve",
    "subjects",
    "usage",
)


def _register() -> None:
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"concierge.cli.{name}")
        main.add_command(module.command)
    from concierge.cli.policy import retention_command

    main.add_command(retention_command)


_register()
