"""The built-in document formats: PDF, DOCX, HTML, Markdown and plain text, registered through
the ``register_document_parsers`` hook like any plugin's."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from typing import Any

from concierge.config import Settings
from concierge.errors import DocumentTooLarge, InvalidDocument
from concierge.hookspecs import hookimpl
from concierge.knowledge.parsers import (
    Block,
    BlockKind,
    DocumentParser,
    ParsedDocument,
    ParseLimits,
    decode_text,
    display_name,
    heading_path,
    paragraphs,
    squash,
    title_from_name,
)

MAX_ARCHIVE_MEMBERS = 10_000


@hookimpl
def register_document_parsers(
    register: Callable[[DocumentParser], None], settings: Settings
) -> None:
    """PDF, DOCX, HTML, Markdown and plain text."""
    for parser in (PdfParser(), DocxParser(), HtmlParser(), MarkdownParser(), TextParser()):
        register(parser)


class PdfParser(DocumentParser):
    format, label, binary = "pdf", "PDF", True
    extensions = (".pdf",)
    content_types = ("application/pdf",)

    def recognises(self, data: bytes) -> bool:
        return data.startswith(b"%PDF-")

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        doc = _parse_pdf(data, filename)
        if not any(b.text.strip() for b in doc.blocks):
            raise InvalidDocument(
                f"{display_name(filename)} contains no text (a scanned PDF needs OCR, which "
                "Concierge does not do)"
            )
        return doc


class DocxParser(DocumentParser):
    format, label, binary = "docx", "DOCX", True
    extensions = (".docx",)
    content_types = ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",)

    def recognises(self, data: bytes) -> bool:
        return data.startswith(b"PK\x03\x04") and _is_docx(data)

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        _check_expansion(data, filename, limits.max_expanded_bytes)
        return _parse_docx(data, filename)


class HtmlParser(DocumentParser):
    format, label = "html", "HTML"
    extensions = (".html", ".htm", ".xhtml")
    content_types = ("text/html", "application/xhtml+xml")

    def looks_like(self, head: bytes) -> bool:
        return head.startswith((b"<!doctype html", b"<html"))

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        return _parse_html(data, filename)


class MarkdownParser(DocumentParser):
    format, label = "markdown", "Markdown"
    extensions = (".md", ".markdown")
    content_types = ("text/markdown", "text/x-markdown")

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        return _parse_markdown(data, filename)


class TextParser(DocumentParser):
    format, label = "text", "plain text"
    extensions = (".txt", ".text", ".rst", ".csv", ".log")
    content_types = ("text/plain",)

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        return _parse_text(data, filename)


# -- plain text ----------------------------------------------------------------------------


def _parse_text(data: bytes, filename: str | None) -> ParsedDocument:
    text = decode_text(data, filename)
    blocks = [Block("paragraph", squash(p)) for p in paragraphs(text)]
    return ParsedDocument(title_from_name(filename), "text", blocks)


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
            blocks.append(Block("heading", content, headings=heading_path(path), level=level))
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
                blocks.append(Block("table_row", " | ".join(row), headings=heading_path(path)))
            row = None
        elif t == "inline" and tokens[i - 1].type == "paragraph_open":
            kind: BlockKind = "list_item" if item_depth else "paragraph"
            if tok.content.strip():
                blocks.append(Block(kind, squash(tok.content), headings=heading_path(path)))
        elif t in ("fence", "code_block") and tok.content.strip():
            blocks.append(Block("code", tok.content.rstrip("\n"), headings=heading_path(path)))
        elif t == "html_block" and tok.content.strip():
            blocks.append(Block("paragraph", squash(tok.content), headings=heading_path(path)))
        i += 1
    title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return ParsedDocument(title or title_from_name(filename), "markdown", blocks)


# -- HTML ----------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "nav", "footer", "form"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_TEXT_BLOCKS = {"p", "blockquote", "dd", "dt", "figcaption", "caption", "address", "summary"}


def _parse_html(data: bytes, filename: str | None) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data, filename))
    title_node = tree.css_first("title")
    title = squash(title_node.text()) if title_node else None
    root = tree.body or tree.root
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    if root is not None:
        _walk_html(root, blocks, path)
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading"), None)
    return ParsedDocument(title or title_from_name(filename), "html", blocks)


def _walk_html(node: Any, blocks: list[Block], path: list[tuple[int, str]]) -> None:
    child = node.child
    while child is not None:
        tag = child.tag
        if tag in _SKIP_TAGS or tag in ("-comment", "!doctype"):
            pass
        elif tag in _HEADINGS:
            level = _HEADINGS[tag]
            text = squash(child.text(deep=True))
            if text:
                while path and path[-1][0] >= level:
                    path.pop()
                blocks.append(Block("heading", text, headings=heading_path(path), level=level))
                path.append((level, text))
        elif tag in _TEXT_BLOCKS:
            text = squash(child.text(deep=True))
            if text:
                blocks.append(Block("paragraph", text, headings=heading_path(path)))
        elif tag == "li":
            own = squash(_own_text(child))
            if own:
                blocks.append(Block("list_item", own, headings=heading_path(path)))
            nested = child.child
            while nested is not None:  # lists inside the item
                if nested.tag in ("ul", "ol"):
                    _walk_html(nested, blocks, path)
                nested = nested.next
        elif tag == "tr":
            cells = [squash(c.text(deep=True)) for c in child.iter() if c.tag in ("td", "th")]
            if any(cells):
                blocks.append(Block("table_row", " | ".join(cells), headings=heading_path(path)))
        elif tag == "pre":
            text = child.text(deep=True).strip("\n")
            if text.strip():
                blocks.append(Block("code", text, headings=heading_path(path)))
        elif tag == "-text":
            text = squash(child.text(deep=False))
            if text:  # loose text directly in a container
                blocks.append(Block("paragraph", text, headings=heading_path(path)))
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
        raise InvalidDocument(f"{display_name(filename)} is not a readable Word document") from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise DocumentTooLarge(
            f"{display_name(filename)} holds {len(members):,} files; the limit is "
            f"{MAX_ARCHIVE_MEMBERS:,}"
        )
    expanded = sum(member.file_size for member in members)
    if expanded > limit:
        raise DocumentTooLarge(
            f"{display_name(filename)} expands to {expanded:,} bytes, over the limit of {limit:,}"
        )


def _parse_docx(data: bytes, filename: str | None) -> ParsedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many types for a damaged archive
        raise InvalidDocument(
            f"{display_name(filename)} is not a readable Word document ({exc})"
        ) from None
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = squash(item.text)
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            level = _docx_heading_level(style)
            if level:
                while path and path[-1][0] >= level:
                    path.pop()
                blocks.append(Block("heading", text, headings=heading_path(path), level=level))
                path.append((level, text))
            elif "List" in style:
                blocks.append(Block("list_item", text, headings=heading_path(path)))
            else:
                blocks.append(Block("paragraph", text, headings=heading_path(path)))
        elif isinstance(item, Table):
            for row in item.rows:
                cells: list[str] = []
                for c in row.cells:  # merged cells repeat: keep one
                    text = squash(c.text)
                    if not cells or cells[-1] != text:
                        cells.append(text)
                if any(cells):
                    blocks.append(
                        Block("table_row", " | ".join(cells), headings=heading_path(path))
                    )
    title = (document.core_properties.title or "").strip() or None
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading"), None)
    return ParsedDocument(title or title_from_name(filename), "docx", blocks)


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
            raise InvalidDocument(f"{display_name(filename)} is an encrypted PDF; send it unlocked")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
    except InvalidDocument:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise InvalidDocument(f"{display_name(filename)} is not a readable PDF ({exc})") from None
    blocks = [
        Block("paragraph", squash(p), page=number)
        for number, text in enumerate(pages, start=1)
        for p in paragraphs(text.replace("\x00", ""))
    ]
    title = (info.title or "").strip() if info is not None and info.title else None
    return ParsedDocument(title or title_from_name(filename), "pdf", blocks, {"pages": len(pages)})
