"""``concierge channels``: connect messaging channels to assistants, and see what they carry."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from concierge import orgs
from concierge.assistants import definitions
from concierge.channels import outbox, queue
from concierge.channels import store as channel_store
from concierge.channels.base import PlatformHttp
from concierge.channels.queue import EventStatus
from concierge.channels.registry import ChannelTypes
from concierge.channels.store import Channel, ChannelStatus
from concierge.cli import Context, database, pass_context, print_table
from concierge.config import Settings
from concierge.egress import Egress, EgressPolicy
from concierge.errors import InvalidRequest
from concierge.governance import audit
from concierge.plugins import plugin_manager
from concierge.secretbox import SecretBox
from concierge.store import Database


def _parts(settings: Settings) -> tuple[ChannelTypes, SecretBox]:
    return (
        ChannelTypes.from_plugins(plugin_manager(), settings),
        SecretBox.from_settings(settings.secret_keys, settings.data_dir),
    )


def _config(config_file: Path | None, values: tuple[str, ...]) -> dict[str, Any]:
    """Settings from a JSON file (keep secrets there, not in the shell's history) and
    ``--set name=value`` pairs (a value that parses as JSON is taken as such)."""
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidRequest(f"cannot read {config_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"{config_file} must hold a JSON object")
        config.update(loaded)
    for pair in values:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidRequest(f"--set takes name=value, not {pair!r}")
        try:
            config[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[name.strip()] = value
    return config


def _webhook(settings: Settings, channel_id: str) -> str:
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/channels/{channel_id}/webhook"


def _show(settings: Settings, channel: Channel) -> None:
    click.echo(json.dumps(channel.to_dict(_webhook(settings, channel.id)), indent=2))


async def _connect(settings: Settings, types: ChannelTypes, channel: Channel) -> None:
    egress = Egress(EgressPolicy.from_settings(settings.egress_allowed_networks))
    try:
        kind = types.get(channel.type)
        await kind.connect(
            PlatformHttp(egress.session()), channel.config, _webhook(settings, channel.id)
        )
    finally:
        await egress.close()


def _find(db: Database, types: ChannelTypes, box: SecretBox, channel_id: str) -> Channel:
    return db.read_sync(lambda conn: channel_store.by_id(conn, types, box, channel_id))


@click.group("channels")
def command() -> None:
    """Connect WhatsApp, Messenger, Instagram and Telegram to assistants."""


@command.command("types")
@pass_context
def list_types(ctx: Context) -> None:
    """The channel types this installation knows, with their settings."""
    types, _ = _parts(ctx.settings())
    table = Table("type", "settings (secret ones marked *)")
    for kind in types.types.values():
        fields = [
            f"{name}{'*' if name in kind.config_model.SECRETS else ''}"
            for name in kind.config_model.model_fields
        ]
        table.add_row(kind.name, ", ".join(fields))
    print_table(table)


@command.command("create")
@click.option("--org", "org_slug", default="default", show_default=True, help="Organisation slug.")
@click.option("--type", "kind", required=True, help="whatsapp, messenger, instagram, telegram...")
@click.option("--assistant", required=True, help="The assistant that answers on it (name or id).")
@click.option("--name", help="A label for people (default: the platform's name).")
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file with the platform's settings (tokens, secrets).",
)
@click.option("--set", "values", multiple=True, metavar="NAME=VALUE", help="One setting.")
@click.option("--connect/--no-connect", default=True, help="Register the webhook (Telegram).")
@pass_context
def create(
    ctx: Context,
    org_slug: str,
    kind: str,
    assistant: str,
    name: str | None,
    config_file: Path | None,
    values: tuple[str, ...],
    connect: bool,
) -> None:
    """Connect a channel to an assistant and print it (secrets masked) with its webhook URL."""
    settings = ctx.settings()
    types, box = _parts(settings)
    config = _config(config_file, values)
    with database(settings) as db:

        def write(conn: Any) -> Channel:
            org = orgs.get(conn, org_slug)
            found = definitions.get(conn, org.id, assistant)
            return channel_store.create(
                conn,
                types,
                box,
                org_id=org.id,
                assistant_id=found.id,
                type=kind,
                name=name,
                config=config,
                actor=audit.cli_actor(),
            )

        channel = db.write_sync(write)
    if connect:
        asyncio.run(_connect(settings, types, channel))
    _show(settings, channel)


@command.command("list")
@click.option("--org", "org_slug", default="default", show_default=True, help="Organisation slug.")
@pass_context
def list_channels(ctx: Context, org_slug: str) -> None:
    """List an organisation's channels."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        rows = db.read_sync(
            lambda conn: channel_store.list_all(conn, types, box, orgs.get(conn, org_slug).id)
        )
    table = Table("id", "type", "name", "assistant", "status", "webhook")
    for c in rows:
        table.add_row(
            c.id, c.type, c.name, str(c.assistant_id), str(c.status), _webhook(settings, c.id)
        )
    print_table(table)


