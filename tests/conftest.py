"""Fixtures: every database test runs on SQLite and on PostgreSQL.

- SQLite: a schema migrated once per session is copied to a fresh file for each test.
- PostgreSQL: one database per session (``concierge_test_<random>``), migrated once and
  truncated before each test. ``CONCIERGE_TEST_POSTGRES_URL`` points at the server (default: the
  local one, trust auth). Without PostgreSQL the suite fails, unless
  ``CONCIERGE_TEST_POSTGRES=skip`` says to skip those runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from concierge.app import Concierge
from concierge.config import Settings
from concierge.models.registry import ModelRegistry
from concierge.plugins import plugin_manager
from concierge.store import Database, migrate
from concierge.store.tables import metadata

# The scripted-upstream fixture (``pipeline``), shared by the assistant and governance tests.
pytest_plugins = ("tests.scripted", "tests.peers.telegram_peer")

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "sk-cc-test-admin-0123456789abcdefghij"
PG_URL = os.environ.get(
    "CONCIERGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
LLM = "gemma-3-270m"
EMBEDDER = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Model files assembled from the packages, shared with `make run` (data/ is ignored)."""
    path = Path(os.environ.get("CONCIERGE_TEST_MODELS_DIR", ROOT / "data" / "models"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}", pooled=False)
    migrate.upgrade(db)
    db.close()
    return path


def _pg_server_url(database: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[object]:
    if os.environ.get("CONCIERGE_TEST_POSTGRES") == "skip":
        pytest.skip("PostgreSQL runs skipped (CONCIERGE_TEST_POSTGRES=skip)")
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({exc.orig}). Start it "
            "(scripts/ensure-services) or set CONCIERGE_TEST_POSTGRES=skip.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


def create_pg_database(admin: object) -> str:
    name = f"concierge_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name


def drop_pg_database(admin: object, name: str) -> None:
    with admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database(pg_admin: object) -> Iterator[str]:
    name = create_pg_database(pg_admin)
    url = _pg_server_url(name)
    db = Database(url, pooled=False)
    migrate.upgrade(db)
    db.close()
    yield url
    drop_pg_database(pg_admin, name)


@pytest.fixture
def fresh_pg_url(pg_admin: object) -> Iterator[str]:
    """An empty PostgreSQL database of its own (for migration tests)."""
    name = create_pg_database(pg_admin)
    yield _pg_server_url(name)
    drop_pg_database(pg_admin, name)


def _truncate(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "concierge.db"
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[str]:
    """A database of its own for the tests of one module that share a server, per backend
    (a server starts in seconds; its tests then run against it one after another)."""
    if request.param == "sqlite":
        target = tmp_path_factory.mktemp("shared") / "concierge.db"
        shutil.copy(sqlite_template, target)
        yield f"sqlite:///{target}"
        return
    admin = request.getfixturevalue("pg_admin")
    name = create_pg_database(admin)
    url = _pg_server_url(name)
    yield url
    drop_pg_database(admin, name)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.close()


def make_settings(tmp_path: Path, db_url: str, models_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "models_dir": models_dir,
        "admin_key": ADMIN_KEY,
        "key_cache_seconds": 0,
        "usage_flush_seconds": 0.01,
        "llm_context_length": 2048,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, db_url: str, models_dir: Path) -> Settings:
    return make_settings(tmp_path, db_url, models_dir)


@pytest.fixture(scope="session")
def registry(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    """The embedded models, loaded once for the whole session."""
    import asyncio

    base = Settings(
        data_dir=tmp_path_factory.mktemp("registry"), models_dir=models_dir, llm_context_length=2048
    )
    reg = ModelRegistry.from_plugins(plugin_manager(entry_points=False), base)
    yield reg
    asyncio.run(reg.aclose())


@pytest.fixture
async def concierge(settings: Settings, registry: ModelRegistry) -> AsyncIterator[Concierge]:
    app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
    await app.startup()
    yield app
    await app.shutdown()


def http_client(app: Concierge, key: str | None = ADMIN_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app()),
        base_url="http://test",
        headers=headers,
        timeout=60,
    )


@pytest.fixture
async def client(concierge: Concierge) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(concierge) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`concierge serve` in a subprocess, as a user starts it."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "server.log"
        full_env = {**os.environ, **env, "CONCIERGE_PORT": str(self.port)}
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "concierge", "serve"],
            env=full_env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log.read_text())
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.log.read_text())

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flushing; what is on disk is what a crash leaves."""
        self.process.kill()
        self.process.wait(15)
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log_file.close()


def server_env(tmp_path: Path, db_url: str, models_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test's `concierge` subprocess (server or command); ``settings``
    add or override ``CONCIERGE_<NAME>`` variables (``llm_enabled="false"``)."""
    return {
        "CONCIERGE_DATA_DIR": str(tmp_path),
        "CONCIERGE_DATABASE_URL": db_url,
        "CONCIERGE_MODELS_DIR": str(models_dir),
        "CONCIERGE_ADMIN_KEY": ADMIN_KEY,
        "CONCIERGE_KEY_CACHE_SECONDS": "0",
        "CONCIERGE_LLM_CONTEXT_LENGTH": "2048",
        "CONCIERGE_LOG_LEVEL": "warning",
        "CONCIERGE_USAGE_FLUSH_SECONDS": "0.01",
        **{f"CONCIERGE_{name.upper()}": value for name, value in settings.items()},
    }


