"""Call logs and usage rollups on both backends: insert, every list filter, pages
and tails, usage statistics against sums computed here from the same records,
concurrent writers, retention, and migration 3 over an existing database."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable

import pytest

from tests.store.conftest import NewStore
from unigate.gateway.store.migrations import MIGRATIONS
from unigate.gateway.store.models import (
    BUCKET_SECONDS,
    Bucket,
    CallLog,
    CallLogFilter,
    GroupBy,
    UsageQuery,
    UsageRow,
)
from unigate.gateway.store.rollup import LATENCY_BOUNDS_MS, bin_of
from unigate.gateway.store.sql import SqlStore

DAY = 86400
T0 = 1_700_000_000 // DAY * DAY + DAY  # a UTC midnight
TENANTS = ["ten_a", "ten_b", "ten_c"]
ALIASES = ["gpt-4o", "claude", "Mistral", "embed"]
PROVIDERS = ["openai", "anthropic", "mistral"]
CODES = ["OK"] * 8 + ["UNAVAILABLE", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"]


def make_records(count: int, seed: int = 1, start: float = T0 - 7200, span: float = 28 * 3600):
    """Mixed outcomes across tenants, consumers, aliases, providers and minutes; ts
    in no particular order, as batches from several processes would have them."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        tenant = rng.choice([*TENANTS, None])
        latency = rng.lognormvariate(math.log(600), 1.2)
        records.append(
            CallLog(
                request_id=f"req-{seed}-{i}",
                ts=start + rng.random() * span,
                method=rng.choice(["Chat", "StreamChat", "Embed"]),
                code=rng.choice(CODES),
                tenant_id=tenant,
                consumer_id=None if tenant is None else f"con_{tenant[-1]}{rng.randrange(3)}",
                key_id=None if tenant is None else f"key{rng.randrange(5)}",
                alias=rng.choice(ALIASES),
                provider=rng.choice([*PROVIDERS, ""]),
                latency_ms=latency,
                upstream_latency_ms=latency * 0.9,
                input_tokens=rng.randrange(2000),
                output_tokens=rng.randrange(800),
                cached_tokens=rng.randrange(100),
                cost=rng.randrange(1000) / 8192,  # exact in binary: sums do not depend on order
                cache_hit=rng.random() < 0.1,
                retries=rng.randrange(3),
            )
        )
    return records


async def insert(store: SqlStore, records: list[CallLog], batch: int = 97) -> list[CallLog]:
    """Insert in batches; the records with the ids the store gave them (ascending)."""
    for i in range(0, len(records), batch):
        await store.insert_call_logs(records[i : i + batch])
    stored = await walk(store, CallLogFilter(after_id=0), 1000)
    assert [r.request_id for r in stored] == [r.request_id for r in records]
    return stored


async def walk(store: SqlStore, where: CallLogFilter, page_size: int) -> list[CallLog]:
    items: list[CallLog] = []
    token = ""
    while True:
        page = await store.list_call_logs(where, page_size, token)
        items += page.items
        if not page.next_page_token:
            return items
        token = page.next_page_token
        assert len(items) < 100_000, "pagination does not end"


async def test_a_record_reads_back_whole(store: SqlStore) -> None:
    await store.insert_call_logs([])  # nothing to do
    assert (await store.list_call_logs(CallLogFilter())).items == []
    full = CallLog(
        request_id="req-1",
        ts=T0 + 1.5,
        method="StreamChat",
        code="RESOURCE_EXHAUSTED",
        reason="QUOTA_EXCEEDED",
        tenant_id="ten_a",
        consumer_id="con_a0",
        key_id="key1",
        alias="gpt-4o",
        provider="openai",
        deployment="east",
        vendor_model="gpt-4o-2024-08-06",
        latency_ms=812.25,
        upstream_latency_ms=790.5,
        ttft_ms=120.0,
        input_tokens=12,
        output_tokens=34,
        cached_tokens=5,
        cost=0.0125,
        cache_hit=True,
        retries=2,
        fallbacks="claude,mistral",
        client_address="10.0.0.7",
        end_user="user-42",
        request_body='{"messages": []}',
        response_body='{"text": "hé ✓"}',
    )
    bare = CallLog(request_id="req-2", ts=T0 + 2, method="Chat", code="UNAUTHENTICATED")
    await store.insert_call_logs([full, bare])
    listed = (await store.list_call_logs(CallLogFilter())).items
    assert [r.request_id for r in listed] == ["req-2", "req-1"]  # newest first
    assert listed[1].id < listed[0].id
    assert listed == [
        dataclasses.replace(bare, id=listed[0].id),
        dataclasses.replace(full, id=listed[1].id),
    ]


