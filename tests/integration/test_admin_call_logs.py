"""ListCallLogs and GetUsageStats over a real AdminService and a real SQLite store:
records go in through the store, as the call-log writer puts them, and come back
filtered, paginated, followed and summed per bucket and group; bad requests are
INVALID_ARGUMENT naming the field; a tenant admin sees its own tenant only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from tests.admin_harness import (
    DENIED,
    INVALID,
    NOT_FOUND,
    World,
    admin_server,
    consumer,
    expect,
    tenant_admin,
    world,
)
from tests.helpers import bad_request_fields
from unigate.gateway.store.models import CallLog
from unigate.v1 import admin_pb2 as pb

__all__ = ["admin_server", "world"]  # fixtures, imported for pytest

BASE = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()  # a Monday, 10:00 UTC
HOUR = 3600.0
DAY = 86400.0


def stamp(epoch: float) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromNanoseconds(round(epoch * 1e9))
    return value


def millis(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e6))
    return duration


def call(request_id: str, ts: float, **fields: Any) -> CallLog:
    defaults: dict[str, Any] = {
        "method": "Chat",
        "code": "OK",
        "alias": "gpt",
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "vendor_model": "gpt-4o",
        "latency_ms": 100.0,
    }
    return CallLog(request_id=request_id, ts=ts, **{**defaults, **fields})


async def insert(world: World, *records: CallLog) -> None:
    await world.server.store.insert_call_logs(list(records))


def calls_of(world: World) -> list[CallLog]:
    """Seven calls of tenants A and B and one without a tenant, in insertion order."""
    a, b = world.a, world.b
    return [
        call("r1", BASE + 60, tenant_id=a, consumer_id=world.a1, input_tokens=10),
        call("r2", BASE + 120, tenant_id=a, consumer_id=world.a2, code="UNAVAILABLE",
             reason="UPSTREAM_UNAVAILABLE", latency_ms=900.0),
        call("r3", BASE + 180, tenant_id=b, consumer_id=world.b1, alias="claude",
             provider="anthropic", deployment="claude"),
        call("r4", BASE + 240, tenant_id=a, consumer_id=world.a1, alias="claude",
             code="RESOURCE_EXHAUSTED", reason="RATE_LIMITED", latency_ms=2.0),
        call("r5", BASE + 300, tenant_id=b, consumer_id=world.b1, latency_ms=1500.0),
        call("r6", BASE + 360, method="Embed", alias="embed"),
        call("r7", BASE + 420, tenant_id=a, consumer_id=world.a2, latency_ms=450.0),
    ]  # fmt: skip


async def list_ids(world: World, who: str = "admin", **request: Any) -> list[str]:
    reply = await world.call("ListCallLogs", pb.ListCallLogsRequest(**request), who)
    return [log.request_id for log in reply.call_logs]


async def test_every_field_comes_back(world: World) -> None:
    full = call(
        "req-full",
        BASE + 0.25,
        method="StreamChat",
        code="DEADLINE_EXCEEDED",
        reason="UPSTREAM_TIMEOUT",
        tenant_id=world.a,
        consumer_id=world.a1,
        key_id=world.a1_key,
        deployment="eu",
        latency_ms=1234.5,
        upstream_latency_ms=1200.25,
        ttft_ms=80.5,
        input_tokens=11,
        output_tokens=22,
        cached_tokens=3,
        cost=0.0125,
        cache_hit=True,
        retries=2,
        fallbacks="gpt-big,gpt-old",
        client_address="10.1.2.3",
        end_user="user-42",
        request_body='{"model":"gpt"}',
        response_body='{"text":"[REDACTED]"}',
    )
    bare = call("req-bare", BASE + 1)
    await insert(world, full, bare)
    reply = await world.call("ListCallLogs", pb.ListCallLogsRequest())
    got_bare, got_full = reply.call_logs
    assert got_full == pb.CallLog(
        id=got_full.id,
        request_id="req-full",
        start_time=stamp(BASE + 0.25),
        method="StreamChat",
        code="DEADLINE_EXCEEDED",
        reason="UPSTREAM_TIMEOUT",
        tenant_id=world.a,
        consumer_id=world.a1,
        key_id=world.a1_key,
        alias="gpt",
        provider="openai",
        deployment="eu",
        vendor_model="gpt-4o",
        latency=millis(1234.5),
        upstream_latency=millis(1200.25),
        time_to_first_token=millis(80.5),
        input_tokens=11,
        output_tokens=22,
        cached_tokens=3,
        cost=0.0125,
        cache_hit=True,
        retries=2,
        fallbacks=["gpt-big", "gpt-old"],
        client_address="10.1.2.3",
        end_user="user-42",
        request_body='{"model":"gpt"}',
        response_body='{"text":"[REDACTED]"}',
    )
    assert got_bare.id > got_full.id > 0
    # Unset in the store, unset on the wire: no bodies, no upstream, no stream.
    for name in ("request_body", "response_body", "upstream_latency", "time_to_first_token"):
        assert not got_bare.HasField(name), name
    assert got_bare.tenant_id == got_bare.consumer_id == got_bare.key_id == ""
    assert list(got_bare.fallbacks) == []


async def test_filters(world: World) -> None:
    await insert(world, *calls_of(world))
    everything = ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    assert await list_ids(world) == everything  # newest first, with no range: all retained
    assert await list_ids(world, tenant_id=world.a) == ["r7", "r4", "r2", "r1"]
    assert await list_ids(world, consumer_id=world.a1) == ["r4", "r1"]
    assert await list_ids(world, alias="claude") == ["r4", "r3"]
    assert await list_ids(world, codes=["unavailable", "Resource_Exhausted"]) == ["r4", "r2"]
    assert await list_ids(world, errors_only=True) == ["r4", "r2"]
    assert await list_ids(world, errors_only=True, tenant_id=world.b) == []
    assert await list_ids(world, min_latency=millis(450)) == ["r7", "r5", "r2"]
    assert await list_ids(world, request_id="r3") == ["r3"]
    assert await list_ids(world, request_id="nope") == []
    # [start_time, end_time): r2 arrived exactly at the start, r5 exactly at the end.
    window = {"start_time": stamp(BASE + 120), "end_time": stamp(BASE + 300)}
    assert await list_ids(world, **window) == ["r4", "r3", "r2"]
    assert await list_ids(world, start_time=stamp(BASE + 400)) == ["r7"]
    assert await list_ids(world, end_time=stamp(BASE + 61)) == ["r1"]
    combined = await list_ids(
        world, tenant_id=world.a, alias="gpt", min_latency=millis(100), codes=["OK"]
    )
    assert combined == ["r7", "r1"]


async def test_pages_cover_everything_once(world: World) -> None:
    await insert(world, *calls_of(world))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await world.call(
            "ListCallLogs", pb.ListCallLogsRequest(page_size=3, page_token=token)
        )
        seen += [log.request_id for log in reply.call_logs]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert (pages, seen) == (3, ["r7", "r6", "r5", "r4", "r3", "r2", "r1"])
    filtered = await world.call(
        "ListCallLogs", pb.ListCallLogsRequest(tenant_id=world.a, page_size=2)
    )
    second = await world.call(
        "ListCallLogs",
        pb.ListCallLogsRequest(tenant_id=world.a, page_size=2, page_token=filtered.next_page_token),
    )
    assert [log.request_id for log in [*filtered.call_logs, *second.call_logs]] == [
        "r7",
        "r4",
        "r2",
        "r1",
    ]
    assert second.next_page_token == ""


async def test_after_id_follows_new_calls_oldest_first(world: World) -> None:
    await insert(world, *calls_of(world))
    newest = await world.call("ListCallLogs", pb.ListCallLogsRequest(page_size=1))
    ids = {log.request_id: log.id for log in (await world.call(
        "ListCallLogs", pb.ListCallLogsRequest())).call_logs}  # fmt: skip
    assert newest.call_logs[0].request_id == "r7"
    assert await list_ids(world, after_id=ids["r4"]) == ["r5", "r6", "r7"]
    assert await list_ids(world, after_id=0) == ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]
    assert await list_ids(world, after_id=ids["r7"]) == []
    await insert(world, call("r8", BASE + 1000, tenant_id=world.a), call("r9", BASE + 10))
    # Recorded later, so after r7 whatever its arrival time; filters still apply.
    assert await list_ids(world, after_id=ids["r7"]) == ["r8", "r9"]
    assert await list_ids(world, after_id=ids["r7"], tenant_id=world.a) == ["r8"]
    first = await world.call("ListCallLogs", pb.ListCallLogsRequest(after_id=0, page_size=5))
    rest = await world.call(
        "ListCallLogs",
        pb.ListCallLogsRequest(after_id=0, page_size=5, page_token=first.next_page_token),
    )
    assert [log.request_id for log in [*first.call_logs, *rest.call_logs]] == [
        f"r{n}" for n in range(1, 10)
    ]
    assert len(first.call_logs) == 5 and rest.next_page_token == ""


def usage_calls(world: World) -> list[CallLog]:
    """Two hours of 2 March and one call on the next day, in three tenants' hands."""
    return [
        call("u1", BASE + 60, tenant_id=world.a, consumer_id=world.a1, input_tokens=10,
             output_tokens=20, cached_tokens=5, cost=0.5, latency_ms=100.0),
        call("u2", BASE + 120, tenant_id=world.a, consumer_id=world.a2, code="UNAVAILABLE",
             latency_ms=300.0),
        call("u3", BASE + HOUR + 30, tenant_id=world.a, consumer_id=world.a1, alias="claude",
             provider="anthropic", deployment="claude", input_tokens=7, output_tokens=3,
             cost=0.25, cache_hit=True, latency_ms=200.0),
        call("u4", BASE + HOUR + 90, tenant_id=world.b, consumer_id=world.b1, input_tokens=1,
             output_tokens=1, cost=0.125, latency_ms=50.0),
        call("u5", BASE + DAY, tenant_id=world.a, consumer_id=world.a1,
             code="RESOURCE_EXHAUSTED", latency_ms=10.0),
    ]  # fmt: skip