@pytest.fixture
def live_server(tmp_path: Path, db_url: str, models_dir: Path) -> Iterator[LiveServer]:
    server = LiveServer(server_env(tmp_path, db_url, models_dir), tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_server(
    module_db_url: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One `concierge serve` for the tests of a module, per backend (tests that share it must
    not depend on what the others stored)."""
    cwd = tmp_path_factory.mktemp("server")
    server = LiveServer(server_env(cwd, module_db_url, models_dir), cwd)
    yield server
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # llama-cpp-python opens two /dev/null handles at import and never closes them.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def _cli_env(tmp_path: Path, db_url: str, models_dir: Path) -> dict[str, str]:
    return {
        "CONCIERGE_DATA_DIR": str(tmp_path),
        "CONCIERGE_DATABASE_URL": db_url,
        "CONCIERGE_MODELS_DIR": str(models_dir),
        "CONCIERGE_LLM_CONTEXT_LENGTH": "2048",
    }


@pytest.fixture
def cli(tmp_path: Path, db_url: str, models_dir: Path):  # type: ignore[no-untyped-def]
    """``concierge ARGS`` run in this process with click's CliRunner (a second of start-up
    saved per command), in a thread of its own (commands run their own event loop), from
    ``tmp_path``. An unexpected exception's traceback is appended to ``stderr``, as the real
    command would print it."""
    from click.testing import CliRunner

    from concierge.cli import main

    env = _cli_env(tmp_path, db_url, models_dir)

    def run(*args: str, input: str | None = None, ok: bool = True) -> CliResult:
        done: dict[str, Any] = {}

        def invoke() -> None:
            previous = os.getcwd()
            os.chdir(tmp_path)
            try:
                done["result"] = CliRunner().invoke(main, list(args), input=input, env=env)
            finally:
                os.chdir(previous)

        worker = threading.Thread(target=invoke, name="cli")
        worker.start()
        worker.join(120)
        assert "result" in done, f"concierge {' '.join(args)} did not finish in 120 s"
        ran = done["result"]
        stderr = ran.stderr
        if ran.exception is not None and not isinstance(ran.exception, SystemExit):
            stderr += "".join(traceback.format_exception(ran.exception))
        result = CliResult(ran.exit_code, ran.stdout, stderr)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


@pytest.fixture
def cli_process(tmp_path: Path, db_url: str, models_dir: Path):  # type: ignore[no-untyped-def]
    """``python -m concierge ARGS`` in a real subprocess, as a user runs it (for the few
    tests that are about the process: its exit code, what reaches the terminal)."""
    env = {**os.environ, **_cli_env(tmp_path, db_url, models_dir)}

    def run(
        *args: str, input: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "concierge", *args],
            env=env,
            text=True,
            capture_output=True,
            input=input,
            timeout=120,
            cwd=tmp_path,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run
