"""Small helpers shared by tests."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from concierge.app import Concierge
from concierge.store.tables import usage_records


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
