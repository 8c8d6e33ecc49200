"""Messages from people to customers on channels: a person's reply, a template, queued in the
transaction that stores the turn, with the platform's window rules checked first."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select

from concierge.channels import outbox
from concierge.channels.base import ChannelType, Outbound, Template
from concierge.channels.compose import compose
from concierge.channels.queue import Thread, _thread
from concierge.channels.store import Channel
from concierge.errors import Conflict, InvalidRequest
from concierge.store.tables import channel_threads


def thread_of(conn: Connection, conversation_id: int) -> Thread | None:
    """The channel thread a conversation is carried on (None: not on a messaging channel)."""
    row = conn.execute(
        select(channel_threads).where(channel_threads.c.conversation_id == conversation_id)
    ).first()
    return None if row is None else _thread(row)


def window_open(kind: ChannelType, thread: Thread, *, human: bool) -> bool:
    if kind.window is None:
        return True
    allowed = kind.human_window if human and kind.human_window else kind.window
    last = thread.last_inbound_at
    return last is not None and datetime.now(UTC) - last <= allowed


def queue_human_reply(
    conn: Connection,
    kind: ChannelType,
    channel: Channel,
    thread: Thread,
    *,
    turn_id: int,
    text: str,
    template: Template | None = None,
) -> int:
    """Queue a person's reply (or a template) for the customer: refused with 409 when the
    platform's window has closed and it is not a template."""
    if template is not None:
        if kind.window is None:
            raise InvalidRequest(f"{kind.title} has no message templates", param="template")
        messages = [Outbound(text=text, template=template, human=True)]
    else:
        allowed = kind.human_window or kind.window
        if allowed is not None and not window_open(kind, thread, human=True):
            hours = int(allowed.total_seconds() // 3600)
            raise Conflict(
                f"the customer last wrote more than {hours} hours ago: {kind.title} only takes "
                "an approved template now (send one with 'template')"
            )
        messages = compose(kind, text, human=True)
    return outbox.enqueue_to(
        conn, channel, thread, messages, dedupe=f"turn:{turn_id}", turn_id=turn_id
    )
