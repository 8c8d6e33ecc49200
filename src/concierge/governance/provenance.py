"""Finding and checking provenance labels in whatever a user holds: a completion or reply as
JSON, a saved SSE stream, a conversation export (JSON, text or HTML), or an image.

Used by ``concierge labels verify`` and ``POST /v1/labels/verify-file``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from concierge import regex
from concierge.errors import InvalidRequest
from concierge.governance import labels, media
from concierge.governance.labels import Check

# Files anyone may send (verify-file needs no key) are read with RE2: linear time, where
# Python's re takes quadratic time on, say, an article tag followed by many "<p>".
EXPORT_DATA = regex.compile(
    r'<script type="application/json" id="aigc-labels">(.*?)</script>', dot_all=True
)
HTML_TURN = regex.compile(
    r'<article class="[a-z]+" data-turn="(\d+)">.*?<p>(.*?)</p></article>', dot_all=True
)
TEXT_DATA = "-----BEGIN AIGC LABELS-----"
TEXT_END = "-----END AIGC LABELS-----"


@dataclass
class Found:
    """Labelled items in a file, and what kind of file it was."""

    kind: str
    checks: list[Check]
    c2pa: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return (
            bool(self.checks)
            and all(c.ok for c in self.checks)
            and (self.c2pa is None or self.c2pa.get("state") in ("Trusted", "Valid"))
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "kind": self.kind,
            "items": [c.to_dict() for c in self.checks],
        }
        if self.c2pa is not None:
            out["c2pa"] = self.c2pa
        return out


def _completion_content(body: dict[str, Any]) -> str | bytes:
    choice = (body.get("choices") or [{}])[0]
    if "message" in choice:
        message = choice["message"] or {}
        if message.get("content"):
            return str(message["content"])
        calls = message.get("tool_calls") or []
        return json.dumps(calls, separators=(",", ":")).encode() if calls else ""
    return str(choice.get("text") or "")


def _items(body: Any) -> Iterator[tuple[str, str | bytes, Any]]:
    """(what, content, label) for each labelled item in a JSON document."""
    if isinstance(body, list):  # the embedded label list of an HTML or text export
        for item in body:
            if isinstance(item, dict):
                yield f"turn {item.get('turn_id')}", str(item.get("content", "")), item.get("aigc")
        return
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON is neither an object nor a list of labelled items")
    kind = body.get("object")
    if kind in ("chat.completion", "text_completion"):
        yield str(body.get("id", "completion")), _completion_content(body), body.get("aigc")
    elif kind == "conversation.reply":
        reply = body.get("reply") or {}
        yield f"turn {reply.get('id')}", str(reply.get("content", "")), body.get("aigc")
    elif kind in ("conversation.export", "subject.export"):
        conversations = body.get("conversations")
        if conversations is None:
            conversations = [
                c for person in body.get("identities", []) for c in person.get("conversations", [])
            ]
        for conversation in conversations:
            for turn in conversation.get("turns", []):
                if "aigc" in turn:
                    yield f"turn {turn.get('id')}", str(turn.get("content", "")), turn["aigc"]
    elif "aigc" in body and "content" in body:
        yield "content", str(body["content"]), body["aigc"]
    else:
        raise InvalidRequest(
            "no labelled content found: expected a completion, a reply, an export, or an "
            'object with "content" and "aigc"'
        )


def _stream(text: str) -> tuple[str | bytes, Any, str]:
    """Content, label and id of a saved OpenAI-style SSE stream."""
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    label = None
    ident = "stream"
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        ident = chunk.get("id", ident)
        label = chunk.get("aigc", label)
        for choice in chunk.get("choices") or []:
            if "delta" in choice:
                delta = choice["delta"] or {}
                parts.append(delta.get("content") or "")
                for call in delta.get("tool_calls") or []:
                    slot = calls.setdefault(
                        call["index"],
                        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                    )
                    if call.get("id"):
                        slot["id"] = call["id"]
                    function = call.get("function") or {}
                    slot["function"]["name"] += function.get("name") or ""
                    slot["function"]["arguments"] += function.get("arguments") or ""
            else:
                parts.append(choice.get("text") or "")
    content: str | bytes = "".join(parts)
    if not content and calls:
        content = json.dumps([calls[i] for i in sorted(calls)], separators=(",", ":")).encode()
    return content, label, ident


def _loads(text: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the embedded labels are not valid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise InvalidRequest("the embedded labels are not a list")
    return [i for i in items if isinstance(i, dict)]


def inspect(
    data: bytes,
    keys: dict[str, Ed25519PublicKey],
    c2pa_anchor: bytes | None = None,
) -> Found:
    """Every label in ``data`` checked against ``keys`` (key id -> public key)."""
    try:
        return _inspect(data, keys, c2pa_anchor)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"the file is not a labelled document this server knows ({type(exc).__name__})"
        ) from None


def _inspect(
    data: bytes,
    keys: dict[str, Ed25519PublicKey],
    c2pa_anchor: bytes | None,
) -> Found:
    if data.startswith(media.PNG_SIGNATURE) or data.startswith(b"\xff\xd8\xff"):
        label = media.read_label(data)
        check = labels.verify(label, media.pixel_digest_bytes(data), keys, "image")
        c2pa = None
        if media.c2pa_available():
            c2pa = media.c2pa_read(data, c2pa_anchor)
        return Found("image", [check], c2pa)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("not a PNG, JPEG, JSON, text or HTML file") from None
    stripped = text.lstrip()
    if stripped.startswith("data: "):
        content, label, ident = _stream(text)
        return Found("stream", [labels.verify(label, content, keys, ident)])
    embedded = EXPORT_DATA.search(text)
    if embedded is not None:
        # The signed copies travel in the page; each must match what the page shows.
        shown = {int(m.group(1)): unescape(m.group(2)) for m in HTML_TURN.finditer(text)}
        checks = []
        for item in _loads(embedded.group(1)):
            check = labels.verify(
                item.get("aigc"), str(item.get("content", "")), keys, f"turn {item.get('turn_id')}"
            )
            if shown.get(int(item.get("turn_id") or 0)) != item.get("content"):
                check.ok = False
                check.problems.append("the text shown in the page differs from the labelled text")
            checks.append(check)
        return Found("html", checks)
    if TEXT_DATA in text:
        visible, rest = text.split(TEXT_DATA, 1)
        checks = []
        for item in _loads(rest.split(TEXT_END, 1)[0]):
            content = str(item.get("content", ""))
            check = labels.verify(item.get("aigc"), content, keys, f"turn {item.get('turn_id')}")
            if f":\n{content}\n" not in visible:
                check.ok = False
                check.problems.append("the text shown in the file differs from the labelled text")
            checks.append(check)
        return Found("text", checks)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    checks = [labels.verify(a, c, keys, w) for w, c, a in _items(body)]
    if not checks:
        raise InvalidRequest("the document has no labelled items")
    return Found("json", checks)
