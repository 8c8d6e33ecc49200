"""Knowledge-base retrieval on SciFact: quality, ingestion speed, query latency, and scale.

    .venv/bin/python benchmarks/retrieval_scifact.py [--database sqlite|postgresql|both]
        [--scale-chunks 100000] [--skip-scale] [--limit-docs N] [--embedding-model ID]

Reads ../shared/data/scifact (BEIR layout: corpus.jsonl, queries-train.jsonl,
qrels/train.tsv); skips with a message where that folder is absent. For each database (a
fresh SQLite file, or a fresh database on the PostgreSQL at 127.0.0.1:5432) it

1. ingests the whole corpus with the production code path (``Knowledge`` + ``Ingestor``:
   parse, chunk, embed with the knowledge base's model — by default the embedded
   all-MiniLM-L6-v2 in its int8 form — write) and times it;
2. runs every train query that has judgements in each mode and scores the document rankings:
   nDCG@10 and Recall@100 (binary relevance, the BEIR definitions). ``convex`` is scored at
   a grid of alpha values and with alpha chosen by 2-fold cross-validation over the queries
   (tuned on one half, scored on the other), so the figure is not tuned on what it reports;
3. times single queries end to end (embedding the query included), p50 and p95;
4. scale: adds synthetic documents until the knowledge base holds ``--scale-chunks`` chunks
   (random unit vectors, text drawn from the corpus vocabulary), then times queries again and
   reports the database and in-memory index sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from harness import ROOT, save

DATA = ROOT.parent / "shared" / "data" / "scifact"
PG_SERVER = os.environ.get(
    "CONCIERGE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# -- metrics --------------------------------------------------------------------------------


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    hits = {d for d in ranked[:k] if relevant.get(d, 0) > 0}
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(hits) / len(wanted) if wanted else 0.0


def load_queries() -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (DATA / "qrels" / "train.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    queries = []
    with (DATA / "queries-train.jsonl").open() as fh:
        for line in fh:
            item = json.loads(line)
            if str(item["_id"]) in qrels:
                queries.append((str(item["_id"]), item["text"]))
    return queries, qrels


# -- databases ------------------------------------------------------------------------------


def database_url(kind: str, tmp: Path) -> tuple[str, Any]:
    """A fresh database and a function that drops it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    from sqlalchemy import create_engine, text

    name = f"concierge_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{PG_SERVER}/{name}", drop


def database_bytes(knowledge: Any, kind: str) -> int:
    from sqlalchemy import text

    if kind == "sqlite":
        path = Path(knowledge.db.engine.url.database)
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return int(
        knowledge.db.read_sync(
            lambda conn: conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        )
    )


