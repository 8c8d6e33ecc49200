"""``concierge policy``: an organisation's governance policy; ``concierge retention``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import orjson
from sqlalchemy import Connection

from concierge import orgs
from concierge.cli import Context, database, pass_context
from concierge.compliance import retention
from concierge.errors import InvalidRequest
from concierge.governance import audit
from concierge.governance import policy as policies


@click.group("policy")
def command() -> None:
    """Show or change an organisation's governance policy."""


@command.command("show")
@click.argument("org_slug")
@pass_context
def show(ctx: Context, org_slug: str) -> None:
    """Print ORG's policy as JSON (defaults included)."""
    with database(ctx.settings()) as db:
        data = db.read_sync(lambda conn: policies.describe(conn, orgs.get(conn, org_slug).id))
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@command.command("set")
@click.argument("org_slug")
@click.argument("changes")
@pass_context
def set_policy(ctx: Context, org_slug: str, changes: str) -> None:
    """Merge CHANGES (JSON, or @FILE) into ORG's policy, e.g.
    '{"labels": {"explicit": "end"}}'. Audited."""
    text = Path(changes[1:]).read_text() if changes.startswith("@") else changes
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"CHANGES is not valid JSON: {exc.msg}") from None

    def write(conn: Connection) -> int:
        return policies.patch(conn, orgs.get(conn, org_slug).id, data, actor=audit.cli_actor())

    with database(ctx.settings()) as db:
        version = db.write_sync(write)
    click.echo(f"policy of {org_slug} is at version {version}")


@click.group("retention")
def retention_command() -> None:
    """The retention purge."""


@retention_command.command("run")
@pass_context
def run(ctx: Context) -> None:
    """Apply every organisation's retention policy now."""
    with database(ctx.settings()) as db:
        report = retention.purge(db, actor=audit.cli_actor())
    for slug, removed in report.items():
        shown = ", ".join(f"{count} {kind}" for kind, count in removed.items() if count)
        click.echo(f"{slug}: {shown or 'nothing to remove'}")
