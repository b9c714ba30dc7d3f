"""The part of the SQL store every entity uses: connections, clock, lookups, pages.

A backend (sqlite.py, postgres.py) supplies only connections (`_read`, `_write`)
and runs the migrations at open; the rules live in the entity modules beside this
one, written once in SQL that both SQLite and PostgreSQL run, so both backends
pass one test suite. Checks that give a caller a clear message (a missing tenant,
a consumer from another tenant) run in the transaction that writes; the schema's
own keys back them up against races.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from unigate.gateway.store.base import NotFoundError
from unigate.gateway.store.common import (
    Clock,
    Conn,
    Row,
    decode_page_token,
    encode_page_token,
    page_size_of,
)
from unigate.gateway.store.migrations import MIGRATIONS, Migration, applied_versions
from unigate.gateway.store.models import Page

T = TypeVar("T")

Filter = tuple[str, tuple[object, ...]]
"""A condition with `?` placeholders, and their values."""


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """How one table is listed: keyset-paged by `order_by`, rows turned into records."""

    table: str
    order_by: str
    convert: Callable[[Row], T]
    token_prefix: str = ""  # a token from another list fails fast


def eq(column: str, value: object) -> list[Filter]:
    """`column = ?`, or no condition at all when value is None."""
    return [] if value is None else [(f"{column} = ?", (value,))]


def named(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


class SqlBase(abc.ABC):
    def __init__(
        self, *, clock: Clock = time.time, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        self._clock = clock
        self._migrations = tuple(migrations)

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema to the latest version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connections; safe to call twice."""

    @abc.abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads, outside any explicit transaction."""

    @abc.abstractmethod
    def _write(self) -> AbstractAsyncContextManager[Conn]:
        """A connection in a transaction: committed on success, rolled back on error."""

    async def applied_migrations(self) -> list[int]:
        """The schema versions recorded in this database, ascending."""
        async with self._read() as conn:
            return await applied_versions(conn)

    async def _page(
        self, listing: Listing[T], filters: Sequence[Filter], page_size: int, page_token: str
    ) -> Page[T]:
        size = page_size_of(page_size)
        after = decode_page_token(page_token, listing.token_prefix)
        key = listing.order_by
        conditions = [*filters, *([(f"{key} > ?", (after,))] if after else [])]
        sql = f"SELECT * FROM {listing.table}"
        if conditions:
            sql += " WHERE " + " AND ".join(cond for cond, _ in conditions)
        sql += f" ORDER BY {key} LIMIT ?"
        args = [arg for _, values in conditions for arg in values]
        async with self._read() as conn:
            rows = await conn.fetch(sql, *args, size + 1)
        token = encode_page_token(rows[size - 1][key]) if len(rows) > size else ""
        return Page([listing.convert(row) for row in rows[:size]], token)

    @staticmethod
    async def _one(conn: Conn, what: str, sql: str, *args: object) -> Row:
        row = await conn.fetchrow(sql, *args)
        if row is None:
            raise NotFoundError(f"{what} not found")
        return row

    async def _get(self, what: str, sql: str, *args: object) -> Row:
        async with self._read() as conn:
            return await self._one(conn, what, sql, *args)
