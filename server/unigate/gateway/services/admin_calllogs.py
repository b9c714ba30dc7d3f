"""The AdminService's call-log RPCs (AdminService inherits them): the recorded
inference calls, and usage summed per time bucket.

A global admin sees every call and may filter by any tenant, consumer or alias,
whether the store holds them or not (JWT tenants and consumers may live only in
tokens, and records outlast what they name). A tenant admin's query is always
confined to its own tenant: naming another tenant is NOT_FOUND, as a missing one
is, and a consumer of another tenant simply matches nothing, as an unknown
consumer does. Consumers are refused before anything is looked up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import grpc

from unigate.gateway.errors import FieldViolation, invalid_argument
from unigate.gateway.interceptors.base import Context
from unigate.gateway.services import admin_convert as convert
from unigate.gateway.services.admin_access import list_scope, require_admin, store_errors
from unigate.gateway.store.base import Store
from unigate.gateway.store.models import (
    BUCKET_SECONDS,
    Bucket,
    CallLogFilter,
    GroupBy,
    UsageQuery,
)
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

DEFAULT_USAGE_RANGE = 24 * 3600.0
MAX_BUCKETS = 1500
"""Buckets in one GetUsageStats range: a day of minutes, 60 days of hours."""

_BUCKETS = {
    pb.USAGE_BUCKET_UNSPECIFIED: Bucket.HOUR,
    pb.USAGE_BUCKET_MINUTE: Bucket.MINUTE,
    pb.USAGE_BUCKET_HOUR: Bucket.HOUR,
    pb.USAGE_BUCKET_DAY: Bucket.DAY,
}
_BUCKETS_PB = {bucket: number for number, bucket in _BUCKETS.items() if number}
_GROUPS = {
    pb.USAGE_GROUP_BY_UNSPECIFIED: GroupBy.NONE,
    pb.USAGE_GROUP_BY_TENANT: GroupBy.TENANT,
    pb.USAGE_GROUP_BY_CONSUMER: GroupBy.CONSUMER,
    pb.USAGE_GROUP_BY_ALIAS: GroupBy.ALIAS,
    pb.USAGE_GROUP_BY_PROVIDER: GroupBy.PROVIDER,
}
_BUCKET_CHOICES = "send USAGE_BUCKET_MINUTE, USAGE_BUCKET_HOUR or USAGE_BUCKET_DAY (unset: hourly)"
_GROUP_CHOICES = (
    "send USAGE_GROUP_BY_TENANT, USAGE_GROUP_BY_CONSUMER, USAGE_GROUP_BY_ALIAS,"
    " USAGE_GROUP_BY_PROVIDER, or leave it unset for no groups"
)
_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)

Range = pb.ListCallLogsRequest | pb.GetUsageStatsRequest


def _time_range(request: Range, out: list[FieldViolation]) -> tuple[float | None, float | None]:
    since = convert.epoch_of(request.start_time) if request.HasField("start_time") else None
    until = convert.epoch_of(request.end_time) if request.HasField("end_time") else None
    if since is not None and until is not None and until <= since:
        out.append(FieldViolation("end_time", "must be after start_time"))
    return since, until


def _codes(names: list[str], out: list[FieldViolation]) -> tuple[str, ...]:
    codes = tuple(name.strip().upper() for name in names)
    out.extend(
        FieldViolation(
            f"codes[{index}]",
            f"{names[index]!r} is not a gRPC status name; send e.g. OK, UNAVAILABLE"
            " or RESOURCE_EXHAUSTED",
        )
        for index, code in enumerate(codes)
        if code not in _STATUS_NAMES
    )
    return codes


def call_log_filter(request: pb.ListCallLogsRequest, tenant_id: str | None) -> CallLogFilter:
    """The store's filter for `request` within `tenant_id`, or INVALID_ARGUMENT."""
    out: list[FieldViolation] = []
    since, until = _time_range(request, out)
    codes = _codes(list(request.codes), out)
    min_latency_ms = None
    if request.HasField("min_latency"):
        min_latency_ms = convert.seconds_of(request.min_latency) * 1000
        if min_latency_ms < 0:
            out.append(FieldViolation("min_latency", "must not be negative"))
    after_id = request.after_id if request.HasField("after_id") else None
    if after_id is not None and after_id < 0:
        out.append(FieldViolation("after_id", "must be 0 or a CallLog id"))
    if out:
        raise invalid_argument(out)
    return CallLogFilter(
        since=since,
        until=until,
        tenant_id=tenant_id,
        consumer_id=request.consumer_id or None,
        alias=request.alias or None,
        codes=codes,
        errors_only=request.errors_only,
        min_latency_ms=min_latency_ms,
        request_id=request.request_id or None,
        after_id=after_id,
    )


