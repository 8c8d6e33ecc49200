"""Webhook intake at the platforms' pace: events from concurrent webhook calls are written
together, in one transaction, by one task (group commit), and each call is answered once its
own events are on disk.

A webhook must be acknowledged quickly (Meta expects well under a second, and retries what is
not) and only after its events are stored. One transaction per call spends most of its time
beginning and committing; under load, calls that arrive while a batch is being written form
the next batch, so the cost of a commit is shared and the rate a database takes rises with the
load instead of the latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from concierge.background import stop
from concierge.channels import queue
from concierge.channels.base import Event
from concierge.store import Database

MAX_BATCH = 256


@dataclass
class _Pending:
    channel_id: str
    org_id: int
    events: list[Event]
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Intake:
    def __init__(self, db: Database, stored: Callable[[], None]) -> None:
        self.db = db
        self.stored = stored  # called after each batch that stored something (wake workers)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def store(self, channel_id: str, org_id: int, events: list[Event]) -> int:
        """Store ``events`` (a repeat is ignored). Returns once committed, with how many events
        of its batch (this call's and those written with them) were new."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="channels-intake")
        pending = _Pending(channel_id, org_id, events)
        # Retrieved even when the caller has gone (a client that hung up): never "unhandled".
        pending.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        await self._queue.put(pending)
        return await asyncio.shield(pending.done)

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            new = await self.db.write(
                lambda conn: queue.store_batch(
                    conn, [(p.channel_id, p.org_id, p.events) for p in batch]
                )
            )
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)
                return
            # One call's events broke the batch: write each alone, so the rest are stored.
            for pending in batch:
                await self._write([pending])
            return
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(new)
        if new:
            self.stored()
