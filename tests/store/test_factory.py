"""Store URLs (`store.url` in the config) → stores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.store.conftest import RUN_PREFIX, drop_schemas
from unigate.gateway.store.factory import open_store, store_for_url
from unigate.gateway.store.migrations import MIGRATIONS
from unigate.gateway.store.postgres import PostgresStore
from unigate.gateway.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///unigate.db", "unigate.db"),
        ("sqlite:///data/unigate.db", "data/unigate.db"),
        ("sqlite:////var/lib/unigate/unigate.db", "/var/lib/unigate/unigate.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    store = store_for_url(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path


@pytest.mark.parametrize(
    ("url", "dsn", "schema"),
    [
        ("postgresql://u:pw@db:5432/gw", "postgresql://u:pw@db:5432/gw", "public"),
        ("postgres://u@db/gw?schema=tenant_a", "postgres://u@db/gw", "tenant_a"),
        (
            "postgresql://u@db/gw?sslmode=require&schema=gw",
            "postgresql://u@db/gw?sslmode=require",
            "gw",
        ),
    ],
)
def test_postgres_urls(url: str, dsn: str, schema: str) -> None:
    store = store_for_url(url)
    assert isinstance(store, PostgresStore)
    assert (store._dsn, store.schema) == (dsn, schema)


@pytest.mark.parametrize(
    "url",
    ["mysql://db/x", "sqlite:/x.db", "sqlite://", "sqlite://relative.db", "sqlite:///", "x.db"],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        store_for_url(url)


def test_bad_schema_in_url() -> None:
    with pytest.raises(ValueError, match="schema"):
        store_for_url("postgresql://db/x?schema=Robert');DROP")


async def test_open_store_creates_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///nested/gw.db")
    try:
        assert await asyncio.to_thread((tmp_path / "nested" / "gw.db").is_file)
        assert await store.applied_migrations() == [m.version for m in MIGRATIONS]
    finally:
        await store.close()


async def test_open_store_on_postgres(postgres_dsn: str) -> None:
    schema = f"{RUN_PREFIX}_factory"
    store = await open_store(f"{postgres_dsn}?schema={schema}")
    try:
        assert isinstance(store, PostgresStore) and store.schema == schema
        tenant = await store.create_tenant("acme")
        assert await store.get_tenant(tenant.id) == tenant
    finally:
        await store.close()
        await drop_schemas(postgres_dsn, schema)