Row = tuple[float, str, int, int, int, int, int, float, int]


def summary(rows: Sequence[pb.UsageRow]) -> list[Row]:
    """(bucket start, group, calls, errors, tokens in/out/cached, cost, cache hits)."""
    return [
        (
            row.bucket_start_time.ToNanoseconds() / 1e9,
            row.group,
            row.calls,
            row.errors,
            row.input_tokens,
            row.output_tokens,
            row.cached_tokens,
            round(row.cost, 9),
            row.cache_hits,
        )
        for row in rows
    ]


async def usage(world: World, who: str = "admin", **request: Any) -> pb.GetUsageStatsResponse:
    reply: pb.GetUsageStatsResponse = await world.call(
        "GetUsageStats", pb.GetUsageStatsRequest(**request), who
    )
    return reply


TWO_HOURS = {"start_time": stamp(BASE), "end_time": stamp(BASE + 2 * HOUR)}


async def test_usage_per_hour(world: World) -> None:
    await insert(world, *usage_calls(world))
    reply = await usage(world, bucket=pb.USAGE_BUCKET_HOUR, **TWO_HOURS)
    assert summary(reply.rows) == [
        (BASE, "", 2, 1, 10, 20, 5, 0.5, 0),
        (BASE + HOUR, "", 2, 0, 8, 4, 0, 0.375, 1),
    ]
    first, second = reply.rows
    assert (first.error_rate, first.cache_hit_rate) == (0.5, 0.0)
    assert (second.error_rate, second.cache_hit_rate) == (0.0, 0.5)
    assert first.latency_mean.ToNanoseconds() / 1e6 == pytest.approx(200.0)
    assert second.latency_mean.ToNanoseconds() / 1e6 == pytest.approx(125.0)
    for row in reply.rows:
        p50, p95, p99 = (d.ToNanoseconds() for d in (row.latency_p50, row.latency_p95,
                                                     row.latency_p99))  # fmt: skip
        assert 0 < p50 <= p95 <= p99
    assert (reply.start_time, reply.end_time) == (stamp(BASE), stamp(BASE + 2 * HOUR))
    assert (reply.bucket, reply.group_by) == (pb.USAGE_BUCKET_HOUR, pb.USAGE_GROUP_BY_UNSPECIFIED)


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        pytest.param(
            pb.USAGE_GROUP_BY_TENANT,
            lambda w: sorted(  # ordered by bucket, then group: ids made in one ms are random
                [
                    (BASE, w.a, 2, 1, 10, 20, 5, 0.5, 0),
                    (BASE + HOUR, w.a, 1, 0, 7, 3, 0, 0.25, 1),
                    (BASE + HOUR, w.b, 1, 0, 1, 1, 0, 0.125, 0),
                ]
            ),
            id="tenant",
        ),
        pytest.param(
            pb.USAGE_GROUP_BY_CONSUMER,
            lambda w: sorted(
                [
                    (BASE, w.a1, 1, 0, 10, 20, 5, 0.5, 0),
                    (BASE, w.a2, 1, 1, 0, 0, 0, 0.0, 0),
                    (BASE + HOUR, w.a1, 1, 0, 7, 3, 0, 0.25, 1),
                    (BASE + HOUR, w.b1, 1, 0, 1, 1, 0, 0.125, 0),
                ]
            ),
            id="consumer",
        ),
        pytest.param(
            pb.USAGE_GROUP_BY_ALIAS,
            lambda w: [
                (BASE, "gpt", 2, 1, 10, 20, 5, 0.5, 0),
                (BASE + HOUR, "claude", 1, 0, 7, 3, 0, 0.25, 1),
                (BASE + HOUR, "gpt", 1, 0, 1, 1, 0, 0.125, 0),
            ],
            id="alias",
        ),
        pytest.param(
            pb.USAGE_GROUP_BY_PROVIDER,
            lambda w: [
                (BASE, "openai", 2, 1, 10, 20, 5, 0.5, 0),
                (BASE + HOUR, "anthropic", 1, 0, 7, 3, 0, 0.25, 1),
                (BASE + HOUR, "openai", 1, 0, 1, 1, 0, 0.125, 0),
            ],
            id="provider",
        ),
    ],
)
async def test_usage_by_group(world: World, group_by: int, expected: Any) -> None:
    await insert(world, *usage_calls(world))
    reply = await usage(world, group_by=group_by, **TWO_HOURS)
    assert summary(reply.rows) == expected(world)
    assert reply.group_by == group_by
    assert reply.bucket == pb.USAGE_BUCKET_HOUR  # the default


