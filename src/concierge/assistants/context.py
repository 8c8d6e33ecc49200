"""Step 1 of a reply: what the turn works with, read in one go (profile + memory).

The assistant's current version, the organisation's policy with the assistant's adjustments,
the end user and their consent, the conversation, its recent turns and the user's memories,
and the knowledge bases the assistant answers from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection

from concierge.assistants import definitions
from concierge.assistants.definitions import Assistant, AssistantConfig
from concierge.assistants.events import Inbound
from concierge.assistants.prompt import HistoryTurn
from concierge.assistants.retrieval import knowledge_bases
from concierge.conversations import memory, store
from concierge.conversations.records import Turn
from concierge.conversations.store import Conversation, EndUser
from concierge.errors import NotFound
from concierge.governance import consent
from concierge.governance import policy as governance_policy
from concierge.governance.policy import OrgPolicy, PolicyCache, effective
from concierge.knowledge.bases import KnowledgeBase

HISTORY_TURNS = 40  # the most turns read back for the conversation window


@dataclass
class TurnContext:
    """What step 1 loads."""

    assistant: Assistant
    config: AssistantConfig
    user: EndUser  # id 0: not stored yet (made with the turn)
    conversation: Conversation | None  # None: a new one is made with the turn
    history: list[HistoryTurn]
    memories: list[str]
    knowledge_bases: list[KnowledgeBase] = field(default_factory=list)
    policy: OrgPolicy = field(default_factory=OrgPolicy)
    disclosed: bool = False  # an assistant message of this conversation told the user already
    memory_allowed: bool = True  # the user consented to what the memory needs


def load_context(
    conn: Connection, inbound: Inbound, policies: PolicyCache | None = None
) -> TurnContext:
    """Everything the turn for ``inbound`` needs from the database, in one read."""
    assistant = definitions.get(conn, inbound.org_id, inbound.assistant)
    org_policy, _ = governance_policy.get(conn, inbound.org_id, policies)
    gov = effective(org_policy, assistant.config.governance)
    if inbound.conversation_id is not None:
        found, user = store.get_with_user(conn, inbound.org_id, inbound.conversation_id)
        if found.assistant_id != assistant.id:
            raise NotFound(
                f"conversation {inbound.conversation_id} not found", param="conversation"
            )
        conversation: Conversation | None = found
    else:
        known = store.peek_end_user(conn, inbound.org_id, inbound.channel, inbound.external_id)
        conversation = None
        if known is None:  # made when the turn is stored
            identity = store.check_external_id(inbound.external_id)
            user = EndUser(0, inbound.org_id, inbound.channel, identity, datetime.now(UTC))
        else:
            user = known
            if not inbound.new_conversation:
                conversation = store.latest(
                    conn, inbound.org_id, assistant.id, user, inbound.channel
                )
    recent = store.recent_turns(conn, conversation, HISTORY_TURNS) if conversation else []
    disclosed = len(recent) >= HISTORY_TURNS or any(t.role == "assistant" for t in recent)
    if inbound.history is not None:
        history = list(inbound.history)
    else:
        # Greetings and notices (assistant turns no model wrote) carry nothing to answer
        # from, and small models tend to repeat them: they stay out of the window, as do
        # the disclosure and labels around answers.
        history = [
            HistoryTurn(t.role, answer_of(t), t.governance is not None and t.governance.masked)
            for t in recent
            if t.content and not (t.role == "assistant" and t.model is None)
        ]
    purpose = gov.consent.memory_requires
    memory_allowed = purpose is None or consent.granted(conn, user.id, purpose)
    memories = (
        [m.fact for m in memory.memories_of(conn, inbound.org_id, assistant.id, user)]
        if user.id and memory_allowed
        else []
    )
    kbs = knowledge_bases(conn, inbound.org_id, assistant.config.knowledge_bases)
    return TurnContext(
        assistant,
        assistant.config,
        user,
        conversation,
        history,
        memories,
        kbs,
        policy=gov,
        disclosed=disclosed,
        memory_allowed=memory_allowed,
    )


def answer_of(turn: Turn) -> str:
    """A stored reply without the notices around it (the disclosure, explicit labels)."""
    notices = turn.governance.notices if turn.governance is not None else None
    if not notices:
        return turn.content
    before, after = notices
    return turn.content[before : len(turn.content) - after if after else None]
