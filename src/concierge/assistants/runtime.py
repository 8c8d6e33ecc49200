"""The reply pipeline: one user message in, one assistant reply out, as a stream of events.

Every entry point (``/v1/assistants/.../messages``, ``model="assistant:<name>"`` on
``/v1/chat/completions``, the web widget, later the messaging channels) builds an
:class:`Inbound` and consumes :meth:`Runtime.reply`. The steps of the path in DESIGN.md, each
a named function in the module that names it:

1. profile + memory: :func:`concierge.assistants.context.load_context` — the assistant's
   current version, the organisation's policy, the end user and their consent, the
   conversation, the recent turns and the user's memories, in one read;
2. policy (in): a conversation in a human's hands gets the message stored and no model reply;
   a message the moderation policy refuses gets its refusal; an explicit request for a person
   is handed off by the platform (:meth:`Runtime.answered_by_platform`);
3. retrieval: :func:`concierge.assistants.retrieval.retrieve`;
4. the prompt: :func:`concierge.assistants.prompt.prepare` — within the token budget, untrusted
   text spotlighted, personal data pseudonymised for a model outside this server;
5. the model call and the tool loop: :meth:`concierge.assistants.generation.Generator.generate`,
   streamed through :class:`concierge.assistants.output.OutputFilter` (policy out); registered
   tools from :mod:`concierge.assistants.toolbox`, the operator's HTTP tools;
6. store: :class:`concierge.assistants.records.Recorder` — the exchange is on record as a draft
   from before the model starts, finished in one transaction with memories, a handoff and
   moderation reports.

Failure rules: if the model fails before the reply has any text, the error propagates and
nothing is stored (the user can simply send again). Once text has been produced, the reply is
stored as it stands — ``partial`` when the client went away (generation is stopped), ``failed``
with the error when the model broke off — so what the user saw is on record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import anyio
from sqlalchemy import Connection

from concierge.assistants import definitions
from concierge.assistants.context import TurnContext, load_context
from concierge.assistants.definitions import AssistantConfig
from concierge.assistants.drafts import Drafted
from concierge.assistants.events import Completed, Delta, Inbound, Progress, ReplyEvent
from concierge.assistants.generation import Generation, Generator
from concierge.assistants.intents import wants_human
from concierge.assistants.output import OutputFilter, notices, with_prefix
from concierge.assistants.prompt import prepare
from concierge.assistants.records import Recorder
from concierge.assistants.retrieval import retrieve
from concierge.assistants.toolbox import Toolbox, ToolTurn, elapsed_ms
from concierge.config import Settings
from concierge.conversations import store
from concierge.conversations.records import (
    ConversationStatus,
    ToolRecord,
    Turn,
    TurnGovernance,
    TurnStatus,
)
from concierge.conversations.store import Conversation
from concierge.egress import Egress
from concierge.errors import InvalidRequest, ServiceUnavailable
from concierge.governance import moderation
from concierge.governance import policy as governance_policy
from concierge.governance.injection import LeakGuard
from concierge.governance.moderation import Verdict
from concierge.governance.pii import StreamRestorer
from concierge.governance.policy import effective
from concierge.governance.service import Governance
from concierge.knowledge.service import Knowledge
from concierge.models.base import Model, TokenCount
from concierge.models.registry import ModelRegistry
from concierge.store import Database

log = logging.getLogger(__name__)
HANDOFF_NOTICE = "I have passed your conversation to a member of our team; they will reply here."
EMPTY_REPLY = (
    "Sorry, I could not find an answer to that. You can rephrase the question or ask for a person."
)


class Runtime:
    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        knowledge: Knowledge,
        settings: Settings,
        governance: Governance,
        egress: Egress,
        toolbox: Toolbox,
    ) -> None:
        self.db = db
        self.registry = registry
        self.knowledge = knowledge
        self.settings = settings
        self.governance = governance
        self.toolbox = toolbox
        self.generator = Generator(toolbox, egress)
        self.records = Recorder(db, governance, settings)

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
                org_policy, _ = governance_policy.get(conn, org_id, self.governance.policies)
                gov = effective(org_policy, assistant.config.governance)
                content, record = assistant.config.greeting, None
                notice = gov.disclosure.text_for(language)
                if notice is not None:
                    content = f"{notice}\n\n{content}"
                    record = TurnGovernance(notices=(len(notice) + 2, 0), disclosure=notice)
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

        ctx = await self.db.read(lambda conn: load_context(conn, inbound, self.governance.policies))
        timings["load_ms"] = elapsed_ms(started)
        if ctx.conversation is not None and ctx.conversation.status != ConversationStatus.ASSISTANT:
            # A person has the conversation: the message waits for them, the model stays out.
            conversation, turn = await self.records.store_waiting(ctx, inbound, text)
            timings["total_ms"] = elapsed_ms(started)
            yield Completed(conversation, turn, None, [], timings)
            return

        progress = Progress(counts=spent if spent is not None else [])
        progress.prefix, progress.suffix = notices(ctx.policy, ctx.disclosed, inbound.language)
        verdict = await self.check_input(ctx, text, timings)
        if self.answered_by_platform(ctx, text, progress, verdict):
            yield Delta(progress.content)
            yield await self.records.save(ctx, inbound, text, progress, timings, started, verdict)
            return

        route = self.route(ctx.config)  # an unknown model is refused before anything is stored
        # On record from here: the user's turn, and the reply as it streams (drafts.py). The
        # draft is written while retrieval and the prompt are under way.
        opening = asyncio.ensure_future(
            self.records.open_draft(ctx, inbound, text, progress, verdict)
        )
        try:
            generation = await self.prepare(ctx, inbound, text, progress, route, timings)
            draft = await opening
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await self.records.discard_draft(await opening)
                except Exception:  # the original failure is the one to raise
                    log.exception("the draft of a failed reply could not be taken back")
            raise
        async for event in self.respond(generation, draft, verdict, started):
            yield event

    async def platform_reply(
        self, inbound: Inbound, answer: str, *, handoff: str | None = None
    ) -> Completed:
        """Answer ``inbound`` with the platform's own ``answer``, no model involved: when the
        model is down (an apology, and ``handoff`` puts the conversation in the human queue),
        or for a message the assistant cannot read (a voice note). Stored like any reply, with
        the AI disclosure when it is the first, and the caller's ``on_record`` called."""
        started = time.perf_counter()
        text = inbound.text.strip()
        if not text:
            raise InvalidRequest("the message is empty", param="content")
        ctx = await self.db.read(lambda conn: load_context(conn, inbound, self.governance.policies))
        if ctx.conversation is not None and ctx.conversation.status != ConversationStatus.ASSISTANT:
            conversation, turn = await self.records.store_waiting(ctx, inbound, text)
            return Completed(conversation, turn, None, [], {"total_ms": elapsed_ms(started)})
        progress = Progress()
        progress.prefix, progress.suffix = notices(ctx.policy, ctx.disclosed, inbound.language)
        progress.text = [answer]
        if handoff is not None:
            progress.handoff = handoff
            progress.tool_records.append(
                ToolRecord("handoff_to_human", {"reason": handoff}, by="platform")
            )
        return await self.records.save(ctx, inbound, text, progress, {}, started, moderation.PASS)

    async def check_input(self, ctx: TurnContext, text: str, timings: dict[str, float]) -> Verdict:
        """Policy (in): the user's message against the moderation policy."""
        mark = time.perf_counter()
        gov = ctx.policy
        verdict = (
            await self.governance.check(text, gov.moderation)
            if gov.moderation.check_input
            else moderation.PASS
        )
        timings["moderation_ms"] = elapsed_ms(mark)
        return verdict

    def answered_by_platform(
        self, ctx: TurnContext, text: str, progress: Progress, verdict: Verdict
    ) -> bool:
        """Whether the platform answers in the model's place: a refusal of blocked input (a
        person reviews it), or the handoff an explicit request for a person gets."""
        gov = ctx.policy
        if verdict.blocked and gov.moderation.action == "refuse":
            progress.text = [gov.moderation.refusal_text]
            progress.moderation = verdict.record("input", "refuse")
            return True
        if "handoff_to_human" in ctx.config.builtin_tools and wants_human(text):
            reason = "the user asked for a person"
            progress.text, progress.handoff = [HANDOFF_NOTICE], reason
            progress.tool_records.append(
                ToolRecord("handoff_to_human", {"reason": reason}, by="platform")
            )
            return True
        return False

    async def prepare(
        self,
        ctx: TurnContext,
        inbound: Inbound,
        text: str,
        progress: Progress,
        route: list[Model],
        timings: dict[str, float],
    ) -> Generation:
        """Retrieval, the prompt and the output filter: everything the model call needs."""
        config, gov = ctx.config, ctx.policy
        mark = time.perf_counter()
        passages = await retrieve(
            self.knowledge, ctx.knowledge_bases, text, config.retrieval_k, config.retrieval_mode
        )
        timings["retrieval_ms"] = elapsed_ms(mark)
        mark = time.perf_counter()
        built, names, spotlight = await prepare(
            instructions=config.instructions,
            message=text,
            history=ctx.history,
            passages=passages,
            memories=ctx.memories,
            max_context_tokens=config.max_context_tokens,
            max_reply_tokens=config.max_reply_tokens,
            model=route[0],
            policy=gov,
            detector=self.governance.detector,
        )
        tool_turn = ToolTurn(
            config, self.knowledge, ctx.knowledge_bases, ctx.memory_allowed, progress
        )
        tools = self.toolbox.specs(tool_turn)
        timings["prompt_ms"] = elapsed_ms(mark)
        progress.passages = list(built.passages)
        defence = gov.injection
        output = OutputFilter(
            progress,
            gov,
            self.governance,
            datamarking=spotlight.datamarking,
            restorer=StreamRestorer(names) if names is not None else None,
            leak_guard=(
                LeakGuard(config.instructions) if defence.enabled and defence.leak_guard else None
            ),
            check_output=gov.moderation.enabled and gov.moderation.check_output,
        )
        return Generation(
            ctx,
            inbound,
            text,
            progress,
            route,
            list(built.messages),
            tools,
            tool_turn,
            spotlight,
            names,
            output,
            timings,
        )

    async def respond(
        self, g: Generation, draft: Drafted, verdict: Verdict, started: float
    ) -> AsyncGenerator[ReplyEvent, None]:
        """The model's reply streamed, then stored over the draft: complete, or ``partial``
        when the client went away, ``failed`` when the model broke off after saying something;
        taken back (the draft discarded) when it failed before saying anything."""
        ctx, inbound, text, progress, timings = g.ctx, g.inbound, g.text, g.progress, g.timings
        saved = False
        try:
            async for event in self.generator.generate(g):
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
            async for shown in g.output.final():
                yield shown
            if progress.suffix:
                yield Delta(progress.suffix)
            # Once the final save starts it finishes (a hang-up now must not store it twice).
            saved = True
            with anyio.CancelScope(shield=True):
                completed = await self.records.save(
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
                        if progress.status == TurnStatus.COMPLETE:
                            progress.status = TurnStatus.FAILED
                            progress.error = "internal error"
                        await self.records.save(
                            ctx, inbound, text, progress, timings, started, verdict, draft
                        )
                    else:
                        await self.records.discard_draft(draft)
