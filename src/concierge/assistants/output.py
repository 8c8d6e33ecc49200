"""The policy steps after the model: what the user is shown of what the model writes.

Around the answer go the notices the policy asks for (the AI disclosure in a conversation's
first assistant message, an explicit "AI-generated" label). The model's text passes through an
:class:`OutputFilter` as it streams: data marks it copied from spotlighted text are removed,
pseudonyms go back to the real values, and the leak guard and the moderation policy may
withdraw the answer and replace it; the model is then stopped (:class:`Withdrawn`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from concierge.assistants.events import Delta, Progress, Replaced, ReplyEvent
from concierge.governance.injection import DATAMARK, LeakGuard
from concierge.governance.moderation import ModerationHit, Verdict
from concierge.governance.pii import StreamRestorer
from concierge.governance.policy import OrgPolicy, pick_language
from concierge.governance.service import Governance

LEAK_REFUSAL = "Sorry, I can't share how I was set up. Is there something else I can help with?"


class Withdrawn(Exception):
    """The answer was replaced (output moderation, the leak guard): stop the model."""


def notices(policy: OrgPolicy, disclosed: bool, language: str | None) -> tuple[str, str]:
    """What goes before and after the answer: the AI disclosure in the first assistant
    message of a conversation (unless ``disclosed`` already), and the explicit label where the
    policy wants one."""
    before: list[str] = []
    disclosure = policy.disclosure.text_for(language)
    if disclosure is not None and not disclosed:
        before.append(disclosure)
    label = pick_language(
        policy.labels.explicit_texts, language, policy.disclosure.default_language
    )
    if policy.labels.explicit == "start":
        before.append(label)
    prefix = "".join(f"{notice}\n\n" for notice in before)
    suffix = f"\n\n{label}" if policy.labels.explicit == "end" else ""
    return prefix, suffix


def with_prefix(progress: Progress, text: str) -> str:
    """``text``, preceded by the notices the first time anything is sent."""
    if progress.prefix_sent:
        return text
    progress.prefix_sent = True
    return progress.prefix + text


def moderate(progress: Progress, hit: Verdict, policy: OrgPolicy) -> Replaced | None:
    """Apply the policy to an answer that broke a rule: replace it, or flag it."""
    if policy.moderation.action == "refuse":
        progress.moderation = hit.record("output", "refuse")
        progress.text = [policy.moderation.refusal_text]
        progress.prefix_sent = True
        return Replaced(progress.prefix + progress.answer, progress.answer)
    progress.moderation = hit.record("output", "flag")
    return None


def withhold_leak(progress: Progress) -> Replaced:
    """The answer recites the operator's instructions: it is replaced, and recorded."""
    progress.moderation = ModerationHit("output", "refuse", "instructions_leak", "leak_guard")
    progress.text = [LEAK_REFUSAL]
    progress.prefix_sent = True
    return Replaced(progress.prefix + LEAK_REFUSAL, LEAK_REFUSAL)


@dataclass
class OutputFilter:
    """The model's text on its way to the user, piece by piece, recorded in ``progress``."""

    progress: Progress
    policy: OrgPolicy
    governance: Governance
    datamarking: bool = False  # remove data marks the model copied
    restorer: StreamRestorer | None = None  # pseudonyms back to the real values
    leak_guard: LeakGuard | None = None
    check_output: bool = False  # the moderation policy checks the answer

    def feed(self, piece: str) -> Iterator[ReplyEvent]:
        """The events for one piece of model text; after a replacement, raises
        :class:`Withdrawn`."""
        progress = self.progress
        if self.datamarking and DATAMARK in piece:
            piece = piece.replace(DATAMARK, " ")  # copied from marked data: not for the user
        if self.restorer is not None:
            piece = self.restorer.feed(piece)
            if not piece:
                return
        if progress.moderation is None:
            seen = "".join(progress.text) + piece
            if self.leak_guard is not None and self.leak_guard.leaks(seen):
                yield withhold_leak(progress)
                raise Withdrawn
            if self.check_output:
                hit = self.governance.quick_check(seen, self.policy.moderation)
                if hit.blocked and (replaced := moderate(progress, hit, self.policy)):
                    yield replaced
                    raise Withdrawn
        progress.text.append(piece)
        yield Delta(with_prefix(progress, piece))

    def flush(self) -> Iterator[ReplyEvent]:
        """What the restorer held back at the end of a model call (a pseudonym cut short)."""
        if self.restorer is not None and (rest := self.restorer.flush()):
            self.progress.text.append(rest)
            yield Delta(with_prefix(self.progress, rest))

    async def final(self) -> AsyncIterator[ReplyEvent]:
        """The checks on the whole answer: the leak guard's last look, and the plugin
        classifiers (too slow to run on every piece)."""
        progress = self.progress
        if (
            self.leak_guard is not None
            and progress.moderation is None
            and self.leak_guard.leaks(progress.answer, final=True)
        ):
            yield withhold_leak(progress)
        if self.check_output and progress.moderation is None and self.governance.classifiers:
            hit = await self.governance.check(progress.answer, self.policy.moderation)
            if hit.blocked and (replaced := moderate(progress, hit, self.policy)):
                yield replaced
