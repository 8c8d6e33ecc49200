"""Knowledge bases and ingestion on SQLite and PostgreSQL, with the real embedding model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from concierge import orgs
from concierge.app import Concierge
from concierge.errors import Conflict, InvalidDocument, InvalidRequest, NotFound
from concierge.knowledge import bases
from concierge.knowledge.bases import KnowledgeBase
from concierge.knowledge.corpus import iter_jsonl
from concierge.knowledge.ingest import Ingestor
from concierge.knowledge.jobs import get_job
from concierge.knowledge.sandbox import Limits, Sandbox
from concierge.knowledge.service import ingest_now
from concierge.knowledge.sources import Source
from concierge.models.registry import ModelRegistry
from concierge.store import Database
from concierge.store.tables import chunks, documents, knowledge_bases
from tests.conftest import EMBEDDER, ROOT
from tests.helpers import PARSERS


@pytest.fixture
def org_ids(db: Database) -> tuple[int, int]:
    def make(conn: Any) -> tuple[int, int]:
        return orgs.create(conn, "acme").id, orgs.create(conn, "globex").id

    return db.write_sync(make)


@pytest.fixture
def kb(db: Database, org_ids: tuple[int, int]) -> KnowledgeBase:
    return db.write_sync(
        lambda conn: bases.create(
            conn,
            org_ids[0],
            "Help centre",
            embedding_model=EMBEDDER,
            chunk_tokens=64,
            chunk_overlap=8,
        )
    )


@pytest.fixture
def ingestor(db: Database, registry: ModelRegistry) -> Iterator[Ingestor]:
    embedder = registry.embedder(EMBEDDER)
    sandbox = Sandbox(Limits(max_document_bytes=100_000), PARSERS)
    yield Ingestor(db, embedder, count_tokens=embedder.count_tokens, sandbox=sandbox)
    sandbox.close()


def doc_rows(db: Database, kb_id: int) -> dict[str, Any]:
    rows = db.read_sync(
        lambda conn: conn.execute(
            select(documents).where(documents.c.kb_id == kb_id).order_by(documents.c.id)
        ).all()
    )
    return {r.external_id: r for r in rows}


def chunk_rows(db: Database, kb_id: int) -> list[Any]:
    return db.read_sync(
        lambda conn: conn.execute(
            select(chunks).where(chunks.c.kb_id == kb_id).order_by(chunks.c.id)
        ).all()
    )


LONG = "\n\n".join(
    f"Paragraph {i}. Returns are accepted within thirty days of delivery when the item is "
    f"unused. Refunds for order type {i} go back to the original payment method."
    for i in range(12)
)


def test_knowledge_base_crud_is_per_organisation(db: Database, org_ids: tuple[int, int]) -> None:
    acme, globex = org_ids

    def run(conn: Any) -> None:
        made = bases.create(conn, acme, "Docs", embedding_model=EMBEDDER)
        assert bases.get(conn, acme, "Docs") == made == bases.get(conn, acme, made.id)
        with pytest.raises(Conflict):
            bases.create(conn, acme, "Docs", embedding_model=EMBEDDER)
        bases.create(conn, globex, "Docs", embedding_model=EMBEDDER)  # another org: fine
        with pytest.raises(NotFound):
            bases.get(conn, globex, made.id)  # never another organisation's
        with pytest.raises(NotFound):
            bases.delete_kb(conn, globex, made.id)
        for bad in ("", "  ", "x" * 201, "123", "a\nb"):
            with pytest.raises(InvalidRequest):
                bases.create(conn, acme, bad, embedding_model=EMBEDDER)
        with pytest.raises(InvalidRequest, match="chunk_overlap"):
            bases.create(
                conn, acme, "B", embedding_model=EMBEDDER, chunk_tokens=64, chunk_overlap=40
            )
        assert [k.name for k in bases.list_all(conn, acme)] == ["Docs"]
        bases.delete_kb(conn, acme, made.id)
        assert bases.list_all(conn, acme) == []

    db.write_sync(run)


async def test_ingest_stores_chunks_embeddings_and_a_job(
    db: Database, kb: KnowledgeBase, ingestor: Ingestor
) -> None:
    seen: list[int] = []
    job = await ingestor.ingest(
        kb,
        [
            Source("returns.md", b"# Returns\n\n" + LONG.encode(), filename="returns.md"),
            Source("hours.txt", b"We open at nine.", filename="hours.txt"),
            Source("bad.pdf", b"%PDF-1.7 broken", filename="bad.pdf"),
            Source("empty.txt", b"", filename="empty.txt"),
        ],
        progress=lambda status: seen.append(status.done),
    )
    assert (job.status, job.total, job.done, job.failed, job.skipped) == ("done", 4, 2, 2, 0)
    assert [e["document"] for e in job.errors] == ["bad.pdf", "empty.txt"]
    assert "not a readable PDF" in job.errors[0]["error"] and seen[-1] == 2
    docs = doc_rows(db, kb.id)
    assert set(docs) == {"returns.md", "hours.txt", "bad.pdf", "empty.txt"}
    # The bad ones are recorded as failed, with their error and nothing to search.
    assert (docs["bad.pdf"].status, docs["bad.pdf"].chunk_count) == ("failed", 0)
    assert "not a readable PDF" in docs["bad.pdf"].error
    assert docs["returns.md"].status == "ready" and docs["returns.md"].format == "markdown"
    assert docs["returns.md"].original.startswith(b"# Returns")
    rows = chunk_rows(db, kb.id)
    assert len(rows) == docs["returns.md"].chunk_count + docs["hours.txt"].chunk_count
    assert docs["returns.md"].chunk_count > 3  # 64-token chunks
    returns = [r for r in rows if r.document_id == docs["returns.md"].id]
    assert [r.position for r in returns] == list(range(len(returns)))
    assert all(r.headings == ["Returns"] and r.tokens <= 64 for r in returns)
    vectors = np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4").reshape(len(rows), -1)
    assert vectors.shape[1] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert db.read_sync(lambda conn: get_job(conn, kb.org_id, job.id)) == job
    with pytest.raises(NotFound):
        db.read_sync(lambda conn: get_job(conn, kb.org_id + 1, job.id))


async def test_unchanged_documents_are_skipped_and_changed_ones_replaced(
    db: Database, kb: KnowledgeBase, ingestor: Ingestor
) -> None:
    first = [Source("a.txt", b"Alpha text.", filename="a.txt"), Source("b.txt", b"Beta text.")]
    await ingestor.ingest(kb, first)
    before = {r.document_id: r.id for r in chunk_rows(db, kb.id)}
    version = db.read_sync(lambda conn: bases.get(conn, kb.org_id, kb.id).version)

    again = await ingestor.ingest(kb, first)
    assert (again.done, again.skipped) == (0, 2)
    assert {r.document_id: r.id for r in chunk_rows(db, kb.id)} == before  # untouched

    changed = await ingestor.ingest(kb, [Source("a.txt", b"Alpha, revised.", filename="a.txt")])
    assert (changed.done, changed.skipped) == (1, 0)
    rows = chunk_rows(db, kb.id)
    docs = doc_rows(db, kb.id)
    a_chunks = [r for r in rows if r.document_id == docs["a.txt"].id]
    assert [r.text for r in a_chunks] == ["Alpha, revised."]
    assert a_chunks[0].id not in before.values()  # replaced, not added to
    assert len(rows) == 2
    assert db.read_sync(lambda conn: bases.get(conn, kb.org_id, kb.id).version) > version


async def test_a_corpus_file_ingests_every_good_line(
    db: Database, kb: KnowledgeBase, ingestor: Ingestor
) -> None:
    data = b"\n".join(
        [
            b'{"_id": "d1", "title": "Aspirin", "text": "Aspirin thins the blood."}',
            b'{"title": "no id"}',
            b'{"_id": "d2", "text": "Ibuprofen reduces fever.", "metadata": {"year": 2020}}',
        ]
    )
    sources = [
        Source(r.external_id, record=r, metadata=r.metadata)
        if not isinstance(r, InvalidDocument)
        else Source("corpus.jsonl", error=r)
        for r in iter_jsonl(data, "corpus.jsonl")
    ]
    job = await ingestor.ingest(kb, sources)
    assert (job.done, job.failed) == (2, 1)
    docs = doc_rows(db, kb.id)
    assert docs["d1"].title == "Aspirin" and docs["d2"].metadata == {"year": 2020}
    assert docs["d1"].original is None  # a record has no file


def test_deleting_a_knowledge_base_deletes_its_documents_and_chunks(
    db: Database, kb: KnowledgeBase, ingestor: Ingestor
) -> None:
    import asyncio

    asyncio.run(ingestor.ingest(kb, [Source("a.txt", b"Alpha.")]))
    db.write_sync(lambda conn: bases.delete_kb(conn, kb.org_id, kb.id))
    counts = db.read_sync(
        lambda conn: [
            conn.execute(select(func.count()).select_from(t)).scalar()
            for t in (knowledge_bases, documents, chunks)
        ]
    )
    assert counts == [0, 0, 0]


# -- kill -9 in the middle, then resume -------------------------------------------------------

WORKER = """
import asyncio, json, sys
from pathlib import Path
from concierge.knowledge import bases
from concierge.knowledge.ingest import Ingestor
from concierge.knowledge.sources import Source
from concierge.knowledge.corpus import iter_jsonl
from concierge.knowledge.sandbox import Limits, Sandbox
from concierge.models.minilm import MiniLMEmbeddings
from concierge.models.assets import minilm_dir
from concierge.store import Database
from concierge.config import Settings
from concierge.knowledge.parsers import Parsers
from concierge.plugins import plugin_manager

