"""``concierge db``: schema migrations."""

from __future__ import annotations

import click

from concierge.cli import Context, pass_context
from concierge.store import Database, migrate


@click.group("db")
def command() -> None:
    """Database schema migrations."""


@command.command("upgrade")
@click.argument("revision", default="head")
@pass_context
def upgrade(ctx: Context, revision: str) -> None:
    """Migrate the schema up to REVISION (default: the newest)."""
    db = Database(ctx.settings().resolved_database_url, pooled=False)
    migrate.upgrade(db, revision)
    click.echo(f"schema at {migrate.current_revision(db)}")
    db.close()


@command.command("downgrade")
@click.argument("revision")
@click.confirmation_option(prompt="Downgrading can delete data. Continue?")
@pass_context
def downgrade(ctx: Context, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' removes every table)."""
    db = Database(ctx.settings().resolved_database_url, pooled=False)
    migrate.downgrade(db, revision)
    click.echo(f"schema at {migrate.current_revision(db)}")
    db.close()


@command.command("current")
@pass_context
def current(ctx: Context) -> None:
    """Print the schema revision of the database and the newest one available."""
    db = Database(ctx.settings().resolved_database_url, pooled=False)
    click.echo(f"database: {migrate.current_revision(db)}  newest: {migrate.head_revision()}")
    db.close()
