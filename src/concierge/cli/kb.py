"""``concierge kb``: knowledge bases from the terminal (create, ingest, search, list, delete).

The commands work on the database directly, in this process, with the embedding model of the
knowledge base: ``kb ingest`` on a laptop needs no server running, and a server running against
the same database sees the documents at once.
"""

from __future__ import annotations

import asyncio
import glob
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from concierge.cli import Context, pass_context, print_table
from concierge.errors import InvalidRequest
from concierge.knowledge import bases, documents
from concierge.knowledge.jobs import JobStatus
from concierge.knowledge.parsers import Parsers
from concierge.knowledge.search import MODES, Hit, Mode
from concierge.knowledge.service import Knowledge, ingest_now
from concierge.knowledge.sources import Source, corpus_sources
from concierge.models.registry import ModelRegistry
from concierge.orgs import DEFAULT_ORG
from concierge.plugins import plugin_manager
from concierge.store import Database, migrate

# What a folder is searched for (other files in it are left alone).
EXTENSIONS = {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".text", ".jsonl"}

org_option = click.option(
    "--org", "org_slug", default=DEFAULT_ORG, show_default=True, help="Organisation slug."
)
kb_option = click.option("--kb", "kb_ref", required=True, help="Knowledge base name or id.")


@click.group("kb")
def command() -> None:
    """Manage knowledge bases: create, ingest documents, search."""


@contextmanager
def open_knowledge(ctx: Context) -> Iterator[Knowledge]:
    settings = ctx.settings()
    db = Database(settings.resolved_database_url)
    pm = plugin_manager()
    registry = ModelRegistry.from_plugins(pm, settings)
    knowledge = Knowledge(db, registry, settings, parsers=Parsers.from_plugins(pm, settings))
    try:
        migrate.upgrade(db)
        yield knowledge
    finally:
        knowledge.sandbox.close()  # the document parser processes
        asyncio.run(registry.aclose())
        db.close()


def _org_id(knowledge: Knowledge, slug: str) -> int:
    from concierge import orgs

    if slug == DEFAULT_ORG:  # exists once a server has started; the CLI may come first
        return knowledge.db.write_sync(
            lambda conn: orgs.ensure(conn, DEFAULT_ORG, "Default organisation")
        ).id
    return knowledge.db.read_sync(lambda conn: orgs.get(conn, slug)).id


@command.command("create")
@click.argument("name")
@org_option
@click.option("--description", help="What the knowledge base holds.")
@click.option("--chunk-tokens", type=click.IntRange(32, 8192), help="Chunk size in tokens.")
@click.option("--chunk-overlap", type=click.IntRange(0, 4000), help="Overlap in tokens.")
@click.option("--embedding-model", help="Embedding model (default: the configured one).")
@pass_context
def create(
    ctx: Context,
    name: str,
    org_slug: str,
    description: str | None,
    chunk_tokens: int | None,
    chunk_overlap: int | None,
    embedding_model: str | None,
) -> None:
    """Create the knowledge base NAME."""
    options: dict[str, Any] = {"description": description, "embedding_model": embedding_model}
    if chunk_tokens is not None:
        options["chunk_tokens"] = chunk_tokens
    if chunk_overlap is not None:
        options["chunk_overlap"] = chunk_overlap
    with open_knowledge(ctx) as knowledge:
        org_id = _org_id(knowledge, org_slug)
        kb = asyncio.run(knowledge.create(org_id, name, **options))
    click.echo(
        f"created knowledge base {kb.id} '{kb.name}' ({kb.embedding_model}, "
        f"{kb.chunk_tokens}-token chunks, overlap {kb.chunk_overlap})"
    )


