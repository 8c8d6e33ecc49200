"""A fast mock OpenAI upstream for benchmarks: fixed replies, no model, no waiting.

    python benchmarks/mock_upstream.py --port 9100 [--chunks 20]

POST /v1/chat/completions answers one JSON completion, or with "stream": true an SSE stream of
``--chunks`` content chunks, a usage chunk and [DONE]. GET /v1/models lists "mock-model".
Raw ASGI on uvicorn (httptools, uvloop), so the mock is never the slow part of the path.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()
MODELS = json.dumps(
    {
        "object": "list",
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}],
    }
).encode()


def stream_body(chunks: int) -> bytes:
    def event(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        body: dict[str, Any] = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "mock-model",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    parts = [event({"role": "assistant", "content": ""})]
    parts += [event({"content": f"tok{i} "}) for i in range(chunks)]
    parts.append(event({}, "stop"))
    parts.append(
        event(
            {},
            usage={"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
        )
    )
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def make_app(chunks: int):  # type: ignore[no-untyped-def]
    streamed = stream_body(chunks)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload, ctype = MODELS, b"application/json"
        elif b'"stream":true' in body.replace(b" ", b""):
            payload, ctype = streamed, b"text/event-stream"
        else:
            payload, ctype = COMPLETION, b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.chunks),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
