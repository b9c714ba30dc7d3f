"""The store suite runs every test once per backend: `sqlite` and `postgres`.

SQLite: a fresh file under tmp_path. PostgreSQL (UNIGATE_TEST_POSTGRES_DSN, default
postgresql://postgres@127.0.0.1:5432/test): a fresh schema per test, named
unigate_test_<run>_<test>, dropped at the test's end; the session sweeps its run's
prefix once more at its end. Unreachable PostgreSQL skips those tests, or fails
them when UNIGATE_REQUIRE_SERVICES=1 (as CI sets).
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

from unigate.gateway.store.postgres import PostgresStore
from unigate.gateway.store.sql import SqlStore
from unigate.gateway.store.sqlite import SqliteStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
RUN_PREFIX = f"unigate_test_{secrets.token_hex(4)}"
T = TypeVar("T")


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@dataclass
class Backend:
    name: str
    location: str  # the SQLite file, or the PostgreSQL schema
    url: str  # the same database as a `store.url`
    new: Callable[..., SqlStore]  # another store on this test's database, not yet opened


NewStore = Callable[..., Awaitable[SqlStore]]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end on a loop of its own, whatever loop is running here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def drop_schemas(dsn: str, like: str) -> list[str]:
    """Drop every schema whose name is LIKE `like`; the names dropped."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        names = [
            row["nspname"]
            for row in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", like
            )
        ]
        for name in names:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        return names
    finally:
        await conn.close()


async def _probe(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    await conn.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    dsn = os.environ.get("UNIGATE_TEST_POSTGRES_DSN", DEFAULT_DSN)
    try:
        run_sync(_probe(dsn))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = (
            f"PostgreSQL is unreachable at UNIGATE_TEST_POSTGRES_DSN (default {DEFAULT_DSN}):"
            f" {type(exc).__name__}: {exc}"
        )
        if os.environ.get("UNIGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (UNIGATE_REQUIRE_SERVICES=1 requires it)")
        pytest.skip(reason)
    yield dsn
    run_sync(drop_schemas(dsn, f"{RUN_PREFIX}_%"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Any, clock: FakeClock) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = str(tmp_path / "data" / "unigate.db")
        url = f"sqlite:///{path}"  # tmp_path is absolute: four slashes
        yield Backend("sqlite", path, url, functools.partial(SqliteStore, path, clock=clock))
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema = f"{RUN_PREFIX}_{secrets.token_hex(4)}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    yield Backend(
        "postgres", schema, url, functools.partial(PostgresStore, dsn, schema, clock=clock)
    )
    run_sync(drop_schemas(dsn, schema))


@pytest.fixture
async def new_store(backend: Backend) -> AsyncIterator[NewStore]:
    """Open another store on this test's database; all are closed at teardown."""
    made: list[SqlStore] = []

    async def new(**options: Any) -> SqlStore:
        store = backend.new(**options)
        made.append(store)
        await store.open()
        return store

    yield new
    for store in made:
        await store.close()


@pytest.fixture
async def store(new_store: NewStore) -> SqlStore:
    return await new_store()
