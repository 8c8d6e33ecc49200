"""Documents to text blocks that keep their structure and their place in the source.

Every format becomes the same thing: a :class:`ParsedDocument`, a title and a list of
:class:`Block` (a heading, a paragraph, a list item, a table row or a piece of code), each with
where it came from (page for PDF, heading path for everything that has headings). The chunker
works on blocks, so chunks follow the document's structure and answers can cite a place.

Formats are plugins: a :class:`DocumentParser` registered through the
``register_document_parsers`` hook (the built-in PDF, DOCX, HTML, Markdown and plain-text
parsers are in :mod:`concierge.default_plugins.parsers`). :class:`Parsers` holds one server's
set, finds a document's format and parses it.

Parsing never guesses silently: a file that is corrupt, empty, of an unsupported type, too large
or not valid UTF-8 raises :class:`InvalidDocument` with a message for the person who sent it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

from concierge.errors import DocumentTooLarge, InvalidDocument, UnsupportedDocumentType

if TYPE_CHECKING:
    import pluggy

    from concierge.config import Settings

BlockKind = Literal["heading", "paragraph", "list_item", "table_row", "code"]
MAX_EXPANDED_BYTES = 256 * 1024 * 1024  # an archive's members together, uncompressed
FALLBACK_FORMAT = "text"  # a document with no name, no declared type and no telling content


@dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    text: str
    page: int | None = None  # 1-based, PDF only
    headings: tuple[str, ...] = ()  # the headings this block sits under, outermost first
    level: int = 0  # for headings: 1-6


@dataclass
class ParsedDocument:
    title: str | None
    format: str
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


@dataclass(frozen=True)
class ParseLimits:
    """What one document may cost to parse, beyond its size."""

    max_expanded_bytes: int = MAX_EXPANDED_BYTES  # an archive's members, uncompressed


class DocumentParser(ABC):
    """One document format. Instances are sent to the parser worker processes, so a parser
    must be picklable (a module-level class with plain attributes is).

    Finding the format: first the content (:meth:`recognises`, for formats with a signature),
    then the file name's extension, then the declared content type, last :meth:`looks_like`
    for a document that has neither."""

    format: str  # stored on the document: "pdf"
    label: str  # for people: "PDF"
    extensions: tuple[str, ...] = ()  # ".pdf", lower case
    content_types: tuple[str, ...] = ()  # "application/pdf"
    # A binary format is only ever recognised from its bytes: a file named .pdf that does not
    # start like a PDF is refused, not read as text.
    binary: bool = False

    def recognises(self, data: bytes) -> bool:
        """Whether the bytes themselves say this is the format (a signature)."""
        return False

    def looks_like(self, head: bytes) -> bool:
        """For a document with no name or type: whether its first bytes look like the format."""
        return False

    @abstractmethod
    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        """The document's blocks; :class:`InvalidDocument` for a damaged one."""


