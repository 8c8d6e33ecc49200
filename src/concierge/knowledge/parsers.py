"""Documents to text blocks that keep their structure and their place in the source.

Every format becomes the same thing: a :class:`ParsedDocument`, a title and a list of
:class:`Block` (a heading, a paragraph, a list item, a table row or a piece of code), each with
where it came from (page for PDF, heading path for everything that has headings). The chunker
works on blocks, so chunks follow the document's structure and answers can cite a place.

Parsing never guesses silently: a file that is corrupt, empty, of an unsupported type, too large
or not valid UTF-8 raises :class:`InvalidDocument` with a message for the person who sent it.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any, Literal

import orjson

from concierge.errors import DocumentTooLarge, InvalidDocument, UnsupportedDocumentType

log = logging.getLogger(__name__)

BlockKind = Literal["heading", "paragraph", "list_item", "table_row", "code"]
MAX_EXPANDED_BYTES = 256 * 1024 * 1024  # an archive's members together, uncompressed
MAX_ARCHIVE_MEMBERS = 10_000
Format = Literal["pdf", "docx", "html", "markdown", "text"]


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
    format: Format
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


_EXTENSIONS: dict[str, Format] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".csv": "text",
    ".log": "text",
}
_PARSED_FORMATS = frozenset({"pdf", "docx", "html", "markdown", "text"})
_CONTENT_TYPES: dict[str, Format] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}


def detect_format(
    data: bytes, filename: str | None = None, content_type: str | None = None
) -> Format:
    """The format of ``data``, from its content first, then its name, then its declared type."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        if _is_docx(data):
            return "docx"
        raise UnsupportedDocumentType(
            f"{_name(filename)} is a ZIP archive but not a Word document (.docx)"
        )
    suffix = PurePath(filename).suffix.lower() if filename else ""
    if suffix in _EXTENSIONS:
        found = _EXTENSIONS[suffix]
        if found in ("pdf", "docx"):  # the name says so, the bytes do not
            raise InvalidDocument(f"{_name(filename)} is not a valid {found.upper()} file")
        return found
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared in _CONTENT_TYPES:
        return _CONTENT_TYPES[declared]
    if suffix or declared:
        what = suffix or declared
        raise UnsupportedDocumentType(
            f"{_name(filename)}: '{what}' is not a supported document type "
            "(PDF, DOCX, HTML, Markdown, plain text, or JSON Lines through the corpus import)"
        )
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def parse(
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
    ``max_expanded_bytes``: what an archive (DOCX) may hold uncompressed, checked before it is
    opened (a 185 KB zip bomb expands to gigabytes). Untrusted documents are parsed in a worker
    process with time and memory limits too (:mod:`concierge.knowledge.sandbox`)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentTooLarge(
            f"{_name(filename)} is {len(data):,} bytes, over the limit of {max_bytes:,}"
        )
    if not data.strip():
        raise InvalidDocument(f"{_name(filename)} is empty")
    kind: Format = (
        known_format  # type: ignore[assignment]
        if known_format in _PARSED_FORMATS
        else detect_format(data, filename, content_type)
    )
    if kind == "docx":
        _check_expansion(data, filename, max_expanded_bytes)
    parser = {
        "pdf": _parse_pdf,
        "docx": _parse_docx,
        "html": _parse_html,
        "markdown": _parse_markdown,
        "text": _parse_text,
    }[kind]
    doc = _storable(parser(data, filename))
    if not any(b.text.strip() for b in doc.blocks):
        hint = " (a scanned PDF needs OCR, which Concierge does not do)" if kind == "pdf" else ""
        raise InvalidDocument(f"{_name(filename)} contains no text{hint}")
    return doc


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


def decode_text(data: bytes, filename: str | None = None) -> str:
    """UTF-8 (a BOM is dropped); anything else is refused with the position of the first bad
    byte, rather than ingested as mojibake."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(
            f"{_name(filename)} is not valid UTF-8 (byte {exc.start:,}); convert it to UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# -- plain text ----------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\n\s*\n")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]


def _parse_text(data: bytes, filename: str | None) -> ParsedDocument:
    text = decode_text(data, filename)
    blocks = [Block("paragraph", _squash(p)) for p in _paragraphs(text)]
    return ParsedDocument(_title_from_name(filename), "text", blocks)


# -- Markdown ------------------------------------------------------------------------------


def _parse_markdown(data: bytes, filename: str | None) -> ParsedDocument:
    from markdown_it import MarkdownIt

    text = decode_text(data, filename)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []  # (level, heading text)
    row: list[str] | None = None
    cell: list[str] | None = None
    item_depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        if t == "heading_open":
            level = int(tok.tag[1])
            content = tokens[i + 1].content.strip()
            while path and path[-1][0] >= level:
                path.pop()
            blocks.append(Block("heading", content, headings=_heads(path), level=level))
            path.append((level, content))
            i += 3
            continue
        if t == "bullet_list_open" or t == "ordered_list_open":
            item_depth += 1
        elif t == "bullet_list_close" or t == "ordered_list_close":
            item_depth -= 1
        elif t == "tr_open":
            row = []
        elif t in ("th_open", "td_open"):
            cell = []
        elif t == "inline" and cell is not None:
            cell.append(tok.content.strip())
        elif t in ("th_close", "td_close") and row is not None and cell is not None:
            row.append(" ".join(cell))
            cell = None
        elif t == "tr_close" and row is not None:
            if any(row):
                blocks.append(Block("table_row", " | ".join(row), headings=_heads(path)))
            row = None
        elif t == "inline" and tokens[i - 1].type == "paragraph_open":
            kind: BlockKind = "list_item" if item_depth else "paragraph"
            if tok.content.strip():
                blocks.append(Block(kind, _squash(tok.content), headings=_heads(path)))
        elif t in ("fence", "code_block") and tok.content.strip():
            blocks.append(Block("code", tok.content.rstrip("\n"), headings=_heads(path)))
        elif t == "html_block" and tok.content.strip():
            blocks.append(Block("paragraph", _squash(tok.content), headings=_heads(path)))
        i += 1
    title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return ParsedDocument(title or _title_from_name(filename), "markdown", blocks)


# -- HTML ----------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "nav", "footer", "form"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_TEXT_BLOCKS = {"p", "blockquote", "dd", "dt", "figcaption", "caption", "address", "summary"}


def _parse_html(data: bytes, filename: str | None) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data, filename))
    title_node = tree.css_first("title")
    title = _squash(title_node.text()) if title_node else None
    root = tree.body or tree.root
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    if root is not None:
        _walk_html(root, blocks, path)
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading"), None)
    return ParsedDocument(title or _title_from_name(filename), "html", blocks)


def _walk_html(node: Any, blocks: list[Block], path: list[tuple[int, str]]) -> None:
    child = node.child
    while child is not None:
        tag = child.tag
        if tag in _SKIP_TAGS or tag in ("-comment", "!doctype"):
            pass
        elif tag in _HEADINGS:
            level = _HEADINGS[tag]
            text = _squash(child.text(deep=True))
            if text:
                while path and path[-1][0] >= level:
                    path.pop()
                blocks.append(Block("heading", text, headings=_heads(path), level=level))
                path.append((level, text))
        elif tag in _TEXT_BLOCKS:
            text = _squash(child.text(deep=True))
            if text:
                blocks.append(Block("paragraph", text, headings=_heads(path)))
        elif tag == "li":
            own = _squash(_own_text(child))
            if own:
                blocks.append(Block("list_item", own, headings=_heads(path)))
            nested = child.child
            while nested is not None:  # lists inside the item
                if nested.tag in ("ul", "ol"):
                    _walk_html(nested, blocks, path)
                nested = nested.next
        elif tag == "tr":
            cells = [_squash(c.text(deep=True)) for c in child.iter() if c.tag in ("td", "th")]
            if any(cells):
                blocks.append(Block("table_row", " | ".join(cells), headings=_heads(path)))
        elif tag == "pre":
            text = child.text(deep=True).strip("\n")
            if text.strip():
                blocks.append(Block("code", text, headings=_heads(path)))
        elif tag == "-text":
            text = _squash(child.text(deep=False))
            if text:  # loose text directly in a container
                blocks.append(Block("paragraph", text, headings=_heads(path)))
        else:
            _walk_html(child, blocks, path)
        child = child.next


def _own_text(node: Any) -> str:
    """A list item's text without the nested lists inside it."""
    parts = []
    child = node.child
    while child is not None:
        if child.tag not in ("ul", "ol"):
            parts.append(child.text(deep=True))
        child = child.next
    return " ".join(parts)


# -- DOCX ----------------------------------------------------------------------------------


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _check_expansion(data: bytes, filename: str | None, limit: int) -> None:
    """Refuse an archive whose members add up to more than ``limit`` bytes uncompressed.

    The sizes are the archive's own declarations; ``zipfile`` never inflates a member past its
    declared size (a member that lies fails its CRC check instead), so they bound the work."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        raise InvalidDocument(f"{_name(filename)} is not a readable Word document") from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise DocumentTooLarge(
            f"{_name(filename)} holds {len(members):,} files; the limit is {MAX_ARCHIVE_MEMBERS:,}"
        )
    expanded = sum(member.file_size for member in members)
    if expanded > limit:
        raise DocumentTooLarge(
            f"{_name(filename)} expands to {expanded:,} bytes, over the limit of {limit:,}"
        )


def _parse_docx(data: bytes, filename: str | None) -> ParsedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many types for a damaged archive
        raise InvalidDocument(
            f"{_name(filename)} is not a readable Word document ({exc})"
        ) from None
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = _squash(item.text)
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            level = _docx_heading_level(style)
            if level:
                while path and path[-1][0] >= level:
                    path.pop()
                blocks.append(Block("heading", text, headings=_heads(path), level=level))
                path.append((level, text))
            elif "List" in style:
                blocks.append(Block("list_item", text, headings=_heads(path)))
            else:
                blocks.append(Block("paragraph", text, headings=_heads(path)))
        elif isinstance(item, Table):
            for row in item.rows:
                cells: list[str] = []
                for c in row.cells:  # merged cells repeat: keep one
                    text = _squash(c.text)
                    if not cells or cells[-1] != text:
                        cells.append(text)
                if any(cells):
                    blocks.append(Block("table_row", " | ".join(cells), headings=_heads(path)))
    title = (document.core_properties.title or "").strip() or None
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading"), None)
    return ParsedDocument(title or _title_from_name(filename), "docx", blocks)


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


# -- PDF -----------------------------------------------------------------------------------


def _parse_pdf(data: bytes, filename: str | None) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidDocument(f"{_name(filename)} is an encrypted PDF; send it unlocked")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
    except InvalidDocument:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise InvalidDocument(f"{_name(filename)} is not a readable PDF ({exc})") from None
    blocks = [
        Block("paragraph", _squash(p), page=number)
        for number, text in enumerate(pages, start=1)
        for p in _paragraphs(text.replace("\x00", ""))
    ]
    title = (info.title or "").strip() if info is not None and info.title else None
    return ParsedDocument(title or _title_from_name(filename), "pdf", blocks, {"pages": len(pages)})


# -- JSON Lines corpora (BEIR layout) ------------------------------------------------------


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
        where = f"{_name(filename)} line {number}"
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
    blocks = [Block("paragraph", _squash(p)) for p in _paragraphs(record.text)]
    if not blocks and record.title:
        blocks = [Block("paragraph", record.title)]
    return ParsedDocument(record.title, "text", blocks, dict(record.metadata))


# -- helpers -------------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def _squash(text: str) -> str:
    """Runs of spaces to one, lines kept, ends trimmed."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _heads(path: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(text for _level, text in path)


def _name(filename: str | None) -> str:
    return f"'{PurePath(filename).name}'" if filename else "the document"


def _title_from_name(filename: str | None) -> str | None:
    if not filename:
        return None
    stem = PurePath(filename).stem.replace("_", " ").replace("-", " ").strip()
    return stem or None
