"""The channels one server process runs: their types, their secrets, the webhook intake, the
workers, and what the API asks of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
from sqlalchemy import Connection

from concierge.assistants import definitions
from concierge.assistants.runtime import Runtime
from concierge.channels import delivery, outbox, queue
from concierge.channels import store as channel_store
from concierge.channels.base import (
    ChannelType,
    Choice,
    MalformedEvent,
    PlatformHttp,
    SendFailed,
    Template,
)
from concierge.channels.compose import compose
from concierge.channels.intake import Intake
from concierge.channels.media import MediaReader
from concierge.channels.pacing import MemoryPacer, Pacer, RedisPacer
from concierge.channels.queue import Thread
from concierge.channels.registry import ChannelTypes
from concierge.channels.store import Channel, ChannelStatus
from concierge.channels.worker import Dispatcher
from concierge.config import Settings
from concierge.conversations.store import Conversation
from concierge.egress import Egress
from concierge.errors import NotFound, UpstreamError
from concierge.secretbox import SecretBox
from concierge.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carrier:
    """What carries a conversation on a messaging channel."""

    kind: ChannelType
    channel: Channel
    thread: Thread


class Channels:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        pm: pluggy.PluginManager,
        runtime: Runtime,
        egress: Egress,
    ) -> None:
        self.db = db
        self.settings = settings
        self.runtime = runtime
        self.policies = runtime.governance.policies
        self.egress = egress
        self.types = ChannelTypes.from_plugins(pm, settings)
        self.readers: list[MediaReader] = []
        pm.hook.register_media_readers(register=self.readers.append, settings=settings)
        self.box = SecretBox.from_settings(settings.secret_keys, settings.data_dir)
        self.pacer: Pacer = RedisPacer(settings.redis_url) if settings.redis_url else MemoryPacer()
        self.dispatcher = Dispatcher(self)
        self.intake = Intake(db, self.dispatcher.wake)
        self._cache: dict[str, tuple[Channel, float]] = {}
        self._started = False

    def start(self) -> None:
        if self.settings.channel_dispatch:
            self.dispatcher.start()
            self._started = True

    async def close(self) -> None:
        await self.intake.close()
        if self._started:
            await self.dispatcher.close()
        await self.pacer.close()

    def http(self) -> PlatformHttp:
        return PlatformHttp(self.egress.session())

    def reader_for(self, kind: str) -> MediaReader | None:
        return next((r for r in self.readers if kind in r.kinds), None)

    def channel_by_id(self, conn: Connection, channel_id: str) -> Channel:
        return channel_store.by_id(conn, self.types, self.box, channel_id)

    # -- the API ---------------------------------------------------------------------------

    async def create(
        self,
        org_id: int,
        *,
        type: str,
        assistant: str,
        name: str | None,
        config: dict[str, Any],
        actor: str,
        webhook_url: str,
        connect: bool = True,
    ) -> Channel:
        def write(conn: Connection) -> Channel:
            found = definitions.get(conn, org_id, assistant)
            return channel_store.create(
                conn,
                self.types,
                self.box,
                org_id=org_id,
                assistant_id=found.id,
                type=type,
                name=name,
                config=config,
                actor=actor,
            )

        channel = await self.db.write(write)
        if connect:
            try:
                await self.connect(channel, webhook_url.replace("{id}", channel.id))
            except UpstreamError:
                # Not connected, not kept: the operator fixes the token and sends it again.
                await self.db.write(lambda conn: channel_store.remove(conn, channel, actor))
                raise
        return channel

    async def connect(self, channel: Channel, webhook_url: str) -> None:
        """Point the platform at the channel's webhook where its API allows (Telegram's
        setWebhook); the platform's refusal is a 502 that says why."""
        kind = self.types.get(channel.type)
        try:
            await kind.connect(self.http(), channel.config, webhook_url)
        except SendFailed as exc:
            raise UpstreamError(
                f"{kind.title} did not accept the webhook ({exc.message}); check the "
                "channel's token and that public_url is reachable over HTTPS"
            ) from None

    def assistant_names(self, conn: Connection, org_id: int) -> dict[int, str]:
        return {a.id: a.name for a in definitions.list_all(conn, org_id)}

    def carrier(self, conn: Connection, conversation_id: int) -> Carrier | None:
        """The channel and thread a conversation is carried on, if it is on one."""
        thread = delivery.thread_of(conn, conversation_id)
        if thread is None:
            return None
        channel = self.channel_by_id(conn, thread.channel_id)
        return Carrier(self.types.get(channel.type), channel, thread)

    def queue_human_reply(
        self,
        conn: Connection,
        carrier: Carrier,
        turn_id: int,
        text: str,
        template: Template | None = None,
    ) -> None:
        delivery.queue_human_reply(
            conn,
            carrier.kind,
            carrier.channel,
            carrier.thread,
            turn_id=turn_id,
            text=text,
            template=template,
        )

    def platform_message(
        self,
        conn: Connection,
        conversation: Conversation,
        turn_id: int,
        text: str,
        choices: list[tuple[str, str]],
    ) -> None:
        """A message from the platform (the inbox's out-of-hours reply or CSAT question),
        already on record as ``turn_id``: queued on the conversation's channel, if it has one
        (on the web widget the turn itself is what the visitor sees)."""
        carrier = self.carrier(conn, conversation.id)
        if carrier is None:
            return
        offered = tuple(Choice(id=ident, title=title) for ident, title in choices)
        outbox.enqueue_to(
            conn,
            carrier.channel,
            carrier.thread,
            compose(carrier.kind, text, offered, raw_choices=True),
            dedupe=f"turn:{turn_id}",
            turn_id=turn_id,
            conversation_id=conversation.id,
        )
        self.dispatcher.outbound.wake.set()

    # -- webhooks --------------------------------------------------------------------------

    async def verify(self, channel_id: str, query: Mapping[str, str]) -> str:
        channel = await self._live(channel_id)
        return self.types.get(channel.type).verify(channel.config, query)

    async def receive(self, channel_id: str, headers: Mapping[str, str], body: bytes) -> int:
        """A webhook call: authenticated, its events stored (a repeat is ignored), then the
        workers woken. How many new events it had. A body that is authentic but unreadable
        is stored as a failed event and acknowledged (the platform would retry it forever)."""
        channel = await self._live(channel_id)
        kind = self.types.get(channel.type)
        kind.authenticate(channel.config, headers, body)  # nothing is stored before this
        try:
            events = kind.parse(channel.config, body)
        except MalformedEvent as exc:
            why = str(exc)
            log.warning("channel %s: unreadable webhook body (%s)", channel.id, why)
            await self.db.write(
                lambda conn: queue.store_malformed(conn, channel.id, channel.org_id, body, why)
            )
            return 0
        if not events:
            return 0
        return await self.intake.store(channel.id, channel.org_id, events)

    def forget(self, channel_id: str) -> None:
        """A channel changed here: read it again on its next webhook (other replicas do within
        ``key_cache_seconds``)."""
        self._cache.pop(channel_id, None)

    async def _live(self, channel_id: str) -> Channel:
        """The channel a webhook names, cached for ``key_cache_seconds`` (its secrets are
        decrypted and its settings validated once, not on every call)."""
        if not channel_id.startswith("ch_") or len(channel_id) > 32:
            raise NotFound("channel not found", param="channel")
        now = time.monotonic()
        hit = self._cache.get(channel_id)
        if hit is not None and hit[1] > now:
            channel = hit[0]
        else:
            channel = await self.db.read(lambda conn: self.channel_by_id(conn, channel_id))
            if self.settings.key_cache_seconds > 0:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[channel_id] = (channel, now + self.settings.key_cache_seconds)
        if channel.status != ChannelStatus.ACTIVE:
            raise NotFound("channel not found", param="channel")  # a disabled one takes nothing
        return channel
