"""The ``concierge`` command. Each command group lives in its own module of this package.

Commands come from the ``register_commands`` hook (the built-in ones from
:mod:`concierge.default_plugins.commands`), asked for the first time the command line needs
them; a built-in group's module is imported only when that group runs (or ``--help`` lists
it), so importing this package imports none of them.
"""

from __future__ import annotations

import importlib
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


class CommandGroup(click.Group):
    """The ``concierge`` group: commands from plugins, loaded on first use; a
    :class:`ConciergeError` becomes a readable message and exit code, never a traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}
        self._registered = False

    def add_lazy_command(self, name: str, target: str) -> None:
        """Add the command at ``target`` (``"package.module:attribute"``) as ``name``, imported
        when it is first needed."""
        self._lazy[name] = target

    def _register(self) -> None:
        if not self._registered:
            self._registered = True
            from concierge.plugins import plugin_manager

            plugin_manager().hook.register_commands(cli=self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register()
        return sorted({*self.commands, *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._register()
        if cmd_name not in self.commands and cmd_name in self._lazy:
            module, _, attribute = self._lazy.pop(cmd_name).partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConciergeError as exc:  # a readable message, never a traceback
            click.secho(f"Error: {exc.message}", fg="red", err=True)
            sys.exit(2 if exc.status < 500 else 1)


@click.group(cls=CommandGroup)
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
