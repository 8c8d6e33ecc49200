"""The docs stay honest: every hook, every command and every setting is described.

Modelled on datasette's ``test_docs.py``: the code is the list, the docs must keep up.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pluggy
import pytest

from concierge import hookspecs
from concierge.cli import main
from concierge.config import setting_infos

DOCS = Path(__file__).parent.parent / "docs"
SCRIPTS = Path(__file__).parent.parent / "scripts"


def _hooks() -> list[str]:
    marker = pluggy.HookspecMarker("concierge").project_name
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{marker}_spec")
    )


def _commands(group: click.Group, prefix: str = "concierge") -> Iterator[str]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix} {name}"
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_the_hooks_are_found() -> None:
    assert {"register_models", "register_tools", "register_routes", "startup"} <= set(_hooks())


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_documented(hook: str) -> None:
    page = (DOCS / "plugins.md").read_text()
    assert re.search(rf"^### {hook}$", page, re.MULTILINE), f"docs/plugins.md: no '### {hook}'"
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and len(spec.__doc__.strip().splitlines()) == 1, (
        f"hookspecs.{hook} needs a one-line docstring"
    )


@pytest.mark.parametrize("command", list(_commands(main)))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}`" in (DOCS / "cli.md").read_text(), f"docs/cli.md lacks `{command}`"


def test_the_command_reference_is_current() -> None:
    """docs/cli.md is what scripts/cli_reference.py writes from the commands' own help."""
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPTS / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "cli.md").read_text() == module.render(), (
        "docs/cli.md is out of date: run .venv/bin/python scripts/cli_reference.py"
    )


@pytest.mark.parametrize("name", [info.name for info in setting_infos()])
def test_every_setting_is_documented(name: str) -> None:
    info = next(i for i in setting_infos() if i.name == name)
    assert info.help, name
    docs = (DOCS / "configuration.md").read_text()
    assert f"`{name}`" in docs, f"docs/configuration.md does not describe {name}"
