"""The `concierge` command, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concierge.store import migrate
from tests.conftest import LLM


def test_keys_and_orgs(cli) -> None:  # type: ignore[no-untyped-def]
    assert "created organisation acme" in cli("orgs", "create", "acme", "--name", "Acme").stdout
    created = cli(
        "keys",
        "create",
        "--org",
        "acme",
        "--name",
        "shop",
        "--rpm",
        "60",
        "--tokens-per-day",
        "1000",
    )
    secret = created.stdout.strip()
    assert secret.startswith("sk-cc-") and "only time" in created.stderr
    listing = cli("keys", "list", "--org", "acme").stdout
    assert "shop" in listing and secret not in listing and secret[:12] in listing
    cli("keys", "revoke", "1")
    assert "shop" not in cli("keys", "list", "--org", "acme").stdout
    assert "shop" in cli("keys", "list", "--org", "acme", "--all").stdout
    assert "acme" in cli("orgs", "list").stdout


@pytest.mark.slow
def test_errors_are_messages_not_tracebacks(cli_process) -> None:  # type: ignore[no-untyped-def]
    """In a real process: the exit code and what reaches the terminal."""
    for args in (
        ("keys", "create", "--org", "ghost", "--name", "x"),
        ("keys", "revoke", "42"),
        ("orgs", "create", "Bad Slug"),
    ):
        result = cli_process(*args, ok=False)
        assert result.returncode == 2
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_bad_configuration_is_reported(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("--config", str(tmp_path / "missing.toml"), "config", "show", ok=False)
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_config_show_and_list(cli) -> None:  # type: ignore[no-untyped-def]
    shown = json.loads(cli("config", "show", "--json").stdout)
    assert shown["llm_context_length"] == 2048
    assert "CONCIERGE_DATA_DIR" in cli("config", "list").stdout


def test_models_list(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("models", "list").stdout
    assert LLM in out and "all-minilm-l6-v2" in out


def test_usage_table(cli) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(cli("usage", "--json").stdout) == []
    assert "requests" in cli("usage").stdout


def test_db_commands(cli) -> None:  # type: ignore[no-untyped-def]
    head = migrate.head_revision()
    assert f"schema at {head}" in cli("db", "upgrade").stdout
    assert f"database: {head}" in cli("db", "current").stdout


def test_chat_streams_in_the_terminal(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("chat", "--max-tokens", "5", "--temperature", "0", input="Hello there\n/exit\n")
    assert "Chatting with gemma-3-270m" in result.stderr
    answer = result.stdout.replace("> ", "").strip()
    assert answer  # the model said something


@pytest.mark.slow
def test_kb_create_ingest_search_and_trec_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs" / "sub"
    docs.mkdir(parents=True)
    (tmp_path / "docs" / "returns.md").write_text(
        "# Returns\n\n## Refunds\n\nRefunds within 30 days.\n"
    )
    (docs / "ship.txt").write_text("We ship worldwide within five days.")
    (tmp_path / "docs" / "corpus.jsonl").write_text(
        '{"_id": "1", "title": "Aspirin", "text": "Aspirin lowers stroke risk."}\n'
        '{"title": "no id"}\n'
        '{"_id": "2", "text": "Vitamin D supports bones."}\n'
    )
    (tmp_path / "q.jsonl").write_text(
        '{"_id": "q1", "text": "aspirin"}\n{"_id": "q2", "text": "bones"}\n'
    )
    assert "created knowledge base" in cli("kb", "create", "Help", "--chunk-tokens", "64").stdout
    first = cli("kb", "ingest", "--kb", "Help", "docs", ok=False)
    assert first.returncode == 3  # one corpus line has no _id; everything else ingested
    assert "4 ingested" in first.stdout and "corpus.jsonl:line 2" in first.stderr
    again = cli("kb", "ingest", "--kb", "Help", "docs/*.md")
    assert "1 unchanged" in again.stdout
    hits = json.loads(cli("kb", "search", "--kb", "Help", "refund window", "--json").stdout)
    assert hits[0]["external_id"] == "returns.md" and hits[0]["location"] == "Returns > Refunds"
    run = cli("kb", "search", "--kb", "Help", "--queries", "q.jsonl", "--k", "2").stdout
    lines = [line.split() for line in run.splitlines()]
    assert lines[0][:4] == ["q1", "Q0", "1", "1"] and lines[0][5] == "concierge"
    assert [line[0] for line in lines].count("q2") == 2
    missing = cli("kb", "search", "--kb", "Nope", "x", ok=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_demo_seed_once_and_reset(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """`concierge demo seed` makes Acme Outfitters once; `demo reset` makes it afresh, without
    what visitors left behind."""
    from concierge.store import Database

    made = cli("demo", "seed")
    assert "Demo ready" in made.stdout and "acme-support" in made.stdout
    assert "exists; left as it is" in cli("demo", "seed").stdout
    db = Database(db_url, pooled=False)
    try:

        def count(sql: str) -> int:
            return int(db.read_sync(lambda conn: conn.exec_driver_sql(sql).scalar_one()))

        docs = count("SELECT count(*) FROM documents WHERE status = 'ready'")
        assert docs == 11  # three policy pages and eight catalogue products
        db.write_sync(
            lambda conn: conn.exec_driver_sql(
                "INSERT INTO end_users (org_id, channel, external_id, created_at, last_seen_at) "
                "SELECT id, 'web', 'v_test', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
                "FROM organizations WHERE slug = 'acme'"
            )
        )
        refused = cli("demo", "reset", input="n\n", ok=False)
        assert refused.returncode != 0 and count("SELECT count(*) FROM end_users") == 1
        assert "Demo ready" in cli("demo", "reset", "--yes").stdout
        assert count("SELECT count(*) FROM end_users") == 0
        assert count("SELECT count(*) FROM documents WHERE status = 'ready'") == docs
        assert count("SELECT count(*) FROM assistants WHERE name = 'acme-support'") == 1
    finally:
        db.close()
