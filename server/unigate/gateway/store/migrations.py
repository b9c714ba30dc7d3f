"""Versioned schema migrations, shared by SQLite and PostgreSQL.

Each migration runs once, in its own transaction, and is recorded in
`schema_migrations`. The caller serialises concurrent starts (PostgreSQL: an
advisory lock; SQLite: BEGIN IMMEDIATE), so two gateway processes starting at once
apply each migration exactly once. Never edit a released migration: append one.

The DDL is written once for both dialects: SQLite accepts the PostgreSQL type
names (BOOLEAN, DOUBLE PRECISION) with matching affinities. `{key}` marks the
columns that pages are ordered by; PostgreSQL compares those bytewise (COLLATE
"C"), as SQLite does, so both stores page in the same order. `{auto_id}` is an
integer key the database assigns in ascending order and never reuses, and
`{without_rowid}` clusters a SQLite table by its primary key.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from unigate.gateway.store.base import StoreError
from unigate.gateway.store.common import Conn
from unigate.gateway.store.rollup import BIN_COLUMNS, ROLLUPS, Rollup


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class MigrationError(StoreError):
    """A migration failed; its transaction was rolled back and it is not recorded."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_PLACEHOLDERS = {
    "{key}": {Dialect.SQLITE: "TEXT", Dialect.POSTGRES: 'TEXT COLLATE "C"'},
    # AUTOINCREMENT: an id is never reused, even once retention has emptied the table.
    "{auto_id}": {
        Dialect.SQLITE: "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect.POSTGRES: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
    "{without_rowid}": {Dialect.SQLITE: "WITHOUT ROWID", Dialect.POSTGRES: ""},
}

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""

