"""``concierge orgs``: organisations (tenants)."""

from __future__ import annotations

import click
from rich.table import Table

from concierge import orgs
from concierge.cli import Context, database, pass_context, print_table
from concierge.governance import audit


@click.group("orgs")
def command() -> None:
    """Manage organisations."""


@command.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
@pass_context
def create(ctx: Context, slug: str, name: str | None) -> None:
    """Create the organisation SLUG."""
    with database(ctx.settings()) as db:
        org = db.write_sync(lambda conn: orgs.create(conn, slug, name, actor=audit.cli_actor()))
    click.echo(f"created organisation {org.slug} (id {org.id})")


@command.command("list")
@pass_context
def list_orgs(ctx: Context) -> None:
    """List organisations."""
    with database(ctx.settings()) as db:
        rows = db.read_sync(orgs.list_all)
    table = Table("id", "slug", "name", "created")
    for org in rows:
        table.add_row(str(org.id), org.slug, org.name, org.created_at.strftime("%Y-%m-%d %H:%M"))
    print_table(table)