PARSERS = Parsers.from_plugins(plugin_manager(entry_points=False), Settings())
url, models, kb_id, org_id, path = sys.argv[1:6]
db = Database(url)
embedder = MiniLMEmbeddings("all-minilm-l6-v2", lambda: minilm_dir(Path(models)))
kb = db.read_sync(lambda conn: bases.get(conn, int(org_id), int(kb_id)))
sandbox = Sandbox(Limits(), PARSERS)
ingestor = Ingestor(
    db, embedder, count_tokens=embedder.count_tokens, sandbox=sandbox, batch_documents=4
)
records = list(iter_jsonl(Path(path).read_bytes()))
print("staging", flush=True)
asyncio.run(ingestor.ingest(kb, [Source(r.external_id, record=r) for r in records]))
print("finished", flush=True)
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps(
            {"_id": f"doc{i}", "title": f"Note {i}", "text": LONG.replace("Paragraph", f"N{i}")}
        )
        for i in range(60)
    ]
    path.write_text("\n".join(lines))
    yield path


@pytest.mark.slow
async def test_killed_mid_ingestion_resumes_with_no_missing_or_doubled_chunk(
    db: Database, db_url: str, kb: KnowledgeBase, ingestor: Ingestor, corpus: Path, models_dir: Path
) -> None:
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            db_url,
            str(models_dir),
            str(kb.id),
            str(kb.org_id),
            str(corpus),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ready = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            statuses = db.read_sync(
                lambda conn: dict(
                    conn.execute(
                        select(documents.c.status, func.count())
                        .where(documents.c.kb_id == kb.id)
                        .group_by(documents.c.status)
                    ).all()
                )
            )
            ready = statuses.get("ready", 0)
            if 8 <= ready <= 40:
                break
            time.sleep(0.05)
        assert worker.poll() is None, "the worker finished before it could be killed"
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(30)
        assert worker.stdout is not None
        output = worker.stdout.read().decode()
        worker.stdout.close()
    assert "finished" not in output
    docs = doc_rows(db, kb.id)
    assert 8 <= sum(d.status == "ready" for d in docs.values()) < 60  # really cut in the middle

    await ingestor.process(kb)  # what `concierge kb ingest` does on its next start

    docs = doc_rows(db, kb.id)
    assert len(docs) == 60 and all(d.status == "ready" for d in docs.values())
    rows = chunk_rows(db, kb.id)
    assert len(rows) == sum(d.chunk_count for d in docs.values())
    by_doc: dict[int, list[int]] = {}
    for r in rows:
        by_doc.setdefault(r.document_id, []).append(r.position)
    assert all(sorted(p) == list(range(len(p))) for p in by_doc.values())  # none twice or missing
    expected = await ingestor.embedder.embed(
        [f"Note 5\n{r.text}" for r in rows if r.document_id == docs["doc5"].id][:1]
    )
    stored = np.frombuffer(
        next(r.embedding for r in rows if r.document_id == docs["doc5"].id), "<f4"
    )
    assert float(stored @ expected.vectors[0]) > 0.9999


