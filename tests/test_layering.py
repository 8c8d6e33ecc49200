"""The architecture rules of docs/development.md, checked on the code itself.

The import layers are import-linter's contract (``make lint``, ``[tool.importlinter]`` in
pyproject.toml); this test runs the same contract so that ``make test`` fails too, and checks
the rule import-linter cannot: a module reads and writes only its own tables (another module's
data is reached through that module's functions).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"

# Who owns each table: a module path prefix. Nothing else may import the table.
OWNERS = {
    "organizations": "concierge.orgs",
    "api_keys": "concierge.keys",
    "usage_records": "concierge.metering",
    "knowledge_bases": "concierge.knowledge",
    "documents": "concierge.knowledge",
    "chunks": "concierge.knowledge",
    "ingestion_jobs": "concierge.knowledge",
    "ingestion_items": "concierge.knowledge",
    "files": "concierge.knowledge",
    "assistants": "concierge.assistants.definitions",
    "assistant_versions": "concierge.assistants.definitions",
    "end_users": "concierge.conversations",
    "conversations": "concierge.conversations",
    "turns": "concierge.conversations",
    "memories": "concierge.conversations",
    "server_secrets": "concierge.store",
    "audit_log": "concierge.governance.audit",
    "audit_head": "concierge.governance.audit",
    "org_policies": "concierge.governance.policy",
    "consents": "concierge.governance.consent",
    "reports": "concierge.governance.moderation",
    "legal_holds": "concierge.compliance.retention",
    "scheduled_jobs": "concierge.compliance.retention",
    "channels": "concierge.channels",
    "channel_threads": "concierge.channels",
    "channel_events": "concierge.channels",
    "channel_outbox": "concierge.channels",
    "channel_media": "concierge.channels",
    "inbox_agents": "concierge.inbox",
    "inbox_teams": "concierge.inbox",
    "inbox_team_members": "concierge.inbox",
    "inbox_items": "concierge.inbox",
    "inbox_notes": "concierge.inbox",
    "inbox_canned": "concierge.inbox",
    "inbox_settings": "concierge.inbox",
    "inbox_cursor": "concierge.inbox",
    "metadata": "concierge.store",  # the migrations' view of every table
}


def _tables_used() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted((SRC / "concierge").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "concierge.store.tables":
                found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def test_every_table_has_an_owner() -> None:
    from concierge.store import tables

    assert set(tables.metadata.tables) | {"metadata"} == set(OWNERS)


@pytest.mark.parametrize(("module", "table", "line"), _tables_used())
def test_a_module_uses_only_its_own_tables(module: str, table: str, line: int) -> None:
    owner = OWNERS[table]
    assert module == owner or module.startswith(owner + "."), (
        f"{module} (line {line}) uses the table {table}, which belongs to {owner}: "
        f"call {owner}'s functions instead"
    )


def test_dependencies_point_one_way() -> None:
    """import-linter's contracts (pyproject.toml) hold."""
    linter = Path(sys.executable).parent / "lint-imports"
    checked = subprocess.run(
        [str(linter), "--no-cache"], cwd=SRC.parent, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
