"""``concierge keys``: create, list and revoke API keys."""

from __future__ import annotations

import click
from rich.table import Table

from concierge import keys
from concierge.cli import Context, database, pass_context, print_table
from concierge.governance import audit


@click.group("keys")
def command() -> None:
    """Manage API keys."""


@command.command("create")
@click.option("--org", "org_slug", default="default", show_default=True, help="Organisation slug.")
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(sorted(keys.SCOPES)),
    default=("inference",),
    show_default=True,
    help="Repeat for several scopes.",
)
@click.option("--rpm", type=click.IntRange(1, 10**9), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1, 2**31 - 1), help="Tokens per minute.")
@click.option("--tokens-per-day", type=click.IntRange(1, 10**15), help="Token quota per UTC day.")
@click.option(
    "--tokens-per-month", type=click.IntRange(1, 10**15), help="Token quota per UTC month."
)
@pass_context
def create(
    ctx: Context,
    org_slug: str,
    name: str,
    scopes: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    tokens_per_day: int | None,
    tokens_per_month: int | None,
) -> None:
    """Create a key. Its secret is printed once and cannot be shown again."""
    settings = ctx.settings()
    limits = keys.Limits(
        rpm or settings.default_requests_per_minute,
        tpm or settings.default_tokens_per_minute,
        tokens_per_day,
        tokens_per_month,
    )
    with database(settings) as db:
        new = db.write_sync(
            lambda conn: keys.create(
                conn, org_slug, name, frozenset(scopes), limits, actor=audit.cli_actor()
            )
        )
    click.echo(
        f"created key {new.key.id} ({new.key.prefix}…) for {org_slug}; "
        "this is the only time it is shown:",
        err=True,
    )
    click.echo(new.secret)


@command.command("list")
@click.option("--org", "org_slug", help="Only this organisation's keys.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@pass_context
def list_keys(ctx: Context, org_slug: str | None, show_all: bool) -> None:
    """List keys (never their secrets)."""
    with database(ctx.settings()) as db:
        rows = db.read_sync(lambda conn: keys.list_keys(conn, org_slug))
    table = Table(
        "id",
        "org",
        "name",
        "prefix",
        "scopes",
        "rpm",
        "tpm",
        "per day",
        "per month",
        "created",
        "revoked",
    )
    for k in rows:
        if k.revoked_at and not show_all:
            continue
        lim = k.limits
        table.add_row(
            str(k.id),
            k.org_slug,
            k.name,
            k.prefix + "…",
            ",".join(sorted(k.scopes)),
            *(
                str(v) if v else "-"
                for v in (
                    lim.requests_per_minute,
                    lim.tokens_per_minute,
                    lim.tokens_per_day,
                    lim.tokens_per_month,
                )
            ),
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "",
        )
    print_table(table)


@command.command("revoke")
@click.argument("key_id", type=int)
@pass_context
def revoke(ctx: Context, key_id: int) -> None:
    """Revoke the key KEY_ID. Servers stop accepting it within key_cache_seconds."""
    with database(ctx.settings()) as db:
        key = db.write_sync(lambda conn: keys.revoke(conn, key_id, actor=audit.cli_actor()))
    click.echo(f"revoked key {key.id} ({key.prefix}…)")
