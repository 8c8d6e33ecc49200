"""Tools an assistant can turn on by name, and what a tool is given when the model calls it.

A :class:`Tool` is registered through the ``register_tools`` hook (the built-in
``search_knowledge``, ``remember`` and ``handoff_to_human`` are in
:mod:`concierge.default_plugins.tools`, registered the same way). An assistant turns tools on
by listing their names in ``builtin_tools``; each turn the model is offered those whose
:meth:`Tool.offered` says yes (``remember`` only with the user's consent, say). When the model
calls one, its arguments are checked against the tool's JSON Schema, then :meth:`Tool.run`
gets them with the turn's :class:`ToolTurn`: what the turn knows and may change (passages
found, facts to remember, a handoff), and the tool time left. A tool that cannot do what was
asked raises :class:`ToolFailure`; the model is told why and answers anyway.

The operator's HTTP tools (:mod:`concierge.assistants.tools`) are defined per assistant, not
registered; they share the name space, so an HTTP tool cannot take a registered tool's name.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from concierge.assistants.tools import ToolResult, parse_arguments
from concierge.errors import InvalidRequest
from concierge.models.base import ToolCall, ToolSpec

if TYPE_CHECKING:
    import pluggy

    from concierge.assistants.definitions import AssistantConfig
    from concierge.assistants.events import Progress
    from concierge.config import Settings
    from concierge.knowledge.bases import KnowledgeBase
    from concierge.knowledge.service import Knowledge


class ToolFailure(Exception):
    """A tool could not do what the model asked; ``error`` is what the model is told."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class ToolTurn:
    """What a tool works with during one turn."""

    config: AssistantConfig
    knowledge: Knowledge
    knowledge_bases: list[KnowledgeBase]
    memory_allowed: bool  # the user consented to what the assistant's memory needs
    progress: Progress  # the reply being written: passages, memories, a handoff
    # time.monotonic() by which the turn's tool time is spent (it starts with the first call)
    deadline: float = math.inf

    @property
    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


class Tool(ABC):
    """A tool the model may call. ``spec`` names it and gives the JSON Schema of its arguments
    (checked before :meth:`run`)."""

    spec: ToolSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def offered(self, turn: ToolTurn) -> bool:
        """Whether the model is offered the tool this turn (default: whenever it is on)."""
        return True

    @abstractmethod
    async def run(self, arguments: dict[str, Any], turn: ToolTurn) -> str:
        """Do it; return what the model reads back. Raise :class:`ToolFailure` to refuse."""


class Toolbox:
    """The registered tools of one server."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are registered as {tool.name!r}")
            self.tools[tool.name] = tool

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, settings: Settings) -> Toolbox:
        found: list[Tool] = []
        pm.hook.register_tools(register=found.append, settings=settings)
        return cls(found)

    def check(self, config: AssistantConfig) -> None:
        """An assistant definition names registered tools only, and no HTTP tool takes a
        registered tool's name."""
        for name in config.builtin_tools:
            if name not in self.tools:
                known = ", ".join(sorted(self.tools)) or "none"
                raise InvalidRequest(
                    f"builtin_tools: there is no tool named {name!r} on this server "
                    f"(known: {known})",
                    param="builtin_tools",
                )
        for http_tool in config.tools:
            if http_tool.name in self.tools:
                raise InvalidRequest(
                    f"tools: '{http_tool.name}' is the name of a registered tool; choose another",
                    param="tools",
                )

    def specs(self, turn: ToolTurn) -> list[ToolSpec]:
        """What the model is offered this turn: the assistant's registered tools that say
        yes (in the order the assistant lists them), then its HTTP tools."""
        specs = [
            tool.spec
            for name in turn.config.builtin_tools
            if (tool := self.tools.get(name)) is not None and tool.offered(turn)
        ]
        specs += [ToolSpec(t.name, t.description, t.parameters) for t in turn.config.tools]
        return specs

    async def run(self, call: ToolCall, turn: ToolTurn) -> ToolResult | None:
        """Run ``call`` if it names one of the assistant's registered tools (None when it
        does not: an HTTP tool's, or no tool at all)."""
        tool = self.tools.get(call.name)
        if tool is None or call.name not in turn.config.builtin_tools:
            return None
        started = time.perf_counter()
        arguments = parse_arguments(call.name, tool.spec.parameters, call.arguments)
        if isinstance(arguments, str):
            return failure(call, arguments, started)
        if turn.seconds_left <= 0:
            return failure(call, "no tool time left in this turn", started)
        try:
            content = await tool.run(arguments, turn)
        except ToolFailure as exc:
            return failure(call, exc.error, started, arguments)
        return ToolResult(call.name, arguments, content, None, elapsed_ms(started))


def failure(call: ToolCall, error: str, started: float, arguments: Any = None) -> ToolResult:
    """A call that failed: the model reads why."""
    shown = arguments if arguments is not None else loads_or_text(call.arguments)
    return ToolResult(
        call.name, shown, f"The tool {call.name} failed: {error}", error, elapsed_ms(started)
    )


def loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
