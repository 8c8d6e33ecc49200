"""What ingestion takes in: a :class:`Source` per document (a file's bytes, a JSON Lines record,
a URL to fetch when staged, or an error already found), and a JSON Lines corpus turned into
sources one line each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from concierge.errors import InvalidDocument
from concierge.knowledge.corpus import CorpusRecord, iter_jsonl


@dataclass
class Source:
    """One document to ingest: a file's bytes, or a JSON Lines record, or an error already
    found (a bad line of a corpus file), reported against ``external_id``."""

    external_id: str
    data: bytes | None = None
    record: CorpusRecord | None = None
    filename: str | None = None
    content_type: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: InvalidDocument | None = None
    url: str | None = None  # a document to fetch when it is staged


Fetcher = Callable[[str, str, dict[str, Any]], Awaitable[Source]]
"""``(url, external_id, metadata)`` to the fetched source (or one carrying the fetch error)."""


def corpus_sources(
    data: bytes, filename: str, metadata: dict[str, Any] | None = None
) -> list[Source]:
    """A JSON Lines corpus as sources, one per line: a document per ``_id``, and a bad line as
    an error of its own (reported as ``FILE:line N``) that stops no other line."""
    lines = [n for n, raw in enumerate(data.splitlines(), start=1) if raw.strip()]
    sources = []
    for number, item in zip(lines, iter_jsonl(data, filename), strict=True):
        if isinstance(item, InvalidDocument):
            sources.append(Source(f"{filename}:line {number}", source=filename, error=item))
        else:
            meta = {**(metadata or {}), **item.metadata}
            sources.append(Source(item.external_id, record=item, source=filename, metadata=meta))
    return sources