def usage_query(request: pb.GetUsageStatsRequest, tenant_id: str | None, now: float) -> UsageQuery:
    """The store's query for `request` within `tenant_id`, or INVALID_ARGUMENT."""
    out: list[FieldViolation] = []
    since, until = _time_range(request, out)
    bucket = _BUCKETS.get(request.bucket)
    if bucket is None:
        out.append(FieldViolation("bucket", _BUCKET_CHOICES))
    group_by = _GROUPS.get(request.group_by)
    if group_by is None:
        out.append(FieldViolation("group_by", _GROUP_CHOICES))
    if out or bucket is None or group_by is None:  # each None is in `out`
        raise invalid_argument(out)
    since, until = _usage_range(since, until, bucket, now)
    return UsageQuery(
        since=since,
        until=until,
        bucket=bucket,
        group_by=group_by,
        tenant_id=tenant_id,
        consumer_id=request.consumer_id or None,
        alias=request.alias or None,
        provider=request.provider or None,
    )


def _usage_range(
    since: float | None, until: float | None, bucket: Bucket, now: float
) -> tuple[float, float]:
    """The range after defaults: from a bucket boundary (so every row but the last
    is a whole bucket) to a whole minute (usage is kept per minute)."""
    # The default end is now rounded up to the minute first, so the default start
    # (a day before it) is the same hour whatever second of the minute it is.
    until = math.ceil(now / 60) * 60 if until is None else until
    since = until - DEFAULT_USAGE_RANGE if since is None else since
    if since >= until:
        raise invalid_argument(
            [FieldViolation("start_time", "must be before end_time (unset: now)")]
        )
    width = BUCKET_SECONDS[bucket]
    since = math.floor(since / width) * width
    until = math.ceil(until / 60) * 60
    buckets = math.ceil((until - since) / width)
    if buckets > MAX_BUCKETS:
        raise invalid_argument(
            [
                FieldViolation(
                    "start_time",
                    f"the range spans {buckets} {bucket.value} buckets, more than {MAX_BUCKETS}:"
                    " send a later start_time, an earlier end_time or a wider bucket",
                )
            ]
        )
    return since, until


class CallLogRpcs(admin_pb2_grpc.AdminServiceServicer):
    _call_logs: Store
    _clock: Callable[[], float]

    async def ListCallLogs(
        self, request: pb.ListCallLogsRequest, context: Context
    ) -> pb.ListCallLogsResponse:
        principal = require_admin()
        tenant_id = list_scope(principal, request.tenant_id, required=False)
        size = convert.page_size(request.page_size)
        where = call_log_filter(request, tenant_id)
        with store_errors("call logs", ""):
            page = await self._call_logs.list_call_logs(where, size, request.page_token)
        return pb.ListCallLogsResponse(
            call_logs=[convert.call_log_pb(log) for log in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetUsageStats(
        self, request: pb.GetUsageStatsRequest, context: Context
    ) -> pb.GetUsageStatsResponse:
        principal = require_admin()
        tenant_id = list_scope(principal, request.tenant_id, required=False)
        query = usage_query(request, tenant_id, self._clock())
        with store_errors("usage statistics", "", invalid_field="start_time"):
            rows = await self._call_logs.usage_stats(query)
        return pb.GetUsageStatsResponse(
            rows=[convert.usage_row_pb(row) for row in rows],
            start_time=convert.timestamp(query.since),
            end_time=convert.timestamp(query.until),
            bucket=_BUCKETS_PB[query.bucket],
            group_by=request.group_by,
        )
