"""The app factory: ``Concierge(settings).app()`` builds a server; nothing happens at import.

:class:`Concierge` owns the services one server process shares (database, model registry,
metering, key cache); the ASGI app's lifespan starts and stops them. Two instances with
different settings can run side by side in one process (the tests do).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pluggy
from fastapi import FastAPI

from concierge import __version__, keys
from concierge.assistants.drafts import Recovery
from concierge.assistants.runtime import Runtime
from concierge.assistants.toolbox import Toolbox
from concierge.channels.service import Channels
from concierge.compliance.retention import Scheduler
from concierge.config import Settings
from concierge.egress import Egress, EgressPolicy, Transport
from concierge.gateway import body, errors
from concierge.gateway.auth import KeyCache
from concierge.gateway.bounds import Bounds
from concierge.gateway.hygiene import LogScope, SecurityHeaders
from concierge.gateway.limits import BodySizeLimit, RefuseNul
from concierge.gateway.routes import Routes
from concierge.governance.logs import install_log_redaction
from concierge.governance.service import Governance
from concierge.inbox.service import Inbox
from concierge.knowledge.parsers import Parsers
from concierge.knowledge.service import Knowledge
from concierge.metering import Metering
from concierge.metering.ledger import UsageLedger, tokens_since
from concierge.metering.limits import Limiter, MemoryLimiter, RedisLimiter
from concierge.metrics import Metrics
from concierge.models.registry import ModelRegistry
from concierge.plugins import plugin_manager
from concierge.store import Database, migrate
from concierge.web.widget import VisitorSigner, WidgetKeys

log = logging.getLogger(__name__)


class Concierge:
    def __init__(
        self,
        settings: Settings,
        *,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
        preload_models: bool = True,
        registry: ModelRegistry | None = None,
        transport: Transport | None = None,
    ) -> None:
        """``registry``: use these models instead of building them from plugins; the caller
        then owns them (they are not closed at shutdown). ``transport``: how every outbound
        HTTP session connects (default the network; a test answers in-process)."""
        self.settings = settings
        self.pm: pluggy.PluginManager = plugin_manager(plugins, entry_points=entry_points)
        self.preload_models = preload_models
        self.db = Database(settings.resolved_database_url)
        self._owns_registry = registry is None
        self.registry = registry or ModelRegistry.from_plugins(self.pm, settings)
        self.metrics = Metrics(self.registry.queue_depth, self.registry.queue_stats)
        self.ledger = UsageLedger(self.db, settings.usage_flush_seconds)
        self.limiter: Limiter = (
            RedisLimiter(self._usage_since, settings.redis_url)
            if settings.redis_url
            else MemoryLimiter(self._usage_since)
        )
        self.metering = Metering(self.ledger, self.limiter, self.metrics)
        self.bounds = Bounds.from_settings(settings)  # the work one request may ask for
        self.key_cache = KeyCache(self.db, settings.key_cache_seconds)
        # Every URL an organisation can point the server at is fetched under this policy.
        self.egress = Egress(
            EgressPolicy.from_settings(settings.egress_allowed_networks), transport
        )
        for backend in [*self.registry.models.values(), *self.registry.embedding_models.values()]:
            backend.use_http(self.egress)  # upstream models connect through it too
        self.knowledge = Knowledge(
            self.db,
            self.registry,
            settings,
            parsers=Parsers.from_plugins(self.pm, settings),
            egress=self.egress,
        )
        self.governance = Governance(self.db, self.pm, settings)
        self.retention = Scheduler(self.db, settings.retention_interval_seconds)
        self.recovery = Recovery(self.db, settings.reply_stale_seconds)
        self.runtime = Runtime(
            self.db,
            self.registry,
            self.knowledge,
            settings,
            self.governance,
            self.egress,
            Toolbox.from_plugins(self.pm, settings),
        )
        self.channels = Channels(self.db, settings, self.pm, self.runtime, self.egress)
        # The inbox's messages to customers (out-of-hours, CSAT) go out the channel's way.
        self.inbox = Inbox(self.db, settings.inbox_poll_seconds, self.channels.platform_message)
        self.widget_signer = VisitorSigner()
        self.widget_keys = WidgetKeys(settings.key_cache_seconds)
        self._warmups: list[asyncio.Future[Any]] = []

    async def _usage_since(self, api_key_id: int, since: Any) -> int:
        await self.ledger.flush()  # the ledger must include this process's latest records
        return await self.db.read(lambda conn: tokens_since(conn, api_key_id, since))

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        await asyncio.to_thread(migrate.upgrade, self.db)
        created = await self.db.write(
            lambda conn: keys.bootstrap_admin(conn, self.settings.admin_key)
        )
        if created is not None and not self.settings.admin_key:
            announce_admin_key(created.secret)
        await self.governance.start()
        install_log_redaction()
        await self.ledger.start()
        self.retention.start()
        self.recovery.start()  # replies a stopped process left half-written: interrupted
        self.channels.start()  # inbound events and the outbox, left by any process, resume
        self.inbox.start()
        resumed = await self.knowledge.resume()
        if resumed:
            log.info("resuming ingestion in %d knowledge base(s)", resumed)
        if self.preload_models:
            loop = asyncio.get_running_loop()
            for backend in [
                *self.registry.models.values(),
                *self.registry.embedding_models.values(),
            ]:
                if backend.holds_weights:
                    self._warmups.append(loop.run_in_executor(None, backend.load))
        for started in self.pm.hook.startup(concierge=self):
            if inspect.isawaitable(started):
                await started
        # What start-up made lives as long as the server: out of the collector's full passes,
        # which otherwise scan it again and again (pauses of tens of milliseconds under load).
        gc.freeze()

    async def shutdown(self) -> None:
        for stopped in self.pm.hook.shutdown(concierge=self):
            if inspect.isawaitable(stopped):
                try:
                    await stopped
                except Exception:  # the rest must still close
                    log.exception("a plugin's shutdown failed")
        await self.retention.stop()
        await self.recovery.stop()
        await self.inbox.close()
        await self.channels.close()
        await self.knowledge.close()
        await self.egress.close()
        for warmup in self._warmups:
            if not warmup.done():
                await asyncio.wait([warmup], timeout=30)
        await self.ledger.stop()
        await self.limiter.close()
        if self._owns_registry:
            await self.registry.aclose()
        await asyncio.to_thread(self.db.close)

    # -- the ASGI app ----------------------------------------------------------------------

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.startup()
            try:
                yield
            finally:
                await self.shutdown()

        app = FastAPI(
            title="Concierge",
            version=__version__,
            summary="Self-hosted AI assistant platform with an OpenAI-compatible API.",
            lifespan=lifespan,
            openapi_url="/openapi.json",
        )
        app.state.concierge = self
        errors.install(app)
        routes = Routes()
        self.pm.hook.register_routes(routes=routes, concierge=self)
        for router in routes.routers:
            app.include_router(router)
        for path, mounted in routes.mounts:
            app.mount(path, mounted)
        app.add_middleware(
            BodySizeLimit,
            max_bytes=self.settings.max_body_bytes,
            max_upload_bytes=self.settings.max_upload_bytes,
        )
        app.add_middleware(RefuseNul)
        app.add_middleware(SecurityHeaders)  # every response, every mounted app
        app.add_middleware(LogScope, detector=self.governance.detector)  # outermost

        def document() -> dict[str, Any]:
            if app.openapi_schema is None:
                document = body.add_schemas(FastAPI.openapi(app), routes.body_models)
                app.openapi_schema = errors.document_errors(document)
            return app.openapi_schema

        app.openapi = document  # type: ignore[method-assign]
        return app


def announce_admin_key(secret: str) -> None:
    """Print a newly generated admin key, once, where the operator will see it."""
    bar = "=" * 72
    print(
        f"\n{bar}\n  Concierge created an admin API key. It is shown only this once:\n\n"
        f"    {secret}\n\n  Keep it safe: store it in a password manager or as "
        f"CONCIERGE_API_KEY.\n  It administers every organisation; to act in one (the demo's "
        f"is 'acme'), send\n  the header OpenAI-Organization: acme (openai clients: "
        f"organization='acme').\n{bar}\n",
        file=sys.stdout,
        flush=True,
    )


def create_app(settings: Settings, **kwargs: Any) -> FastAPI:
    """Shorthand for ``Concierge(settings, **kwargs).app()`` (used by uvicorn's factory mode)."""
    return Concierge(settings, **kwargs).app()


def from_environment() -> FastAPI:
    """App factory for multi-worker uvicorn: settings from CONCIERGE_* and CONCIERGE_CONFIG."""
    from concierge.config import load_settings

    return Concierge(load_settings()).app()
