"""``concierge serve``: run the HTTP server."""

from __future__ import annotations

import os

import click
import uvicorn

from concierge import keys
from concierge.app import announce_admin_key, create_app
from concierge.cli import Context, database, pass_context


@click.command("serve")
@click.option("--host", help="Interface to listen on (setting: host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (setting: port).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (setting: workers).")
@pass_context
def command(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the API (and, later, the console and widget) over HTTP."""
    settings = ctx.settings(host=host, port=port, workers=workers)
    # Migrate and create the first admin key here, once, before any worker starts.
    with database(settings) as db:
        created = db.write_sync(lambda conn: keys.bootstrap_admin(conn, settings.admin_key))
    if created is not None and not settings.admin_key:
        announce_admin_key(created.secret)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # The client's address (per-address limits) from X-Forwarded-For, from these only.
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    # Each worker process builds its own app from the same configuration.
    if ctx.config_file:
        os.environ["CONCIERGE_CONFIG"] = str(ctx.config_file)
    os.environ.update({"CONCIERGE_HOST": settings.host, "CONCIERGE_PORT": str(settings.port)})
    uvicorn.run("concierge.app:from_environment", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
