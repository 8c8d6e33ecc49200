"""The built-in command groups of ``concierge``, registered through the ``register_commands``
hook like any plugin's (each imported only when it runs)."""

from __future__ import annotations

import importlib

import click

from concierge.cli import CommandGroup
from concierge.hookspecs import hookimpl

COMMANDS = {
    "audit": "concierge.cli.audit:command",
    "channels": "concierge.cli.channels:command",
    "chat": "concierge.cli.chat:command",
    "config": "concierge.cli.config:command",
    "db": "concierge.cli.db:command",
    "demo": "concierge.cli.demo:command",
    "kb": "concierge.cli.kb:command",
    "keys": "concierge.cli.keys:command",
    "labels": "concierge.cli.labels:command",
    "models": "concierge.cli.models:command",
    "orgs": "concierge.cli.orgs:command",
    "policy": "concierge.cli.policy:command",
    "retention": "concierge.cli.policy:retention_command",
    "serve": "concierge.cli.serve:command",
    "subjects": "concierge.cli.subjects:command",
    "usage": "concierge.cli.usage:command",
}


@hookimpl
def register_commands(cli: click.Group) -> None:
    """serve, chat, demo, kb, keys, orgs, models, policy, retention, subjects, channels, audit,
    labels, usage, config and db."""
    for name, target in COMMANDS.items():
        if isinstance(cli, CommandGroup):
            cli.add_lazy_command(name, target)
        else:  # another group (a plugin's test harness): load them now
            module, _, attribute = target.partition(":")
            cli.add_command(getattr(importlib.import_module(module), attribute), name)