@command.command("list")
@org_option
@pass_context
def list_kbs(ctx: Context, org_slug: str) -> None:
    """List knowledge bases with their document counts."""

    with open_knowledge(ctx) as knowledge:
        org_id = _org_id(knowledge, org_slug)

        def read(conn: Any) -> list[tuple[bases.KnowledgeBase, dict[str, int]]]:
            return [(kb, documents.counts(conn, kb)) for kb in bases.list_all(conn, org_id)]

        rows = knowledge.db.read_sync(read)
    table = Table("id", "name", "ready", "pending", "failed", "MB", "model", "chunks (overlap)")
    for kb, counts in rows:
        table.add_row(
            str(kb.id),
            kb.name,
            str(counts["ready"]),
            str(counts["pending"]),
            str(counts["failed"]),
            f"{counts['bytes'] / 1e6:.1f}",
            kb.embedding_model,
            f"{kb.chunk_tokens} ({kb.chunk_overlap})",
        )
    print_table(table)


@command.command("delete")
@click.argument("ref")
@org_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def delete(ctx: Context, ref: str, org_slug: str, yes: bool) -> None:
    """Delete the knowledge base REF (name or id) with all its documents."""
    with open_knowledge(ctx) as knowledge:
        org_id = _org_id(knowledge, org_slug)
        kb = asyncio.run(knowledge.get(org_id, ref))
        if not yes:
            click.confirm(f"Delete knowledge base '{kb.name}' and all its documents?", abort=True)
        knowledge.db.write_sync(lambda conn: bases.delete_kb(conn, org_id, kb.id))
    click.echo(f"deleted knowledge base {kb.id} '{kb.name}'")


# -- ingest ---------------------------------------------------------------------------------


