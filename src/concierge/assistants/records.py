"""The last step of a reply: the exchange on record (store turn + audit).

The user's turn and the reply are written together, the reply first as a draft while it
streams (:mod:`concierge.assistants.drafts` keeps it current), then finished in one update:
personal data masked where the policy says so, the provenance label's id and producer, the
notices around the answer, memories saved, a handoff, and every moderation hit opened as a
report (so it reaches the review queue and the audit log) in the same transaction.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import Connection

from concierge.assistants.context import TurnContext
from concierge.assistants.drafts import Draft, Drafted
from concierge.assistants.events import Completed, Inbound, Progress, Recorded, Stage
from concierge.assistants.prompt import Passage
from concierge.assistants.toolbox import elapsed_ms
from concierge.config import Settings
from concierge.conversations import memory, store
from concierge.conversations.records import ConversationStatus, Turn, TurnGovernance, TurnStatus
from concierge.conversations.store import Conversation, EndUser
from concierge.governance import moderation
from concierge.governance.moderation import Verdict
from concierge.governance.policy import OrgPolicy
from concierge.governance.service import Governance
from concierge.store import Database

_CITE = re.compile(r"\[(\d{1,2})\]")


def citations_for(text: str, passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """The passages the reply cites by number ("[2]"); all of them when it cites none.

    A base model seldom writes citation marks, yet its answer was still built from these
    passages, so they are the honest sources to show.
    """
    cited = [int(n) for n in _CITE.findall(text)]
    chosen = [passages[n - 1] for n in dict.fromkeys(cited) if 1 <= n <= len(passages)]
    return [p.citation() for p in (chosen or passages)]


def _user_and_conversation(
    conn: Connection, ctx: TurnContext, inbound: Inbound
) -> tuple[EndUser, Conversation]:
    """The turn's end user and conversation, each made now if the turn is their first."""
    user = (
        ctx.user
        if ctx.user.id
        else store.end_user(conn, inbound.org_id, inbound.channel, inbound.external_id)
    )
    conversation = ctx.conversation or store.create(
        conn, inbound.org_id, ctx.assistant.id, user, inbound.channel
    )
    return user, conversation


