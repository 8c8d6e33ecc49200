"""JSON Lines corpora (the BEIR layout): one document per line, imported in bulk.

Each line is ``{"_id", "title"?, "text", "metadata"?}``; a bad line is reported with its number
and never stops the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from concierge.errors import InvalidDocument
from concierge.knowledge.parsers import Block, ParsedDocument, display_name, paragraphs, squash


@dataclass(frozen=True, slots=True)
class CorpusRecord:
    """One line of a JSON Lines corpus: ``{"_id", "title"?, "text", "metadata"?}``."""

    line: int
    external_id: str
    title: str | None
    text: str
    metadata: dict[str, Any]


def iter_jsonl(
    data: bytes, filename: str | None = None
) -> Iterator[CorpusRecord | InvalidDocument]:
    """Each line's record, or the error that line has; one bad line never stops the others."""
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{display_name(filename)} line {number}"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield InvalidDocument(f"{where} is not valid JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            yield InvalidDocument(f"{where} is not a JSON object")
            continue
        ident = obj.get("_id")
        if ident is None or (isinstance(ident, str) and not ident.strip()):
            yield InvalidDocument(f"{where} has no '_id'")
            continue
        if not isinstance(ident, str | int):
            yield InvalidDocument(f"{where}: '_id' must be a string or a number")
            continue
        if isinstance(ident, str) and "\x00" in ident:
            yield InvalidDocument(f"{where}: '_id' must not contain NUL characters")
            continue
        text, title = obj.get("text"), obj.get("title")
        if isinstance(title, str):
            title = title.replace("\x00", "")
        if not isinstance(text, str) or not text.strip():
            if not (isinstance(title, str) and title.strip()):
                yield InvalidDocument(f"{where} (_id {ident}) has no 'text'")
                continue
            text = ""
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            yield InvalidDocument(f"{where} (_id {ident}): 'metadata' must be an object")
            continue
        yield CorpusRecord(
            number,
            str(ident),
            title.strip() if isinstance(title, str) and title.strip() else None,
            text.replace("\x00", ""),
            metadata,
        )


def parse_record(record: CorpusRecord) -> ParsedDocument:
    blocks = [Block("paragraph", squash(p)) for p in paragraphs(record.text)]
    if not blocks and record.title:
        blocks = [Block("paragraph", record.title)]
    return ParsedDocument(record.title, "text", blocks, dict(record.metadata))
