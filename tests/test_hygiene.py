"""Web hygiene: security headers on every response, downloads that cannot become pages,
API keys refused in URLs and masked in logs."""

from __future__ import annotations

import logging

import httpx
import pytest

from concierge.app import Concierge
from concierge.governance.logs import LogRedactor
from tests.conftest import ADMIN_KEY, EMBEDDER, http_client


async def test_every_response_carries_security_headers(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    docs = await client.get("/docs")
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    for response in (
        await client.get("/v1/models"),
        await client.get("/nowhere"),
        await client.get("/widget/v1/default/nobody"),
        await client.get("/widget.js"),
        await client.get("/openapi.json"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_uploaded_files_come_back_as_downloads(client: httpx.AsyncClient) -> None:
    evil = b"<html><script>fetch('/api/keys')</script></html>"
    made = await client.post(
        "/v1/files",
        files={"file": ("page.html", evil, "text/html")},
        data={"purpose": "assistants"},
    )
    assert made.status_code in (200, 201), made.text
    content = await client.get(f"/v1/files/{made.json()['id']}/content")
    assert content.content == evil
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-disposition"].startswith("attachment;")
    assert "page.html" in content.headers["content-disposition"]
    assert "sandbox" in content.headers["content-security-policy"]


@pytest.mark.parametrize(
    "query",
    [
        f"api_key={ADMIN_KEY}",
        f"key={ADMIN_KEY.upper()}",
        "token=sk%2Dcc%2Dabcdef0123",
        f"x=1&auth=Bearer%20{ADMIN_KEY}",
    ],
)
async def test_keys_in_urls_are_refused(concierge: Concierge, query: str) -> None:
    async with http_client(concierge, key=None) as anonymous:
        answer = await anonymous.get(f"/v1/models?{query}")
    assert answer.status_code == 400
    assert "does not belong in a URL" in answer.json()["error"]["message"]
    assert ADMIN_KEY not in answer.text


def test_keys_are_masked_in_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/models?api_key={ADMIN_KEY}", "1.1", 400),
        None,
    )
    LogRedactor().filter(record)
    line = record.getMessage()
    assert ADMIN_KEY not in line and "sk-cc-[redacted]" in line


async def test_embeddings_still_work_with_headers(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hello"})
    assert answer.status_code == 200
