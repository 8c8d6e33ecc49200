"""The knowledge base API, the OpenAI files and vector stores API, and the URL fetcher,
through real HTTP (ASGI) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import AsyncClient

from concierge.app import Concierge
from concierge.config import Settings
from concierge.models.registry import ModelRegistry
from tests.conftest import http_client, make_settings
from tests.test_gateway import assert_openai_error

RETURNS = """# Returns

## Refunds

Items can be returned within 30 days of delivery for a full refund to the original payment
method. Refunds are issued within five business days after the parcel arrives at our warehouse.

## Exchanges

To exchange a size or a colour, start a new order and return the first item.
"""
SHIPPING = (
    "Shipping: standard delivery takes three to five days; express delivery arrives the next day."
)
CORPUS = (
    json.dumps({"_id": "101", "title": "Aspirin", "text": "Aspirin lowers the risk of stroke."})
    + "\n"
    + json.dumps({"title": "no id", "text": "This line has no _id."})
    + "\n"
    + json.dumps(
        {
            "_id": "102",
            "title": "Vitamin D",
            "text": "Vitamin D supports bone health.",
            "metadata": {"topic": "nutrition"},
        }
    )
    + "\n"
)


async def wait_job(client: AsyncClient, kb: Any, job: dict[str, Any]) -> dict[str, Any]:
    for _ in range(600):
        got = await client.get(f"/v1/knowledge_bases/{kb}/jobs/{job['id']}")
        assert got.status_code == 200, got.text
        if got.json()["status"] == "done":
            return dict(got.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} did not finish")


async def search(client: AsyncClient, kb: Any, query: str, **options: Any) -> list[dict[str, Any]]:
    got = await client.post(f"/v1/knowledge_bases/{kb}/search", json={"query": query, **options})
    assert got.status_code == 200, got.text
    return list(got.json()["data"])


async def test_knowledge_base_documents_jobs_and_search(client: AsyncClient) -> None:
    made = await client.post(
        "/v1/knowledge_bases",
        json={
            "name": "Help centre",
            "chunk_tokens": 64,
            "chunk_overlap": 8,
            "metadata": {"team": "support"},
        },
    )
    assert made.status_code == 201, made.text
    kb = made.json()
    assert (kb["name"], kb["chunk_tokens"], kb["metadata"]) == (
        "Help centre",
        64,
        {"team": "support"},
    )
    assert_openai_error(await client.post("/v1/knowledge_bases", json={"name": "Help centre"}), 409)
    by_name = await client.get("/v1/knowledge_bases/Help centre")
    assert by_name.json()["id"] == kb["id"]

    # Files (one of them a corpus, one broken) and text documents, in two jobs.
    upload = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[
            ("file", ("returns.md", RETURNS.encode(), "text/markdown")),
            ("file", ("broken.pdf", b"%PDF-1.7 not really", "application/pdf")),
            ("file", ("corpus.jsonl", CORPUS.encode(), "application/jsonl")),
        ],
        data={"metadata": json.dumps({"source": "upload"})},
    )
    assert upload.status_code == 202, upload.text
    assert upload.json()["object"] == "ingestion_job" and upload.json()["total"] == 5
    texts = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={
            "documents": [
                {
                    "id": "shipping",
                    "text": SHIPPING,
                    "title": "Shipping",
                    "metadata": {"topic": "delivery"},
                }
            ]
        },
    )
    assert texts.status_code == 202, texts.text
    first = await wait_job(client, kb["id"], upload.json())
    assert (first["done"], first["failed"]) == (3, 2)
    failed = {e["document"]: e["error"] for e in first["errors"]}
    assert "not a readable PDF" in failed["broken.pdf"]
    assert "has no '_id'" in failed["corpus.jsonl:line 2"]
    await wait_job(client, kb["id"], texts.json())

    listing = (await client.get(f"/v1/knowledge_bases/{kb['id']}/documents?limit=2")).json()
    assert len(listing["data"]) == 2 and listing["has_more"]
    rest = await client.get(
        f"/v1/knowledge_bases/{kb['id']}/documents?after={listing['last_id']}&limit=100"
    )
    everything = listing["data"] + rest.json()["data"]
    assert {d["external_id"] for d in everything} == {
        "returns.md",
        "broken.pdf",
        "101",
        "102",
        "shipping",
        "corpus.jsonl:line 2",
    }
    statuses = {d["external_id"]: d["status"] for d in everything}
    assert statuses["returns.md"] == "ready" and statuses["broken.pdf"] == "failed"
    returns = next(d for d in everything if d["external_id"] == "returns.md")
    assert returns["metadata"]["source"] == "upload" and returns["chunk_count"] >= 2
    one = await client.get(
        f"/v1/knowledge_bases/{kb['id']}/documents/{returns['id']}?include_text=true"
    )
    assert "full refund" in one.json()["text"]
    found = await client.get(f"/v1/knowledge_bases/{kb['id']}/documents?external_id=101")
    assert [d["title"] for d in found.json()["data"]] == ["Aspirin"]
    described = (await client.get(f"/v1/knowledge_bases/{kb['id']}")).json()
    assert described["document_counts"] == {"pending": 0, "ready": 4, "failed": 2}

    # Search: every mode finds the refund rule, with its heading path as the citation.
    for mode in ("bm25", "vector", "hybrid", "convex"):
        hits = await search(client, kb["id"], "how long do refunds take", mode=mode, k=3)
        assert hits[0]["external_id"] == "returns.md", (mode, hits)
        assert hits[0]["location"] == "Returns > Refunds" and hits[0]["title"] == "Returns"
    hits = await search(client, kb["id"], "health", filters={"topic": "nutrition"})
    assert [h["external_id"] for h in hits] == ["102"]
    hits = await search(
        client,
        kb["id"],
        "delivery",
        mode="vector",
        filters={
            "type": "or",
            "filters": [
                {"type": "eq", "key": "topic", "value": "delivery"},
                {"type": "eq", "key": "topic", "value": "nutrition"},
            ],
        },
    )
    assert {h["external_id"] for h in hits} == {"shipping", "102"}

    # Unchanged: skipped. Changed: replaced. Deleted: gone from search at once.
    again = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[("file", ("returns.md", RETURNS.encode(), "text/markdown"))],
        data={"metadata": json.dumps({"source": "upload"})},
    )
    assert (await wait_job(client, kb["id"], again.json()))["skipped"] == 1
    changed = RETURNS.replace("30 days", "60 days")
    again = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[("file", ("returns.md", changed.encode(), "text/markdown"))],
    )
    assert (await wait_job(client, kb["id"], again.json()))["done"] == 1
    hits = await search(client, kb["id"], "returned within days", mode="bm25", k=1)
    assert "60 days" in hits[0]["text"]
    gone = await client.delete(f"/v1/knowledge_bases/{kb['id']}/documents/{returns['id']}")
    assert gone.json()["deleted"] is True
    hits = await search(client, kb["id"], "refund", mode="bm25")
    assert all(h["external_id"] != "returns.md" for h in hits)
    assert_openai_error(
        await client.get(f"/v1/knowledge_bases/{kb['id']}/documents/{returns['id']}"), 404
    )

    renamed = await client.patch(f"/v1/knowledge_bases/{kb['id']}", json={"name": "FAQ"})
    assert renamed.json()["name"] == "FAQ"
    assert (await client.delete(f"/v1/knowledge_bases/{kb['id']}")).json()["deleted"] is True
    assert_openai_error(await client.get(f"/v1/knowledge_bases/{kb['id']}"), 404)


async def test_bad_input_gets_clear_errors(client: AsyncClient) -> None:
    kb = (await client.post("/v1/knowledge_bases", json={"name": "kb"})).json()
    base = f"/v1/knowledge_bases/{kb['id']}"
    assert_openai_error(await client.get("/v1/knowledge_bases/999999"), 404, "not_found_error")
    assert_openai_error(await client.get("/v1/knowledge_bases/²/jobs/1"), 404)  # not an id
    assert_openai_error(await client.get("/v1/knowledge_bases/" + "9" * 30), 404)  # nor this
    assert_openai_error(await client.get(f"{base}/jobs/{10**30}"), 400)  # no row has such an id
    assert_openai_error(await client.get(f"{base}/documents", params={"after": 10**30}), 400)
    assert_openai_error(await client.post("/v1/knowledge_bases", json={"name": ""}), 400)
    assert_openai_error(await client.post("/v1/knowledge_bases", json={"name": "123"}), 400)
    assert_openai_error(
        await client.post("/v1/knowledge_bases", json={"name": "x", "embedding_model": "nope"}),
        404,
    )
    assert_openai_error(
        await client.post(
            "/v1/knowledge_bases", json={"name": "y", "chunk_tokens": 64, "chunk_overlap": 40}
        ),
        400,
    )
    assert_openai_error(await client.post(f"{base}/documents", json={}), 400)
    assert_openai_error(
        await client.post(
            f"{base}/documents", content=b"plain", headers={"content-type": "text/plain"}
        ),
        415,
    )
    assert_openai_error(
        await client.post(
            f"{base}/documents",
            files=[("file", ("a.txt", b"x", "text/plain"))],
            data={"metadata": "{not json"},
        ),
        400,
    )
    assert_openai_error(
        await client.post(
            f"{base}/documents",
            files=[
                ("file", ("a.txt", b"x", "text/plain")),
                ("file", ("a.txt", b"y", "text/plain")),
            ],
        ),
        400,
    )
    assert_openai_error(await client.post(f"{base}/search", json={"query": ""}), 400)
    assert_openai_error(
        await client.post(f"{base}/search", json={"query": "q", "mode": "magic"}), 400
    )
    assert_openai_error(
        await client.post(
            f"{base}/search", json={"query": "q", "filters": {"type": "and", "filters": []}}
        ),
        400,
    )
    assert_openai_error(await client.get(f"{base}/documents/12345"), 404)
    assert_openai_error(await client.get(f"{base}/jobs/12345"), 404)
    # NUL characters fit no database column (PostgreSQL refuses them even in a lookup).
    assert_openai_error(await client.get("/v1/files", params={"purpose": "a\x00b"}), 400)
    assert_openai_error(await client.get(f"{base}/documents/a%00b"), 400)
    assert_openai_error(
        await client.post(f"{base}/documents", json={"documents": [{"id": "a\x00", "text": "t"}]}),
        400,
    )
    assert_openai_error(
        await client.post("/v1/vector_stores", json={"name": "v", "description": "\x00"}), 400
    )
    assert_openai_error(
        await client.post(
            f"{base}/documents",
            files=[("file", ("a.txt", b"x", "text/plain"))],
            data={"metadata": '{"k": "a\\u0000"}'},
        ),
        400,
    )
    # Each bad document is an error of its own; the good one still ingests.
    job = await client.post(
        f"{base}/documents",
        files=[
            ("file", ("good.txt", b"The store opens at nine.", "text/plain")),
            ("file", ("empty.txt", b"", "text/plain")),
            ("file", ("latin1.txt", "caf\xe9".encode("latin-1") + b"\xff\xfe", "text/plain")),
            ("file", ("photo.png", b"\x89PNG\r\n\x1a\n", "image/png")),
        ],
    )
    done = await wait_job(client, kb["id"], job.json())
    assert (done["done"], done["failed"]) == (1, 3), done
    assert (await search(client, kb["id"], "when does the store open"))[0][
        "external_id"
    ] == "good.txt"


async def test_upload_size_limit(
    tmp_path: Path, db_url: str, models_dir: Path, registry: ModelRegistry
) -> None:
    settings = make_settings(
        tmp_path,
        db_url,
        models_dir,
        max_body_bytes=2048,
        max_upload_bytes=6000,
        knowledge_max_document_bytes=2048,
    )
    app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await app.startup()
    try:
        async with http_client(app) as client:
            kb = (await client.post("/v1/knowledge_bases", json={"name": "kb"})).json()
            url = f"/v1/knowledge_bases/{kb['id']}/documents"
            big = await client.post(url, files=[("file", ("big.txt", b"x " * 4000, "text/plain"))])
            assert_openai_error(big, 413)
            job = await client.post(
                url, files=[("file", ("mid.txt", b"word " * 600, "text/plain"))]
            )
            done = await wait_job(client, kb["id"], job.json())
            assert done["failed"] == 1 and "limit" in done["errors"][0]["error"]
    finally:
        await app.shutdown()


# -- URLs -----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "policy.html").write_text(
        "<html><head><title>Warranty</title></head><body><h1>Warranty</h1>"
        "<p>Every jacket carries a two-year warranty against defects.</p></body></html>"
    )

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def intranet_client(
    tmp_path: Path, db_url: str, models_dir: Path, registry: ModelRegistry
) -> AsyncIterator[AsyncClient]:
    settings = make_settings(tmp_path, db_url, models_dir, egress_allowed_networks=["127.0.0.0/8"])
    app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await app.startup()
    async with http_client(app) as client:
        yield client
    await app.shutdown()


async def test_documents_from_urls(intranet_client: AsyncClient, site: str) -> None:
    client = intranet_client
    kb = (await client.post("/v1/knowledge_bases", json={"name": "web"})).json()
    job = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={
            "urls": [
                {"url": f"{site}/policy.html", "metadata": {"lang": "en"}},
                {"url": f"{site}/missing.html"},
                {"url": "ftp://example.com/file.txt"},
            ]
        },
    )
    done = await wait_job(client, kb["id"], job.json())
    assert (done["done"], done["failed"]) == (1, 2), done
    errors = " | ".join(e["error"] for e in done["errors"])
    assert "HTTP 404" in errors and "not an http(s) URL" in errors
    hits = await search(client, kb["id"], "how long is the warranty")
    assert hits[0]["external_id"] == f"{site}/policy.html" and hits[0]["title"] == "Warranty"
    assert hits[0]["metadata"] == {"url": f"{site}/policy.html", "lang": "en"}


async def test_url_fetcher_refuses_private_addresses_by_default(
    client: AsyncClient, site: str
) -> None:
    kb = (await client.post("/v1/knowledge_bases", json={"name": "web"})).json()
    job = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={
            "urls": [
                {"url": f"{site}/policy.html"},
                {"url": site.replace("127.0.0.1", "localhost") + "/policy.html"},
            ]
        },
    )
    done = await wait_job(client, kb["id"], job.json())
    assert done["failed"] == 2
    assert all("egress policy" in e["error"] for e in done["errors"]), done["errors"]


# -- resuming -------------------------------------------------------------------------------


async def test_server_start_resumes_pending_ingestion(
    settings: Settings, registry: ModelRegistry
) -> None:
    """Documents staged by a process that then died are finished by the next one."""
    from concierge.knowledge.sources import Source

    first = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await first.startup()
    kb = await first.knowledge.create(1, "resumed")
    ingestor = first.knowledge.ingestor(kb)
    sources = [
        Source("a.txt", b"Alpha text.", filename="a.txt"),
        Source("b.txt", b"Beta text.", filename="b.txt"),
        Source("c.txt", b"Gamma text.", filename="c.txt"),
    ]
    job_id = await first.db.write(lambda conn: ingestor.create_job(conn, kb, sources))
    await ingestor.stage(kb, job_id)
    # A job recorded and never staged (the process died first) is staged at the next start.
    unstaged = await first.db.write(
        lambda conn: ingestor.create_job(conn, kb, [Source("d.txt", b"Delta.", filename="d.txt")])
    )
    await first.shutdown()  # staged, never processed

    second = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await second.startup()
    try:
        await second.knowledge.wait(kb.id)
        job = await second.knowledge.job(1, job_id)
        assert (job.status, job.done) == ("done", 3)
        hits = await second.knowledge.search(kb, "beta", mode="bm25")
        assert [h.external_id for h in hits] == ["b.txt"]
        job = await second.knowledge.job(1, unstaged)
        assert (job.status, job.done, job.total) == ("done", 1, 1)
        hits = await second.knowledge.search(kb, "delta", mode="bm25")
        assert [h.external_id for h in hits] == ["d.txt"]
    finally:
        await second.shutdown()


# -- OpenAI files and vector stores ---------------------------------------------------------


async def test_openai_client_files_and_vector_stores(concierge: Concierge) -> None:
    import openai

    transport = httpx.ASGITransport(app=concierge.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test/v1") as http:
        from tests.conftest import ADMIN_KEY

        client = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url="http://test/v1", http_client=http)
        store = await client.vector_stores.create(
            name="Support",
            metadata={"brand": "acme"},
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 10},
            },
        )
        assert store.id.startswith("vs_") and store.metadata == {"brand": "acme"}
        uploaded = await client.files.create(
            file=("returns.md", RETURNS.encode()), purpose="assistants"
        )
        assert uploaded.filename == "returns.md" and uploaded.bytes == len(RETURNS.encode())
        added = await client.vector_stores.files.create_and_poll(
            vector_store_id=store.id,
            file_id=uploaded.id,
            attributes={"lang": "en"},
            poll_interval_ms=50,
        )
        assert added.status == "completed", added
        batch = await client.vector_stores.file_batches.upload_and_poll(
            vector_store_id=store.id,
            files=[("shipping.txt", SHIPPING.encode()), ("broken.pdf", b"%PDF-1.4 nope")],
            poll_interval_ms=50,
        )
        assert (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
        listed = [f async for f in client.vector_stores.files.list(vector_store_id=store.id)]
        by_status = {f.status for f in listed}
        assert by_status == {"completed", "failed"}
        failed = next(f for f in listed if f.status == "failed")
        assert failed.last_error is not None and "PDF" in failed.last_error.message

        results = await client.vector_stores.search(
            vector_store_id=store.id, query="how many days to return an item", max_num_results=3
        )
        first = results.data[0]
        assert first.file_id == uploaded.id and first.filename == "returns.md"
        assert "30 days" in first.content[0].text and first.attributes == {"lang": "en"}
        filtered = await client.vector_stores.search(
            vector_store_id=store.id,
            query="delivery",
            filters={"type": "eq", "key": "lang", "value": "en"},
        )
        assert {r.file_id for r in filtered.data} == {uploaded.id}

        fetched = await client.vector_stores.retrieve(store.id)
        assert fetched.file_counts.completed == 2 and fetched.status == "completed"
        assert store.id in [s.id async for s in client.vector_stores.list()]
        await client.vector_stores.files.delete(vector_store_id=store.id, file_id=uploaded.id)
        again = await client.vector_stores.search(vector_store_id=store.id, query="refund")
        assert uploaded.id not in {r.file_id for r in again.data}
        assert (await client.files.delete(uploaded.id)).deleted
        batch_files = [
            f
            async for f in client.vector_stores.file_batches.list_files(
                batch_id=batch.id, vector_store_id=store.id
            )
        ]
        assert {f.status for f in batch_files} == {"completed", "failed"}
        before = [s.id async for s in client.vector_stores.list()]
        with pytest.raises(openai.NotFoundError):  # an unknown file: no store is made
            await client.vector_stores.create(name="Half", file_ids=["file-nope"])
        assert [s.id async for s in client.vector_stores.list()] == before
        with pytest.raises(openai.NotFoundError):
            await client.vector_stores.retrieve("vs_999999")
        with pytest.raises(openai.NotFoundError):
            await client.vector_stores.files.create(vector_store_id=store.id, file_id="file-nope")
        with pytest.raises(openai.BadRequestError):
            await client.vector_stores.search(
                vector_store_id=store.id,
                query="x",
                filters={"type": "gt", "key": "n", "value": [1]},
            )
        assert (await client.vector_stores.delete(store.id)).deleted


# -- tenant isolation -----------------------------------------------------------------------


async def test_one_organisation_never_reaches_another_through_any_endpoint(
    client: AsyncClient, concierge: Concierge
) -> None:
    """Acme's knowledge base, documents, job, file and vector store are "not found" for
    Globex on every route and with every method, and Globex's searches never return them."""
    kb = (await client.post("/v1/knowledge_bases", json={"name": "private"})).json()
    job = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        json={"documents": [{"id": "secret", "text": "The launch code is swordfish."}]},
    )
    await wait_job(client, kb["id"], job.json())
    doc = (await client.get(f"/v1/knowledge_bases/{kb['id']}/documents")).json()["data"][0]
    file = (
        await client.post(
            "/v1/files", files={"file": ("s.txt", b"swordfish")}, data={"purpose": "assistants"}
        )
    ).json()
    store = f"vs_{kb['id']}"

    assert (await client.post("/api/orgs", json={"slug": "globex"})).status_code == 201
    made = await client.post(
        "/api/keys", json={"org": "globex", "name": "app", "scopes": ["inference", "knowledge"]}
    )
    async with http_client(concierge, made.json()["key"]) as other:
        theirs = (await other.post("/v1/knowledge_bases", json={"name": "private"})).json()
        assert theirs["id"] != kb["id"]  # same name, another organisation: allowed
        job2 = await other.post(
            f"/v1/knowledge_bases/{theirs['id']}/documents",
            json={"documents": [{"id": "menu", "text": "Fish of the day: swordfish steak."}]},
        )
        await wait_job(other, theirs["id"], job2.json())

        base = f"/v1/knowledge_bases/{kb['id']}"
        attempts = [
            ("GET", base, None),
            ("PATCH", base, {"name": "stolen"}),
            ("DELETE", base, None),
            ("POST", f"{base}/documents", {"documents": [{"id": "x", "text": "x"}]}),
            ("GET", f"{base}/documents", None),
            ("GET", f"{base}/documents/{doc['id']}", None),
            ("DELETE", f"{base}/documents/{doc['id']}", None),
            ("GET", f"{base}/jobs/{job.json()['id']}", None),
            ("POST", f"{base}/search", {"query": "launch code"}),
            ("GET", f"/v1/files/{file['id']}", None),
            ("GET", f"/v1/files/{file['id']}/content", None),
            ("DELETE", f"/v1/files/{file['id']}", None),
            ("GET", f"/v1/vector_stores/{store}", None),
            ("POST", f"/v1/vector_stores/{store}", {"name": "stolen"}),
            ("DELETE", f"/v1/vector_stores/{store}", None),
            ("POST", f"/v1/vector_stores/{store}/files", {"file_id": file["id"]}),
            ("GET", f"/v1/vector_stores/{store}/files", None),
            ("GET", f"/v1/vector_stores/{store}/files/secret", None),
            ("DELETE", f"/v1/vector_stores/{store}/files/secret", None),
            ("POST", f"/v1/vector_stores/{store}/file_batches", {"file_ids": [file["id"]]}),
            ("GET", f"/v1/vector_stores/{store}/file_batches/vsfb_{job.json()['id']}", None),
            ("POST", f"/v1/vector_stores/{store}/search", {"query": "launch code"}),
            # Their own store, with our file: the file is not theirs.
            ("POST", f"/v1/vector_stores/vs_{theirs['id']}/files", {"file_id": file["id"]}),
            # Their own store, our job id as a batch.
            (
                "GET",
                f"/v1/vector_stores/vs_{theirs['id']}/file_batches/vsfb_{job.json()['id']}",
                None,
            ),
        ]
        for method, url, body in attempts:
            response = await other.request(method, url, json=body)
            assert response.status_code == 404, (method, url, response.text)
            assert "swordfish" not in response.text and "launch" not in response.text
        names = [k["id"] for k in (await other.get("/v1/knowledge_bases")).json()["data"]]
        assert names == [theirs["id"]]
        assert file["id"] not in (await other.get("/v1/files")).text
        assert store not in (await other.get("/v1/vector_stores")).text
        for mode in ("bm25", "vector", "hybrid", "convex"):
            hits = await search(other, theirs["id"], "launch code swordfish", mode=mode, k=50)
            assert {h["external_id"] for h in hits} == {"menu"}, mode
        found = await other.post(
            f"/v1/vector_stores/vs_{theirs['id']}/search", json={"query": "swordfish launch code"}
        )
        assert [r["file_id"] for r in found.json()["data"]] == ["menu"]

    # Nothing of Acme's was touched.
    hits = await search(client, kb["id"], "launch code")
    assert [h["external_id"] for h in hits] == ["secret"]
    assert (await client.get(f"/v1/files/{file['id']}")).status_code == 200
