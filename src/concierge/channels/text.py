"""Long replies split for a platform's length limit, on sentence boundaries where possible."""

from __future__ import annotations

import re

# The end of a sentence (., !, ?, …, and CJK full stops, with closing quotes or brackets) or a
# line break, where a message may be cut.
_BREAK = re.compile(r"(?<=[.!?…。！？])[\"'’”)\]]*\s+|\n+")


def pieces(text: str) -> list[str]:
    """``text`` cut after each sentence and line, keeping every character."""
    out, start = [], 0
    for match in _BREAK.finditer(text):
        out.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        out.append(text[start:])
    return out


def _hard_split(piece: str, limit: int) -> list[str]:
    """A sentence longer than the limit: cut at the last space before it, else anywhere."""
    out = []
    while len(piece) > limit:
        cut = piece.rfind(" ", 0, limit + 1)
        if cut <= limit // 2:
            cut = limit
        out.append(piece[:cut])
        piece = piece[cut:].lstrip(" ")
    if piece:
        out.append(piece)
    return out


def split(text: str, limit: int) -> list[str]:
    """``text`` as messages of at most ``limit`` characters, each ending at a sentence or
    line boundary unless one sentence alone is longer than the limit."""
    if limit < 1:
        raise ValueError("limit must be positive")
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    messages: list[str] = []
    current = ""
    for piece in pieces(text):
        if len(current) + len(piece) <= limit:
            current += piece
            continue
        if current.strip():
            messages.append(current.strip())
        current = ""
        if len(piece) > limit:
            *whole, current = _hard_split(piece, limit)
            messages += [w.strip() for w in whole if w.strip()]
        else:
            current = piece
    if current.strip():
        messages.append(current.strip())
    return messages
