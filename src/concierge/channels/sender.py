"""The outbox going out: each customer's messages in order, by the holder of the thread's send
lease, paced per sending number, retried with backoff, settled when a send was cut short, and
refused (visibly) when the platform's window has closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from concierge.background import Loop, stop
from concierge.channels import outbox, queue
from concierge.channels.base import SendFailed
from concierge.channels.loops import Workers
from concierge.channels.outbox import OutboxRow, OutboxStatus
from concierge.channels.queue import Thread
from concierge.channels.store import Channel, ChannelStatus

if TYPE_CHECKING:
    from concierge.channels.service import Channels

log = logging.getLogger(__name__)


class Sender(Workers):
    def __init__(self, service: Channels, name: str) -> None:
        super().__init__(service, name)
        self.loop = Loop(
            "channels-outbound", self._outbound_step, self.settings.channel_poll_seconds
        )
        self._send_slots = asyncio.Semaphore(64)
        self._sending: set[int] = set()

    async def close(self) -> None:
        await self.loop.stop()
        await self._stop_tasks()

    async def _outbound_step(self) -> bool:
        ready = await self.db.read(lambda conn: outbox.ready_threads(conn, 200))
        for thread_id in ready:
            if thread_id in self._sending:
                continue
            if not await self._lease(thread_id, send=True):
                continue
            self._sending.add(thread_id)
            self._spawn(self._send_thread(thread_id))
        return False

    async def _send_thread(self, thread_id: int) -> None:
        keeper = asyncio.create_task(self._keep(thread_id, send=True))
        try:
            async with self._send_slots:
                while await self._send_next(thread_id):
                    pass
        except Exception:
            log.exception("sending on channel thread %d failed", thread_id)
        finally:
            await stop(keeper)
            self._sending.discard(thread_id)
            with contextlib.suppress(Exception):
                await self._release(thread_id, send=True)

    async def _send_next(self, thread_id: int) -> bool:
        """Send the thread's next message: True to go on with the one after it."""
        service = self.service

        def read(conn: Connection) -> tuple[OutboxRow, Thread, Channel] | None:
            row = outbox.head(conn, thread_id)
            if row is None:
                return None
            return (
                row,
                queue.get_thread(conn, thread_id),
                service.channel_by_id(conn, row.channel_id),
            )

        found = await self.db.read(read)
        if found is None:
            return False
        row, thread, channel = found
        now = datetime.now(UTC)
        kind = service.types.get(channel.type)
        if row.status == OutboxStatus.SENDING:
            # In doubt: a try was cut short (the process stopped) and no status callback has
            # settled it within outbox_in_doubt_seconds. It may have arrived: it is not sent
            # again on a guess; a person can resend it, and a late callback still settles it.
            await self._fail(
                row,
                "the server stopped while sending this message and the platform has not said "
                "whether it arrived; it is not sent again automatically (resend it if needed)",
                "in_doubt",
                OutboxStatus.UNKNOWN,
            )
            return True
        if row.available_at > now:
            return False
        if channel.status != ChannelStatus.ACTIVE:
            await self._fail(row, "the channel is disabled", "channel_disabled")
            return True
        closed = self._window_closed(kind.window, kind.human_window, thread, row, now)
        if closed is not None:
            await self._fail(row, closed, "window_closed")
            return True
        if row.attempts >= self.settings.outbox_max_attempts:
            await self._fail(
                row, f"gave up after {row.attempts} attempts: {row.error}", row.error_code
            )
            return True
        sender = kind.sender_id(channel.config)
        rate = float(getattr(channel.config, "messages_per_second", kind.default_rate))
        grace = self.settings.outbox_in_doubt_seconds
        await self.db.write(lambda conn: outbox.mark_sending(conn, row.id, grace))
        # The slot is taken last, with nothing between it and the request: a slow write above
        # must not push several sends into one instant (at most 64 sends of a process wait here,
        # under a second at WhatsApp's pace).
        await service.pacer.wait(sender, rate)
        try:
            sent = await kind.send(service.http(), channel.config, thread.sender, row.message)
        except SendFailed as exc:
            if exc.permanent:
                await self._fail(row, exc.message, exc.code or "refused")
                return True
            delay = exc.retry_after or outbox.backoff(
                row.attempts + 1, self.settings.outbox_retry_seconds
            )
            if exc.rate_limited and exc.retry_after:
                await service.pacer.hold(sender, exc.retry_after)
            error, code = exc.message, exc.code
            await self.db.write(lambda conn: outbox.mark_retry(conn, row.id, delay, error, code))
            return False
        await self.db.write(lambda conn: outbox.mark_sent(conn, row.id, sent.platform_id))
        return True

    @staticmethod
    def _window_closed(
        window: timedelta | None,
        human_window: timedelta | None,
        thread: Thread,
        row: OutboxRow,
        now: datetime,
    ) -> str | None:
        """Why the platform would refuse this message now, or None."""
        if window is None or row.message.template is not None:
            return None
        allowed = human_window if row.message.human and human_window else window
        last = thread.last_inbound_at
        if last is None or now - last > allowed:
            hours = int(allowed.total_seconds() // 3600)
            return (
                f"the customer's last message was more than {hours} hours ago; the platform "
                "only takes an approved template now"
            )
        return None

    async def _fail(
        self,
        row: OutboxRow,
        error: str,
        code: str | None,
        status: OutboxStatus = OutboxStatus.FAILED,
    ) -> None:
        await self.db.write(lambda conn: outbox.mark_failed(conn, row.id, error, code, status))
