"""Schema migrations: applied once, in a transaction, also when stores start together."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.store.conftest import Backend, NewStore
from unigate.gateway.store.migrations import MIGRATIONS, Migration, MigrationError
from unigate.gateway.store.sql import SqlStore

LATEST = [m.version for m in MIGRATIONS]
# No IF NOT EXISTS: applying it a second time would fail.
EXTRA = Migration(
    LATEST[-1] + 1, "add notes", ("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)",)
)


async def _insert_note(store: SqlStore, note_id: str) -> None:
    async with store._write() as conn:
        await conn.execute("INSERT INTO notes (id, body) VALUES (?, 'x')", note_id)


async def test_a_new_database_gets_every_migration(store: SqlStore) -> None:
    assert await store.applied_migrations() == LATEST
    async with store._read() as conn:
        rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert all(r["applied_at"] == 1_700_000_000.0 for r in rows)  # the store's clock


async def test_opening_again_keeps_data_and_applies_nothing(new_store: NewStore) -> None:
    first = await new_store()
    tenant = await first.create_tenant("acme")
    await first.close()
    second = await new_store()
    assert await second.get_tenant(tenant.id) == tenant
    assert await second.applied_migrations() == LATEST


async def test_stores_opening_at_once_migrate_once(new_store: NewStore) -> None:
    stores = await asyncio.gather(*(new_store() for _ in range(4)))
    for store in stores:
        assert await store.applied_migrations() == LATEST
    tenants = [await store.create_tenant(f"t{i}") for i, store in enumerate(stores)]
    assert (await stores[0].list_tenants()).items == sorted(tenants, key=lambda t: t.id)


_START = """
import asyncio, sys
from unigate.gateway.store.factory import open_store

async def main() -> None:
    store = await open_store(sys.argv[1])
    await store.create_tenant(sys.argv[2])
    await store.close()

asyncio.run(main())
"""


async def test_gateway_processes_starting_at_once_migrate_once(
    backend: Backend, new_store: NewStore
) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _START, backend.url, f"p{i}", stderr=asyncio.subprocess.PIPE
        )
        for i in range(3)
    ]
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
    store = await new_store()
    assert await store.applied_migrations() == LATEST
    assert sorted(t.name for t in (await store.list_tenants()).items) == ["p0", "p1", "p2"]


async def test_a_new_migration_is_applied_once(new_store: NewStore) -> None:
    old = await new_store()
    await old.create_tenant("acme")
    upgraded = await asyncio.gather(*(new_store(migrations=[*MIGRATIONS, EXTRA]) for _ in range(3)))
    assert await upgraded[0].applied_migrations() == [*LATEST, EXTRA.version]
    await _insert_note(upgraded[1], "n1")
    again = await new_store(migrations=[*MIGRATIONS, EXTRA])  # would fail if re-applied
    assert await again.applied_migrations() == [*LATEST, EXTRA.version]
    assert [t.name for t in (await again.list_tenants()).items] == ["acme"]


async def test_a_failing_migration_is_rolled_back_and_not_recorded(new_store: NewStore) -> None:
    broken = Migration(
        EXTRA.version, "broken", (*EXTRA.statements, "CREATE TABLE oops (id NOT A TYPE ((")
    )
    with pytest.raises(MigrationError, match=f"migration {EXTRA.version} \\(broken\\) failed"):
        await new_store(migrations=[*MIGRATIONS, broken])
    store = await new_store()
    assert await store.applied_migrations() == LATEST
    # the statement before the failure was rolled back too, so the fixed one applies cleanly
    fixed = await new_store(migrations=[*MIGRATIONS, EXTRA])
    assert await fixed.applied_migrations() == [*LATEST, EXTRA.version]
    await _insert_note(fixed, "n1")


async def test_migrations_must_be_in_order(new_store: NewStore) -> None:
    with pytest.raises(ValueError, match="ascending"):
        await new_store(migrations=[EXTRA, *MIGRATIONS])
    with pytest.raises(ValueError, match="unique"):
        await new_store(migrations=[*MIGRATIONS, *MIGRATIONS])
