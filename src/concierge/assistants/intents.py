"""Requests the platform answers itself, without asking the model.

A user who asks for a person gets one, whatever the model would have made of it: small
models often miss the cue, and a handoff the user asked for must not depend on a model's
judgement. The patterns are deliberately narrow (an explicit request for a human), in the
languages the demo and the first customers speak; a missed phrasing still reaches the model,
which has the ``handoff_to_human`` tool.
"""

from __future__ import annotations

import re

_HUMAN = re.compile(
    r"""
    \b(?:talk|speak|chat|connect|transfer|contact|reach|put\ me\ through)(?:s|ed|ing|ting)?\b
        [^.?!]{0,30}?
        \b(?:a|an|to|with|someone|real|live)?\s*
        (?:human|person|people|agent|representative|operator|someone|somebody|colleague|staff)\b
    | \b(?:real|live|actual)\s+(?:human|person|agent)\b
    | \bhuman\s+(?:agent|being|please)\b
    | \b(?:mit\ einem|einen)\s+(?:menschen|mitarbeiter|mitarbeiterin)\b
    | \b(?:parler|discuter)\s+(?:à|a|avec)\s+(?:un|une|quelqu'un)\b[^.?!]{0,20}?
        (?:humain|personne|conseiller|conseillère|agent)?
    | \bhablar\s+con\s+(?:una?\s+)?(?:persona|humano|agente|asesor)\b
    | 人工客服 | 转人工 | 真人
    """,
    re.IGNORECASE | re.VERBOSE,
)


def wants_human(text: str) -> bool:
    """True when the message explicitly asks for a human."""
    return bool(_HUMAN.search(text))
