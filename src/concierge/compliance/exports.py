"""Conversation exports that keep their provenance labels (EU AI Act Art. 50(2)).

- JSON: the conversation and its turns; each generated turn carries its signed ``aigc``
  label.
- Text and HTML, for people: every generated message is visibly marked as AI-generated (the
  explicit label), and the signed labels travel with the file (a fenced block at the end of
  the text; a ``<script type="application/json" id="aigc-labels">`` element in the HTML), so
  ``concierge labels verify`` checks any of the three.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from concierge.conversations.records import Turn
from concierge.conversations.store import Conversation
from concierge.governance.provenance import TEXT_DATA, TEXT_END

Labeller = Callable[[Turn], dict[str, str] | None]
AI_MARK = "AI-generated"
ROLES = {"user": "User", "assistant": "Assistant", "human": "Team member"}


def _labelled(turns: Sequence[Turn], label: Labeller) -> list[tuple[Turn, dict[str, str] | None]]:
    return [(turn, label(turn)) for turn in turns]


def as_json(
    conversation: Conversation, turns: Sequence[Turn], label: Labeller, now: datetime
) -> dict[str, Any]:
    shown = []
    for turn, made in _labelled(turns, label):
        item = turn.to_dict()
        if made is not None:
            item["aigc"] = made
        shown.append(item)
    return {
        "object": "conversation.export",
        "exported_at": now.isoformat(),
        "conversations": [{**conversation.to_dict(), "turns": shown}],
    }


def _label_list(items: list[tuple[Turn, dict[str, str] | None]]) -> list[dict[str, Any]]:
    return [
        {"turn_id": turn.id, "content": turn.content, "aigc": made}
        for turn, made in items
        if made is not None
    ]


def _when(turn: Turn) -> str:
    return turn.created_at.strftime("%Y-%m-%d %H:%M UTC")


def as_text(
    conversation: Conversation,
    turns: Sequence[Turn],
    label: Labeller,
    now: datetime,
    assistant_name: str,
) -> str:
    items = _labelled(turns, label)
    lines = [
        f"Conversation {conversation.id} with {assistant_name} ({conversation.channel}), "
        f"started {conversation.created_at.strftime('%Y-%m-%d %H:%M UTC')}; "
        f"exported {now.strftime('%Y-%m-%d %H:%M UTC')}.",
        f"Messages marked [{AI_MARK}] were written by an AI system. Their signed provenance "
        "labels are at the end of this file.",
        "",
    ]
    for turn, made in items:
        who = author(turn)
        mark = f" [{AI_MARK}]" if made is not None else ""
        lines += [f"[{_when(turn)}] {who}{mark}:", turn.content, ""]
    lines += [
        TEXT_DATA,
        json.dumps(_label_list(items), ensure_ascii=False, indent=1),
        TEXT_END,
        "",
    ]
    return "\n".join(lines)


def author(turn: Turn) -> str:
    if turn.role == "human" and turn.author:
        return f"{turn.author} (team member)"
    return ROLES.get(turn.role, turn.role)


def as_html(
    conversation: Conversation,
    turns: Sequence[Turn],
    label: Labeller,
    now: datetime,
    assistant_name: str,
) -> str:
    items = _labelled(turns, label)
    rows = []
    for turn, made in items:
        badge = (
            f'<span class="ai" title="{escape(made["ProduceID"])}">{AI_MARK}</span>' if made else ""
        )
        rows.append(
            f'<article class="{escape(turn.role)}" data-turn="{turn.id}">'
            f"<header><strong>{escape(author(turn))}</strong> {badge}"
            f'<time datetime="{turn.created_at.isoformat()}">{escape(_when(turn))}</time></header>'
            f"<p>{escape(turn.content)}</p></article>"
        )
    data = json.dumps(_label_list(items), ensure_ascii=False).replace("<", "\\u003c")
    title = f"Conversation {conversation.id} with {escape(assistant_name)}"
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="ai-generated" content="partly: messages marked AI-generated">'
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:760px;margin:2em auto;"
        "padding:0 1em;color:#1b1b1f}article{border:1px solid #e3e5ea;border-radius:10px;"
        "padding:.6em 1em;margin:.8em 0}article.user{background:#f3f6ff}header{font-size:13px;"
        "color:#555;display:flex;gap:.6em;align-items:center}p{white-space:pre-wrap;margin:.4em 0}"
        ".ai{background:#243b7a;color:#fff;border-radius:6px;padding:1px 6px;font-size:12px}"
        "</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>Channel {escape(conversation.channel)}; started "
        f"{escape(conversation.created_at.strftime('%Y-%m-%d %H:%M UTC'))}; exported "
        f"{escape(now.strftime('%Y-%m-%d %H:%M UTC'))}. Messages marked "
        f'<span class="ai">{AI_MARK}</span> were written by an AI system; their signed '
        "provenance labels are embedded in this page.</p>"
        + "".join(rows)
        + f'<script type="application/json" id="aigc-labels">{data}</script>'
        "</body></html>\n"
    )
