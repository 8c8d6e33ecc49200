"""The workers every server process runs for its channels: inbound events through the reply
pipeline and status callbacks onto the outbox (the outbox goes out through
:class:`concierge.channels.sender.Sender`).

Each loop wakes when this process queued work (a webhook, a person's reply) and otherwise
polls every ``channel_poll_seconds`` for work other replicas queued. Work on one customer's
thread is held by a lease (:mod:`concierge.channels.queue`), renewed while it lasts, so any
number of processes share the queue and a process killed at any point leaves its threads to
the others once the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from concierge.assistants.events import Completed, Inbound, Recorded, Stage
from concierge.background import Loop, stop
from concierge.channels import consent as channel_consent
from concierge.channels import media as media_store
from concierge.channels import outbox, queue
from concierge.channels.base import Choice, Event, EventKind, SendFailed
from concierge.channels.compose import compose
from concierge.channels.loops import Workers, worker_name
from concierge.channels.queue import EventStatus, QueuedEvent, Thread
from concierge.channels.sender import Sender
from concierge.channels.store import Channel, ChannelStatus
from concierge.conversations import store as conversations
from concierge.errors import ConciergeError, InvalidRequest, NotFound, RateLimited
from concierge.inbox import items as inbox_items

if TYPE_CHECKING:
    from concierge.channels.service import Channels

log = logging.getLogger(__name__)

HUMAN_CHOICE = "cc:human"
ASK_FOR_HUMAN = "I would like to talk to a person."
TALK_TO_PERSON = Choice(id=HUMAN_CHOICE, title="Talk to a person")
APOLOGY = (
    "Sorry, I cannot answer right now. I have passed your message to a member of our team; "
    "they will reply here."
)
CANNOT_READ = {
    "voice": "Sorry, I cannot listen to voice messages yet. Please type your question, or ask "
    "for a person.",
    "audio": "Sorry, I cannot listen to audio yet. Please type your question, or ask for a person.",
    "image": "Thank you, I have kept your picture for our team, but I cannot see images yet. "
    "Please describe what you need, or ask for a person.",
}
CANNOT_READ_OTHER = (
    "Thank you, I have kept your file for our team, but I cannot open it myself. Please tell me "
    "what you need in a message, or ask for a person."
)
THANKS_FOR_RATING = "Thank you for your rating."
# Model failures that a later try may not fix: the customer gets the apology at once.
MODEL_DOWN = ("service_unavailable", "upstream_error", "not_found_error")


def message_for(
    channel: Channel, thread: Thread, text: str, on_record: Callable[[Connection, Recorded], None]
) -> Inbound:
    """The reply pipeline's view of a customer's message on a channel: the end user is their
    platform identity; the model's fair queue is shared per customer."""
    return Inbound(
        org_id=channel.org_id,
        assistant=channel.assistant_id,
        channel=channel.type,
        external_id=thread.sender,
        text=text,
        priority_key=f"channel:{channel.id}:{thread.sender}",
        on_record=on_record,
    )


