"""Small helpers shared by tests."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import docx
import orjson
from sqlalchemy import select

from concierge.app import Concierge
from concierge.config import Settings
from concierge.knowledge.parsers import Parsers
from concierge.plugins import plugin_manager
from concierge.store.tables import usage_records

# The document parsers a server has with no plugin installed (the built-in formats).
PARSERS = Parsers.from_plugins(plugin_manager(entry_points=False), Settings())


async def ledger_rows(app: Concierge) -> list[Any]:
    await app.ledger.flush()
    return await app.db.read(
        lambda conn: conn.execute(select(usage_records).order_by(usage_records.c.id)).all()
    )


def sse_payloads(body: str) -> list[Any]:
    """The data payloads of an SSE body; '[DONE]' is kept as the string."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def docx_bomb(paragraphs: int) -> bytes:
    """A valid DOCX whose body is ``paragraphs`` tiny paragraphs: it compresses ~300:1."""
    base = io.BytesIO()
    docx.Document().save(base)
    source = zipfile.ZipFile(io.BytesIO(base.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                head, tail = data.split(b"<w:body>")
                data = (
                    head + b"<w:body>" + b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * paragraphs + tail
                )
            archive.writestr(item, data)
    return out.getvalue()
