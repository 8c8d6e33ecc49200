"""The reply pipeline: one user message in, one assistant reply out, as a stream of events.

Every entry point (``/v1/assistants/.../messages``, ``model="assistant:<name>"`` on
``/v1/chat/completions``, the web widget, later the messaging channels) builds an
:class:`Inbound` and consumes :meth:`Runtime.reply`. The steps, each a small function:

1. :func:`Runtime._load` — the assistant's current version, the organisation's policy, the
   end user and their consent, the conversation, the recent turns and the user's memories, in
   one read;
2. a conversation in a human's hands gets the message stored and no model reply; a message the
   moderation policy refuses gets its refusal; an explicit request for a person is handed off
   by the platform;
3. :func:`concierge.assistants.retrieval.retrieve` — passages for the message;
4. :func:`concierge.assistants.prompt.build` — the prompt within the token budget, untrusted
   text spotlighted, personal data pseudonymised for a model outside this server;
5. the model call, streamed through :class:`concierge.assistants.output.OutputFilter` (data
   marks, pseudonyms, the leak guard, output moderation), and the tool loop, bounded by
   ``max_tool_steps`` model calls and ``max_tool_seconds`` of tool time; built-in tools and the
   operator's HTTP tools, each call past the injection guard (:meth:`Runtime._guarded_tool`);
6. :func:`Runtime._store` — the user's turn, the reply turn, saved memories and a handoff, in
   one transaction.

Failure rules: if the model fails before the reply has any text, the error propagates and
nothing is stored (the user can simply send again). Once text has been produced, the reply is
stored as it stands — ``partial`` when the client went away (generation is stopped), ``failed``
with the error when the model broke off — so what the user saw is on record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import Connection

from concierge.assistants import definitions
from concierge.assistants.definitions import Assistant, AssistantConfig
from concierge.assistants.drafts import Draft, Drafted
from concierge.assistants.events import (
    Completed,
    Delta,
    Inbound,
    Progress,
    ReplyEvent,
    ToolUsed,
)
from concierge.assistants.intents import wants_human
from concierge.assistants.output import OutputFilter, Withdrawn, notices, with_prefix
from concierge.assistants.prompt import Built, HistoryTurn, Passage, Spotlight, build
from concierge.assistants.retrieval import knowledge_bases, retrieve
from concierge.assistants.tools import ToolResult, call_http_tool, parse_arguments
from concierge.config import Settings
from concierge.conversations import store
from concierge.conversations.store import Conversation, EndUser, Turn
from concierge.egress import Egress
from concierge.errors import ConciergeError, InvalidRequest, NotFound, ServiceUnavailable
from concierge.governance import consent, moderation
from concierge.governance import policy as governance_policy
from concierge.governance.injection import LeakGuard, guard_call
from concierge.governance.moderation import Verdict
from concierge.governance.pii import Pseudonyms, StreamRestorer
from concierge.governance.policy import OrgPolicy, effective, pick_language
from concierge.governance.service import Governance
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.service import Knowledge
from concierge.models.base import (
    Finish,
    GenerationRequest,
    Message,
    Model,
    TextDelta,
    TokenCount,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from concierge.models.registry import ModelRegistry, generate_batches
from concierge.store import Database

log = logging.getLogger(__name__)
HISTORY_TURNS = 40  # the most turns read back for the conversation window
MAX_MESSAGE_CHARS = 16_000
HANDOFF_NOTICE = "I have passed your conversation to a member of our team; they will reply here."
EMPTY_REPLY = (
    "Sorry, I could not find an answer to that. You can rephrase the question or ask for a person."
)
_CITE = re.compile(r"\[(\d{1,2})\]")

BUILTIN_SPECS: dict[str, ToolSpec] = {
    "search_knowledge": ToolSpec(
        "search_knowledge",
        "Search the business's knowledge base for passages about a question.",
        {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 500}},
            "required": ["query"],
            "additionalProperties": False,
        },
    ),
    "remember": ToolSpec(
        "remember",
        "Save a lasting fact the user told you about themselves (a preference, their size, "
        "their order number) so you remember it in later conversations.",
        {
            "type": "object",
            "properties": {"fact": {"type": "string", "minLength": 1, "maxLength": 500}},
            "required": ["fact"],
            "additionalProperties": False,
        },
    ),
    "handoff_to_human": ToolSpec(
        "handoff_to_human",
        "Hand the conversation to a human colleague: when the user asks for a person, is "
        "upset, or needs something you cannot do.",
        {
            "type": "object",
            "properties": {"reason": {"type": "string", "maxLength": 500}},
            "required": ["reason"],
            "additionalProperties": False,
        },
    ),
}


# -- what a reply works with ---------------------------------------------------------------


@dataclass
class _Context:
    """What step 1 loads."""

    assistant: Assistant
    config: AssistantConfig
    user: EndUser
    conversation: Conversation | None
    history: list[HistoryTurn]
    memories: list[str]
    knowledge_bases: list[KnowledgeBase] = field(default_factory=list)
    policy: OrgPolicy = field(default_factory=OrgPolicy)
    disclosed: bool = False  # an assistant message of this conversation told the user already
    memory_allowed: bool = True  # the user consented to what the memory needs


def citations_for(text: str, passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """The passages the reply cites by number ("[2]"); all of them when it cites none.

    A base model seldom writes citation marks, yet its answer was still built from these
    passages, so they are the honest sources to show.
    """
    cited = [int(n) for n in _CITE.findall(text)]
    chosen = [passages[n - 1] for n in dict.fromkeys(cited) if 1 <= n <= len(passages)]
    return [p.citation() for p in (chosen or passages)]


# -- the runtime -----------------------------------------------------------------------------


class Runtime:
    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        knowledge: Knowledge,
        settings: Settings,
        governance: Governance,
        egress: Egress,
    ) -> None:
        self.db = db
        self.registry = registry
        self.knowledge = knowledge
        self.settings = settings
        self.governance = governance
        self.egress = egress  # operators' HTTP tools connect under the egress policy

    # -- routing ---------------------------------------------------------------------------

    def default_model(self) -> str:
        if self.settings.llm_enabled and self.settings.llm_model_name in self.registry.models:
            return self.settings.llm_model_name
        if not self.registry.models:
            raise ServiceUnavailable("no chat model is configured on this server")
        return next(iter(self.registry.models))

    def route(self, config: AssistantConfig) -> list[Model]:
        chain: list[Model] = []
        for name in [config.model or self.default_model(), *config.fallback_models]:
            for model in self.registry.route(name):
                if model not in chain:
                    chain.append(model)
        return chain

    # -- conversations ---------------------------------------------------------------------

    async def start_conversation(
        self,
        org_id: int,
        assistant_ref: int | str,
        channel: str,
        external_id: str,
        language: str | None = None,
    ) -> tuple[Conversation, list[Turn]]:
        """A new conversation, opened with the assistant's greeting when it has one (and the
        AI disclosure before it: the greeting is then the first assistant message)."""

        def write(conn: Connection) -> tuple[Conversation, list[Turn]]:
            assistant = definitions.get(conn, org_id, assistant_ref)
            user = store.end_user(conn, org_id, channel, external_id)
            conversation = store.create(conn, org_id, assistant.id, user, channel)
            opening: list[Turn] = []
            if assistant.config.greeting:
                org_policy, _ = governance_policy.get(conn, org_id)
                gov = effective(org_policy, assistant.config.governance)
                content, record = assistant.config.greeting, None
                if gov.disclosure.enabled:
                    notice = pick_language(
                        gov.disclosure.texts, language, gov.disclosure.default_language
                    )
                    content = f"{notice}\n\n{content}"
                    record = {"disclosure": notice, "notices": [len(notice) + 2, 0]}
                opening.append(
                    store.add_turn(
                        conn,
                        conversation,
                        "assistant",
                        content,
                        assistant_version=assistant.version,
                        governance=record,
                    )
                )
            return conversation, opening

        return await self.db.write(write)

    # -- the pipeline ----------------------------------------------------------------------

    async def reply(
        self, inbound: Inbound, spent: list[TokenCount] | None = None
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Run the pipeline for ``inbound``; the last event is :class:`Completed`.

        ``spent`` receives the token count of each model call as it happens, so a caller
        metering a reply that never completes (the client left) knows what it cost."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        text = inbound.text.strip()
        if not text:
            raise InvalidRequest("the message is empty", param="content")

        ctx = await self.db.read(lambda conn: self._load(conn, inbound))
        timings["load_ms"] = _ms(started)
        gov = ctx.policy

        if ctx.conversation is not None and ctx.conversation.status != "assistant":
            # A person has the conversation: the message waits for them, the model stays out.
            stored = await self.db.write(lambda conn: self._store_waiting(conn, ctx, text))
            timings["total_ms"] = _ms(started)
            yield Completed(stored[0], stored[1], None, [], timings)
            return

        progress = Progress(counts=spent if spent is not None else [])
        progress.prefix, progress.suffix = notices(gov, ctx.disclosed, inbound.language)
        mark = time.perf_counter()
        verdict = (
            await self.governance.check(text, gov.moderation)
            if gov.moderation.check_input
            else moderation.PASS
        )
        timings["moderation_ms"] = _ms(mark)
        if verdict.blocked and gov.moderation.action == "refuse":
            # Refused before the model: the user gets the policy's answer, a person reviews.
            progress.text = [gov.moderation.refusal_text]
            progress.moderation = verdict.record("input", "refuse")
            yield Delta(progress.content)
            yield await self._save(ctx, inbound, text, progress, timings, started, verdict)
            return

        config = ctx.config
        if "handoff_to_human" in config.builtin_tools and wants_human(text):
            # An explicit request for a person is granted by the platform, not left to the model.
            reason = "the user asked for a person"
            progress.text, progress.handoff = [HANDOFF_NOTICE], reason
            progress.tool_records.append(
                {"name": "handoff_to_human", "arguments": {"reason": reason}, "by": "platform"}
            )
            yield Delta(progress.content)
            yield await self._save(ctx, inbound, text, progress, timings, started, verdict)
            return

        route = self.route(config)  # an unknown model is refused before anything is stored
        # On record from here: the user's turn, and the reply as it streams (drafts.py). The
        # draft is written while retrieval and the prompt are under way.
        opening = asyncio.ensure_future(self._open_draft(ctx, inbound, text, progress, verdict))
        try:
            mark = time.perf_counter()
            passages = await retrieve(
                self.knowledge,
                ctx.knowledge_bases,
                text,
                config.retrieval_k,
                config.retrieval_mode,
            )
            timings["retrieval_ms"] = _ms(mark)
            mark = time.perf_counter()
            built, names, spotlight = await self._prompt(ctx, text, passages, route)
            tools = self._tool_specs(config, ctx)
            timings["prompt_ms"] = _ms(mark)
            progress.passages = list(built.passages)
            messages = list(built.messages)
            defence = gov.injection
            output = OutputFilter(
                progress,
                gov,
                self.governance,
                datamarking=spotlight.datamarking,
                restorer=StreamRestorer(names) if names is not None else None,
                leak_guard=(
                    LeakGuard(config.instructions)
                    if defence.enabled and defence.leak_guard
                    else None
                ),
                check_output=gov.moderation.enabled and gov.moderation.check_output,
            )
            draft = await opening
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._discard_draft(await opening)
            raise
        saved = False
        try:
            async for event in self._generate(
                ctx,
                inbound,
                text,
                progress,
                route,
                messages,
                tools,
                spotlight,
                names,
                output,
                timings,
            ):
                yield event
            if progress.handoff is not None and not progress.answer:
                progress.text.append(HANDOFF_NOTICE)
                yield Delta(with_prefix(progress, HANDOFF_NOTICE))
            elif not progress.answer:
                # The model produced nothing usable (it went straight to a stop sequence): the
                # user gets an honest answer, the turn says what happened.
                progress.text = [EMPTY_REPLY]
                progress.error = "the model returned no text"
                yield Delta(with_prefix(progress, EMPTY_REPLY))
            async for shown in output.final():
                yield shown
            if progress.suffix:
                yield Delta(progress.suffix)
            # Once the final save starts it finishes (a hang-up now must not store it twice).
            saved = True
            with anyio.CancelScope(shield=True):
                completed = await self._save(
                    ctx, inbound, text, progress, timings, started, verdict, draft
                )
            yield completed
        finally:
            if draft.keeper is not None:
                with anyio.CancelScope(shield=True):
                    await draft.keeper.stop()
            if not saved:
                # Cut short: the client went away (what it was shown is kept, ``partial``), or
                # the model failed before saying anything (the exchange is taken back).
                with anyio.CancelScope(shield=True):
                    if progress.text or progress.handoff:
                        if progress.status == "complete":
                            progress.status, progress.error = "failed", "internal error"
                        await self._save(
                            ctx, inbound, text, progress, timings, started, verdict, draft
                        )
                    else:
                        await self._discard_draft(draft)

    async def _generate(
        self,
        ctx: _Context,
        inbound: Inbound,
        text: str,
        progress: Progress,
        route: list[Model],
        messages: list[Message],
        tools: list[ToolSpec],
        spotlight: Spotlight,
        names: Pseudonyms | None,
        output: OutputFilter,
        timings: dict[str, float],
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Step 5: the model, streamed through the output filter, and the tool loop. A failure
        before any text propagates (nothing is said, nothing kept); after text, the reply is
        ``failed`` with the error and the pipeline goes on to store it."""
        config = ctx.config
        user_said = [t.content for t in ctx.history if t.role == "user"]
        tool_outputs: list[str] = []
        tool_deadline: float | None = None
        model_s = 0.0
        tools_s = 0.0
        try:
            for step in range(config.max_tool_steps + 1):
                last = step == config.max_tool_steps or progress.handoff is not None
                request = GenerationRequest(
                    model=route[0].model_id,
                    messages=messages,
                    max_tokens=config.max_reply_tokens,
                    temperature=config.temperature,
                    tools=[] if last else tools,
                    tool_choice=None if last or not tools else "auto",
                    # A model that starts writing a marker is making up a passage: stop it.
                    stop=["<<"],
                    user=f"{inbound.channel}:{inbound.external_id}"[:256],
                    priority_key=inbound.priority_key or f"user:{ctx.user.id}",
                )
                progress.counts.append(request.tokens)
                calls: dict[int, dict[str, str]] = {}
                step_text: list[str] = []
                mark = time.perf_counter()
                async for model, batch in generate_batches(route, request):
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
                        elif isinstance(event, Finish):
                            pass  # its usage is in the request's count, set by the backend
                for shown in output.flush():
                    yield shown
                model_s += time.perf_counter() - mark
                if not calls:
                    break
                mark = time.perf_counter()
                if tool_deadline is None:
                    tool_deadline = time.monotonic() + config.max_tool_seconds
                made = [
                    ToolCall(c["id"] or f"call_{uuid.uuid4().hex[:24]}", c["name"], c["arguments"])
                    for _, c in sorted(calls.items())
                ]
                messages.append(Message("assistant", "".join(step_text) or None, tuple(made)))
                for call_made in made:
                    result = await self._guarded_tool(
                        call_made,
                        ctx,
                        inbound,
                        progress,
                        tool_deadline,
                        names=names,
                        trusted=[text, *user_said, config.instructions],
                        untrusted=[*ctx.memories, *tool_outputs],
                    )
                    tool_outputs.append(result.content)
                    progress.tool_records.append(result.record())
                    yield ToolUsed(result.record())
                    returned = names.mask(result.content) if names is not None else result.content
                    messages.append(
                        Message(
                            "tool",
                            spotlight.wrap("tool_result", returned, call_made.name),
                            tool_call_id=call_made.id,
                            name=call_made.name,
                        )
                    )
                tools_s += time.perf_counter() - mark
        except Withdrawn:
            pass  # output moderation replaced the answer; the model was stopped
        except (asyncio.CancelledError, GeneratorExit):
            progress.status = "partial"
            raise
        except ConciergeError as exc:
            if not progress.text and not progress.handoff:
                raise  # nothing was said: nothing is stored
            progress.status, progress.error = "failed", exc.message
            log.warning("assistant reply broke off after output: %s", exc.message)
        except Exception:
            if not progress.text and not progress.handoff:
                raise
            progress.status, progress.error = "failed", "internal error"
            log.exception("assistant reply broke off after output")
        finally:
            timings["model_ms"] = round(model_s * 1000, 2)
            timings["tools_ms"] = round(tools_s * 1000, 2)

    # -- step 1: load ----------------------------------------------------------------------

    def _load(self, conn: Connection, inbound: Inbound) -> _Context:
        assistant = definitions.get(conn, inbound.org_id, inbound.assistant)
        org_policy, _ = governance_policy.get(conn, inbound.org_id)
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
                HistoryTurn(t.role, _answer_of(t), bool((t.governance or {}).get("masked")))
                for t in recent
                if t.content and not (t.role == "assistant" and t.model is None)
            ]
        purpose = gov.consent.memory_requires
        memory_allowed = purpose is None or consent.granted(conn, user.id, purpose)
        memories = (
            [m.fact for m in store.memories_of(conn, inbound.org_id, assistant.id, user)]
            if user.id and memory_allowed
            else []
        )
        kbs = knowledge_bases(conn, inbound.org_id, assistant.config.knowledge_bases)
        return _Context(
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

    # -- step 5: tools ---------------------------------------------------------------------

    def _tool_specs(self, config: AssistantConfig, ctx: _Context) -> list[ToolSpec]:
        specs = [
            BUILTIN_SPECS[name]
            for name in config.builtin_tools
            if (name != "search_knowledge" or config.knowledge_bases)
            and (name != "remember" or ctx.memory_allowed)  # memory needs the user's consent
        ]
        specs += [ToolSpec(t.name, t.description, t.parameters) for t in config.tools]
        return specs

    async def _guarded_tool(
        self,
        call: ToolCall,
        ctx: _Context,
        inbound: Inbound,
        progress: Progress,
        deadline: float,
        *,
        names: Pseudonyms | None,
        trusted: list[str],
        untrusted: list[str],
    ) -> ToolResult:
        """A tool call the model made, with the real values back in its arguments, run unless
        the injection guard finds that only data (passages, memories, earlier tool results;
        never the user or the operator) asked for it."""
        if names is not None:  # the tool gets the real values, never the model
            restored = names.restore_json(_loads(call.arguments))
            call = ToolCall(call.id, call.name, json.dumps(restored))
        defence = ctx.policy.injection
        if defence.enabled and defence.tool_guard:
            refusal = guard_call(
                call.name,
                _loads(call.arguments),
                trusted=trusted,
                untrusted=[*(p.text for p in progress.passages), *untrusted],
            )
            if refusal is not None:
                failed = _tool_failure(call, refusal, time.perf_counter())
                return dataclasses.replace(failed, refused=True)
        return await self._run_tool(call, ctx.config, ctx, inbound, progress, deadline)

    async def _run_tool(
        self,
        call: ToolCall,
        config: AssistantConfig,
        ctx: _Context,
        inbound: Inbound,
        progress: Progress,
        deadline: float,
    ) -> ToolResult:
        started = time.perf_counter()
        seconds_left = deadline - time.monotonic()
        http_tool = next((t for t in config.tools if t.name == call.name), None)
        if http_tool is not None:
            return await call_http_tool(
                http_tool, call.arguments, self.egress.session(), seconds_left=seconds_left
            )
        spec = BUILTIN_SPECS.get(call.name)
        if spec is None or call.name not in config.builtin_tools:
            return _tool_failure(call, f"there is no tool named {call.name!r}", started)
        arguments = parse_arguments(call.name, spec.parameters, call.arguments)
        if isinstance(arguments, str):
            return _tool_failure(call, arguments, started)
        if seconds_left <= 0:
            return _tool_failure(call, "no tool time left in this turn", started)
        if call.name == "search_knowledge":
            try:
                async with asyncio.timeout(seconds_left):
                    found = await retrieve(
                        self.knowledge,
                        ctx.knowledge_bases,
                        arguments["query"],
                        max(config.retrieval_k, 1),
                        config.retrieval_mode,
                    )
            except TimeoutError:
                return _tool_failure(call, "the search took too long", started, arguments)
            lines = []
            for passage in found:
                if passage not in progress.passages:
                    progress.passages.append(passage)
                number = progress.passages.index(passage) + 1
                label = f"[{number}] {passage.title or 'untitled'}"
                if passage.location:
                    label += f" ({passage.location})"
                lines.append(f"{label}\n{passage.text}")
            content = "\n\n".join(lines) or "Nothing in the knowledge base matches that query."
            return ToolResult(call.name, arguments, content, None, _ms(started))
        if call.name == "remember":
            if not ctx.memory_allowed:
                return _tool_failure(call, "the user has not agreed to be remembered", started)
            fact = " ".join(str(arguments["fact"]).split())
            progress.memories.append(fact)
            return ToolResult(call.name, arguments, f"Saved: {fact}", None, _ms(started))
        # handoff_to_human
        progress.handoff = str(arguments.get("reason") or "").strip() or "requested by the model"
        return ToolResult(
            call.name,
            arguments,
            "The conversation is now in a human colleague's queue. Tell the user briefly.",
            None,
            _ms(started),
        )

    # -- step 6: store ---------------------------------------------------------------------

    async def _save(
        self,
        ctx: _Context,
        inbound: Inbound,
        text: str,
        progress: Progress,
        timings: dict[str, float],
        started: float,
        verdict: Verdict,
        draft: Drafted | None = None,
    ) -> Completed:
        """Store the exchange: both turns at once, or the reply over its stored ``draft``."""
        if draft is not None and draft.keeper is not None:
            await draft.keeper.stop()  # no save of the draft after (or during) the final one
        mark = time.perf_counter()
        gov = ctx.policy
        delivered = progress.content
        citations = citations_for(progress.answer, progress.passages)
        latency = _ms(started)
        producer = self.governance.producer(gov)
        # A model wrote it: it is labelled. The platform's own texts (a refusal of blocked
        # input, the handoff notice) are not AI-generated content.
        generated = progress.model is not None
        label = (
            self.governance.labeller.label(delivered, progress.label_id, producer=producer)
            if generated
            else None
        )
        # What is stored: personal data masked where the policy says so (the label above is
        # for what the user received; a stored turn's label is issued over what was stored).
        asked, asked_record = self._asked(text, gov, verdict)
        answered_text, answered_pii = self._for_storage(delivered, gov)
        facts = [self._for_storage(fact, gov)[0] for fact in progress.memories]
        reply_record = self._reply_record(ctx, progress, generated=generated)
        if answered_pii:
            reply_record["pii"] = answered_pii
        if progress.moderation is not None:
            reply_record["moderation"] = progress.moderation

        def write(conn: Connection) -> tuple[Conversation, Turn, Turn]:
            if draft is not None:
                user, conversation, user_turn = draft.user, draft.conversation, draft.user_turn
            else:
                user = (
                    ctx.user
                    if ctx.user.id
                    else store.end_user(conn, inbound.org_id, inbound.channel, inbound.external_id)
                )
                conversation = ctx.conversation or store.create(
                    conn, inbound.org_id, ctx.assistant.id, user, inbound.channel
                )
            reply = store.new_turn(
                conversation,
                "assistant",
                answered_text,
                status=progress.status,
                citations=citations,
                tool_calls=progress.tool_records,
                assistant_version=ctx.assistant.version,
                model=progress.model,
                prompt_tokens=progress.prompt_tokens,
                completion_tokens=progress.completion_tokens,
                latency_ms=latency,
                error=progress.error,
                governance=reply_record,
            )
            if draft is not None:
                drafted = dataclasses.replace(
                    reply, id=draft.reply_id, created_at=draft.reply_created
                )
                reply_turn = store.finish_turn(conn, drafted)
            else:
                asking = store.new_turn(conversation, "user", asked, governance=asked_record)
                user_turn, reply_turn = store.add_turns(conn, conversation, [asking, reply])
            for fact in facts:
                store.remember(conn, inbound.org_id, ctx.assistant.id, user, fact, reply_turn.id)
            if progress.handoff is not None:
                conversation = store.set_status(conn, conversation, "handoff", progress.handoff)
            # Every moderation hit goes to the review queue (and so to the audit log).
            output = progress.moderation
            for turn, record in (
                (user_turn, (asked_record or {}).get("moderation")),
                (reply_turn, output if output and output["stage"] == "output" else None),
            ):
                if record is not None:
                    moderation.open_report(
                        conn,
                        org_id=inbound.org_id,
                        conversation_id=conversation.id,
                        turn_id=turn.id,
                        source="moderation",
                        category=str(record["category"]),
                        reason=f"{record['stage']} {record['action']}: {record['rule']}",
                        actor="system:moderation",
                        details=record,
                    )
            return conversation, user_turn, reply_turn

        conversation, user_turn, reply_turn = await self.db.write(write)
        timings["storage_ms"] = _ms(mark)
        timings["total_ms"] = _ms(started)
        return Completed(conversation, user_turn, reply_turn, citations, timings, label, delivered)

    def _for_storage(self, text: str, gov: OrgPolicy) -> tuple[str, dict[str, int]]:
        if not gov.pii.redact_storage:
            return text, {}
        return self.governance.detector.redact(text, gov.pii.entities)

    def _asked(
        self, text: str, gov: OrgPolicy, verdict: Verdict
    ) -> tuple[str, dict[str, Any] | None]:
        """The user's message as stored, and its governance record."""
        asked, found = self._for_storage(text, gov)
        record: dict[str, Any] = {}
        if gov.pii.redact_storage:
            record["masked"] = True
        if found:
            record["pii"] = found
        if verdict.blocked:
            record["moderation"] = verdict.record("input", gov.moderation.action)
        return asked, record or None

    def _reply_record(
        self, ctx: _Context, progress: Progress, *, generated: bool
    ) -> dict[str, Any]:
        """The reply's governance record: its notices, and the provenance label's id and
        producer when a model writes it (a draft carries them from the start, so a reply cut
        off by a crash is still labelled)."""
        gov = ctx.policy
        record: dict[str, Any] = {"notices": [len(progress.prefix), len(progress.suffix)]}
        if generated:
            record.update(label_id=progress.label_id, producer=self.governance.producer(gov))
        if progress.prefix and gov.disclosure.enabled and not ctx.disclosed:
            record["disclosure"] = progress.prefix.split("\n\n", 1)[0]
        if gov.pii.redact_storage:
            record["masked"] = True
        return record

    # -- step 4: the prompt ----------------------------------------------------------------

    async def _prompt(
        self, ctx: _Context, text: str, passages: list[Passage], route: list[Model]
    ) -> tuple[Built, Pseudonyms | None, Spotlight]:
        """The prompt within the token budget; personal data pseudonymised for a model
        outside this server."""
        config, gov = ctx.config, ctx.policy
        context = config.max_context_tokens
        if route[0].context_length:  # never plan for more than the model can read
            context = min(context, route[0].context_length)
        message, history, memories = text, ctx.history, ctx.memories
        names: Pseudonyms | None = None
        if gov.pii.redact_external_models and not route[0].runs_locally:
            # Personal data stays on this machine: the external model sees placeholders
            # ([EMAIL_1]); its answer and its tool calls get the real values back here.
            names = Pseudonyms(self.governance.detector, gov.pii.entities)
            message = names.mask(message)
            history = [
                t if t.masked else HistoryTurn(t.role, names.mask(t.content)) for t in history
            ]
            memories = [names.mask(m) for m in memories]
        defence = gov.injection
        spotlight = Spotlight(datamarking=defence.datamarking, defended=defence.enabled)
        # Counted with the model's own tokenizer where it has one (a history sent through the
        # OpenAI door is trimmed to fit, never refused for being long), off the event loop.
        built = await asyncio.to_thread(
            functools.partial(
                build,
                instructions=config.instructions,
                message=message,
                history=history,
                passages=passages,
                memories=memories,
                max_context_tokens=context,
                max_reply_tokens=min(config.max_reply_tokens, context // 2),
                spotlight=spotlight,
                count=route[0].count_tokens,
            )
        )
        return built, names, spotlight

    # -- the draft: the exchange on record while the reply is written -----------------------

    async def _open_draft(
        self, ctx: _Context, inbound: Inbound, text: str, progress: Progress, verdict: Verdict
    ) -> Drafted:
        gov = ctx.policy
        asked, asked_record = self._asked(text, gov, verdict)
        record = {**self._reply_record(ctx, progress, generated=True), "draft": True}

        def write(conn: Connection) -> Drafted:
            new_user = not ctx.user.id
            user = (
                ctx.user
                if not new_user
                else store.end_user(conn, inbound.org_id, inbound.channel, inbound.external_id)
            )
            conversation = ctx.conversation or store.create(
                conn, inbound.org_id, ctx.assistant.id, user, inbound.channel
            )
            now = datetime.now(UTC)
            user_turn, reply_turn = store.add_turns(
                conn,
                conversation,
                [
                    store.new_turn(conversation, "user", asked, governance=asked_record),
                    dataclasses.replace(
                        store.new_turn(
                            conversation,
                            "assistant",
                            "",
                            status="generating",
                            assistant_version=ctx.assistant.version,
                            governance=record,
                        ),
                        updated_at=now,
                    ),
                ],
            )
            return Drafted(
                user,
                conversation,
                user_turn,
                reply_turn.id,
                reply_turn.created_at,
                new_conversation=ctx.conversation is None,
                new_user=new_user,
            )

        drafted = await self.db.write(write)
        drafted.keeper = Draft(
            self.db,
            drafted.reply_id,
            lambda: self._for_storage(progress.prefix + progress.answer, gov)[0],
            flush_seconds=self.settings.reply_flush_seconds,
            stale_seconds=self.settings.reply_stale_seconds,
        )
        drafted.keeper.start()
        return drafted

    async def _discard_draft(self, drafted: Drafted) -> None:
        """The model failed before any text: the exchange is taken back (send it again)."""
        with anyio.CancelScope(shield=True):
            if drafted.keeper is not None:
                await drafted.keeper.stop()
            await self.db.write(
                lambda conn: store.discard_draft(
                    conn,
                    drafted.conversation,
                    [drafted.user_turn.id, drafted.reply_id],
                    drop_conversation=drafted.new_conversation,
                    drop_user=drafted.new_user,
                )
            )

    def _store_waiting(
        self, conn: Connection, ctx: _Context, text: str
    ) -> tuple[Conversation, Turn]:
        assert ctx.conversation is not None
        stored, found = self._for_storage(text, ctx.policy)
        turn = store.add_turn(
            conn, ctx.conversation, "user", stored, governance={"pii": found} if found else None
        )
        return store.get(conn, ctx.conversation.org_id, ctx.conversation.id), turn


def _answer_of(turn: Turn) -> str:
    """A stored reply without the notices around it (the disclosure, explicit labels)."""
    notices = (turn.governance or {}).get("notices")
    if not notices:
        return turn.content
    before, after = int(notices[0]), int(notices[1])
    return turn.content[before : len(turn.content) - after if after else None]


def _tool_failure(call: ToolCall, error: str, started: float, arguments: Any = None) -> ToolResult:
    shown = arguments if arguments is not None else _loads(call.arguments)
    return ToolResult(
        call.name, shown, f"The tool {call.name} failed: {error}", error, _ms(started)
    )


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
