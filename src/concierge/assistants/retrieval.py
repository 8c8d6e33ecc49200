"""The retrieval step of a reply: passages from the assistant's knowledge bases."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Connection

from concierge.assistants.prompt import Passage
from concierge.knowledge import bases
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.search import Mode
from concierge.knowledge.service import Knowledge


def knowledge_bases(conn: Connection, org_id: int, kb_ids: Sequence[int]) -> list[KnowledgeBase]:
    """The organisation's knowledge bases among ``kb_ids`` (read with the rest of a turn's
    context). One deleted since the assistant was defined is skipped, not an error; another
    organisation's is never found."""
    return bases.get_many(conn, org_id, kb_ids)


async def retrieve(
    knowledge: Knowledge,
    kbs: Sequence[KnowledgeBase],
    query: str,
    k: int,
    mode: Mode = "convex",
) -> list[Passage]:
    """The ``k`` best passages for ``query`` across ``kbs``, best first.

    Each knowledge base is searched in ``mode`` at the version read with the turn's context
    (no further database round trip); the hits are merged by score (fused scores are
    normalised per query, so they compare across indexes).
    """
    if k <= 0 or not kbs or not query.strip():
        return []

    async def one(kb: KnowledgeBase) -> list[Passage]:
        hits = await knowledge.search(kb, query, k=k, mode=mode, version=kb.version)
        return [Passage(h.document_id, h.title, h.location, h.text, kb.id, h.score) for h in hits]

    found = [p for group in await asyncio.gather(*(one(kb) for kb in kbs)) for p in group]
    found.sort(key=lambda p: p.score, reverse=True)
    return found[:k]