Matcher = Callable[[CallLog], bool]
FILTERS: list[tuple[CallLogFilter, Matcher]] = [
    (CallLogFilter(), lambda r: True),
    (CallLogFilter(since=T0, until=T0 + 3600), lambda r: T0 <= r.ts < T0 + 3600),
    (CallLogFilter(since=T0 + 20 * 3600), lambda r: r.ts >= T0 + 20 * 3600),
    (CallLogFilter(tenant_id="ten_b"), lambda r: r.tenant_id == "ten_b"),
    (CallLogFilter(consumer_id="con_a1"), lambda r: r.consumer_id == "con_a1"),
    (CallLogFilter(alias="Mistral"), lambda r: r.alias == "Mistral"),
    (CallLogFilter(codes=("UNAVAILABLE",)), lambda r: r.code == "UNAVAILABLE"),
    (
        CallLogFilter(codes=("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")),
        lambda r: r.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"),
    ),
    (CallLogFilter(errors_only=True), lambda r: r.code != "OK"),
    (CallLogFilter(min_latency_ms=2000), lambda r: r.latency_ms >= 2000),
    (CallLogFilter(request_id="req-1-17"), lambda r: r.request_id == "req-1-17"),
    (
        CallLogFilter(tenant_id="ten_a", errors_only=True, min_latency_ms=300, until=T0 + DAY),
        lambda r: (
            r.tenant_id == "ten_a" and r.code != "OK" and r.latency_ms >= 300 and r.ts < T0 + DAY
        ),
    ),
    (CallLogFilter(tenant_id="ten_missing"), lambda r: False),
]


async def test_every_filter_lists_exactly_its_records(store: SqlStore) -> None:
    stored = await insert(store, make_records(400))
    for where, matches in FILTERS:
        expected = [r.id for r in reversed(stored) if matches(r)]
        assert expected or where.tenant_id == "ten_missing", where
        assert [r.id for r in await walk(store, where, 1000)] == expected, where
        assert [r.id for r in await walk(store, where, 7)] == expected, where
        following = dataclasses.replace(where, after_id=stored[100].id)
        tail = [r.id for r in stored[101:] if matches(r)]
        assert [r.id for r in await walk(store, following, 9)] == tail, where


async def test_pages_cover_each_record_once(store: SqlStore) -> None:
    stored = await insert(store, make_records(120))
    first = await store.list_call_logs(CallLogFilter())
    assert len(first.items) == 50 and first.next_page_token  # the default page size
    for size in (1, 7, 50, 119, 120, 5000):
        ids = [r.id for r in await walk(store, CallLogFilter(), size)]
        assert ids == sorted((r.id for r in stored), reverse=True), size
    assert len((await store.list_call_logs(CallLogFilter(), 5000)).items) == 120
    with pytest.raises(ValueError, match="page_size"):
        await store.list_call_logs(CallLogFilter(), -1)


async def test_a_tail_follows_new_calls_in_order(store: SqlStore) -> None:
    stored = await insert(store, make_records(30))
    assert await walk(store, CallLogFilter(after_id=stored[-1].id), 10) == []
    more = await store.list_call_logs(CallLogFilter(after_id=stored[9].id), 5)
    assert [r.id for r in more.items] == [r.id for r in stored[10:15]]
    await store.insert_call_logs(make_records(12, seed=2))
    followed = await walk(store, CallLogFilter(after_id=stored[-1].id), 5)
    assert [r.request_id for r in followed] == [f"req-2-{i}" for i in range(12)]
    assert [r.id for r in followed] == sorted(r.id for r in followed)
    assert followed[0].id > stored[-1].id


