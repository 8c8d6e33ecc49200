"""Migrations and storage guarantees, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from concierge.metering.ledger import UsageRecord, write_records
from concierge.store import Database, migrate
from concierge.store.tables import metadata

EXPECTED = {
    "organizations": {"id", "slug", "name", "created_at"},
    "api_keys": {
        "id",
        "org_id",
        "name",
        "prefix",
        "key_hash",
        "scopes",
        "requests_per_minute",
        "tokens_per_minute",
        "tokens_per_day",
        "tokens_per_month",
        "created_at",
        "revoked_at",
    },
    "usage_records": {
        "id",
        "request_id",
        "created_at",
        "org_id",
        "api_key_id",
        "endpoint",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "status",
        "error_code",
        "detail",
    },
    "knowledge_bases": {
        "id",
        "org_id",
        "name",
        "description",
        "embedding_model",
        "chunk_tokens",
        "chunk_overlap",
        "version",
        "created_at",
        "metadata",
    },
    "documents": {
        "id",
        "kb_id",
        "org_id",
        "external_id",
        "title",
        "source",
        "content_type",
        "format",
        "content_hash",
        "size_bytes",
        "original",
        "text",
        "metadata",
        "status",
        "error",
        "chunk_count",
        "job_id",
        "created_at",
        "updated_at",
    },
    "chunks": {
        "id",
        "document_id",
        "kb_id",
        "org_id",
        "position",
        "text",
        "headings",
        "page_start",
        "page_end",
        "tokens",
        "embedding",
    },
    "ingestion_jobs": {
        "id",
        "kb_id",
        "org_id",
        "status",
        "total",
        "done",
        "failed",
        "skipped",
        "errors",
        "created_at",
        "finished_at",
    },
    "files": {
        "id",
        "public_id",
        "org_id",
        "filename",
        "purpose",
        "content_type",
        "bytes",
        "content",
        "created_at",
    },
    "assistants": {
        "id",
        "org_id",
        "name",
        "version",
        "config",
        "created_at",
        "updated_at",
        "archived_at",
    },
    "assistant_versions": {
        "id",
        "assistant_id",
        "version",
        "config",
        "created_at",
    },
    "end_users": {
        "id",
        "org_id",
        "channel",
        "external_id",
        "created_at",
        "last_seen_at",
    },
    "conversations": {
        "id",
        "org_id",
        "assistant_id",
        "end_user_id",
        "channel",
        "status",
        "handoff_reason",
        "handoff_at",
        "created_at",
        "updated_at",
    },
    "turns": {
        "id",
        "conversation_id",
        "org_id",
        "role",
        "content",
        "citations",
        "tool_calls",
        "assistant_version",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "status",
        "error",
        "author",
        "governance",
        "created_at",
        "updated_at",
    },
    "memories": {
        "id",
        "org_id",
        "assistant_id",
        "end_user_id",
        "fact",
        "turn_id",
        "created_at",
    },
    "server_secrets": {"name", "value", "created_at"},
    "audit_log": {
        "id",
        "seq",
        "org_id",
        "actor",
        "action",
        "target",
        "details",
        "created_at",
        "prev_hash",
        "hash",
    },
    "audit_head": {"id", "seq", "hash"},
    "org_policies": {"org_id", "policy", "version", "updated_at", "updated_by"},
    "consents": {
        "id",
        "org_id",
        "end_user_id",
        "purpose",
        "granted",
        "channel",
        "text_version",
        "recorded_by",
        "created_at",
    },
    "reports": {
        "id",
        "org_id",
        "conversation_id",
        "turn_id",
        "source",
        "category",
        "reason",
        "status",
        "resolution",
        "note",
        "created_at",
        "resolved_at",
        "resolved_by",
    },
    "legal_holds": {
        "id",
        "org_id",
        "end_user_id",
        "conversation_id",
        "reason",
        "created_at",
        "created_by",
        "released_at",
        "released_by",
    },
    "scheduled_jobs": {"name", "next_run_at", "last_run_at", "last_status", "last_result"},
    "ingestion_items": {
        "id",
        "job_id",
        "kb_id",
        "external_id",
        "data",
        "record",
        "url",
        "filename",
        "content_type",
        "source",
        "metadata",
        "error",
        "size",
    },
    "channels": {
        "id",
        "org_id",
        "assistant_id",
        "type",
        "name",
        "config",
        "secrets",
        "status",
        "created_at",
        "updated_at",
    },
    "channel_threads": {
        "id",
        "channel_id",
        "org_id",
        "sender",
        "conversation_id",
        "last_inbound_at",
        "locked_until",
        "locked_by",
        "send_locked_until",
        "send_locked_by",
    },
    "channel_events": {
        "id",
        "channel_id",
        "org_id",
        "thread_id",
        "key",
        "kind",
        "payload",
        "status",
        "attempts",
        "available_at",
        "error",
        "turn_id",
        "received_at",
        "processed_at",
    },
    "channel_outbox": {
        "id",
        "channel_id",
        "org_id",
        "thread_id",
        "conversation_id",
        "turn_id",
        "dedupe",
        "payload",
        "status",
        "attempts",
        "available_at",
        "platform_id",
        "error",
        "error_code",
        "created_at",
        "sent_at",
        "updated_at",
    },
    "channel_media": {
        "id",
        "org_id",
        "channel_id",
        "thread_id",
        "turn_id",
        "kind",
        "mime_type",
        "filename",
        "size",
        "sha256",
        "data",
        "created_at",
    },
    "inbox_agents": {
        "id",
        "org_id",
        "account",
        "name",
        "capacity",
        "available",
        "last_assigned_at",
        "created_at",
    },
    "inbox_teams": {"id", "org_id", "name", "assignment", "created_at"},
    "inbox_team_members": {"team_id", "agent_id"},
    "inbox_items": {
        "conversation_id",
        "org_id",
        "channel",
        "assistant_id",
        "status",
        "snoozed_until",
        "assignee_id",
        "team_id",
        "labels",
        "opened_at",
        "first_response_at",
        "resolved_at",
        "first_response_due",
        "resolution_due",
        "breaches",
        "out_of_hours",
        "csat_score",
        "csat_at",
        "updated_at",
    },
    "inbox_notes": {"id", "org_id", "conversation_id", "author", "text", "created_at"},
    "inbox_canned": {"id", "org_id", "shortcut", "text", "created_at", "updated_at"},
    "inbox_settings": {"org_id", "config", "updated_at"},
    "inbox_cursor": {"id", "turn_id"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return str(request.getfixturevalue("fresh_pg_url"))


def columns(db: Database) -> dict[str, set[str]]:
    insp = inspect(db.engine)
    return {
        t: {c["name"] for c in insp.get_columns(t)}
        for t in insp.get_table_names()
        if t != "alembic_version"
    }


def test_upgrade_from_empty_downgrade_and_again(empty_url: str) -> None:
    db = Database(empty_url, pooled=False)
    assert migrate.current_revision(db) is None
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision()
    assert columns(db) == EXPECTED
    assert set(EXPECTED) == {t.name for t in metadata.sorted_tables}  # models match migrations
    migrate.downgrade(db, "base")
    assert columns(db) == {}
    migrate.upgrade(db)  # and back up: downgrade left nothing behind
    assert columns(db) == EXPECTED
    with db.engine.connect() as conn:  # and the migrations build exactly what tables.py says
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    db.close()


def test_key_scopes_are_migrated_to_what_each_key_was_for(empty_url: str) -> None:
    db = Database(empty_url, pooled=False)
    migrate.upgrade(db, "0006")
    now = datetime.now(UTC).isoformat()
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO organizations (id, slug, name, created_at) VALUES (:i, :s, :s, :t)"),
            [{"i": 1, "s": "default", "t": now}, {"i": 2, "s": "acme", "t": now}],
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, created_at) "
                "VALUES (:i, :o, 'k', 'p', :h, :s, :t)"
            ),
            [
                {"i": i, "o": org, "h": f"h{i}", "s": scopes, "t": now}
                for i, org, scopes in [
                    (1, 1, "admin"),
                    (2, 2, "admin"),
                    (3, 2, "inference"),
                    (4, 2, "widget"),
                    (5, 1, "admin,inference"),
                ]
            ],
        )
    migrate.upgrade(db)

    def scopes() -> dict[int, str]:
        with db.engine.connect() as conn:
            return dict(conn.execute(text("SELECT id, scopes FROM api_keys ORDER BY id")).all())

    assert scopes() == {
        1: "platform",  # ran the installation
        2: "admin",  # now of its own organisation only
        3: "inference,knowledge",  # keeps its knowledge, loses assistants and the queues
        4: "widget",
        5: "inference,knowledge,platform",
    }
    migrate.downgrade(db, "0006")
    assert scopes() == {1: "admin", 2: "admin", 3: "inference", 4: "widget", 5: "admin,inference"}
    db.close()


def _record(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id, datetime.now(UTC), None, None, "chat.completions", "m", 1, 2, 3.0, 200
    )


def test_usage_ledger_is_append_only(db: Database) -> None:
    db.write_sync(lambda conn: write_records(conn, [_record("a"), _record("b")]))
    for statement in ("UPDATE usage_records SET prompt_tokens = 0", "DELETE FROM usage_records"):
        with pytest.raises(DatabaseError, match="append-only"):
            db.write_sync(lambda conn, s=statement: conn.execute(text(s)))
    count = db.read_sync(lambda c: c.execute(text("SELECT count(*) FROM usage_records")).scalar())
    assert count == 2


def test_a_record_is_never_counted_twice(db: Database) -> None:
    db.write_sync(lambda conn: write_records(conn, [_record("a")]))
    db.write_sync(lambda conn: write_records(conn, [_record("a"), _record("b")]))  # a retried batch
    ids = db.read_sync(
        lambda c: c.execute(text("SELECT request_id FROM usage_records")).scalars().all()
    )
    assert sorted(ids) == ["a", "b"]


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/wal.db")
    mode = db.read_sync(lambda c: c.execute(text("PRAGMA journal_mode")).scalar())
    assert mode == "wal"
    db.close()


def test_failed_write_changes_nothing(db: Database) -> None:
    def half(conn):  # type: ignore[no-untyped-def]
        write_records(conn, [_record("x")])
        raise RuntimeError("crash mid-transaction")

    with pytest.raises(RuntimeError):
        db.write_sync(half)
    assert (
        db.read_sync(lambda c: c.execute(text("SELECT count(*) FROM usage_records")).scalar()) == 0
    )


async def test_a_refused_record_does_not_block_the_ledger(db: Database) -> None:
    from concierge.metering.ledger import UsageLedger

    ledger = UsageLedger(db)
    ledger.record(_record("good-1"))
    poison = _record("bad")
    ledger.record(
        UsageRecord(
            poison.request_id, poison.created_at, None, None, "x", "nul\x00m", 0, 0, 1.0, 200
        )
    )
    ledger.record(_record("good-2"))
    await ledger.flush()
    ids = db.read_sync(
        lambda c: c.execute(text("SELECT request_id FROM usage_records")).scalars().all()
    )
    assert {"good-1", "good-2"} <= set(ids)  # PostgreSQL refuses NUL; SQLite stores it
    assert ledger._pending == []
