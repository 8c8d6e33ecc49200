"""The demo business, "Acme Outfitters" (organisation ``acme``): knowledge and an assistant.

:func:`seed` makes it once (``make run`` calls ``concierge demo seed`` before serving);
``reset=True`` deletes the organisation with everything in it (knowledge, conversations,
memories, keys) and makes it again, as ``concierge demo reset`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Connection

from concierge import orgs
from concierge.assistants import definitions
from concierge.assistants.definitions import AssistantConfig
from concierge.errors import NotFound
from concierge.knowledge.service import Knowledge, ingest_now
from concierge.knowledge.sources import Source, corpus_sources

log = logging.getLogger(__name__)
ORG = "acme"
ORG_NAME = "Acme Outfitters"
ASSISTANT = "acme-support"
KNOWLEDGE_BASE = "acme-help"
INSTRUCTIONS = """You are the customer support assistant of Acme Outfitters, an online shop for \
outdoor clothing and gear based in Leipzig. Answer questions about orders, returns, shipping, \
sizing, product care and the catalogue, using the passages from the knowledge base and citing \
them like [1]. Keep answers short and friendly. If the passages do not contain the answer, say \
you do not know and offer to hand the conversation to a colleague; never invent policies, \
prices or order details. When the user asks for a person or is unhappy, call \
handoff_to_human. When the user tells you a lasting fact about themselves (their size, a \
preference), call remember."""
GREETING = (
    "Hi! I'm Acme's virtual assistant. Ask me about returns, shipping, sizes or our gear, "
    "or ask for a person at any time."
)


@dataclass(frozen=True)
class Seeded:
    org_id: int
    knowledge_base_id: int
    assistant_id: int
    documents: int
    created: bool


def _sources() -> list[Source]:
    folder = resources.files("concierge.demo").joinpath("data")
    out: list[Source] = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        data = item.read_bytes()
        if item.name.endswith(".jsonl"):
            out += corpus_sources(data, item.name, {"collection": "catalogue"})
        elif item.name.endswith(".md"):
            out.append(Source(item.name, data, filename=item.name, source="demo"))
    return out


def _existing(conn: Connection) -> Seeded | None:
    try:
        org = orgs.get(conn, ORG)
        assistant = definitions.get(conn, org.id, ASSISTANT)
    except NotFound:
        return None
    kb_id = assistant.config.knowledge_bases[0] if assistant.config.knowledge_bases else 0
    return Seeded(org.id, kb_id, assistant.id, 0, created=False)


async def seed(knowledge: Knowledge, *, reset: bool = False) -> Seeded:
    """Make the demo organisation if it is missing (or, with ``reset``, make it afresh)."""
    db = knowledge.db
    if reset:
        await db.write(lambda conn: orgs.delete(conn, ORG, actor="system:demo"))
    else:
        found = await db.read(_existing)
        if found is not None:
            return found
    org = await db.write(lambda conn: orgs.ensure(conn, ORG, ORG_NAME))
    kb = await knowledge.create(
        org.id, KNOWLEDGE_BASE, description="Acme's policies, FAQ and product catalogue."
    )
    status = await ingest_now(knowledge, kb, _sources())
    if status.failed:
        log.warning("demo documents that failed to ingest: %s", status.errors)
    config = AssistantConfig(
        instructions=INSTRUCTIONS,
        knowledge_bases=[kb.id],
        greeting=GREETING,
        temperature=0.2,
        max_reply_tokens=200,
        widget=True,
    )
    assistant = await db.write(lambda conn: definitions.create(conn, org.id, ASSISTANT, config))
    return Seeded(org.id, kb.id, assistant.id, status.done, created=True)