_INITIAL = (
    """CREATE TABLE tenants (
        id {key} PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        disabled BOOLEAN NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    # UNIQUE (id, tenant_id) lets keys and subscriptions reference a consumer
    # together with its tenant, so the schema itself keeps tenants apart.
    """CREATE TABLE consumers (
        id {key} PRIMARY KEY,
        tenant_id {key} NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        disabled BOOLEAN NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (tenant_id, name),
        UNIQUE (id, tenant_id)
    )""",
    "CREATE INDEX consumers_by_tenant ON consumers (tenant_id, id)",
    """CREATE TABLE admins (
        id {key} PRIMARY KEY,
        tenant_id {key} REFERENCES tenants (id),
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE api_keys (
        id {key} PRIMARY KEY,
        tenant_id {key} REFERENCES tenants (id),
        consumer_id {key},
        admin_id {key} REFERENCES admins (id),
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        CHECK ((consumer_id IS NULL) <> (admin_id IS NULL)),
        CHECK (consumer_id IS NULL OR tenant_id IS NOT NULL),
        FOREIGN KEY (consumer_id, tenant_id) REFERENCES consumers (id, tenant_id)
    )""",
    "CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id)",
    "CREATE INDEX api_keys_by_consumer ON api_keys (consumer_id, id)",
    """CREATE TABLE services (
        tenant_id {key} NOT NULL REFERENCES tenants (id),
        alias {key} NOT NULL,
        requires_approval BOOLEAN NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant_id, alias)
    )""",
    """CREATE TABLE subscriptions (
        id {key} PRIMARY KEY,
        tenant_id {key} NOT NULL,
        consumer_id {key} NOT NULL,
        alias {key} NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'rejected', 'revoked')),
        requested_at DOUBLE PRECISION NOT NULL,
        decided_by TEXT,
        decided_at DOUBLE PRECISION,
        note TEXT NOT NULL,
        UNIQUE (consumer_id, alias),
        FOREIGN KEY (consumer_id, tenant_id) REFERENCES consumers (id, tenant_id),
        FOREIGN KEY (tenant_id, alias) REFERENCES services (tenant_id, alias)
    )""",
    "CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id, id)",
    "CREATE INDEX subscriptions_by_status ON subscriptions (status, id)",
)

# One row per tenant (consumer_id NULL) and per consumer: the limit fields of a
# quota.policy.Policy as JSON text. NULLs are distinct in a UNIQUE constraint, so
# two partial unique indexes keep one row per (tenant, consumer-or-none).
_QUOTA_POLICIES = (
    """CREATE TABLE quota_policies (
        tenant_id {key} NOT NULL REFERENCES tenants (id),
        consumer_id {key},
        body TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        FOREIGN KEY (consumer_id, tenant_id) REFERENCES consumers (id, tenant_id)
    )""",
    "CREATE UNIQUE INDEX quota_policies_of_tenant ON quota_policies (tenant_id)"
    " WHERE consumer_id IS NULL",
    "CREATE UNIQUE INDEX quota_policies_of_consumer ON quota_policies (tenant_id, consumer_id)"
    " WHERE consumer_id IS NOT NULL",
)

# One row per inference call, and the usage rollups (store/rollup.py: a table per
# level, a column per latency bin, generated here from its constants). No foreign
# keys: a record outlives what it names, and a call may have no tenant at all.
_CALL_LOGS = (
    """CREATE TABLE call_logs (
        id {auto_id},
        request_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        tenant_id {key},
        consumer_id {key},
        key_id TEXT,
        alias {key} NOT NULL,
        provider {key} NOT NULL,
        deployment TEXT NOT NULL,
        vendor_model TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        upstream_latency_ms DOUBLE PRECISION,
        ttft_ms DOUBLE PRECISION,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        cache_hit BOOLEAN NOT NULL,
        retries INTEGER NOT NULL,
        fallbacks TEXT NOT NULL,
        client_address TEXT NOT NULL,
        end_user TEXT NOT NULL,
        request_body TEXT,
        response_body TEXT
    )""",
    "CREATE INDEX call_logs_by_ts ON call_logs (ts)",
    "CREATE INDEX call_logs_by_tenant ON call_logs (tenant_id, id)",
    "CREATE INDEX call_logs_by_consumer ON call_logs (consumer_id, id)",
    "CREATE INDEX call_logs_by_request ON call_logs (request_id)",
    # errors_only lists read this; the query spells the same `code <> 'OK'`
    "CREATE INDEX call_logs_errors ON call_logs (id) WHERE code <> 'OK'",
)


def _rollup_table(level: Rollup) -> str:
    keys = ", ".join(("minute", *level.dims))
    return "\n".join(
        [
            f"CREATE TABLE {level.table} (",
            "    minute INTEGER NOT NULL,",  # floor(ts / 60), a multiple of the period
            *(f"    {dim} {{key}} NOT NULL," for dim in level.dims),
            "    calls INTEGER NOT NULL,",
            "    errors INTEGER NOT NULL,",
            "    input_tokens BIGINT NOT NULL,",
            "    output_tokens BIGINT NOT NULL,",
            "    cached_tokens BIGINT NOT NULL,",
            "    cost DOUBLE PRECISION NOT NULL,",
            "    cache_hits INTEGER NOT NULL,",
            "    latency_ms_sum DOUBLE PRECISION NOT NULL,",
            *(f"    {column} INTEGER NOT NULL," for column in BIN_COLUMNS),
            f"    PRIMARY KEY ({keys})",
            ") {without_rowid}",
        ]
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _INITIAL),
    Migration(2, "quota policies", _QUOTA_POLICIES),
    Migration(3, "call logs", (*_CALL_LOGS, *(_rollup_table(level) for level in ROLLUPS))),
)


def render(statement: str, dialect: Dialect) -> str:
    for placeholder, by_dialect in _PLACEHOLDERS.items():
        statement = statement.replace(placeholder, by_dialect[dialect])
    return statement


async def apply_once(conn: Conn, migration: Migration, dialect: Dialect, now: float) -> bool:
    """Apply `migration` unless recorded; call inside a transaction that holds the
    migration lock. True when it was applied now."""
    done = await conn.fetchrow(
        "SELECT 1 AS one FROM schema_migrations WHERE version = ?", migration.version
    )
    if done is not None:
        return False
    try:
        for statement in migration.statements:
            await conn.execute(render(statement, dialect))
    except Exception as exc:
        raise MigrationError(
            f"migration {migration.version} ({migration.name}) failed: {exc}"
        ) from exc
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        migration.version,
        migration.name,
        now,
    )
    return True


async def applied_versions(conn: Conn) -> list[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [int(row["version"]) for row in rows]


def check_order(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and ascending: {versions}")