# -- the run --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def timed_queries(knowledge: Any, kb: Any, texts: list[str], mode: str) -> list[float]:
    await knowledge.search(kb, texts[0], mode=mode)  # the index is built on first use
    times = []
    for text in texts:
        start = time.perf_counter()
        await knowledge.search(kb, text, k=10, mode=mode)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def scale_up(knowledge: Any, kb: Any, target: int, vocabulary: list[str]) -> float:
    """Add synthetic documents (one chunk each) until ``kb`` has ``target`` chunks."""
    from datetime import UTC, datetime

    from sqlalchemy import func, insert, select

    from concierge.knowledge import bases
    from concierge.store.tables import chunks, documents

    have = knowledge.db.read_sync(
        lambda conn: conn.execute(select(func.count()).where(chunks.c.kb_id == kb.id)).scalar()
    )
    rng = np.random.default_rng(7)
    words = np.array(vocabulary, dtype=object)
    start = time.perf_counter()
    now = datetime.now(UTC)
    batch = 2000
    for first in range(0, max(0, target - have), batch):
        n = min(batch, target - have - first)
        texts = [" ".join(words[row]) for row in rng.integers(0, len(words), size=(n, 120))]
        vectors = rng.standard_normal((n, 384)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        def write(
            conn: Any, texts: list[str] = texts, vectors: Any = vectors, first: int = first
        ) -> None:
            names = [f"synthetic-{first + i}" for i in range(len(texts))]
            conn.execute(
                insert(documents),
                [
                    {
                        "kb_id": kb.id,
                        "org_id": kb.org_id,
                        "external_id": name,
                        "title": None,
                        "format": "text",
                        "content_hash": "0" * 64,
                        "size_bytes": len(text),
                        "text": text,
                        "metadata": {"synthetic": True},
                        "status": "ready",
                        "chunk_count": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for name, text in zip(names, texts, strict=True)
                ],
            )
            found = dict(
                conn.execute(
                    select(documents.c.external_id, documents.c.id).where(
                        documents.c.kb_id == kb.id, documents.c.external_id.in_(names)
                    )
                ).all()
            )
            ids = [found[name] for name in names]
            conn.execute(
                insert(chunks),
                [
                    {
                        "document_id": doc_id,
                        "kb_id": kb.id,
                        "org_id": kb.org_id,
                        "position": 0,
                        "text": text,
                        "headings": [],
                        "tokens": 120,
                        "embedding": vector.tobytes(),
                    }
                    for doc_id, text, vector in zip(ids, texts, vectors, strict=True)
                ],
            )
            bases.bump_version(conn, kb.id)

        await knowledge.db.write(write)
    return time.perf_counter() - start


async def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from concierge.config import Settings
    from concierge.knowledge.parsers import Parsers
    from concierge.knowledge.service import Knowledge, ingest_now
    from concierge.knowledge.sources import corpus_sources
    from concierge.models.registry import ModelRegistry
    from concierge.plugins import plugin_manager
    from concierge.store import Database, migrate

    tmp = Path(tempfile.mkdtemp(prefix="scifact-"))
    url, drop = database_url(kind, tmp)
    settings = Settings(
        data_dir=tmp,
        database_url=url,
        models_dir=ROOT / "data" / "models",
        llm_enabled=False,
        **({"knowledge_batch_documents": args.batch_documents} if args.batch_documents else {}),
    )
    db = Database(url)
    pm = plugin_manager(entry_points=False)
    registry = ModelRegistry.from_plugins(pm, settings)
    result: dict[str, Any] = {"database": kind}
    try:
        migrate.upgrade(db)
        knowledge = Knowledge(db, registry, settings, parsers=Parsers.from_plugins(pm, settings))
        from concierge import orgs

        org = db.write_sync(lambda conn: orgs.ensure(conn, "bench"))
        options = {"embedding_model": args.embedding_model} if args.embedding_model else {}
        kb = await knowledge.create(org.id, "scifact", **options)
        result["embedding_model"] = kb.embedding_model
        data = (DATA / "corpus.jsonl").read_bytes()
        if args.limit_docs:
            data = b"\n".join(data.splitlines()[: args.limit_docs]) + b"\n"
        sources = corpus_sources(data, "corpus.jsonl")
        await asyncio.to_thread(registry.embedder(kb.embedding_model).load)  # type: ignore[attr-defined]
        start = time.perf_counter()
        job = await ingest_now(knowledge, kb, sources)
        seconds = time.perf_counter() - start
        from sqlalchemy import func, select

        from concierge.store.tables import chunks

        n_chunks = db.read_sync(
            lambda conn: conn.execute(select(func.count()).where(chunks.c.kb_id == kb.id)).scalar()
        )
        result["ingestion"] = {
            "documents": job.done,
            "failed": job.failed,
            "chunks": n_chunks,
            "seconds": round(seconds, 1),
            "documents_per_s": round(job.done / seconds, 1),
            "chunks_per_s": round(n_chunks / seconds, 1),
            "chunk_tokens": kb.chunk_tokens,
            "chunk_overlap": kb.chunk_overlap,
        }
        print(f"[{kind}] ingestion: {result['ingestion']}", flush=True)

        queries, qrels = load_queries()
        texts = [t for _q, t in queries]
        quality: dict[str, Any] = {}
        per_query: dict[str, list[float]] = {}
        for mode in ("bm25", "vector", "hybrid"):
            runs = await knowledge.search_documents(kb, texts, k=100, mode=mode)  # type: ignore[arg-type]
            ranked = [[h.external_id for h in hits] for hits in runs]
            nd = [ndcg_at(r, qrels[q]) for (q, _t), r in zip(queries, ranked, strict=True)]
            rc = [recall_at(r, qrels[q]) for (q, _t), r in zip(queries, ranked, strict=True)]
            per_query[mode] = nd
            quality[mode] = {"ndcg@10": statistics.mean(nd), "recall@100": statistics.mean(rc)}
            print(f"[{kind}] {mode}: {quality[mode]}", flush=True)
        grid = {}
        for alpha in ALPHAS:
            runs = await knowledge.search_documents(kb, texts, k=100, mode="convex", alpha=alpha)
            ranked = [[h.external_id for h in hits] for hits in runs]
            nd = [ndcg_at(r, qrels[q]) for (q, _t), r in zip(queries, ranked, strict=True)]
            rc = [recall_at(r, qrels[q]) for (q, _t), r in zip(queries, ranked, strict=True)]
            grid[alpha] = (nd, rc)
        folds = [[i for i in range(len(queries)) if i % 2 == f] for f in (0, 1)]
        cv_nd, cv_rc, chosen = [], [], []
        for tune, score in ((folds[0], folds[1]), (folds[1], folds[0])):
            best = max(ALPHAS, key=lambda a: statistics.mean(grid[a][0][i] for i in tune))
            chosen.append(best)
            cv_nd += [grid[best][0][i] for i in score]
            cv_rc += [grid[best][1][i] for i in score]
        quality["convex (alpha by 2-fold CV)"] = {
            "ndcg@10": statistics.mean(cv_nd),
            "recall@100": statistics.mean(cv_rc),
            "alphas": chosen,
        }
        quality["convex grid"] = {str(a): round(statistics.mean(grid[a][0]), 4) for a in ALPHAS}
        print(f"[{kind}] convex: {quality['convex (alpha by 2-fold CV)']}", flush=True)
        result["quality"] = quality
        result["queries"] = len(queries)

        latency = {}
        for mode in ("bm25", "vector", "hybrid"):
            times = await timed_queries(knowledge, kb, texts[:300], mode)
            latency[mode] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95)}
        result["latency"] = latency
        result["database_mb"] = round(database_bytes(knowledge, kind) / 1e6, 1)
        print(f"[{kind}] latency: {latency}", flush=True)

        if not args.skip_scale:
            vocabulary = sorted({w for t in texts for w in t.lower().split() if w.isalpha()})
            vocabulary += [w for s in sources[:2000] if s.record for w in s.record.text.split()]
            added = await scale_up(knowledge, kb, args.scale_chunks, vocabulary)
            build_start = time.perf_counter()
            await knowledge.search(kb, "warm-up", mode="hybrid")
            build = time.perf_counter() - build_start
            index = knowledge.index._indexes[kb.id]
            times = {
                m: await timed_queries(knowledge, kb, texts[:200], m)
                for m in ("bm25", "vector", "hybrid")
            }
            n_chunks = len(index.rows)
            result["scale"] = {
                "chunks": n_chunks,
                "insert_seconds": round(added, 1),
                "index_build_seconds": round(build, 1),
                "latency": {
                    m: {"p50_ms": percentile(t, 50), "p95_ms": percentile(t, 95)}
                    for m, t in times.items()
                },
                "database_mb": round(database_bytes(knowledge, kind) / 1e6, 1),
                "vector_matrix_mb": round(index.vectors.nbytes / 1e6, 1),
            }
            print(f"[{kind}] scale: {result['scale']}", flush=True)
    finally:
        if "knowledge" in locals():
            await knowledge.close()
        await registry.aclose()
        db.close()
        drop()
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | mode | nDCG@10 | Recall@100 |",
        "|---|---|---|---|",
    ]
    for r in results:
        for mode, q in r["quality"].items():
            if mode == "convex grid":
                continue
            lines.append(
                f"| {r['database']} | {mode} | {q['ndcg@10']:.3f} | {q['recall@100']:.3f} |"
            )
    lines += [
        "",
        "| database | documents | chunks | ingestion s | chunks/s | query p50 / p95 ms "
        "(bm25, vector, hybrid) | database MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ing, lat = r["ingestion"], r["latency"]
        lat_text = ", ".join(
            f"{lat[m]['p50_ms']:.1f} / {lat[m]['p95_ms']:.1f}" for m in ("bm25", "vector", "hybrid")
        )
        lines.append(
            f"| {r['database']} | {ing['documents']} | {ing['chunks']} | {ing['seconds']} | "
            f"{ing['chunks_per_s']} | {lat_text} | {r['database_mb']} |"
        )
    scaled = [r for r in results if "scale" in r]
    if scaled:
        lines += [
            "",
            "| database | chunks | query p50 / p95 ms (bm25, vector, hybrid) | index build s | "
            "database MB | vector matrix MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in scaled:
            s = r["scale"]
            lat_text = ", ".join(
                f"{s['latency'][m]['p50_ms']:.1f} / {s['latency'][m]['p95_ms']:.1f}"
                for m in ("bm25", "vector", "hybrid")
            )
            lines.append(
                f"| {r['database']} | {s['chunks']} | {lat_text} | {s['index_build_seconds']} | "
                f"{s['database_mb']} | {s['vector_matrix_mb']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--scale-chunks", type=int, default=100_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--limit-docs", type=int, help="Ingest only the first N documents.")
    parser.add_argument(
        "--embedding-model", help="Embedding model of the knowledge base (default the server's)."
    )
    parser.add_argument(
        "--batch-documents", type=int, help="Documents per ingestion batch (default the server's)."
    )
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").exists():
        print(f"SciFact not found at {DATA}: skipping (see ../shared/data/README.md).")
        return
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [asyncio.run(run(kind, args)) for kind in kinds]
    summary = table(results)
    print(summary)
    save("retrieval_scifact", {"results": results, "summary": summary, "cores": os.cpu_count()})


if __name__ == "__main__":
    sys.exit(main())
