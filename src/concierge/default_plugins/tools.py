"""The built-in tools, registered through the ``register_tools`` hook like any plugin's:
``search_knowledge``, ``remember`` and ``handoff_to_human``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from concierge.assistants.retrieval import retrieve
from concierge.assistants.toolbox import Tool, ToolFailure, ToolTurn
from concierge.config import Settings
from concierge.hookspecs import hookimpl
from concierge.models.base import ToolSpec


@hookimpl
def register_tools(register: Callable[[Tool], None], settings: Settings) -> None:
    """Knowledge search, the user's memory and the handoff to a person."""
    for tool in (SearchKnowledge(), Remember(), HandoffToHuman()):
        register(tool)


def _one_string(name: str, max_length: int, min_length: int = 0) -> dict[str, Any]:
    text: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        text["minLength"] = min_length
    return {
        "type": "object",
        "properties": {name: text},
        "required": [name],
        "additionalProperties": False,
    }


class SearchKnowledge(Tool):
    """Search the assistant's knowledge bases again, with the model's own query; the passages
    found join the turn's (numbered for citation)."""

    spec = ToolSpec(
        "search_knowledge",
        "Search the business's knowledge base for passages about a question.",
        _one_string("query", 500, min_length=1),
    )

    def offered(self, turn: ToolTurn) -> bool:
        return bool(turn.config.knowledge_bases)

    async def run(self, arguments: dict[str, Any], turn: ToolTurn) -> str:
        config, progress = turn.config, turn.progress
        try:
            async with asyncio.timeout(turn.seconds_left):
                found = await retrieve(
                    turn.knowledge,
                    turn.knowledge_bases,
                    arguments["query"],
                    max(config.retrieval_k, 1),
                    config.retrieval_mode,
                )
        except TimeoutError:
            raise ToolFailure("the search took too long") from None
        lines = []
        for passage in found:
            if passage not in progress.passages:
                progress.passages.append(passage)
            number = progress.passages.index(passage) + 1
            label = f"[{number}] {passage.title or 'untitled'}"
            if passage.location:
                label += f" ({passage.location})"
            lines.append(f"{label}\n{passage.text}")
        return "\n\n".join(lines) or "Nothing in the knowledge base matches that query."


class Remember(Tool):
    """Keep a fact about the user for later conversations (stored with the reply); offered
    only when the user consented to what the memory needs."""

    spec = ToolSpec(
        "remember",
        "Save a lasting fact the user told you about themselves (a preference, their size, "
        "their order number) so you remember it in later conversations.",
        _one_string("fact", 500, min_length=1),
    )

    def offered(self, turn: ToolTurn) -> bool:
        return turn.memory_allowed

    async def run(self, arguments: dict[str, Any], turn: ToolTurn) -> str:
        if not turn.memory_allowed:
            raise ToolFailure("the user has not agreed to be remembered")
        fact = " ".join(str(arguments["fact"]).split())
        turn.progress.memories.append(fact)
        return f"Saved: {fact}"


class HandoffToHuman(Tool):
    """Put the conversation in the human queue when the reply is stored."""

    spec = ToolSpec(
        "handoff_to_human",
        "Hand the conversation to a human colleague: when the user asks for a person, is "
        "upset, or needs something you cannot do.",
        _one_string("reason", 500),
    )

    async def run(self, arguments: dict[str, Any], turn: ToolTurn) -> str:
        reason = str(arguments.get("reason") or "").strip()
        turn.progress.handoff = reason or "requested by the model"
        return "The conversation is now in a human colleague's queue. Tell the user briefly."