class Recorder:
    """Writes a turn's records for the reply pipeline."""

    def __init__(self, db: Database, governance: Governance, settings: Settings) -> None:
        self.db = db
        self.governance = governance
        self.settings = settings

    async def save(
        self,
        ctx: TurnContext,
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
        latency = elapsed_ms(started)
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
        asked, asked_record = self.asked(text, gov, verdict)
        answered_text, answered_pii = self.for_storage(delivered, gov)
        facts = [self.for_storage(fact, gov)[0] for fact in progress.memories]
        reply_record = dataclasses.replace(
            self.reply_record(ctx, progress, generated=generated),
            pii=answered_pii,
            moderation=progress.moderation,
        )

        def write(conn: Connection) -> tuple[Conversation, Turn, Turn]:
            if draft is not None:
                user, conversation, user_turn = draft.user, draft.conversation, draft.user_turn
            else:
                user, conversation = _user_and_conversation(conn, ctx, inbound)
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
                memory.remember(conn, inbound.org_id, ctx.assistant.id, user, fact, reply_turn.id)
            if progress.handoff is not None:
                conversation = store.set_status(
                    conn, conversation, ConversationStatus.HANDOFF, progress.handoff
                )
            # Every moderation hit goes to the review queue (and so to the audit log).
            output = progress.moderation
            for turn, hit in (
                (user_turn, asked_record.moderation if asked_record else None),
                (reply_turn, output if output and output.stage == "output" else None),
            ):
                if hit is not None:
                    moderation.open_report(
                        conn,
                        org_id=inbound.org_id,
                        conversation_id=conversation.id,
                        turn_id=turn.id,
                        source="moderation",
                        category=str(hit.category),
                        reason=f"{hit.stage} {hit.action}: {hit.rule}",
                        actor="system:moderation",
                        details=hit.to_dict(),
                    )
            if inbound.on_record is not None:
                inbound.on_record(
                    conn, Recorded(Stage.FINAL, conversation, user_turn, reply_turn, delivered)
                )
            return conversation, user_turn, reply_turn

        conversation, user_turn, reply_turn = await self.db.write(write)
        timings["storage_ms"] = elapsed_ms(mark)
        timings["total_ms"] = elapsed_ms(started)
        return Completed(conversation, user_turn, reply_turn, citations, timings, label, delivered)

    def for_storage(self, text: str, gov: OrgPolicy) -> tuple[str, dict[str, int]]:
        if not gov.pii.redact_storage:
            return text, {}
        return self.governance.detector.redact(text, gov.pii.entities)

    def asked(
        self, text: str, gov: OrgPolicy, verdict: Verdict
    ) -> tuple[str, TurnGovernance | None]:
        """The user's message as stored, and its governance record."""
        asked, found = self.for_storage(text, gov)
        record = TurnGovernance(
            masked=gov.pii.redact_storage,
            pii=found,
            moderation=(
                verdict.record("input", gov.moderation.action) if verdict.blocked else None
            ),
        )
        return asked, record if record.to_dict() else None

    def reply_record(
        self, ctx: TurnContext, progress: Progress, *, generated: bool
    ) -> TurnGovernance:
        """The reply's governance record: its notices, and the provenance label's id and
        producer when a model writes it (a draft carries them from the start, so a reply cut
        off by a crash is still labelled)."""
        gov = ctx.policy
        disclosed_now = bool(progress.prefix) and gov.disclosure.enabled and not ctx.disclosed
        return TurnGovernance(
            notices=(len(progress.prefix), len(progress.suffix)),
            label_id=progress.label_id if generated else None,
            producer=self.governance.producer(gov) if generated else None,
            disclosure=progress.prefix.split("\n\n", 1)[0] if disclosed_now else None,
            masked=gov.pii.redact_storage,
        )

    # -- the draft: the exchange on record while the reply is written -----------------------

    async def open_draft(
        self, ctx: TurnContext, inbound: Inbound, text: str, progress: Progress, verdict: Verdict
    ) -> Drafted:
        gov = ctx.policy
        asked, asked_record = self.asked(text, gov, verdict)
        record = dataclasses.replace(self.reply_record(ctx, progress, generated=True), draft=True)

        def write(conn: Connection) -> Drafted:
            user, conversation = _user_and_conversation(conn, ctx, inbound)
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
                            status=TurnStatus.GENERATING,
                            assistant_version=ctx.assistant.version,
                            governance=record,
                        ),
                        updated_at=now,
                    ),
                ],
            )
            if inbound.on_record is not None:
                inbound.on_record(conn, Recorded(Stage.DRAFT, conversation, user_turn, None))
            return Drafted(
                user,
                conversation,
                user_turn,
                reply_turn.id,
                reply_turn.created_at,
                new_conversation=ctx.conversation is None,
                new_user=not ctx.user.id,
            )

        drafted = await self.db.write(write)
        drafted.keeper = Draft(
            self.db,
            drafted.reply_id,
            lambda: self.for_storage(progress.prefix + progress.answer, gov)[0],
            flush_seconds=self.settings.reply_flush_seconds,
            stale_seconds=self.settings.reply_stale_seconds,
        )
        drafted.keeper.start()
        return drafted

    async def discard_draft(self, drafted: Drafted) -> None:
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

    async def store_waiting(
        self, ctx: TurnContext, inbound: Inbound, text: str
    ) -> tuple[Conversation, Turn]:
        """A message for a conversation a person has: stored, no reply."""
        return await self.db.write(lambda conn: self._store_waiting(conn, ctx, inbound, text))

    def _store_waiting(
        self, conn: Connection, ctx: TurnContext, inbound: Inbound, text: str
    ) -> tuple[Conversation, Turn]:
        assert ctx.conversation is not None
        stored, found = self.for_storage(text, ctx.policy)
        turn = store.add_turn(
            conn,
            ctx.conversation,
            "user",
            stored,
            governance=TurnGovernance(pii=found) if found else None,
        )
        conversation = store.get(conn, ctx.conversation.org_id, ctx.conversation.id)
        if inbound.on_record is not None:
            inbound.on_record(conn, Recorded(Stage.WAITING, conversation, turn, None))
        return conversation, turn