async def test_usage_per_day_and_minute(world: World) -> None:
    await insert(world, *usage_calls(world))
    day_start = BASE - 10 * HOUR
    days = await usage(
        world,
        bucket=pb.USAGE_BUCKET_DAY,
        start_time=stamp(BASE),  # rounded down to its day
        end_time=stamp(day_start + 2 * DAY),
    )
    assert summary(days.rows) == [
        (day_start, "", 4, 1, 18, 24, 5, 0.875, 1),
        (day_start + DAY, "", 1, 1, 0, 0, 0, 0.0, 0),
    ]
    assert days.start_time == stamp(day_start)
    minutes = await usage(world, bucket=pb.USAGE_BUCKET_MINUTE, **TWO_HOURS)
    assert [row.bucket_start_time for row in minutes.rows] == [
        stamp(BASE + 60),
        stamp(BASE + 120),
        stamp(BASE + HOUR),
        stamp(BASE + HOUR + 60),
    ]
    assert [row.calls for row in minutes.rows] == [1, 1, 1, 1]


async def test_usage_filters(world: World) -> None:
    await insert(world, *usage_calls(world))
    by_alias = await usage(world, alias="claude", **TWO_HOURS)
    assert summary(by_alias.rows) == [(BASE + HOUR, "", 1, 0, 7, 3, 0, 0.25, 1)]
    by_provider = await usage(world, provider="openai", **TWO_HOURS)
    assert [row.calls for row in by_provider.rows] == [2, 1]
    by_consumer = await usage(world, consumer_id=world.a1, group_by=pb.USAGE_GROUP_BY_ALIAS,
                              **TWO_HOURS)  # fmt: skip
    assert summary(by_consumer.rows) == [
        (BASE, "gpt", 1, 0, 10, 20, 5, 0.5, 0),
        (BASE + HOUR, "claude", 1, 0, 7, 3, 0, 0.25, 1),
    ]
    by_tenant = await usage(world, tenant_id=world.b, **TWO_HOURS)
    assert summary(by_tenant.rows) == [(BASE + HOUR, "", 1, 0, 1, 1, 0, 0.125, 0)]


