"""A store from its URL (`store.url` in the config).

    sqlite:///relative/path.db      a file, relative to the working directory
    sqlite:////absolute/path.db     a file, absolute (four slashes, as SQLAlchemy has it)
    sqlite://:memory:               in memory, gone at close (tests)
    postgresql://user:pw@host:5432/db?schema=name    (also postgres://; schema: public)

A SQLite file and its folder are created on first start; every store creates and
migrates its schema at open.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unigate.gateway.store.postgres import PostgresStore
from unigate.gateway.store.sql import SqlStore
from unigate.gateway.store.sqlite import MEMORY, SqliteStore


def store_for_url(url: str) -> SqlStore:
    """The store `url` names, not yet opened."""
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep:
        return SqliteStore(_sqlite_path(rest))
    if scheme in ("postgresql", "postgres") and sep:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for name, value in query if name == "schema"]
        dsn = urlunsplit(parts._replace(query=urlencode([q for q in query if q[0] != "schema"])))
        return PostgresStore(dsn, schemas[-1] if schemas else "public")
    raise ValueError(
        f"store URL must start with sqlite:// or postgresql://, not {url.split('://')[0]!r}"
    )


def _sqlite_path(rest: str) -> str:
    if rest in (MEMORY, "/" + MEMORY):
        return MEMORY
    path = rest[1:] if rest.startswith("/") else ""
    if not path or "?" in path:
        raise ValueError(
            "a SQLite store URL is sqlite:///relative.db, sqlite:////absolute/path.db"
            " or sqlite://:memory:"
        )
    return path


async def open_store(url: str) -> SqlStore:
    """The store `url` names, opened: connected, with its schema migrated."""
    store = store_for_url(url)
    await store.open()
    return store
