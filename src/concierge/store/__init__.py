"""The database: one engine, reads on a thread pool, writes handled per backend on purpose.

SQLite (the embedded default) runs in WAL mode: readers never block the writer. All writes go
through one dedicated thread, each in ``BEGIN IMMEDIATE``, so writers queue in Python instead
of failing with "database is locked". PostgreSQL takes writes from the shared pool.

Callers hand a function that receives a :class:`sqlalchemy.Connection`; ``read``/``write`` run it
off the event loop and, for ``write``, inside one transaction that commits on return and rolls
back on any exception: nothing half-written.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

T = TypeVar("T")


INT32 = range(-(2**31), 2**31)


def id_is(column: Column[Any], value: int) -> ColumnElement[bool]:
    """``column == value``, or a condition that is never true where ``value`` cannot be in a
    32-bit integer column: PostgreSQL refuses such a comparison (the driver casts the value to
    the column's type) where it should simply find nothing."""
    kind = column.type
    if isinstance(kind, Integer) and not isinstance(kind, BigInteger) and value not in INT32:
        return false()
    return column == value


def id_in(column: Column[Any], values: Any) -> ColumnElement[bool]:
    """``column IN values``, leaving out values a 32-bit integer column cannot hold."""
    kind = column.type
    if isinstance(kind, Integer) and not isinstance(kind, BigInteger):
        values = [v for v in values if v in INT32]
    return column.in_(list(values))


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """A timestamp read back from the database, in UTC (SQLite returns naive ones)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def lock(conn: Connection, namespace: str, key: int) -> None:
    """Serialise this transaction with any other that takes the same lock, until it ends.

    For read-then-write on something that may not have a row yet (a first policy): PostgreSQL
    takes a transaction-level advisory lock; SQLite needs none, since its writes already run one
    at a time (``BEGIN IMMEDIATE``, one writer thread per process)."""
    if conn.dialect.name == "postgresql":
        space = zlib.crc32(namespace.encode()) & 0x7FFFFFFF
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": space, "key": key & 0x7FFFFFFF},
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event, below, issue BEGIN itself (pysqlite's own is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus the executors that keep blocking database work off the event loop."""

    def __init__(self, url: str, *, pool_size: int = 8, pooled: bool = True) -> None:
        """``pooled=False`` closes connections after use (CLI commands, short scripts)."""
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        pool_args: dict[str, Any] = (
            {"pool_size": pool_size, "max_overflow": pool_size}
            if pooled
            else {"poolclass": NullPool}
        )
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 10},
                **pool_args,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(
                self.url,
                pool_pre_ping=True,
                connect_args={"options": "-c timezone=UTC"},
                **pool_args,
            )
        self._readers = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="db-read")
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-write")
            if self.is_sqlite
            else self._readers
        )

    # -- synchronous (CLI, migrations, executor threads) ------------------------------------

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        with (
            self.engine.connect().execution_options(sqlite_write=True) as conn,
            conn.begin(),
        ):
            return fn(conn)

    # -- asynchronous (the server) ----------------------------------------------------------

    async def read(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.read_sync, fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.write_sync, fn)

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        if self._writer is not self._readers:
            self._writer.shutdown(wait=True)
        self.engine.dispose()