async def test_defaults_last_24_hours_hourly(world: World) -> None:
    now = time.time()
    await insert(
        world,
        call("recent", now - HOUR, tenant_id=world.a),
        call("yesterday", now - 23 * HOUR, tenant_id=world.a),
        call("old", now - 3 * DAY, tenant_id=world.a),
        call("ancient", now - 100 * DAY, tenant_id=world.a),
    )
    reply = await usage(world)
    assert reply.bucket == pb.USAGE_BUCKET_HOUR
    assert reply.group_by == pb.USAGE_GROUP_BY_UNSPECIFIED
    end = reply.end_time.ToNanoseconds() / 1e9
    start = reply.start_time.ToNanoseconds() / 1e9
    assert now <= end <= now + 60 + 5 and end % 60 == 0
    assert start % HOUR == 0 and end - 24 * HOUR - HOUR < start <= end - 24 * HOUR
    assert sum(row.calls for row in reply.rows) == 2
    assert all(start <= row.bucket_start_time.ToNanoseconds() / 1e9 < end for row in reply.rows)
    # A start alone runs to now; the list without a range is everything retained.
    since = await usage(world, start_time=stamp(now - 4 * DAY), bucket=pb.USAGE_BUCKET_DAY)
    assert sum(row.calls for row in since.rows) == 3
    assert await list_ids(world) == ["ancient", "old", "yesterday", "recent"]


