"""A fast fake of Meta's Graph API for the channel benchmarks: it accepts WhatsApp sends, can
refuse a share of them with WhatsApp's rate-limit error (130429), and records when each
message arrived, for whom and from which sending number.

    python benchmarks/mock_graph.py --port 9200 [--refuse-every 20]

POST .../{phone_number_id}/messages: a send (recorded) or a read receipt (answered).
GET /stats: {"sent": [[unix_time, to, phone_number_id, tag, type], ...], "refused": n}.
POST /reset: forget everything. Raw ASGI on uvicorn, so the fake is never the slow part.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import uvicorn

READ = json.dumps({"success": True}).encode()
REFUSED = json.dumps(
    {"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}}
).encode()


def make_app(refuse_every: int):  # type: ignore[no-untyped-def]
    state: dict[str, Any] = {"sent": [], "refused": 0}
    counter = itertools.count(1)
    ids = itertools.count(1)

    async def respond(send: Any, status: int, payload: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if scope["method"] == "GET" and path == "/stats":
            await respond(send, 200, json.dumps(state).encode())
            return
        if path == "/reset":
            state.update(sent=[], refused=0)
            await respond(send, 200, b"{}")
            return
        data = json.loads(body or b"{}")
        if data.get("status") == "read":
            await respond(send, 200, READ)
            return
        if refuse_every and next(counter) % refuse_every == 0:
            state["refused"] += 1
            await respond(send, 400, REFUSED)
            return
        number = path.rstrip("/").split("/")[-2]
        state["sent"].append(
            [
                time.time(),
                data.get("to"),
                number,
                data.get("biz_opaque_callback_data"),
                data.get("type"),
            ]
        )
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": data.get("to"), "wa_id": data.get("to")}],
            "messages": [{"id": f"wamid.BENCH{next(ids)}"}],
        }
        await respond(send, 200, json.dumps(answer).encode())

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--refuse-every", type=int, default=0, help="refuse every Nth send (429)")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.refuse_every),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