def collect(paths: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Files to ingest with their document ids: a file given by name is its name; a file found
    in a folder is its path relative to that folder; glob patterns are expanded (``**`` too)."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        matches = sorted(glob.glob(raw, recursive=True)) if glob.has_magic(raw) else [raw]
        if not matches:
            raise InvalidRequest(f"no file matches {raw}")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for item in sorted(path.rglob("*")):
                    if item.is_file() and item.suffix.lower() in EXTENSIONS:
                        found.append((item, item.relative_to(path).as_posix()))
            elif path.is_file():
                found.append((path, path.name))
            else:
                raise InvalidRequest(f"{raw}: no such file or folder")
    ids = [ident for _path, ident in found]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InvalidRequest(
            f"two files would get the same document id ({', '.join(dupes[:3])}); "
            "ingest their folders instead of the files, or one at a time"
        )
    return found


def _sources(files: list[tuple[Path, str]], metadata: dict[str, Any]) -> list[Source]:
    sources: list[Source] = []
    for path, ident in files:
        data = path.read_bytes()
        if path.suffix.lower() == ".jsonl":
            sources += corpus_sources(data, path.name, metadata)
        else:
            sources.append(
                Source(ident, data, filename=path.name, source=str(path), metadata=dict(metadata))
            )
    return sources


@command.command("ingest")
@kb_option
@org_option
@click.argument("paths", nargs=-1, required=True)
@click.option("--metadata", help="A JSON object of metadata for every document.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_context
def ingest(
    ctx: Context,
    kb_ref: str,
    org_slug: str,
    paths: tuple[str, ...],
    metadata: str | None,
    quiet: bool,
) -> None:
    """Add or update documents from PATHS: files, folders, globs, and .jsonl corpora (one
    document per line with _id, title, text, metadata). Unchanged documents are skipped;
    work left by an interrupted run is finished first. Exits 3 if some documents failed."""
    extra: dict[str, Any] = {}
    if metadata:
        try:
            extra = json.loads(metadata)
        except json.JSONDecodeError:
            raise InvalidRequest("--metadata must be a JSON object") from None
        if not isinstance(extra, dict):
            raise InvalidRequest("--metadata must be a JSON object")
    files = collect(paths)
    with open_knowledge(ctx) as knowledge:
        kb = asyncio.run(knowledge.get(_org_id(knowledge, org_slug), kb_ref))
        sources = _sources(files, extra)
        console = Console(stderr=True)
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or not console.is_terminal,
        ) as bar:
            task = bar.add_task(f"Ingesting into {kb.name}", total=len(sources), detail="")

            def progress(status: JobStatus) -> None:
                if status.total != len(sources):
                    return  # the leftovers of an earlier run
                handled = status.done + status.failed + status.skipped
                detail = f"{status.failed} failed" if status.failed else ""
                bar.update(task, completed=handled, detail=detail)

            job = asyncio.run(ingest_now(knowledge, kb, sources, progress))
        elapsed = time.perf_counter() - started
        chunks = knowledge.db.read_sync(lambda conn: documents.chunk_count(conn, kb))
    click.echo(
        f"{job.done} ingested, {job.skipped} unchanged, {job.failed} failed "
        f"in {elapsed:.1f} s; the knowledge base has {chunks} chunks"
    )
    for error in job.errors[:50]:
        click.secho(f"  {error['document']}: {error['error']}", fg="yellow", err=True)
    if len(job.errors) > 50:
        click.secho(f"  ... and {len(job.errors) - 50} more", fg="yellow", err=True)
    if job.failed:
        sys.exit(3)


# -- search ---------------------------------------------------------------------------------


def _read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, text) of each line of a BEIR queries file ({"_id", "text"})."""
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            queries.append((str(item["_id"]), str(item["text"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InvalidRequest(
                f"{path.name} line {number}: expected a JSON object with _id and text"
            ) from None
    return queries


@command.command("search")
@kb_option
@org_option
@click.argument("query", required=False)
@click.option("--k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--filter", "filters", multiple=True, help="KEY=VALUE metadata filter (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON Lines file of queries (_id, text) to run in one batch.",
)
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["trec", "jsonl"]),
    default="trec",
    show_default=True,
    help="With --queries: TREC run lines (qid Q0 docid rank score tag) or JSON Lines.",
)
@click.option("--tag", default="concierge", show_default=True, help="Run tag (TREC format).")
@click.option("--output", type=click.File("w"), default="-", help="Where to write (--queries).")
@pass_context
def search(
    ctx: Context,
    kb_ref: str,
    org_slug: str,
    query: str | None,
    k: int,
    mode: str,
    filters: tuple[str, ...],
    as_json: bool,
    queries_file: Path | None,
    out_format: str,
    tag: str,
    output: TextIO,
) -> None:
    """Search for QUERY, or run every query of --queries (one ranked list of documents each)."""
    if (query is None) == (queries_file is None):
        raise InvalidRequest("give either a QUERY or --queries FILE")
    where: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--filter takes KEY=VALUE, not {item!r}")
        where[key] = value
    search_mode = cast(Mode, mode)
    with open_knowledge(ctx) as knowledge:
        kb = asyncio.run(knowledge.get(_org_id(knowledge, org_slug), kb_ref))
        if queries_file is not None:
            queries = _read_queries(queries_file)
            runs = asyncio.run(
                knowledge.search_documents(
                    kb,
                    [text for _id, text in queries],
                    k=k,
                    mode=search_mode,
                    filters=where,
                )
            )
            for (qid, text), hits in zip(queries, runs, strict=True):
                _write_run(output, qid, text, hits, out_format, tag)
            return
        assert query is not None
        hits = asyncio.run(knowledge.search(kb, query, k=k, mode=search_mode, filters=where))
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    table = Table("#", "score", "document", "where", "text")
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.text.split())
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            hit.external_id if not hit.title else f"{hit.title} ({hit.external_id})",
            hit.location or "",
            snippet[:160] + ("…" if len(snippet) > 160 else ""),
        )
    print_table(table)


def _write_run(
    output: TextIO, qid: str, text: str, hits: list[Hit], out_format: str, tag: str
) -> None:
    if out_format == "trec":
        for rank, hit in enumerate(hits, start=1):
            output.write(f"{qid} Q0 {hit.external_id} {rank} {hit.score:.6f} {tag}\n")
    else:
        row = {"_id": qid, "query": text, "hits": [h.to_dict() for h in hits]}
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