@command.command("show")
@click.argument("channel_id")
@pass_context
def show(ctx: Context, channel_id: str) -> None:
    """A channel's settings (secrets masked) and webhook URL."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        _show(settings, _find(db, types, box, channel_id))


@command.command("update")
@click.argument("channel_id")
@click.option("--assistant", help="Answer with another assistant.")
@click.option("--name", help="A new label.")
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file with settings to change.",
)
@click.option("--set", "values", multiple=True, metavar="NAME=VALUE", help="One setting.")
@click.option("--enable/--disable", "enabled", default=None, help="Take or refuse traffic.")
@pass_context
def update(
    ctx: Context,
    channel_id: str,
    assistant: str | None,
    name: str | None,
    config_file: Path | None,
    values: tuple[str, ...],
    enabled: bool | None,
) -> None:
    """Change a channel: settings not given keep their values."""
    settings = ctx.settings()
    types, box = _parts(settings)
    config = _config(config_file, values) if (config_file or values) else None
    with database(settings) as db:

        def write(conn: Any) -> Channel:
            current = channel_store.by_id(conn, types, box, channel_id)
            assistant_id = (
                definitions.get(conn, current.org_id, assistant).id if assistant else None
            )
            status = (
                None
                if enabled is None
                else ChannelStatus.ACTIVE
                if enabled
                else ChannelStatus.DISABLED
            )
            return channel_store.update_channel(
                conn,
                types,
                box,
                current,
                assistant_id=assistant_id,
                name=name,
                config=config,
                status=status,
                actor=audit.cli_actor(),
            )

        _show(settings, db.write_sync(write))


@command.command("delete")
@click.argument("channel_id")
@click.confirmation_option(prompt="Delete the channel, its queue and its outbox?")
@pass_context
def delete(ctx: Context, channel_id: str) -> None:
    """Disconnect and delete a channel (conversations are kept)."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        db.write_sync(
            lambda conn: channel_store.remove(
                conn, channel_store.by_id(conn, types, box, channel_id), audit.cli_actor()
            )
        )
    click.echo(f"deleted channel {channel_id}")


@command.command("connect")
@click.argument("channel_id")
@pass_context
def connect_command(ctx: Context, channel_id: str) -> None:
    """Register the channel's webhook with the platform again (uses public_url)."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        channel = _find(db, types, box, channel_id)
    asyncio.run(_connect(settings, types, channel))
    click.echo(f"webhook of {channel_id} set to {_webhook(settings, channel_id)}")


@command.command("events")
@click.argument("channel_id")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@pass_context
def events(ctx: Context, channel_id: str, status: str | None, limit: int) -> None:
    """What the platform delivered, newest first (failed ones say why)."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        channel = _find(db, types, box, channel_id)
        rows, _ = db.read_sync(
            lambda conn: queue.list_events(
                conn,
                channel.org_id,
                channel.id,
                status=EventStatus(status) if status else None,
                limit=limit,
            )
        )
    table = Table("id", "received", "kind", "key", "status", "tries", "error")
    for e in rows:
        table.add_row(
            str(e.id),
            e.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(e.event.kind),
            e.event.key[:40],
            str(e.status),
            str(e.attempts),
            e.error or "",
        )
    print_table(table)


@command.command("messages")
@click.argument("channel_id")
@click.option(
    "--status", type=click.Choice([s.value for s in outbox.OutboxStatus]), help="Only these."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@pass_context
def messages(ctx: Context, channel_id: str, status: str | None, limit: int) -> None:
    """The outbox: messages sent or waiting, newest first."""
    settings = ctx.settings()
    types, box = _parts(settings)
    with database(settings) as db:
        channel = _find(db, types, box, channel_id)
        rows, _ = db.read_sync(
            lambda conn: outbox.list_messages(
                conn,
                channel.org_id,
                channel_id=channel.id,
                status=outbox.OutboxStatus(status) if status else None,
                limit=limit,
            )
        )
    table = Table("id", "created", "status", "tries", "text", "error")
    for m in rows:
        table.add_row(
            str(m.id),
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(m.status),
            str(m.attempts),
            m.message.text[:40],
            m.error or "",
        )
    print_table(table)


@command.command("reseal")
@pass_context
def reseal(ctx: Context) -> None:
    """Encrypt every channel's secrets again under the first of secret_keys (after adding a
    new key in front; the old one can then be removed)."""
    settings = ctx.settings()
    _, box = _parts(settings)
    with database(settings) as db:
        count = db.write_sync(lambda conn: channel_store.reseal(conn, box))
    click.echo(f"resealed the secrets of {count} channel(s)")


@command.command("work")
@pass_context
def work(ctx: Context) -> None:
    """Run the channel workers without an HTTP server: inbound events through the assistants
    and the outbox out to the platforms, for deployments whose web replicas only take webhooks
    (channel_dispatch = false). Stops on SIGTERM or Ctrl-C; work in hand is left to the
    queue's leases (another worker, or this one restarted, takes it up)."""
    from concierge.app import Concierge

    settings = ctx.settings(channel_dispatch=True)

    async def run() -> None:
        app = Concierge(settings)
        await app.startup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        click.echo("channel workers running (Ctrl-C to stop)", err=True)
        try:
            await stop.wait()
        finally:
            await app.shutdown()

    asyncio.run(run())
