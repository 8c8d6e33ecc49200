"""The retrieval step of a reply: passages from the assistant's knowledge bases."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from concierge.assistants.prompt import Passage
from concierge.errors import NotFound
from concierge.knowledge.search import Mode
from concierge.knowledge.service import Knowledge


async def retrieve(
    knowledge: Knowledge,
    org_id: int,
    kb_ids: Sequence[int],
    query: str,
    k: int,
    mode: Mode = "convex",
) -> list[Passage]:
    """The ``k`` best passages for ``query`` across the knowledge bases, best first.

    Each knowledge base is searched in ``mode``; their hits are merged by score (fused scores
    are normalised per query, so they compare across indexes). A knowledge base deleted since
    the assistant was defined is skipped, not an error.
    """
    if k <= 0 or not kb_ids or not query.strip():
        return []

    async def one(kb_id: int) -> list[Passage]:
        try:
            kb = await knowledge.get(org_id, kb_id)
        except NotFound:
            return []
        hits = await knowledge.search(kb, query, k=k, mode=mode)
        return [Passage(h.document_id, h.title, h.location, h.text, kb.id, h.score) for h in hits]

    found = [p for group in await asyncio.gather(*(one(i) for i in kb_ids)) for p in group]
    found.sort(key=lambda p: p.score, reverse=True)
    return found[:k]