# -- search ----------------------------------------------------------------------------------

FACTS = {
    "refunds": ("Refunds", "Refunds are paid to the original card within five working days."),
    "shipping": ("Shipping", "Parcels ship from our Berlin warehouse by courier."),
    "hours": ("Opening hours", "The shop opens at nine and closes at six on weekdays."),
    "returns": ("Returns", "Unused items can be sent back within thirty days for money back."),
}


async def test_search_modes_filters_freshness_and_isolation(
    db: Database,
    kb: KnowledgeBase,
    ingestor: Ingestor,
    registry: ModelRegistry,
    org_ids: tuple[int, int],
) -> None:
    from concierge.knowledge.documents import delete as delete_document
    from concierge.knowledge.search import SearchIndex

    sources = [
        Source(key, f"# {title}\n\n{text}".encode(), filename=f"{key}.md", metadata={"topic": key})
        for key, (title, text) in FACTS.items()
    ]
    await ingestor.ingest(kb, sources)
    index = SearchIndex(db)
    embedder = registry.embedder(EMBEDDER)

    async def top(query: str, mode: str = "hybrid", **kw: Any) -> list[str]:
        hits = await index.search(kb.org_id, kb.id, query, embedder, mode=mode, **kw)  # type: ignore[arg-type]
        return [h.external_id for h in hits]

    assert (await top("warehouse courier", "bm25"))[0] == "shipping"
    assert (await top("when do you open in the morning?", "vector"))[0] == "hours"
    assert (await top("how do I get my money back", "hybrid"))[0] in {"refunds", "returns"}
    assert (await top("money back", "convex", alpha=0.3))[0] in {"refunds", "returns"}
    assert await top("money back", filters={"topic": "hours"}) == ["hours"]
    assert await top("zzzz qqqq", "bm25") == []  # no term matches: nothing, not noise
    hits = await index.search(kb.org_id, kb.id, "courier", embedder, k=1)
    assert hits[0].headings == ("Shipping",) and hits[0].location == "Shipping"
    assert hits[0].title == "Shipping" and "Berlin" in hits[0].text

    # Changes are seen at once: a new document, a deleted one.
    await ingestor.ingest(kb, [Source("gift", b"Gift cards never expire.", filename="gift.txt")])
    assert (await top("gift cards", "bm25"))[0] == "gift"
    db.write_sync(lambda conn: delete_document(conn, kb, "shipping"))
    assert "shipping" not in await top("warehouse courier")

    # Another organisation cannot search it, whatever it knows of its id.
    with pytest.raises(NotFound):
        await index.search(org_ids[1], kb.id, "refunds", embedder)
    for bad in ({"k": 0}, {"mode": "fuzzy"}, {"alpha": 2.0}):
        with pytest.raises(InvalidRequest):
            await index.search(kb.org_id, kb.id, "x", embedder, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        await index.search(kb.org_id, kb.id, "   ", embedder)


async def test_a_document_without_a_telling_name_keeps_its_format(
    concierge: Concierge,
) -> None:
    """Re-parsing a stored original uses the format found at staging, not the source name
    (a Markdown file given under another name once lost its headings)."""
    kb = await concierge.knowledge.create(1, "named")
    data = b"# Shipping\n\n## Delivery times\n\nStandard shipping takes 3 to 5 working days.\n"
    source = Source("ship", data, filename="ship.md", source="imported from the old site")
    await ingest_now(concierge.knowledge, kb, [source])
    hits = await concierge.knowledge.search(kb, "delivery times", k=1)
    assert hits[0].headings == ("Shipping", "Delivery times")
    assert not hits[0].text.startswith("#")
