"""Blocks to chunks: pieces of a document sized for the embedder, following its structure.

- A chunk holds whole blocks (paragraphs, list items, table rows) up to ``max_tokens``; a block
  longer than that is split at sentence ends, and a sentence longer than that at word ends.
- A heading starts a new chunk once the current one holds at least ``min_tokens``, so sections
  are not mixed, while a run of short sections is kept together rather than cut into crumbs.
- Consecutive chunks of one section share up to ``overlap_tokens`` of text (whole sentences or
  blocks), so a passage cut at a chunk border is whole in one of the two.
- Each chunk keeps where it came from: its heading path and, for PDFs, its pages.

Sizes are in tokens as the caller counts them (the embedder's tokenizer, in ingestion); the
default counter estimates from words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concierge.knowledge.parsers import Block, ParsedDocument

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """About 4 tokens for 3 English words, as WordPiece and BPE tokenizers give."""
    return (len(text.split()) * 4 + 2) // 3


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # its order in the document, from 0
    text: str
    headings: tuple[str, ...]
    page_start: int | None = None
    page_end: int | None = None
    tokens: int = 0

    @property
    def location(self) -> str | None:
        return cite(self.page_start, self.page_end, self.headings)


def cite(page_start: int | None, page_end: int | None, headings: Sequence[str]) -> str | None:
    """Where in a document, for a citation: 'p. 3', 'Setup > Linux', 'p. 3-4 · Setup'."""
    parts = []
    if page_start is not None:
        same = page_end in (None, page_start)
        parts.append(f"p. {page_start}" + ("" if same else f"-{page_end}"))
    if headings:
        parts.append(" > ".join(headings))
    return " · ".join(parts) or None


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    starts_section: bool  # a heading: may start a new chunk
    joiner: str  # what separates it from the unit before it


_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9À-Ý])")


def chunk_document(
    doc: ParsedDocument,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 30,
    min_tokens: int | None = None,
    count: TokenCounter = estimate_tokens,
) -> list[Chunk]:
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    if not 0 <= overlap_tokens < max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and half of max_tokens")
    floor = max_tokens // 4 if min_tokens is None else min_tokens
    units = _units(doc.blocks, max_tokens, count)
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    size = 0

    def close() -> None:
        if any(u.text.strip() for u in current):
            chunks.append(_make(len(chunks), current))

    for unit in units:
        heading_break = unit.starts_section and size >= floor
        if current and (heading_break or size + unit.tokens > max_tokens):
            close()
            carried = [] if heading_break else _overlap(current, overlap_tokens, count)
            current = [*carried]
            size = sum(u.tokens for u in current)
            if size + unit.tokens > max_tokens:  # the overlap would not leave room
                current, size = [], 0
        current.append(unit)
        size += unit.tokens
    close()
    return chunks


def _units(blocks: Sequence[Block], max_tokens: int, count: TokenCounter) -> list[_Unit]:
    """Blocks, with those over ``max_tokens`` cut into sentences (and long sentences into
    word runs)."""
    units: list[_Unit] = []
    for block in blocks:
        heads = (*block.headings, block.text) if block.kind == "heading" else block.headings
        joiner = "\n" if block.kind == "table_row" else "\n\n"
        tokens = count(block.text)
        if tokens <= max_tokens:
            units.append(
                _Unit(block.text, tokens, block.page, heads, block.kind == "heading", joiner)
            )
            continue
        first = True
        for piece, piece_tokens in _split(block.text, max_tokens, count):
            units.append(
                _Unit(piece, piece_tokens, block.page, heads, False, joiner if first else " ")
            )
            first = False
    return units


def _split(text: str, max_tokens: int, count: TokenCounter) -> list[tuple[str, int]]:
    """Sentences (or word runs) of ``text`` merged up to ``max_tokens``, with their sizes.
    Each sentence and word is counted once; pieces joined by a space are taken to count the
    sum of theirs, which WordPiece gives exactly and BPE within a token per join."""
    pieces: list[tuple[str, int]] = []
    for sentence in _SENTENCE_END.split(text):
        tokens = count(sentence)
        if tokens <= max_tokens:
            pieces.append((sentence, tokens))
            continue
        run: list[str] = []
        used = 0
        for word in sentence.split():
            size = count(word)
            if run and used + size > max_tokens:
                pieces.append((" ".join(run), used))
                run, used = [], 0
            run.append(word)
            used += size
        if run:
            pieces.append((" ".join(run), used))
    # Put short sentences back together up to the limit.
    merged: list[tuple[str, int]] = []
    for piece, tokens in pieces:
        if merged and merged[-1][1] + tokens <= max_tokens:
            merged[-1] = (merged[-1][0] + " " + piece, merged[-1][1] + tokens)
        else:
            merged.append((piece, tokens))
    return merged


def _overlap(units: list[_Unit], budget: int, count: TokenCounter) -> list[_Unit]:
    """The end of a chunk that fits in ``budget`` tokens, to start the next one with: whole
    trailing units, then the last sentences of the unit before them (never the whole chunk)."""
    carried: list[_Unit] = []
    used = 0
    for position in range(len(units) - 1, -1, -1):
        unit = units[position]
        if unit.starts_section:
            break
        if position > 0 and used + unit.tokens <= budget:
            carried.insert(0, unit)
            used += unit.tokens
            continue
        sentences = _SENTENCE_END.split(unit.text)
        tail: list[str] = []
        for sentence in reversed(sentences[1:]):  # a strict part of the unit
            tokens = count(sentence)
            if used + tokens > budget:
                break
            tail.insert(0, sentence)
            used += tokens
        if tail:
            text = " ".join(tail)
            carried.insert(
                0, _Unit(text, count(text), unit.page, unit.headings, False, unit.joiner)
            )
        break
    return carried


def _make(index: int, units: list[_Unit]) -> Chunk:
    text = units[0].text + "".join(u.joiner + u.text for u in units[1:])
    pages = [u.page for u in units if u.page is not None]
    # The chunk's place is the deepest heading path its body sits under.
    body = [u for u in units if not u.starts_section] or units
    return Chunk(
        index=index,
        text=text,
        headings=body[0].headings,
        page_start=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
        tokens=sum(u.tokens for u in units),
    )
