"""The model call (streamed) and the tool calls it makes, in a bounded loop.

The model's text goes through the output filter (:class:`concierge.assistants.output.
OutputFilter`: data marks, pseudonyms, the leak guard, output moderation) as it streams. When the
model asks for tools, each call is checked by the prompt-injection guard, run (a registered
tool through :class:`concierge.assistants.toolbox.Toolbox`, an operator's HTTP tool through
:func:`concierge.assistants.tools.call_http_tool`), and its result goes back to the model
spotlighted as data; at most ``max_tool_steps`` model calls may ask for tools, within
``max_tool_seconds`` of tool time.

Failure rules: a failure before the reply has any text propagates (nothing is said, nothing
kept); after text, the reply is ``failed`` with the error and the pipeline stores it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from concierge.assistants.context import TurnContext
from concierge.assistants.events import Inbound, Progress, ReplyEvent, ToolUsed
from concierge.assistants.output import OutputFilter, Withdrawn
from concierge.assistants.prompt import Spotlight
from concierge.assistants.toolbox import Toolbox, ToolTurn, failure, loads_or_text
from concierge.assistants.tools import ToolResult, call_http_tool
from concierge.conversations.records import TurnStatus
from concierge.egress import Egress
from concierge.errors import ConciergeError
from concierge.governance.injection import guard_call
from concierge.governance.pii import Pseudonyms
from concierge.models.base import (
    GenerationRequest,
    Message,
    Model,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from concierge.models.registry import generate_batches

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One reply's model work, as the pipeline prepared it."""

    ctx: TurnContext
    inbound: Inbound
    text: str  # the user's message
    progress: Progress
    route: list[Model]  # the model, then its fallbacks
    messages: list[Message]  # the prompt; the tool exchange is appended
    tools: list[ToolSpec]  # what the model is offered
    tool_turn: ToolTurn
    spotlight: Spotlight
    names: Pseudonyms | None  # personal data pseudonymised for a model outside the server
    output: OutputFilter
    timings: dict[str, float]


