"""Consent asked the channel's own way: after the first reply, the memory question (the
organisation's policy text) with Yes / No buttons; a press records the decision like the web
widget's consent dialog does, and is acknowledged. The assistant remembers nothing about the
customer until they say yes (the reply pipeline asks ``consent.granted``)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection

from concierge.channels import outbox
from concierge.channels.base import ChannelType, Choice
from concierge.channels.compose import compose
from concierge.channels.queue import Thread
from concierge.channels.store import Channel
from concierge.conversations import store as conversations
from concierge.governance import consent
from concierge.governance import policy as governance_policy
from concierge.governance.policy import PolicyCache, Purpose

PREFIX = "cc:consent:"
YES, NO = "Yes", "No"
THANKS = {
    True: "Thank you. I will remember what helps me serve you; ask me to forget at any time.",
    False: "Understood: I will not remember anything about you after this conversation.",
}


def is_answer(choice: str | None) -> bool:
    return bool(choice and choice.startswith(PREFIX))


def ask_if_needed(
    conn: Connection,
    kind: ChannelType,
    channel: Channel,
    thread: Thread,
    conversation_id: int,
    policies: PolicyCache,
) -> None:
    """Queue the memory question once per customer and text version, if the organisation's
    policy needs consent for memory and the customer has not answered."""
    policy, _ = governance_policy.get(conn, channel.org_id, policies)
    purpose = policy.consent.memory_requires
    if purpose is None:
        return
    user = conversations.peek_end_user(conn, channel.org_id, channel.type, thread.sender)
    if user is None or purpose in consent.current(conn, user.id):
        return
    version = policy.consent.text_versions.get(purpose, "1")
    text = policy.consent.memory_texts.get("en") or next(iter(policy.consent.memory_texts.values()))
    choices = (
        Choice(id=f"{PREFIX}{purpose}:yes", title=YES),
        Choice(id=f"{PREFIX}{purpose}:no", title=NO),
    )
    outbox.enqueue_to(
        conn,
        channel,
        thread,
        compose(kind, text, choices),
        dedupe=f"consent:{thread.id}:{purpose}:{version}",
        conversation_id=conversation_id,
    )


def record_answer(
    conn: Connection,
    kind: ChannelType,
    channel: Channel,
    thread: Thread,
    choice: str,
    policies: PolicyCache,
    event_key: str,
) -> None:
    """A press of Yes or No: the decision recorded (audited) and acknowledged."""
    named, _, answer = choice[len(PREFIX) :].rpartition(":")
    purpose = cast(Purpose, consent.check_purpose(named))  # a forged button id: 400, not stored
    policy, _ = governance_policy.get(conn, channel.org_id, policies)
    user = conversations.end_user(conn, channel.org_id, channel.type, thread.sender)
    granted = answer == "yes"
    consent.record(
        conn,
        org_id=channel.org_id,
        end_user_id=user.id,
        purpose=purpose,
        granted=granted,
        channel=channel.type,
        text_version=policy.consent.text_versions.get(purpose, "1"),
        actor="end_user",
    )
    outbox.enqueue_to(
        conn, channel, thread, compose(kind, THANKS[granted]), dedupe=f"consent-ack:{event_key}"
    )