class Dispatcher(Workers):
    """Inbound events and status callbacks; the outbox through its :class:`Sender`."""

    def __init__(self, service: Channels) -> None:
        super().__init__(service, worker_name())
        interval = self.settings.channel_poll_seconds
        self.inbound = Loop("channels-inbound", self._inbound_step, interval)
        self.statuses = Loop("channels-statuses", self._status_step, interval)
        self.sender = Sender(service, self.name)
        self.outbound = self.sender.loop
        self._slots = asyncio.Semaphore(self.settings.channel_workers)
        self._busy: set[int] = set()  # threads this process works on

    def start(self) -> None:
        for loop in (self.inbound, self.statuses, self.outbound):
            loop.start()

    async def close(self) -> None:
        for loop in (self.inbound, self.statuses):
            await stop(loop.task)
        await self._stop_tasks()
        await self.sender.close()

    def wake(self) -> None:
        for loop in (self.inbound, self.statuses, self.outbound):
            loop.wake.set()

    # -- inbound ---------------------------------------------------------------------------

    async def _inbound_step(self) -> bool:
        free = self.settings.channel_workers - len(self._busy)
        if free <= 0:
            return False
        ready = await self.db.read(lambda conn: queue.ready_threads(conn, free * 2))
        started = 0
        for thread_id in ready:
            if thread_id in self._busy or len(self._busy) >= self.settings.channel_workers:
                continue
            if not await self._lease(thread_id, send=False):
                continue
            self._busy.add(thread_id)
            self._spawn(self._work_thread(thread_id))
            started += 1
        return False

    async def _work_thread(self, thread_id: int) -> None:
        keeper = asyncio.create_task(self._keep(thread_id, send=False))
        try:
            async with self._slots:
                while True:
                    found = await self.db.write(lambda conn: self._next(conn, thread_id))
                    if found is None:
                        break
                    await self._handle(*found)
        except Exception:
            log.exception("channel thread %d failed", thread_id)
        finally:
            await stop(keeper)
            self._busy.discard(thread_id)
            with contextlib.suppress(Exception):
                await self._release(thread_id, send=False)
            self.inbound.wake.set()  # a thread that has more waiting is taken up again

    def _next(self, conn: Connection, thread_id: int) -> tuple[Thread, QueuedEvent] | None:
        """The thread's next event; what an earlier attempt at it left half-done (the draft of
        a reply never delivered) is taken back first."""
        queued = queue.next_event(conn, thread_id)
        if queued is None:
            return None
        thread = queue.get_thread(conn, thread_id)
        if queued.turn_id is not None and queued.attempts > 1:
            conversations.take_back(conn, thread.org_id, queued.turn_id)
        return thread, queued

    async def _handle(self, thread: Thread, queued: QueuedEvent) -> None:
        service = self.service
        try:
            channel = await self.db.read(
                lambda conn: service.channel_by_id(conn, thread.channel_id)
            )
        except NotFound:
            return
        if channel.status != ChannelStatus.ACTIVE or queued.event.kind != EventKind.MESSAGE:
            why = "the channel is disabled" if channel.status != ChannelStatus.ACTIVE else None
            await self.db.write(
                lambda conn: queue.finish(conn, queued.id, EventStatus.IGNORED, error=why)
            )
            return
        if queued.attempts > self.settings.channel_max_attempts:
            await self._give_up(channel, thread, queued, queued.error or "too many attempts")
            return
        typing = asyncio.create_task(self._typing(channel, thread, queued.event))
        try:
            await self._answer(channel, thread, queued)
        except ConciergeError as exc:
            if isinstance(exc, RateLimited):  # the model's queue is full: try again shortly
                await self._retry(queued, exc.message, exc.retry_after)
            elif exc.type in MODEL_DOWN:
                await self._give_up(channel, thread, queued, exc.message)
            else:
                error = exc.message
                await self.db.write(
                    lambda conn: queue.finish(conn, queued.id, EventStatus.FAILED, error=error)
                )
        except Exception as exc:
            log.exception("channel event %d failed", queued.id)
            await self._retry(queued, f"internal error ({type(exc).__name__})", None)
        finally:
            await stop(typing)
        self.outbound.wake.set()

    async def _retry(self, queued: QueuedEvent, error: str, after: float | None) -> None:
        delay = after or outbox.backoff(queued.attempts, self.settings.outbox_retry_seconds)
        await self.db.write(lambda conn: queue.retry_later(conn, queued.id, delay, error))

    async def _typing(self, channel: Channel, thread: Thread, event: Event) -> None:
        """Read receipt, then the typing indicator refreshed while the reply is written."""
        kind, http = self.service.types.get(channel.type), self.service.http()
        try:
            await kind.mark_read(http, channel.config, thread.sender, event)
            if not kind.typing_seconds:
                return
            while True:
                await kind.typing(http, channel.config, thread.sender, event)
                await asyncio.sleep(kind.typing_seconds)
        except SendFailed as exc:
            log.info("typing indicator on channel %s: %s", channel.id, exc.message)

    async def _answer(self, channel: Channel, thread: Thread, queued: QueuedEvent) -> None:
        event = queued.event
        if channel_consent.is_answer(event.choice):
            await self._consent(channel, thread, queued)
            return
        if event.choice and event.choice.startswith(inbox_items.CSAT_PREFIX):
            await self._rate(channel, thread, queued)
            return
        text, extra, unreadable, media_ids = await self._content(channel, thread, event)
        if event.choice == HUMAN_CHOICE:
            text = ASK_FOR_HUMAN
        inbound = message_for(
            channel, thread, text, self._recorder(channel, thread, queued, media_ids, extra)
        )
        runtime = self.service.runtime
        if unreadable is not None:
            await runtime.platform_reply(inbound, unreadable)
            return
        async for reply_event in runtime.reply(inbound):
            if isinstance(reply_event, Completed):
                return

    async def _consent(self, channel: Channel, thread: Thread, queued: QueuedEvent) -> None:
        kind, policies = self.service.types.get(channel.type), self.service.policies
        choice = queued.event.choice or ""

        def write(conn: Connection) -> None:
            channel_consent.record_answer(
                conn, kind, channel, thread, choice, policies, queued.event.key
            )
            queue.finish(conn, queued.id, EventStatus.DONE)

        await self.db.write(write)

    async def _rate(self, channel: Channel, thread: Thread, queued: QueuedEvent) -> None:
        """A press of a CSAT button: the rating recorded on the conversation's inbox item."""
        kind = self.service.types.get(channel.type)
        score = (queued.event.choice or "")[len(inbox_items.CSAT_PREFIX) :]
        if not score.isdigit() or thread.conversation_id is None:
            raise InvalidRequest("not a rating of this customer's conversation", param="choice")

        def write(conn: Connection) -> None:
            assert thread.conversation_id is not None
            inbox_items.rate(conn, channel.org_id, thread.conversation_id, int(score))
            outbox.enqueue_to(
                conn,
                channel,
                thread,
                compose(kind, THANKS_FOR_RATING),
                dedupe=f"rated:{queued.event.key}",
            )
            queue.finish(conn, queued.id, EventStatus.DONE)

        await self.db.write(write)

    async def _content(
        self, channel: Channel, thread: Thread, event: Event
    ) -> tuple[str, tuple[Choice, ...], str | None, list[int]]:
        """The message's text for the assistant, choices to add to the reply, the platform's
        answer when the assistant cannot read it, and the media stored."""
        text = event.text.strip()
        if event.location is not None and not text:
            where = event.location
            label = where.get("name") or where.get("address") or ""
            text = f"[location: {where.get('latitude')}, {where.get('longitude')} {label}]".strip()
        if event.media is None:
            return text, (), None, []
        media = event.media
        kind, http = self.service.types.get(channel.type), self.service.http()
        limit = self.settings.channel_max_media_bytes
        data, mime = await kind.fetch_media(http, channel.config, media, limit)
        media_id = await self.db.write(
            lambda conn: media_store.save(
                conn,
                org_id=channel.org_id,
                channel_id=channel.id,
                thread_id=thread.id,
                kind=media.kind,
                data=data,
                mime_type=mime or media.mime_type,
                filename=media.filename,
            )
        )
        label = f"[{media.kind}{': ' + media.filename if media.filename else ''}]"
        reader = self.service.reader_for(media.kind)
        if reader is not None:
            try:
                read = (await reader.read(data, mime or media.mime_type)).strip()
            except Exception:
                log.exception("media reader %s failed", reader.name)
                read = ""
            if read:
                return f"{label} {read}\n{text}".strip(), (), None, [media_id]
        if text:  # a caption: answered as the message, the file kept for people
            return f"{label} {text}", (), None, [media_id]
        notice = CANNOT_READ.get(media.kind, CANNOT_READ_OTHER)
        return label, (TALK_TO_PERSON,), notice, [media_id]

    def _recorder(
        self,
        channel: Channel,
        thread: Thread,
        queued: QueuedEvent,
        media_ids: list[int],
        extra: tuple[Choice, ...],
    ) -> Callable[[Connection, Recorded], None]:
        kind = self.service.types.get(channel.type)

        def on_record(conn: Connection, recorded: Recorded) -> None:
            if recorded.stage == Stage.DRAFT:
                queue.note_turn(conn, queued.id, recorded.user_turn.id)
                return
            queue.finish(conn, queued.id, EventStatus.DONE, turn_id=recorded.user_turn.id)
            queue.set_conversation(conn, thread.id, recorded.conversation.id)
            media_store.attach(conn, media_ids, recorded.user_turn.id)
            reply = recorded.reply
            if reply is None or not recorded.delivered.strip():
                return
            outbox.enqueue_to(
                conn,
                channel,
                thread,
                compose(kind, recorded.delivered, extra),
                dedupe=f"turn:{reply.id}",
                turn_id=reply.id,
                conversation_id=recorded.conversation.id,
            )
            channel_consent.ask_if_needed(
                conn, kind, channel, thread, recorded.conversation.id, self.service.policies
            )

        return on_record

    async def _give_up(
        self, channel: Channel, thread: Thread, queued: QueuedEvent, why: str
    ) -> None:
        """The model cannot answer: a short apology, the conversation to the human queue, the
        event marked failed with the reason (all in one transaction)."""
        text = queued.event.text.strip() or (
            f"[{queued.event.media.kind}]" if queued.event.media else "[message]"
        )
        recorder = self._recorder(channel, thread, queued, [], ())

        def on_record(conn: Connection, recorded: Recorded) -> None:
            recorder(conn, recorded)
            queue.finish(conn, queued.id, EventStatus.FAILED, error=why[:500])

        inbound = message_for(channel, thread, text, on_record)
        try:
            await self.service.runtime.platform_reply(
                inbound, APOLOGY, handoff=f"the assistant could not answer: {why}"[:300]
            )
        except (InvalidRequest, NotFound) as exc:
            error = exc.message
            await self.db.write(
                lambda conn: queue.finish(conn, queued.id, EventStatus.FAILED, error=error)
            )

    # -- status callbacks ------------------------------------------------------------------

    async def _status_step(self) -> bool:
        return await self.db.write(self._apply_statuses)

    def _apply_statuses(self, conn: Connection) -> bool:
        """Apply a batch of status callbacks to the outbox and drop them: the message's row
        is the delivery record (a callback the platform repeats is applied again, harmlessly:
        a status only moves forward)."""
        batch = queue.pending_statuses(conn, 200)
        for queued in batch:
            event = queued.event
            outbox.apply_status(
                conn,
                queued.channel_id,
                platform_id=event.ref,
                tag=event.tag,
                status=event.status or "",
                error=event.error,
            )
        queue.drop(conn, [q.id for q in batch])
        return len(batch) == 200
