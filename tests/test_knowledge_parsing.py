"""Parsing every supported format into structured blocks, and chunking them.

The documents are made here with the libraries that write those formats (reportlab for PDF,
python-docx for DOCX), so each test says what its input holds.
"""

from __future__ import annotations

import io
import itertools
import re

import docx
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from concierge.config import Settings
from concierge.errors import DocumentTooLarge, InvalidDocument, UnsupportedDocumentType
from concierge.knowledge.chunking import Chunk, chunk_document, estimate_tokens
from concierge.knowledge.corpus import CorpusRecord, iter_jsonl, parse_record
from concierge.knowledge.parsers import Block, ParsedDocument, Parsers
from concierge.plugins import plugin_manager

PARSERS = Parsers.from_plugins(plugin_manager(entry_points=False), Settings())
parse = PARSERS.parse
detect_format = PARSERS.detect_format


def make_pdf(
    pages: list[list[str]], title: str | None = None, password: str | None = None
) -> bytes:
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, encrypt=password)
    if title:
        pdf.setTitle(title)
    for paragraphs in pages:
        y = 800
        for paragraph in paragraphs:
            pdf.drawString(50, y, paragraph)
            y -= 40  # a gap: extracted as a blank line between paragraphs
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Returns handbook"
    document.add_heading("Returns", level=1)
    document.add_paragraph("Items can be returned within 30 days.")
    document.add_heading("Refunds", level=2)
    document.add_paragraph("Refunds go to the original card.")
    document.add_paragraph("Keep the receipt", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Days"
    table.cell(1, 0).text, table.cell(1, 1).text = "EU", "14"
    document.add_heading("Exchanges", level=1)
    document.add_paragraph("Exchanges are free.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def kinds(doc: ParsedDocument) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(b.kind, b.text, b.headings) for b in doc.blocks]


def test_pdf_pages_paragraphs_and_title() -> None:
    data = make_pdf(
        [["Opening hours are nine to five.", "Closed on Sundays."], ["Parking is free."]],
        title="Store guide",
    )
    doc = parse(data, "guide.pdf")
    assert doc.format == "pdf" and doc.title == "Store guide"
    # A PDF has no paragraphs, only positioned lines: each page's text is split at blank lines
    # where the extractor finds them, and always at page ends.
    assert [(b.text, b.page) for b in doc.blocks] == [
        ("Opening hours are nine to five.\nClosed on Sundays.", 1),
        ("Parking is free.", 2),
    ]
    assert doc.metadata == {"pages": 2}


def test_docx_headings_lists_and_tables_in_order() -> None:
    doc = parse(make_docx(), "handbook.docx")
    assert doc.title == "Returns handbook"
    assert kinds(doc) == [
        ("heading", "Returns", ()),
        ("paragraph", "Items can be returned within 30 days.", ("Returns",)),
        ("heading", "Refunds", ("Returns",)),
        ("paragraph", "Refunds go to the original card.", ("Returns", "Refunds")),
        ("list_item", "Keep the receipt", ("Returns", "Refunds")),
        ("table_row", "Region | Days", ("Returns", "Refunds")),
        ("table_row", "EU | 14", ("Returns", "Refunds")),
        ("heading", "Exchanges", ()),
        ("paragraph", "Exchanges are free.", ("Exchanges",)),
    ]


def test_html_structure_without_scripts_or_navigation() -> None:
    html = b"""<!doctype html><html><head><title>Help centre</title>
    <style>p { color: red }</style></head><body>
    <nav><a href="/">Home</a></nav>
    <h1>Shipping</h1><p>We ship   worldwide.</p>
    <h2>Costs</h2><ul><li>Standard: free<ul><li>over 50 EUR</li></ul></li></ul>
    <table><tr><th>Zone</th><th>Days</th></tr><tr><td>EU</td><td>3</td></tr></table>
    <script>alert("no")</script><pre>code  kept</pre><footer>(c) shop</footer>
    </body></html>"""
    doc = parse(html, "help.html")
    assert doc.title == "Help centre"
    assert kinds(doc) == [
        ("heading", "Shipping", ()),
        ("paragraph", "We ship worldwide.", ("Shipping",)),
        ("heading", "Costs", ("Shipping",)),
        ("list_item", "Standard: free", ("Shipping", "Costs")),
        ("list_item", "over 50 EUR", ("Shipping", "Costs")),
        ("table_row", "Zone | Days", ("Shipping", "Costs")),
        ("table_row", "EU | 3", ("Shipping", "Costs")),
        ("code", "code  kept", ("Shipping", "Costs")),
    ]


def test_markdown_heading_paths_lists_tables_and_code() -> None:
    md = b"""# Guide

Intro text
on two lines.

## Install

- first step
- second step

| OS | Command |
|----|---------|
| Linux | apt install |

```sh
make run
```

# Other

Last words.
"""
    doc = parse(md, "guide.md")
    assert doc.title == "Guide"
    assert kinds(doc) == [
        ("heading", "Guide", ()),
        ("paragraph", "Intro text\non two lines.", ("Guide",)),
        ("heading", "Install", ("Guide",)),
        ("list_item", "first step", ("Guide", "Install")),
        ("list_item", "second step", ("Guide", "Install")),
        ("table_row", "OS | Command", ("Guide", "Install")),
        ("table_row", "Linux | apt install", ("Guide", "Install")),
        ("code", "make run", ("Guide", "Install")),
        ("heading", "Other", ()),
        ("paragraph", "Last words.", ("Other",)),
    ]


def test_plain_text_paragraphs_and_a_bom() -> None:
    doc = parse("\ufeffFirst paragraph.\r\n\r\nSecond\r\nparagraph.".encode(), "notes.txt")
    assert doc.title == "notes"
    assert [b.text for b in doc.blocks] == ["First paragraph.", "Second\nparagraph."]


def test_nul_characters_never_reach_the_store() -> None:
    doc = parse(b"<html><title>A\x00B</title><h1>H\x00</h1><p>x\x00y</p></html>", "p.html")
    assert doc.title == "AB"
    assert [(b.text, b.headings) for b in doc.blocks] == [("H", ()), ("xy", ("H",))]


def test_format_is_read_from_content_before_name_and_type() -> None:
    assert detect_format(make_pdf([["x"]]), "wrong.txt") == "pdf"
    assert detect_format(make_docx(), None) == "docx"
    assert detect_format(b"<!DOCTYPE html><p>x</p>") == "html"
    assert detect_format(b"# title", None, "text/markdown; charset=utf-8") == "markdown"
    assert detect_format(b"just text") == "text"


@pytest.mark.parametrize(
    ("data", "name", "error", "message"),
    [
        (b"%PDF-1.7\n1 0 obj <<>> garbage", "broken.pdf", InvalidDocument, "not a readable PDF"),
        (b"", "empty.txt", InvalidDocument, "'empty.txt' is empty"),
        (b"  \n\n ", "blank.md", InvalidDocument, "is empty"),
        (b"MZ\x90\x00binary", "setup.exe", UnsupportedDocumentType, "not a supported"),
        (b"x", "data.xlsx", UnsupportedDocumentType, "'.xlsx' is not a supported"),
        (b"PK\x03\x04not really a zip", "a.zip", UnsupportedDocumentType, "ZIP archive but not a"),
        (b"plain", "fake.docx", InvalidDocument, "not a valid DOCX"),
        (b"caf\xe9 au lait", "latin1.txt", InvalidDocument, "not valid UTF-8 (byte 3)"),
        (b"<html><script>x()</script></html>", "s.html", InvalidDocument, "contains no text"),
    ],
)
def test_bad_documents_are_refused_with_a_reason(
    data: bytes, name: str, error: type[InvalidDocument], message: str
) -> None:
    with pytest.raises(error) as caught:
        parse(data, name)
    assert message in caught.value.message
    assert caught.value.status in (400, 413, 415)


def test_size_limit_and_scanned_pdf() -> None:
    with pytest.raises(DocumentTooLarge, match="over the limit of 10"):
        parse(b"x" * 11, "big.txt", max_bytes=10)
    with pytest.raises(InvalidDocument, match="needs OCR"):
        parse(make_pdf([[]]), "scan.pdf")


def test_encrypted_pdf_with_an_empty_password_opens_and_locked_ones_are_refused() -> None:
    with pytest.raises(InvalidDocument, match="encrypted"):
        parse(make_pdf([["secret text"]], password="hunter2"), "locked.pdf")


def test_jsonl_records_and_per_line_errors() -> None:
    data = b"\n".join(
        [
            b'{"_id": "d1", "title": "Aspirin", "text": "Thins blood.", "metadata": {"y": 1}}',
            b'{"title": "no id", "text": "x"}',
            b"not json",
            b'{"_id": 7, "text": "numeric id"}',
            b"",
            b'{"_id": "d3", "title": "Title only"}',
            b'{"_id": "d4", "text": "x", "metadata": [1]}',
            b"[1, 2]",
            b'{"_id": "a\\u0000b", "text": "x"}',
            b'{"_id": "d5", "title": "T\\u0000", "text": "x\\u0000y"}',
        ]
    )
    results = list(iter_jsonl(data, "corpus.jsonl"))
    records = [r for r in results if isinstance(r, CorpusRecord)]
    errors = [r.message for r in results if isinstance(r, InvalidDocument)]
    assert [(r.external_id, r.line) for r in records] == [
        ("d1", 1),
        ("7", 4),
        ("d3", 6),
        ("d5", 10),
    ]
    assert (records[3].title, records[3].text) == ("T", "xy")
    assert records[0].metadata == {"y": 1} and records[0].title == "Aspirin"
    assert errors[1].startswith("'corpus.jsonl' line 3 is not valid JSON (")
    del errors[1]
    assert errors == [
        "'corpus.jsonl' line 2 has no '_id'",
        "'corpus.jsonl' line 7 (_id d4): 'metadata' must be an object",
        "'corpus.jsonl' line 8 is not a JSON object",
        "'corpus.jsonl' line 9: '_id' must not contain NUL characters",
    ]
    assert parse_record(records[2]).blocks == [Block("paragraph", "Title only")]


# -- chunking --------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def long_doc() -> ParsedDocument:
    blocks = [Block("heading", "Policy", level=1)]
    for i in range(12):
        sentence = " ".join(f"W{i}x{j}" for j in range(9)) + "."
        blocks.append(
            Block("paragraph", " ".join([sentence] * 3), headings=("Policy",), page=1 + i // 6)
        )
    blocks.append(Block("heading", "Short", level=1))
    blocks.append(Block("paragraph", "A short closing section.", headings=("Short",), page=2))
    return ParsedDocument("t", "text", blocks)


def test_chunks_respect_the_size_and_cover_every_word() -> None:
    doc = long_doc()
    chunks = chunk_document(doc, max_tokens=60, overlap_tokens=10)
    assert all(c.tokens <= 60 and estimate_tokens(c.text) <= 60 for c in chunks)
    covered = {w for c in chunks for w in words(c.text)}
    assert set(words(doc.text)) <= covered
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_of_a_section_overlap_and_headings_break() -> None:
    chunks = chunk_document(long_doc(), max_tokens=60, overlap_tokens=20)
    policy = [c for c in chunks if c.headings == ("Policy",)]
    assert len(policy) > 3
    for before, after in itertools.pairwise(policy):
        assert set(words(before.text)[-5:]) & set(words(after.text)), "no overlap"
    last = chunks[-1]
    assert last.headings == ("Short",) and last.text.startswith("Short")
    assert "W11" not in last.text  # the new section does not carry the old one's text


def test_a_long_block_splits_at_sentences_and_a_long_sentence_at_words() -> None:
    text = "First sentence here. " + " ".join(f"word{i}" for i in range(200)) + ". Last one."
    doc = ParsedDocument("t", "text", [Block("paragraph", text)])
    chunks = chunk_document(doc, max_tokens=50, overlap_tokens=0)
    assert chunks[0].text.startswith("First sentence here.")
    assert all(c.tokens <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_small_sections_stay_together_and_locations_cite_pages_and_headings() -> None:
    blocks = [
        Block("heading", "A", level=1),
        Block("paragraph", "alpha text", headings=("A",), page=3),
        Block("heading", "B", headings=("A",), level=2),
        Block("paragraph", "beta text", headings=("A", "B"), page=4),
    ]
    (chunk,) = chunk_document(ParsedDocument("t", "pdf", blocks), max_tokens=100)
    assert chunk.text == "A\n\nalpha text\n\nB\n\nbeta text"
    assert (chunk.page_start, chunk.page_end) == (3, 4)
    assert chunk.location == "p. 3-4 · A"
    assert Chunk(0, "x", ("Setup", "Linux")).location == "Setup > Linux"


def test_chunking_arguments_are_checked() -> None:
    doc = ParsedDocument("t", "text", [Block("paragraph", "x")])
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(doc, max_tokens=100, overlap_tokens=60)
    with pytest.raises(ValueError, match="at least 8"):
        chunk_document(doc, max_tokens=4, overlap_tokens=0)
