"""``concierge usage``: the usage ledger as a table by day, model and key."""

from __future__ import annotations

import json
from datetime import date, datetime

import click
from rich.table import Table

from concierge import orgs
from concierge.cli import Context, database, pass_context, print_table
from concierge.metering import ledger


def _date(_ctx: click.Context, _param: click.Parameter, value: datetime | None) -> date | None:
    return value.date() if value else None


@click.command("usage")
@click.option("--org", "org_slug", help="Only this organisation.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), callback=_date, help="First day (UTC).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), callback=_date, help="Last day (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@pass_context
def command(
    ctx: Context, org_slug: str | None, since: date | None, until: date | None, as_json: bool
) -> None:
    """Requests, errors and tokens by UTC day, model and API key."""
    with database(ctx.settings()) as db:

        def query(conn):  # type: ignore[no-untyped-def]
            org_id = orgs.get(conn, org_slug).id if org_slug else None
            return ledger.summary(conn, org_id=org_id, since=since, until=until)

        rows = db.read_sync(query)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        "day", "model", "key", "requests", "errors", "prompt tok", "completion tok", "mean ms"
    )
    for r in rows:
        table.add_row(
            r["day"],
            r["model"] or "-",
            (r["key_prefix"] or "-") + "…",
            str(r["requests"]),
            str(r["errors"]),
            str(r["prompt_tokens"]),
            str(r["completion_tokens"]),
            f"{r['mean_latency_ms']:.1f}",
        )
    print_table(table)
