"""``concierge audit``: the hash-chained audit log."""

from __future__ import annotations

import sys
from typing import TextIO

import click
import orjson
from rich.table import Table
from sqlalchemy import Connection

from concierge import orgs
from concierge.cli import Context, database, pass_context, print_table
from concierge.governance import audit


@click.group("audit")
def command() -> None:
    """Read and verify the audit log."""


@command.command("verify")
@click.option(
    "--anchor",
    "anchor_texts",
    multiple=True,
    metavar="SEQ:HASH",
    help="An entry's hash kept outside the database (from `audit head`); repeatable.",
)
@click.option(
    "--anchors-file",
    type=click.File("r"),
    help="A file of anchors, one per line (the first word; `#` starts a comment).",
)
@pass_context
def verify(ctx: Context, anchor_texts: tuple[str, ...], anchors_file: TextIO | None) -> None:
    """Check the whole chain. Exits 1 and names the first bad entry if any entry was edited,
    deleted or reordered, or if an anchored entry no longer holds its anchored hash; a
    malformed anchor exits 2."""
    anchors = [*map(audit.Anchor.parse, anchor_texts), *audit.read_anchors(anchors_file or ())]
    with database(ctx.settings()) as db:
        result = db.read_sync(lambda conn: audit.verify(conn, anchors))
    if result.ok:
        pinned = f", {result.anchors_checked} anchors match" if anchors else ""
        click.echo(f"audit log intact: {result.checked} entries, chain and head agree{pinned}")
        return
    click.secho(f"audit log BROKEN at entry {result.bad_seq}: {result.problem}", fg="red", err=True)
    click.echo(f"{result.checked} entries before it verified", err=True)
    sys.exit(1)


@command.command("head")
@pass_context
def head(ctx: Context) -> None:
    """Print the newest entry as SEQ:HASH, to keep where the database's writers cannot write
    (a file on another machine, a ticket, a notarised log); `verify --anchors-file` checks the
    log still holds it.

    \b
    For example, daily from cron on another host:
      echo "$(concierge audit head) $(date -Is)" >> /secure/concierge-audit-anchors
    """
    with database(ctx.settings()) as db:
        now = db.read_sync(audit.head)
    if now is None:
        click.echo("the audit log is empty", err=True)
        sys.exit(1)
    click.echo(str(now))


@command.command("list")
@click.option("--org", "org_slug", help="Only this organisation's entries.")
@click.option("--action", help="Only entries with this action, e.g. key.created.")
@click.option("--after", type=int, default=0, show_default=True, help="After this entry.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@pass_context
def list_entries(
    ctx: Context, org_slug: str | None, action: str | None, after: int, limit: int, as_json: bool
) -> None:
    """List entries, oldest first."""
    with database(ctx.settings()) as db:

        def read(conn: Connection) -> list[audit.Entry]:
            org_id = orgs.get(conn, org_slug).id if org_slug else None
            return audit.entries(conn, org_id=org_id, action=action, after=after, limit=limit)

        rows = db.read_sync(read)
    if as_json:
        for entry in rows:
            click.echo(orjson.dumps(entry.to_dict()).decode())
        return
    table = Table("seq", "time", "org", "actor", "action", "target", "details")
    for e in rows:
        table.add_row(
            str(e.seq),
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(e.org_id or ""),
            e.actor,
            e.action,
            e.target or "",
            orjson.dumps(e.details).decode()[:120],
        )
    print_table(table)