async def test_tokens_of_other_lists_are_refused(store: SqlStore) -> None:
    await insert(store, make_records(5))
    newest = (await store.list_call_logs(CallLogFilter(), 2)).next_page_token
    tail = (await store.list_call_logs(CallLogFilter(after_id=0), 2)).next_page_token
    await store.create_tenant("t1")
    await store.create_tenant("t2")
    tenants = (await store.list_tenants(1)).next_page_token
    assert newest and tail and tenants
    for where, token in [
        (CallLogFilter(), tail),
        (CallLogFilter(after_id=0), newest),
        (CallLogFilter(), tenants),
        (CallLogFilter(), "bm90IGEgdG9rZW4"),
        (CallLogFilter(), "!!"),
    ]:
        with pytest.raises(ValueError, match="invalid page_token"):
            await store.list_call_logs(where, 2, token)


def expected_usage(
    records: Iterable[CallLog], query: UsageQuery
) -> dict[tuple[float, str], list[CallLog]]:
    seconds = BUCKET_SECONDS[query.bucket]
    first, end = math.floor(query.since / 60), math.ceil(query.until / 60)
    column = {
        GroupBy.NONE: None,
        GroupBy.TENANT: "tenant_id",
        GroupBy.CONSUMER: "consumer_id",
        GroupBy.ALIAS: "alias",
        GroupBy.PROVIDER: "provider",
    }[query.group_by]
    groups: dict[tuple[float, str], list[CallLog]] = defaultdict(list)
    for r in records:
        minute = math.floor(r.ts / 60)
        if not first <= minute < end:
            continue
        if any(
            wanted is not None and (getattr(r, name) or "") != wanted
            for name, wanted in [
                ("tenant_id", query.tenant_id),
                ("consumer_id", query.consumer_id),
                ("alias", query.alias),
                ("provider", query.provider),
            ]
        ):
            continue
        group = "" if column is None else getattr(r, column) or ""
        groups[(minute * 60 // seconds * seconds, group)].append(r)
    return dict(sorted(groups.items()))


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def check_row(row: UsageRow, calls: list[CallLog]) -> None:
    errors = sum(r.code != "OK" for r in calls)
    assert row.calls == len(calls)
    assert row.errors == errors
    assert row.error_rate == errors / len(calls)
    assert row.input_tokens == sum(r.input_tokens for r in calls)
    assert row.output_tokens == sum(r.output_tokens for r in calls)
    assert row.cached_tokens == sum(r.cached_tokens for r in calls)
    assert row.cost == sum(r.cost for r in calls)
    assert row.cache_hits == sum(r.cache_hit for r in calls)
    latencies = [r.latency_ms for r in calls]
    assert row.latency_mean_ms == pytest.approx(sum(latencies) / len(calls), rel=1e-9)
    for q, estimate in [
        (0.5, row.latency_p50_ms),
        (0.95, row.latency_p95_ms),
        (0.99, row.latency_p99_ms),
    ]:
        index = bin_of(_nearest_rank(latencies, q))
        lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
        assert lower <= estimate <= LATENCY_BOUNDS_MS[index], (q, estimate, index)


async def check_usage(store: SqlStore, records: list[CallLog], query: UsageQuery) -> int:
    expected = expected_usage(records, query)
    rows = await store.usage_stats(query)
    assert [(row.bucket_start, row.group) for row in rows] == list(expected), query
    for row in rows:
        check_row(row, expected[(row.bucket_start, row.group)])
    return len(rows)


RANGES = [
    (T0, T0 + DAY),  # aligned: whole days and hours
    (T0 - 5000.5, T0 + DAY + 4000.25),  # partial hours and days at both ends
    (T0 + 610, T0 + 3 * 3600 + 59),
]


@pytest.mark.parametrize("bucket", list(Bucket))
async def test_usage_stats_match_the_records(store: SqlStore, bucket: Bucket) -> None:
    records = make_records(600)
    await insert(store, records)
    seen = 0
    for since, until in RANGES:
        for group_by in GroupBy:
            query = UsageQuery(since, until, bucket, group_by)
            seen += await check_usage(store, records, query)
        for filters in [
            {"tenant_id": "ten_a"},
            {"tenant_id": "ten_b", "consumer_id": "con_b1"},
            {"alias": "claude", "provider": "anthropic"},
            {"tenant_id": "ten_c", "alias": "gpt-4o"},
            {"provider": ""},  # calls no provider served
        ]:
            for group_by in (GroupBy.NONE, GroupBy.CONSUMER, GroupBy.ALIAS):
                query = UsageQuery(since, until, bucket, group_by, **filters)
                seen += await check_usage(store, records, query)
    assert seen > 100


async def test_groups_sort_bytewise_and_buckets_are_utc_aligned(store: SqlStore) -> None:
    base = CallLog(request_id="r", ts=T0 + 7200 + 59.9, method="Chat", code="OK", latency_ms=5)
    await store.insert_call_logs(
        [dataclasses.replace(base, alias=alias) for alias in ["b", "B", "a", "a-1", "a_1", "Z"]]
    )
    rows = await store.usage_stats(UsageQuery(T0, T0 + DAY, Bucket.HOUR, GroupBy.ALIAS))
    assert [row.group for row in rows] == ["B", "Z", "a", "a-1", "a_1", "b"]
    assert {row.bucket_start for row in rows} == {T0 + 7200.0}
    [day] = await store.usage_stats(UsageQuery(T0 + 100, T0 + 7300, Bucket.DAY))
    assert day.bucket_start == T0 and day.calls == 6
    [since_1970] = await store.usage_stats(UsageQuery(-60.0, T0 + DAY, Bucket.DAY))
    assert since_1970 == day
    [minute] = await store.usage_stats(UsageQuery(T0 + 7259, T0 + 7261, Bucket.MINUTE))
    assert minute.bucket_start == T0 + 7200 + 0 and minute.calls == 6
    assert await store.usage_stats(UsageQuery(T0 + 7260, T0 + 9000, Bucket.MINUTE)) == []


@pytest.mark.parametrize(
    ("since", "until", "bucket", "message"),
    [
        (T0, T0, Bucket.HOUR, "since < until"),
        (T0 + 5, T0, Bucket.HOUR, "since < until"),
        (T0, math.inf, Bucket.DAY, "since < until"),
        (math.nan, T0, Bucket.DAY, "since < until"),
        (-1e12, T0, Bucket.DAY, "since < until"),
        (T0, T0 + 100_001 * 60, Bucket.MINUTE, "more than 100,000"),
        (0.0, T0, Bucket.HOUR, "more than 100,000"),
    ],
)
async def test_absurd_usage_queries_are_refused(
    store: SqlStore, since: float, until: float, bucket: Bucket, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.usage_stats(UsageQuery(since, until, bucket))


def _of_tenant(records: list[CallLog], tenant: str) -> list[CallLog]:
    return [dataclasses.replace(r, tenant_id=tenant, consumer_id=f"con_{tenant}") for r in records]


async def test_concurrent_writers_keep_sums_exact_and_tails_complete(new_store: NewStore) -> None:
    """Two writers: large batches of one tenant and small ones of another, so they
    share no rollup row (whose lock would order them anyway). A small batch that
    takes its ids after a large one must not become visible before it."""
    first, second, reader = await new_store(), await new_store(), await new_store()
    large = [_of_tenant(make_records(1500, seed, T0, 600), "ten_a") for seed in range(3)]
    small = [_of_tenant(make_records(20, seed, T0, 600), "ten_b") for seed in range(10, 40)]
    total = sum(map(len, large + small))
    followed: list[int] = []
    writing = True

    async def follow() -> None:
        while True:
            done = not writing
            after = followed[-1] if followed else 0
            page = await reader.list_call_logs(CallLogFilter(after_id=after), 1000)
            followed.extend(r.id for r in page.items)
            if done and not page.items:
                return
            await asyncio.sleep(0)

    async def write(store: SqlStore, batches: list[list[CallLog]]) -> None:
        for batch in batches:
            await store.insert_call_logs(batch)
            await asyncio.sleep(0)

    tail = asyncio.create_task(follow())
    await asyncio.gather(write(first, large), write(second, small))
    writing = False
    await asyncio.wait_for(tail, 30)
    assert len(followed) == len(set(followed)) == total  # no record skipped
    assert followed == sorted(followed)

    records = [r for batch in large + small for r in batch]
    for group_by in (GroupBy.NONE, GroupBy.TENANT, GroupBy.CONSUMER):
        for bucket in (Bucket.MINUTE, Bucket.HOUR):
            await check_usage(reader, records, UsageQuery(T0, T0 + 3600, bucket, group_by))


async def test_deleting_call_logs_is_bounded_by_limit_and_time(store: SqlStore) -> None:
    records = make_records(50, start=T0, span=5000)
    stored = await insert(store, records, batch=50)
    cutoff = T0 + 2500
    old = sorted((r for r in stored if r.ts < cutoff), key=lambda r: r.ts)
    assert len(old) > 12
    assert await store.delete_call_logs_before(cutoff, limit=5) == 5
    left = {r.id for r in await walk(store, CallLogFilter(), 1000)}
    assert left == {r.id for r in stored} - {r.id for r in old[:5]}  # the oldest went first
    deleted = 5
    while count := await store.delete_call_logs_before(cutoff, limit=4):
        assert count <= 4
        deleted += count
    assert deleted == len(old)
    assert all(r.ts >= cutoff for r in await walk(store, CallLogFilter(), 1000))
    # usage is kept apart from the records
    [usage] = await store.usage_stats(UsageQuery(T0, T0 + 5000, Bucket.DAY))
    assert usage.calls == 50
    with pytest.raises(ValueError, match="limit"):
        await store.delete_call_logs_before(cutoff, limit=0)


async def test_ids_are_not_reused_once_retention_empties_the_table(store: SqlStore) -> None:
    stored = await insert(store, make_records(5, start=T0, span=60))
    assert await store.delete_call_logs_before(T0 + DAY) == 5
    await store.insert_call_logs(make_records(1, seed=3, start=T0 + 100, span=1))
    [again] = (await store.list_call_logs(CallLogFilter(after_id=stored[-1].id))).items
    assert again.request_id == "req-3-0"


async def test_deleting_usage_is_bounded_by_limit_and_time(store: SqlStore) -> None:
    records = make_records(300, start=T0, span=DAY + 7200)  # into the next day
    await insert(store, records)
    day_after = T0 + DAY
    cutoff = T0 + 5 * 3600 + 30  # mid-minute: the minute it falls in is kept
    assert await store.delete_usage_before(cutoff, limit=7) == 7
    total = 7
    while count := await store.delete_usage_before(cutoff, limit=50):
        assert count <= 50
        total += count
    assert total > 50
    kept = [r for r in records if r.ts >= cutoff - 30]
    # whole periods after the cutoff are intact at every level
    await check_usage(store, kept, UsageQuery(cutoff - 30, day_after + 7200, Bucket.MINUTE))
    await check_usage(store, kept, UsageQuery(T0 + 6 * 3600, day_after, Bucket.HOUR, GroupBy.ALIAS))
    await check_usage(store, records, UsageQuery(T0, day_after, Bucket.DAY, GroupBy.CONSUMER))
    # a day's row goes only once the whole day has ended; its hours and minutes before
    assert await store.delete_usage_before(day_after + 7200, limit=100_000) > 0
    await check_usage(store, records, UsageQuery(day_after, day_after + DAY, Bucket.DAY))
    assert await store.usage_stats(UsageQuery(day_after, day_after + 7200, Bucket.HOUR)) == []
    assert await store.usage_stats(UsageQuery(T0, day_after, Bucket.DAY)) == []


async def test_minute_rollups_can_go_before_hours_and_days(store: SqlStore) -> None:
    records = make_records(200, start=T0, span=DAY)
    await insert(store, records)
    deleted = 0
    while count := await store.delete_usage_before(T0 + DAY, limit=1000, periods=(1,)):
        deleted += count
    assert deleted > 0
    # minute buckets are gone; hours and days, read from their own rollups, are whole
    assert await store.usage_stats(UsageQuery(T0, T0 + DAY, Bucket.MINUTE)) == []
    await check_usage(store, records, UsageQuery(T0, T0 + DAY, Bucket.HOUR, GroupBy.ALIAS))
    await check_usage(store, records, UsageQuery(T0, T0 + DAY, Bucket.DAY, GroupBy.TENANT))
    await check_usage(store, records, UsageQuery(T0, T0 + DAY, Bucket.HOUR, GroupBy.CONSUMER))


async def test_migration_3_applies_over_version_2(new_store: NewStore) -> None:
    old = await new_store(migrations=MIGRATIONS[:2])
    tenant = await old.create_tenant("acme")
    assert await old.applied_migrations() == [1, 2]
    await old.close()
    upgraded = await new_store()
    assert await upgraded.applied_migrations() == [1, 2, 3]
    assert await upgraded.get_tenant(tenant.id) == tenant
    records = make_records(20)
    await insert(upgraded, records)
    await check_usage(upgraded, records, UsageQuery(T0 - 7200, T0 + DAY, Bucket.HOUR))
