"""Opening and closing, and what each backend does at open: SQLite's file and
pragmas, PostgreSQL's private schema; and the suite's own clean-up."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.store.conftest import RUN_PREFIX, NewStore, drop_schemas
from unigate.gateway.store.migrations import MIGRATIONS
from unigate.gateway.store.postgres import PostgresStore
from unigate.gateway.store.sql import SqlStore
from unigate.gateway.store.sqlite import SqliteStore


async def test_close_is_final_and_idempotent(new_store: NewStore) -> None:
    store = await new_store()
    await store.create_tenant("acme")
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.list_tenants()
    await store.open()  # and it can be opened again
    assert [t.name for t in (await store.list_tenants()).items] == ["acme"]


async def test_open_twice_is_harmless(store: SqlStore) -> None:
    tenant = await store.create_tenant("acme")
    await store.open()
    assert await store.get_tenant(tenant.id) == tenant


async def test_sqlite_creates_its_file_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "unigate.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert await asyncio.to_thread(path.is_file)
        async with store._read() as conn:
            journal = await conn.fetchrow("PRAGMA journal_mode")
            foreign_keys = await conn.fetchrow("PRAGMA foreign_keys")
        assert journal is not None and journal["journal_mode"] == "wal"
        assert foreign_keys is not None and foreign_keys["foreign_keys"] == 1
    finally:
        await store.close()


async def test_sqlite_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore(":memory:")
    await store.open()
    try:
        tenant = await store.create_tenant("acme")
        assert await store.get_tenant(tenant.id) == tenant
    finally:
        await store.close()
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # no file of any name


@pytest.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_dsn, f"{RUN_PREFIX}_{secrets.token_hex(4)}")
    await store.open()
    yield store
    await store.close()
    await drop_schemas(postgres_dsn, store.schema)


async def test_postgres_keeps_everything_in_its_schema(
    pg_store: PostgresStore, postgres_dsn: str
) -> None:
    await pg_store.create_tenant("acme")
    async with pg_store._read() as conn:
        search_path = await conn.fetchrow("SHOW search_path")
    assert search_path is not None and search_path["search_path"] == pg_store.schema
    raw = await asyncpg.connect(postgres_dsn)  # search_path: the server's default
    try:
        count = await raw.fetchval(f'SELECT count(*) FROM "{pg_store.schema}".tenants')
        tables = await raw.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            pg_store.schema,
        )
    finally:
        await raw.close()
    assert count == 1
    created = {
        match
        for migration in MIGRATIONS
        for statement in migration.statements
        for match in re.findall(r"CREATE TABLE (\w+)", statement)
    }
    assert {"tenants", "quota_policies", "call_logs"} <= created
    assert {r["table_name"] for r in tables} == {"schema_migrations", *created}


async def test_postgres_orders_keys_bytewise_whatever_the_database_collation(
    pg_store: PostgresStore,
) -> None:
    """So both backends page in one order (this database's own collation may hide it)."""
    async with pg_store._read() as conn:
        rows = await conn.fetch(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = ? AND column_name IN ('id', 'alias')",
            pg_store.schema,
        )
    collations = {(r["table_name"], r["column_name"]): r["collation_name"] for r in rows}
    paged = [
        ("tenants", "id"),
        ("consumers", "id"),
        ("api_keys", "id"),
        ("services", "alias"),
        ("subscriptions", "id"),
    ]
    assert {column: collations[column] for column in paged} == dict.fromkeys(paged, "C")


def test_postgres_schema_names_are_identifiers() -> None:
    for bad in ("Public", "x;drop", "a-b", "", "1abc", 'x"y'):
        with pytest.raises(ValueError, match="schema"):
            PostgresStore("postgresql://localhost/db", bad)


async def test_the_suite_drops_its_schemas(postgres_dsn: str) -> None:
    schema = f"{RUN_PREFIX}_cleanup_{secrets.token_hex(3)}"
    store = PostgresStore(postgres_dsn, schema)
    await store.open()
    await store.create_tenant("acme")
    await store.close()
    assert await drop_schemas(postgres_dsn, schema) == [schema]
    conn = await asyncpg.connect(postgres_dsn)
    try:
        left = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
    finally:
        await conn.close()
    assert left == 0
