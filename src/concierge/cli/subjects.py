"""``concierge subjects``: a data subject's export and erasure (GDPR Art. 15, 17, 20)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from sqlalchemy import Connection

from concierge import orgs
from concierge.cli import Context, database, pass_context
from concierge.compliance import subjects
from concierge.conversations.records import Turn
from concierge.governance import audit
from concierge.governance.labels import Labeller


@click.group("subjects")
def command() -> None:
    """Export or erase everything stored about a person."""


def _dump(data: object, output: Path | None) -> None:
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")
        click.echo(f"wrote {output}", err=True)


@command.command("export")
@click.option("--org", "org_slug", required=True, help="The organisation.")
@click.option("--subject", required=True, help="The person's id (API user, visitor, phone).")
@click.option("--channel", help="Only their identity on this channel (default: all).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@pass_context
def export(
    ctx: Context, org_slug: str, subject: str, channel: str | None, output: Path | None
) -> None:
    """Everything stored about SUBJECT as JSON, generated turns with their labels (audited)."""
    settings = ctx.settings()
    with database(settings) as db:

        def write(conn: Connection) -> dict[str, object]:
            labeller = Labeller.load(conn, settings.label_producer)

            def label(turn: Turn) -> dict[str, str] | None:
                if turn.label_id is None:
                    return None
                return labeller.label(turn.content, turn.label_id, producer=turn.producer)

            return subjects.export(
                conn,
                orgs.get(conn, org_slug).id,
                subject,
                channel=channel,
                actor=audit.cli_actor(),
                label=label,
            )

        _dump(db.write_sync(write), output)


@command.command("erase")
@click.option("--org", "org_slug", required=True, help="The organisation.")
@click.option("--subject", required=True, help="The person's id (API user, visitor, phone).")
@click.option("--channel", help="Only their identity on this channel (default: all).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@pass_context
def erase(
    ctx: Context,
    org_slug: str,
    subject: str,
    channel: str | None,
    yes: bool,
    output: Path | None,
) -> None:
    """Delete everything stored about SUBJECT and print the receipt (audited)."""
    if not yes:
        click.confirm(
            f"Erase every trace of {subject!r} in {org_slug}? This cannot be undone", abort=True
        )
    with database(ctx.settings()) as db:
        receipt = db.write_sync(
            lambda conn: subjects.erase(
                conn, orgs.get(conn, org_slug).id, subject, channel=channel, actor=audit.cli_actor()
            )
        )
    _dump(receipt, output)