class Generator:
    """Runs :class:`Generation` s: the model, then the tools it calls."""

    def __init__(self, toolbox: Toolbox, egress: Egress) -> None:
        self.toolbox = toolbox
        self.egress = egress  # operators' HTTP tools connect under the egress policy

    async def generate(self, g: Generation) -> AsyncGenerator[ReplyEvent, None]:
        """The model, streamed through the output filter, and the tool loop."""
        ctx, progress, output, messages = g.ctx, g.progress, g.output, g.messages
        config, text, names = ctx.config, g.text, g.names
        user_said = [t.content for t in ctx.history if t.role == "user"]
        tool_outputs: list[str] = []
        model_s = 0.0
        tools_s = 0.0
        try:
            for step in range(config.max_tool_steps + 1):
                last = step == config.max_tool_steps or progress.handoff is not None
                request = GenerationRequest(
                    model=g.route[0].model_id,
                    messages=messages,
                    max_tokens=config.max_reply_tokens,
                    temperature=config.temperature,
                    tools=[] if last else g.tools,
                    tool_choice=None if last or not g.tools else "auto",
                    # A model that starts writing a marker is making up a passage: stop it.
                    stop=["<<"],
                    user=f"{g.inbound.channel}:{g.inbound.external_id}"[:256],
                    priority_key=g.inbound.priority_key or f"user:{ctx.user.id}",
                )
                progress.counts.append(request.tokens)
                calls: dict[int, dict[str, str]] = {}
                step_text: list[str] = []
                mark = time.perf_counter()
                async for model, batch in generate_batches(g.route, request):
                    progress.model = model.model_id
                    for event in batch:
                        if isinstance(event, TextDelta):
                            if event.text:
                                step_text.append(event.text)  # as the model wrote it
                                for shown in output.feed(event.text):
                                    yield shown
                        elif isinstance(event, ToolCallDelta):
                            call = calls.setdefault(
                                event.index, {"id": "", "name": "", "arguments": ""}
                            )
                            call["id"] = event.id or call["id"]
                            call["name"] = event.name or call["name"]
                            call["arguments"] += event.arguments
                        # A Finish adds nothing: its usage is in the request's count already.
                for shown in output.flush():
                    yield shown
                model_s += time.perf_counter() - mark
                if not calls:
                    break
                mark = time.perf_counter()
                if g.tool_turn.deadline == math.inf:  # tool time starts with the first call
                    g.tool_turn.deadline = time.monotonic() + config.max_tool_seconds
                made = [
                    ToolCall(c["id"] or f"call_{uuid.uuid4().hex[:24]}", c["name"], c["arguments"])
                    for _, c in sorted(calls.items())
                ]
                messages.append(Message("assistant", "".join(step_text) or None, tuple(made)))
                for call_made in made:
                    result = await self.guarded_call(
                        call_made,
                        g,
                        trusted=[text, *user_said, config.instructions],
                        untrusted=[*ctx.memories, *tool_outputs],
                    )
                    tool_outputs.append(result.content)
                    record = result.record()
                    progress.tool_records.append(record)
                    yield ToolUsed(record)
                    returned = names.mask(result.content) if names is not None else result.content
                    messages.append(
                        Message(
                            "tool",
                            g.spotlight.wrap("tool_result", returned, call_made.name),
                            tool_call_id=call_made.id,
                            name=call_made.name,
                        )
                    )
                tools_s += time.perf_counter() - mark
        except Withdrawn:
            pass  # output moderation replaced the answer; the model was stopped
        except (asyncio.CancelledError, GeneratorExit):
            progress.status = TurnStatus.PARTIAL
            raise
        except ConciergeError as exc:
            if not progress.text and not progress.handoff:
                raise  # nothing was said: nothing is stored
            progress.status, progress.error = TurnStatus.FAILED, exc.message
            log.warning("assistant reply broke off after output: %s", exc.message)
        except Exception:
            if not progress.text and not progress.handoff:
                raise
            progress.status, progress.error = TurnStatus.FAILED, "internal error"
            log.exception("assistant reply broke off after output")
        finally:
            g.timings["model_ms"] = round(model_s * 1000, 2)
            g.timings["tools_ms"] = round(tools_s * 1000, 2)

    async def guarded_call(
        self,
        call: ToolCall,
        g: Generation,
        *,
        trusted: list[str],
        untrusted: list[str],
    ) -> ToolResult:
        """A tool call the model made, with the real values back in its arguments, run unless
        the injection guard finds that only data (passages, memories, earlier tool results;
        never the user or the operator) asked for it."""
        if g.names is not None:  # the tool gets the real values, never the model
            restored = g.names.restore_json(loads_or_text(call.arguments))
            call = ToolCall(call.id, call.name, json.dumps(restored))
        defence = g.ctx.policy.injection
        if defence.enabled and defence.tool_guard:
            refusal = guard_call(
                call.name,
                loads_or_text(call.arguments),
                trusted=trusted,
                untrusted=[*(p.text for p in g.progress.passages), *untrusted],
            )
            if refusal is not None:
                failed = failure(call, refusal, time.perf_counter())
                return dataclasses.replace(failed, refused=True)
        return await self.call(call, g.tool_turn)

    async def call(self, call: ToolCall, turn: ToolTurn) -> ToolResult:
        """Run one call: the assistant's HTTP tool of that name, or a registered tool."""
        http_tool = next((t for t in turn.config.tools if t.name == call.name), None)
        if http_tool is not None:
            return await call_http_tool(
                http_tool, call.arguments, self.egress.session(), seconds_left=turn.seconds_left
            )
        result = await self.toolbox.run(call, turn)
        if result is None:
            return failure(call, f"there is no tool named {call.name!r}", time.perf_counter())
        return result
