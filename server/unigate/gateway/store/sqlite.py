"""The embedded store: one SQLite file (or ":memory:") through aiosqlite.

One connection per store, in WAL mode with foreign keys on. An asyncio lock gives
each transaction the connection to itself, so coroutines never share one by
accident; writes take SQLite's write lock at BEGIN IMMEDIATE, so several gateway
processes on one file queue for it (up to `busy_timeout`) instead of failing,
which is also what makes concurrent migrations safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path

import aiosqlite

from unigate.gateway.store.base import ConflictError, NotFoundError
from unigate.gateway.store.common import Clock, Row
from unigate.gateway.store.migrations import (
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    Dialect,
    Migration,
    apply_once,
    check_order,
)
from unigate.gateway.store.sql import SqlStore

MEMORY = ":memory:"


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The one place sqlite3 integrity errors become the store's errors."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        message = str(exc)
        if message.startswith("UNIQUE"):
            raise ConflictError(f"already exists ({message})") from exc
        if message.startswith("FOREIGN KEY"):
            raise NotFoundError(f"a referenced record does not exist ({message})") from exc
        raise ValueError(f"invalid record ({message})") from exc


class _SqliteConn:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        with _translated():
            return list(await self._db.execute_fetchall(sql, args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        # Fetch all: a RETURNING statement is only done once stepped to its end.
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: object) -> None:
        with _translated():
            await self._db.execute(sql, args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with _translated():
            await self._db.executemany(sql, rows)

    async def serialize_writes(self, table: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE gave this transaction the only write lock."""


class SqliteStore(SqlStore):
    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 10.0,
        clock: Clock = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        super().__init__(clock=clock, migrations=migrations)
        self.path = path
        self._busy_timeout = busy_timeout
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the file (and its folder) if needed, then migrate the schema."""
        if self._db is not None:
            return
        check_order(self._migrations)
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA foreign_keys = ON")
            if self.path != MEMORY:
                await self._enable_wal(db)
                await db.execute("PRAGMA synchronous = NORMAL")  # durable across crashes in WAL
            self._db = db
            await self._migrate()
        except BaseException:
            self._db = None
            await db.close()
            raise

    async def _enable_wal(self, db: aiosqlite.Connection) -> None:
        """Switching to WAL needs a lock SQLite's busy handler does not wait for, so a
        process starting beside another retries here, up to `busy_timeout`."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)

    async def _migrate(self) -> None:
        async with self._write() as conn:
            await conn.execute(SCHEMA_MIGRATIONS)
        for migration in self._migrations:
            async with self._write() as conn:
                await apply_once(conn, migration, Dialect.SQLITE, self._clock())

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite store is not open: call open() first")
        return self._db

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            yield _SqliteConn(self._connection())

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            db = self._connection()
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConn(db)
            except BaseException:
                # SQLite may have ended the transaction itself (e.g. on a full disk).
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
