"""A reply turned into the messages a platform takes: split at its length limit on sentence
boundaries, and a closing list of short options offered as buttons or a list where the
platform has them."""

from __future__ import annotations

import re

from concierge.channels.base import ChannelType, Choice, Outbound
from concierge.channels.text import split

# "- Small", "* Small", "• Small", "1. Small", "2) Small" on lines of their own at the end.
_OPTION = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(.+?)\s*$")
MAX_OPTION = 24  # WhatsApp's list row title; buttons are shorter still (20)


def trailing_options(text: str) -> tuple[str, list[str]]:
    """The text before a closing list of 2+ short options, and the options; ``(text, [])``
    when it does not end with one."""
    lines = text.rstrip().split("\n")
    options: list[str] = []
    while lines:
        match = _OPTION.match(lines[-1])
        if match is None:
            break
        options.insert(0, match.group(1))
        lines.pop()
    lead = "\n".join(lines).strip()
    if len(options) < 2 or not lead or any(len(o) > MAX_OPTION for o in options):
        return text, []
    return lead, options


def compose(
    kind: ChannelType,
    text: str,
    extra: tuple[Choice, ...] = (),
    *,
    human: bool = False,
    raw_choices: bool = False,
) -> list[Outbound]:
    """The messages that carry ``text`` on ``kind``'s platform (``extra``: choices the
    platform adds, such as "Talk to a person"; ``raw_choices``: the text is the platform's
    own, its lines are not read as options)."""
    choices: tuple[Choice, ...] = ()
    room = max(kind.max_buttons, kind.max_list)
    if room:
        lead, options = (text, []) if raw_choices else trailing_options(text)
        offered = tuple(Choice(id=o, title=o) for o in options) + extra
        if options and len(offered) <= room:
            text, choices = lead, offered
        elif extra and len(extra) <= room:
            choices = extra
    parts = split(text, kind.max_text) or ([""] if choices else [])
    if choices and parts and kind.max_choice_text and len(parts[-1]) > kind.max_choice_text:
        parts[-1:] = split(parts[-1], kind.max_choice_text)
    messages = [Outbound(text=p, human=human) for p in parts]
    if choices and messages:
        last = messages[-1]
        messages[-1] = Outbound(text=last.text or "…", choices=choices, human=human)
    return messages
