"""The inbox following the conversations, in every server process: conversations handed to
people get their item (the out-of-hours reply when the team is away), customers' messages
reopen what waits on them, snoozes end, SLA breaches are flagged, and open conversations are
assigned. Each pass is one transaction, serialised across replicas, and does nothing twice:
a replica that dies mid-pass leaves nothing half-done."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from concierge.background import Loop
from concierge.conversations import feed
from concierge.inbox import automation, items
from concierge.inbox import settings as inbox_settings
from concierge.inbox.items import ItemStatus, Notify
from concierge.inbox.settings import InboxSettings
from concierge.store import Database, lock
from concierge.store.tables import inbox_cursor

log = logging.getLogger(__name__)


class Inbox:
    def __init__(self, db: Database, interval: float, notify: Notify | None = None) -> None:
        self.db = db
        self.notify = notify
        self.loop = Loop("inbox", self._step, interval)

    def start(self) -> None:
        self.loop.start()

    async def close(self) -> None:
        await self.loop.stop()

    async def _step(self) -> bool:
        await self.tick()
        return False

    async def tick(self, now: datetime | None = None) -> dict[str, int]:
        """One pass (the tests call it directly)."""
        return await self.db.write(lambda conn: self._pass(conn, now or datetime.now(UTC)))

    def _pass(self, conn: Connection, now: datetime) -> dict[str, int]:
        lock(conn, "inbox", 0)  # one pass at a time across replicas
        done = {"opened": 0, "reopened": 0, "woken": 0, "breached": 0, "assigned": 0}
        cache: dict[int, InboxSettings] = {}

        def settings_of(org_id: int) -> InboxSettings:
            if org_id not in cache:
                cache[org_id] = inbox_settings.get(conn, org_id)
            return cache[org_id]

        waiting = feed.awaiting_people(conn)
        known = items.find_many(conn, [c.id for c in waiting])
        for conversation in waiting:
            item = known.get(conversation.id)
            handed = conversation.handoff_at or conversation.updated_at
            if item is not None and not (
                item.status == ItemStatus.RESOLVED
                and item.resolved_at is not None
                and handed > item.resolved_at
            ):
                continue
            opened = items.open_for(
                conn, conversation, settings_of(conversation.org_id), self.notify, now
            )
            done["opened"] += opened is not None
        done["reopened"] = self._follow_turns(conn)
        done["woken"] = automation.wake_snoozed(conn, now)
        done["breached"] = automation.flag_breaches(conn, now)
        for item in automation.unassigned(conn):
            done["assigned"] += (
                automation.auto_assign(conn, item, settings_of(item.org_id)) is not None
            )
        return done

    def _follow_turns(self, conn: Connection) -> int:
        """Customers' messages since the last pass reopen pending and snoozed items."""
        row = conn.execute(select(inbox_cursor.c.turn_id).where(inbox_cursor.c.id == 1)).first()
        if row is None:  # first pass ever: follow from now on
            conn.execute(insert(inbox_cursor).values(id=1, turn_id=feed.last_turn_id(conn)))
            return 0
        after, seen = int(row.turn_id), 0
        while True:
            batch = feed.turns_after(conn, after)
            if not batch:
                break
            for turn in batch:
                if turn.role == "user":
                    items.customer_wrote(conn, turn.org_id, turn.conversation_id)
                    seen += 1
            after = batch[-1].id
        conn.execute(update(inbox_cursor).where(inbox_cursor.c.id == 1).values(turn_id=after))
        return seen