class Parsers:
    """The document parsers of one server (or CLI run)."""

    def __init__(self, parsers: Iterable[DocumentParser]) -> None:
        self.by_format: dict[str, DocumentParser] = {}
        for parser in parsers:
            if parser.format in self.by_format:
                raise ValueError(f"two document parsers for the format {parser.format!r}")
            self.by_format[parser.format] = parser
        self._extensions = {ext: p for p in self.by_format.values() for ext in p.extensions}
        self._types = {t: p for p in self.by_format.values() for t in p.content_types}

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, settings: Settings) -> Parsers:
        found: list[DocumentParser] = []
        pm.hook.register_document_parsers(register=found.append, settings=settings)
        return cls(found)

    def detect_format(
        self, data: bytes, filename: str | None = None, content_type: str | None = None
    ) -> str:
        """The format of ``data``, from its content first, then its name, then its declared
        type."""
        for parser in self.by_format.values():
            if parser.recognises(data):
                return parser.format
        if data.startswith(b"PK\x03\x04"):
            raise UnsupportedDocumentType(
                f"{display_name(filename)} is a ZIP archive but not a document this server "
                f"reads ({self._supported()})"
            )
        suffix = PurePath(filename).suffix.lower() if filename else ""
        named = self._extensions.get(suffix)
        if named is not None:
            if named.binary:  # the name says so, the bytes do not
                raise InvalidDocument(
                    f"{display_name(filename)} is not a valid {named.format.upper()} file"
                )
            return named.format
        declared = (content_type or "").split(";")[0].strip().lower()
        if declared in self._types:
            return self._types[declared].format
        if suffix or declared:
            raise UnsupportedDocumentType(
                f"{display_name(filename)}: '{suffix or declared}' is not a supported document "
                f"type ({self._supported()}, or JSON Lines through the corpus import)"
            )
        head = data[:512].lstrip().lower()
        for parser in self.by_format.values():
            if parser.looks_like(head):
                return parser.format
        if FALLBACK_FORMAT not in self.by_format:
            raise UnsupportedDocumentType(
                f"{display_name(filename)}: the document type cannot be told without a name"
            )
        return FALLBACK_FORMAT

    def parse(
        self,
        data: bytes,
        filename: str | None = None,
        content_type: str | None = None,
        *,
        max_bytes: int | None = None,
        known_format: str | None = None,
        max_expanded_bytes: int = MAX_EXPANDED_BYTES,
    ) -> ParsedDocument:
        """Parse one document. Raises :class:`InvalidDocument` (or a subclass) for bad input.

        ``known_format``: the format found when the document was first parsed (re-parsing a
        stored original must not depend on a file name the caller may not have given).
        ``max_expanded_bytes``: what an archive (DOCX) may hold uncompressed, checked before it
        is opened (a 185 KB zip bomb expands to gigabytes). Untrusted documents are parsed in a
        worker process with time and memory limits too (:mod:`concierge.knowledge.sandbox`)."""
        if max_bytes is not None and len(data) > max_bytes:
            raise DocumentTooLarge(
                f"{display_name(filename)} is {len(data):,} bytes, over the limit of {max_bytes:,}"
            )
        if not data.strip():
            raise InvalidDocument(f"{display_name(filename)} is empty")
        kind = (
            known_format
            if known_format in self.by_format
            else self.detect_format(data, filename, content_type)
        )
        assert kind is not None
        parser = self.by_format[kind]
        doc = _storable(parser.parse(data, filename, ParseLimits(max_expanded_bytes)))
        if not any(b.text.strip() for b in doc.blocks):
            raise InvalidDocument(f"{display_name(filename)} contains no text")
        return doc

    def _supported(self) -> str:
        return ", ".join(p.label for p in self.by_format.values())


def _storable(doc: ParsedDocument) -> ParsedDocument:
    """No NUL character anywhere (a PDF's or DOCX's own fields can hold one; no database can)."""

    def clean(text: str) -> str:
        return text.replace("\x00", "")

    if doc.title:
        doc.title = clean(doc.title).strip() or None
    doc.blocks = [
        replace(b, text=clean(b.text), headings=tuple(clean(h) for h in b.headings))
        if "\x00" in b.text or any("\x00" in h for h in b.headings)
        else b
        for b in doc.blocks
    ]
    return doc


# -- helpers for parsers ---------------------------------------------------------------------


def decode_text(data: bytes, filename: str | None = None) -> str:
    """UTF-8 (a BOM is dropped); anything else is refused with the position of the first bad
    byte, rather than ingested as mojibake."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(
            f"{display_name(filename)} is not valid UTF-8 (byte {exc.start:,}); convert it to UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def paragraphs(text: str) -> list[str]:
    """Text split at blank lines, each part trimmed, empty ones dropped."""
    return [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]


def squash(text: str) -> str:
    """Runs of spaces to one, lines kept, ends trimmed."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def heading_path(path: list[tuple[int, str]]) -> tuple[str, ...]:
    """The texts of a (level, text) heading stack, outermost first."""
    return tuple(text for _level, text in path)


def display_name(filename: str | None) -> str:
    """How messages name the document."""
    return f"'{PurePath(filename).name}'" if filename else "the document"


def title_from_name(filename: str | None) -> str | None:
    if not filename:
        return None
    stem = PurePath(filename).stem.replace("_", " ").replace("-", " ").strip()
    return stem or None
