"""``concierge demo``: the demo business, Acme Outfitters (``seed`` once, ``reset`` afresh)."""

from __future__ import annotations

import asyncio

import click

from concierge import demo
from concierge.cli import Context, pass_context
from concierge.cli.kb import open_knowledge


@click.group("demo")
def command() -> None:
    """The demo organisation "acme" with its knowledge and the acme-support assistant."""


def _report(seeded: demo.Seeded) -> None:
    if seeded.created:
        click.echo(
            f"Demo ready: organisation '{demo.ORG}', assistant '{demo.ASSISTANT}', "
            f"{seeded.documents} documents in '{demo.KNOWLEDGE_BASE}'."
        )
    else:
        click.echo(f"The demo organisation '{demo.ORG}' exists; left as it is.")


@command.command("seed")
@pass_context
def seed(ctx: Context) -> None:
    """Create the demo if it does not exist (what `make run` does)."""
    with open_knowledge(ctx) as knowledge:
        _report(asyncio.run(demo.seed(knowledge)))


@command.command("reset")
@click.confirmation_option(
    prompt="Delete the demo organisation with all its conversations and make it again?"
)
@pass_context
def reset(ctx: Context) -> None:
    """Delete the demo organisation and everything in it, then make it again."""
    with open_knowledge(ctx) as knowledge:
        _report(asyncio.run(demo.seed(knowledge, reset=True)))
