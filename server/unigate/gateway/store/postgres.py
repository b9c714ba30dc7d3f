"""The store at scale: PostgreSQL through an asyncpg pool.

Every statement runs in `schema` (the pool's search_path), so one database can
hold several gateways, or a test run's private schema. The shared SQL uses `?`
placeholders; they become `$1, $2, ...` here. Migrations run under a session
advisory lock (one per schema), so gateway processes starting together wait for
each other and apply each migration once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

import asyncpg

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

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """`?` placeholders → `$1, $2, ...` (the shared SQL has no `?` in literals)."""
    head, *rest = sql.split("?")
    return head + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The one place asyncpg integrity errors become the store's errors."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(f"already exists ({exc})") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFoundError(f"a referenced record does not exist ({exc})") from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise ValueError(f"invalid record ({exc})") from exc


class _PgConn:
    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        with _translated():
            return list(await self._conn.fetch(_numbered(sql), *args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        with _translated():
            row: Row | None = await self._conn.fetchrow(_numbered(sql), *args)
            return row

    async def execute(self, sql: str, *args: object) -> None:
        with _translated():
            await self._conn.execute(_numbered(sql), *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with _translated():
            await self._conn.executemany(_numbered(sql), rows)

    async def serialize_writes(self, table: str) -> None:
        """A transaction-scoped advisory lock keyed by the table's oid (so per schema)."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock($1::text::regclass::oid::bigint)", table
        )


class PostgresStore(SqlStore):
    def __init__(
        self,
        dsn: str,
        schema: str = "public",
        *,
        pool_size: int = 5,
        clock: Clock = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a lowercase SQL identifier, not {schema!r}")
        super().__init__(clock=clock, migrations=migrations)
        self.schema = schema
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        """Connect the pool, create the schema if needed, then migrate it."""
        if self._pool is not None:
            return
        check_order(self._migrations)
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            server_settings={"search_path": self.schema, "application_name": "unigate"},
        )
        try:
            self._pool = pool
            await self._migrate(pool)
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def _migrate(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        digest = hashlib.sha256(f"unigate.migrations:{self.schema}".encode()).digest()
        lock = int.from_bytes(digest[:8], "big", signed=True)
        async with pool.acquire() as raw:
            await raw.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                exists = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
                if await raw.fetchval(exists, self.schema) is None:
                    await raw.execute(f'CREATE SCHEMA "{self.schema}"')
                await raw.execute(SCHEMA_MIGRATIONS)
                for migration in self._migrations:
                    async with raw.transaction():
                        await apply_once(_PgConn(raw), migration, Dialect.POSTGRES, self._clock())
            finally:
                await raw.execute("SELECT pg_advisory_unlock($1)", lock)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _connections(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open: call open() first")
        return self._pool

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[_PgConn]:
        async with self._connections().acquire() as raw:
            yield _PgConn(raw)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_PgConn]:
        async with self._connections().acquire() as raw, raw.transaction():
            yield _PgConn(raw)