BAD_REQUESTS: dict[str, tuple[str, Any, str]] = {
    "list: end before start": (
        "ListCallLogs",
        pb.ListCallLogsRequest(start_time=stamp(BASE), end_time=stamp(BASE - 1)),
        "end_time",
    ),
    "list: empty range": (
        "ListCallLogs",
        pb.ListCallLogsRequest(start_time=stamp(BASE), end_time=stamp(BASE)),
        "end_time",
    ),
    "list: negative page size": ("ListCallLogs", pb.ListCallLogsRequest(page_size=-1), "page_size"),
    "list: bad page token": (
        "ListCallLogs",
        pb.ListCallLogsRequest(page_token="not-a-token!"),
        "page_token",
    ),
    "list: unknown code": (
        "ListCallLogs",
        pb.ListCallLogsRequest(codes=["OK", "NOPE"]),
        "codes[1]",
    ),
    "list: negative latency": (
        "ListCallLogs",
        pb.ListCallLogsRequest(min_latency=duration_pb2.Duration(seconds=-1)),
        "min_latency",
    ),
    "list: negative after_id": ("ListCallLogs", pb.ListCallLogsRequest(after_id=-1), "after_id"),
    "stats: end before start": (
        "GetUsageStats",
        pb.GetUsageStatsRequest(start_time=stamp(BASE), end_time=stamp(BASE - HOUR)),
        "end_time",
    ),
    "stats: start in the future": (
        "GetUsageStats",
        pb.GetUsageStatsRequest(start_time=stamp(time.time() + DAY)),
        "start_time",
    ),
    "stats: unknown bucket": ("GetUsageStats", pb.GetUsageStatsRequest(bucket=99), "bucket"),
    "stats: unknown group": ("GetUsageStats", pb.GetUsageStatsRequest(group_by=42), "group_by"),
    "stats: too many buckets": (
        "GetUsageStats",
        pb.GetUsageStatsRequest(
            start_time=stamp(BASE), end_time=stamp(BASE + 2 * DAY), bucket=pb.USAGE_BUCKET_MINUTE
        ),
        "start_time",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_requests_name_the_field(world: World, case: str) -> None:
    rpc, request, field = BAD_REQUESTS[case]
    error = await expect(world.call(rpc, request), *INVALID)
    fields = bad_request_fields(error)
    assert list(fields) == [field], fields
    assert fields[field]


async def test_too_many_buckets_says_what_to_send(world: World) -> None:
    rpc, request, _ = BAD_REQUESTS["stats: too many buckets"]
    error = await expect(world.call(rpc, request), *INVALID)
    assert bad_request_fields(error)["start_time"] == (
        "the range spans 2880 minute buckets, more than 1500: send a later start_time,"
        " an earlier end_time or a wider bucket"
    )
    # The largest ranges that fit: a day of minutes, 60 days of hours.
    await usage(world, bucket=pb.USAGE_BUCKET_MINUTE, start_time=stamp(BASE),
                end_time=stamp(BASE + DAY))  # fmt: skip
    await usage(world, start_time=stamp(BASE), end_time=stamp(BASE + 60 * DAY))


async def test_tenant_admin_sees_only_its_tenant(world: World) -> None:
    await insert(world, *calls_of(world), *usage_calls(world))
    who = tenant_admin(world.a)
    mine = ["r7", "r4", "r2", "r1"]
    assert [i for i in await list_ids(world, who) if i.startswith("r")] == mine
    assert await list_ids(world, who, tenant_id=world.a, request_id="r3") == []
    assert await list_ids(world, who, errors_only=True) == ["u5", "u2", "r4", "r2"]
    # Another tenant's consumer or call matches nothing, as an unknown one does.
    assert await list_ids(world, who, consumer_id=world.b1) == []
    assert await list_ids(world, who, request_id="r5") == []
    assert await list_ids(world, who, after_id=0, alias="claude") == ["r4", "u3"]
    stats = await usage(world, who, group_by=pb.USAGE_GROUP_BY_TENANT, **TWO_HOURS)
    assert {row.group for row in stats.rows} == {world.a}
    by_consumer = await usage(world, who, group_by=pb.USAGE_GROUP_BY_CONSUMER, **TWO_HOURS)
    assert {row.group for row in by_consumer.rows} == {world.a1, world.a2}
    assert sum(row.calls for row in by_consumer.rows) == 7  # r1 r2 r4 r7 u1 u2 u3
    assert (await usage(world, who, consumer_id=world.b1, **TWO_HOURS)).rows == []
    explicit = await usage(world, who, tenant_id=world.a, group_by=pb.USAGE_GROUP_BY_TENANT,
                           **TWO_HOURS)  # fmt: skip
    assert explicit == stats
    # Tenant B's own admin sees B's.
    assert await list_ids(world, tenant_admin(world.b)) == ["u4", "r5", "r3"]


@pytest.mark.parametrize("rpc", ["ListCallLogs", "GetUsageStats"])
async def test_another_tenant_is_not_found_like_a_missing_one(world: World, rpc: str) -> None:
    await insert(world, *calls_of(world))
    request = getattr(pb, f"{rpc}Request")
    who = tenant_admin(world.a)
    hidden = await expect(world.call(rpc, request(tenant_id=world.b), who), *NOT_FOUND)
    missing = await expect(world.call(rpc, request(tenant_id="ten_missing"), who), *NOT_FOUND)
    assert (hidden.details() or "").replace(world.b, "<id>") == (missing.details() or "").replace(
        "ten_missing", "<id>"
    )
    # A global admin may name any tenant, even one the store does not hold (JWT tenants).
    await world.call(rpc, request(tenant_id=world.b))
    await world.call(rpc, request(tenant_id="ten_missing"))


@pytest.mark.parametrize("rpc", ["ListCallLogs", "GetUsageStats"])
async def test_consumers_and_anonymous_callers_are_refused(world: World, rpc: str) -> None:
    request = getattr(pb, f"{rpc}Request")
    await expect(world.call(rpc, request(), consumer(world.a, world.a1)), *DENIED)
    await expect(world.call(rpc, request(tenant_id=world.a), consumer(world.a, world.a1)), *DENIED)
    await expect(
        world.call(rpc, request(), who=None), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )


async def test_records_without_a_tenant_are_for_global_admins(world: World) -> None:
    await insert(world, replace(calls_of(world)[5], request_id="no-tenant"))
    assert await list_ids(world) == ["no-tenant"]
    assert await list_ids(world, tenant_admin(world.a)) == []
