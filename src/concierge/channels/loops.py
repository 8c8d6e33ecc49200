"""What the channel workers share: the leases that keep one worker at a time on a customer's
thread (:mod:`concierge.channels.queue`); their loops are :class:`concierge.background.Loop`."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from concierge.background import stop
from concierge.channels import queue

if TYPE_CHECKING:
    from concierge.channels.service import Channels

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{os.uname().nodename[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class Workers:
    """A set of background tasks of one process working on leased threads."""

    def __init__(self, service: Channels, name: str) -> None:
        self.service = service
        self.settings = service.settings
        self.db = service.db
        self.name = name
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_tasks(self) -> None:
        for task in list(self._tasks):
            await stop(task)

    async def _lease(self, thread_id: int, *, send: bool) -> bool:
        seconds = self.settings.channel_lease_seconds
        return await self.db.write(
            lambda conn: queue.lease(conn, thread_id, self.name, seconds, send=send)
        )

    async def _keep(self, thread_id: int, *, send: bool) -> None:
        """Renew a lease until cancelled."""
        while True:
            await asyncio.sleep(self.settings.channel_lease_seconds / 3)
            if not await self._lease(thread_id, send=send):
                log.warning("lost the lease on channel thread %d", thread_id)

    async def _release(self, thread_id: int, *, send: bool) -> None:
        await self.db.write(lambda conn: queue.release(conn, thread_id, self.name, send=send))
