"""Call logs at scale: a day of a busy gateway in each store, then the admin reads.

Inserts --records calls (default 1,000,000) spread over one UTC day through
`insert_call_logs` in batches of 500, as the call-log writer does: 20 tenants with
10 consumers each (picked uniformly: the worst case for the rollups' size), 10
aliases (a few popular ones) served by 1 or 2 of 5 providers, ~3% errors, log-normal
latencies (median ~700 ms), 5% cache hits. Then times `usage_stats` over the day
(the target: under 1 s) and first pages of `list_call_logs`, and shows how many rows
each rollup level holds.

  sqlite    a file in a temporary folder
  postgres  a private schema unigate_bench_<random> in UNIGATE_TEST_POSTGRES_DSN
            (default postgresql://postgres@127.0.0.1:5432/test), dropped at the end
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import uvloop

from unigate.gateway.store.models import (
    Bucket,
    CallLog,
    CallLogFilter,
    GroupBy,
    UsageQuery,
)
from unigate.gateway.store.postgres import PostgresStore
from unigate.gateway.store.rollup import ROLLUPS
from unigate.gateway.store.sql import SqlStore
from unigate.gateway.store.sqlite import SqliteStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BATCH = 500
ROUNDS = 5
PROVIDERS = ["openai", "anthropic", "google", "mistral", "azure"]
ALIAS_PROVIDERS = {
    "gpt-4o": ["openai", "azure"],
    "gpt-4o-mini": ["openai", "azure"],
    "claude-sonnet": ["anthropic"],
    "claude-haiku": ["anthropic"],
    "gemini-pro": ["google"],
    "gemini-flash": ["google"],
    "mistral-large": ["mistral"],
    "mistral-small": ["mistral"],
    "embed-small": ["openai"],
    "embed-large": ["openai", "azure"],
}
ALIASES = list(ALIAS_PROVIDERS)
ALIAS_WEIGHTS = [1 / (rank + 1) for rank in range(len(ALIASES))]
ERRORS = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"]


def make_batches(count: int, seed: int = 7) -> list[list[CallLog]]:
    rng = random.Random(seed)
    tenants = [f"ten_bench{t:02d}{'x' * 16}" for t in range(20)]
    consumers = [
        (tenant, f"con_{tenant[9:11]}{c:02d}{'y' * 18}") for tenant in tenants for c in range(10)
    ]
    records = []
    step = 86400 / count
    for i in range(count):
        tenant, consumer = rng.choice(consumers)
        alias = rng.choices(ALIASES, ALIAS_WEIGHTS)[0]
        error = rng.random() < 0.03
        latency = rng.lognormvariate(math.log(700), 0.9)
        stream = rng.random() < 0.5 and not alias.startswith("embed")
        records.append(
            CallLog(
                request_id=secrets.token_hex(16),
                ts=DAY0 + i * step + rng.random() * 2,  # the writer flushes every second
                method="StreamChat" if stream else "Embed" if alias.startswith("embed") else "Chat",
                code=rng.choice(ERRORS) if error else "OK",
                reason="UPSTREAM_UNAVAILABLE" if error else "",
                tenant_id=tenant,
                consumer_id=consumer,
                key_id=f"key_{consumer[4:10]}",
                alias=alias,
                provider=rng.choice(ALIAS_PROVIDERS[alias]),
                deployment="eu-1",
                vendor_model=alias + "-2025",
                latency_ms=latency,
                upstream_latency_ms=latency * 0.97,
                ttft_ms=latency * 0.2 if stream else None,
                input_tokens=int(rng.lognormvariate(math.log(600), 1)),
                output_tokens=0 if error else int(rng.lognormvariate(math.log(250), 1)),
                cost=round(rng.random() * 0.01, 6),
                cache_hit=rng.random() < 0.05,
                retries=1 if rng.random() < 0.02 else 0,
                client_address="10.0.3.17",
                end_user=f"user-{rng.randrange(5000)}",
            )
        )
    return [records[i : i + BATCH] for i in range(0, count, BATCH)]


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, float, object]:
    """(first run, median of the next ROUNDS) in ms, and the first result."""
    started = time.perf_counter()
    result = await call()
    first = (time.perf_counter() - started) * 1000
    runs = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await call()
        runs.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(runs), result


def queries(store: SqlStore, tenant: str) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    def usage(
        bucket: Bucket, group_by: GroupBy = GroupBy.NONE, **filters: str
    ) -> Callable[[], Awaitable[object]]:
        return lambda: store.usage_stats(
            UsageQuery(DAY0, DAY0 + 86400, bucket, group_by, **filters)
        )

    def listing(where: CallLogFilter) -> Callable[[], Awaitable[object]]:
        async def first_page() -> object:
            return (await store.list_call_logs(where, 50)).items

        return first_page

    return [
        ("usage_stats hour, ungrouped", usage(Bucket.HOUR)),
        ("usage_stats hour by alias", usage(Bucket.HOUR, GroupBy.ALIAS)),
        ("usage_stats minute, ungrouped", usage(Bucket.MINUTE)),
        ("usage_stats hour by tenant", usage(Bucket.HOUR, GroupBy.TENANT)),
        ("usage_stats hour by consumer", usage(Bucket.HOUR, GroupBy.CONSUMER)),
        (
            "usage_stats day by alias, one tenant",
            usage(Bucket.DAY, GroupBy.ALIAS, tenant_id=tenant),
        ),
        (
            "usage_stats minute by alias, one tenant",
            usage(Bucket.MINUTE, GroupBy.ALIAS, tenant_id=tenant),
        ),
        ("usage_stats minute by alias (worst)", usage(Bucket.MINUTE, GroupBy.ALIAS)),
        ("list_call_logs page 1, one tenant", listing(CallLogFilter(tenant_id=tenant))),
        ("list_call_logs page 1, errors only", listing(CallLogFilter(errors_only=True))),
        ("list_call_logs page 1, unfiltered", listing(CallLogFilter())),
    ]


async def table_rows(store: SqlStore) -> list[tuple[str, int]]:
    counts = []
    async with store._read() as conn:
        for table in ["call_logs", *(level.table for level in ROLLUPS)]:
            row = await conn.fetchrow(f"SELECT COUNT(*) AS n FROM {table}")
            counts.append((table, int(row["n"]) if row else 0))
    return counts


async def run(name: str, store: SqlStore, batches: list[list[CallLog]]) -> None:
    count = sum(map(len, batches))
    await store.open()
    try:
        started = time.perf_counter()
        for batch in batches:
            await store.insert_call_logs(batch)
        seconds = time.perf_counter() - started
        print(
            f"\n{name}: inserted {count:,} calls in {seconds:.1f} s"
            f" = {count / seconds:,.0f} calls/s ({len(batches):,} batches of {BATCH},"
            f" {seconds / len(batches) * 1000:.1f} ms each)"
        )
        for table, rows in await table_rows(store):
            print(f"  {table:<22} {rows:>10,} rows")
        print(f"  {'query over the whole day':<42} {'rows':>6} {'first ms':>9} {'median ms':>10}")
        for label, call in queries(store, batches[0][0].tenant_id or ""):
            first, median, result = await timed(call)
            rows = len(result) if isinstance(result, list) else 0
            flag = "" if not label.startswith("usage") or max(first, median) < 1000 else "  > 1 s"
            print(f"  {label:<42} {rows:>6} {first:>9.1f} {median:>10.1f}{flag}")
    finally:
        await store.close()


def folder_size(folder: str) -> int:
    return sum(path.stat().st_size for path in Path(folder).iterdir())


async def main(count: int, which: str) -> None:
    print(f"generating {count:,} calls over one day ...", flush=True)
    batches = make_batches(count)
    if which in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "bench.db")
            await run("sqlite", SqliteStore(path), batches)
            print(f"  database files: {folder_size(folder) / 1e6:,.0f} MB")
    if which in ("postgres", "both"):
        dsn = os.environ.get("UNIGATE_TEST_POSTGRES_DSN", DEFAULT_DSN)
        try:
            await (await asyncpg.connect(dsn, timeout=5)).close()
        except (OSError, asyncpg.PostgresError) as exc:
            if which == "postgres":
                raise SystemExit(f"PostgreSQL is unreachable at {dsn}: {exc}") from None
            print(f"\npostgres: skipped, unreachable at {dsn} ({type(exc).__name__}: {exc})")
            return
        schema = f"unigate_bench_{secrets.token_hex(4)}"
        try:
            await run("postgres", PostgresStore(dsn, schema), batches)
        finally:
            conn = await asyncpg.connect(dsn)
            try:
                size = await conn.fetchval(
                    "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = $1 AND c.relkind = 'r'",
                    schema,
                )
                print(f"  schema {schema}: {int(size or 0) / 1e6:,.0f} MB, dropped")
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    uvloop.run(main(args.records, args.store))
