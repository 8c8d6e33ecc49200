"""A reply on record from its first moment, so that nothing is lost when the process dies.

Before the model is called, the user's turn and an empty reply turn (status ``generating``)
are stored together. While the reply streams, :class:`Draft` writes what the user has been
shown so far to that turn about once a second (masked for storage, as the finished turn will
be), and touches it while the model or a tool is busy, so a turn that stops being touched
belongs to a process that is gone. :func:`recover` (run at start-up and then periodically by
every replica) marks such turns ``interrupted``: the user's message and the text already
delivered stay on record, with the reply's provenance label (its id and producer are in the
turn's governance record from the start).

The turn is finished in place when the reply ends; if the model fails before producing any
text, the draft is taken back whole (nothing stored, the user sends again), as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from concierge import background
from concierge.conversations import store
from concierge.conversations.records import Turn
from concierge.conversations.store import Conversation, EndUser
from concierge.store import Database

log = logging.getLogger(__name__)
STALE_SECONDS = 60.0  # a generating turn untouched this long belongs to a process that died


@dataclass
class Drafted:
    """An exchange stored before its reply is written: the user's turn and the reply's id."""

    user: EndUser
    conversation: Conversation
    user_turn: Turn
    reply_id: int
    reply_created: datetime
    new_conversation: bool  # made for this exchange (taken back with it)
    new_user: bool
    keeper: Draft | None = None


class Draft:
    """Keeps one reply turn's stored text up to date while it is written."""

    def __init__(
        self,
        db: Database,
        turn_id: int,
        content: Callable[[], str],
        *,
        flush_seconds: float,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        """``content``: the reply's text as it should be stored now (masked per policy)."""
        self.db = db
        self.turn_id = turn_id
        self.content = content
        self.flush_seconds = flush_seconds
        self.stale_seconds = stale_seconds
        self._written = ""
        self._touched = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"draft-{self.turn_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await background.stop(task)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:  # a missed flush is retried on the next tick; never fatal
                log.warning("could not write reply draft %s", self.turn_id, exc_info=True)

    async def flush(self) -> None:
        """Write the text if it changed, or only the time if the turn would look stale."""
        text = self.content()
        now = time.monotonic()
        if text == self._written and now - self._touched < self.stale_seconds / 3:
            return
        changed = text if text != self._written else None
        await self.db.write(lambda conn: store.touch_draft(conn, self.turn_id, changed))
        self._written, self._touched = text, now


async def recover(db: Database, stale_seconds: float = STALE_SECONDS) -> int:
    """Mark ``interrupted`` every reply still ``generating`` that no process has touched for
    ``stale_seconds`` (its process died mid-reply); how many there were."""
    before = datetime.now(UTC) - timedelta(seconds=stale_seconds)
    found = await db.write(lambda conn: store.interrupt_stale(conn, before))
    if found:
        log.warning("%d reply(s) were cut off by a process that stopped; marked interrupted", found)
    return found


class Recovery:
    """The periodic :func:`recover` of one server process (at start, then every half of
    ``stale_seconds``; every replica runs one, and a turn is marked once)."""

    def __init__(self, db: Database, stale_seconds: float = STALE_SECONDS) -> None:
        self.db = db
        self.stale_seconds = stale_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reply-recovery")

    async def _run(self) -> None:
        while True:
            try:
                await recover(self.db, self.stale_seconds)
            except Exception:
                log.warning("reply recovery failed; retrying", exc_info=True)
            await asyncio.sleep(self.stale_seconds / 2)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await background.stop(task)
