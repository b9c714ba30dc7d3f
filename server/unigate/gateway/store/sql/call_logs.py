"""Call logs, and the usage statistics rolled up from them.

`insert_call_logs` writes a batch and adds it to every rollup level
(store/rollup.py) in one transaction: an upsert adds to a row's sums in the
database, so writers in several processes keep them exact. `usage_stats` reads
only the rollups, never the calls. Ids are the database's, and they become
visible in ascending order: writers hold the table's write lock from taking ids
to commit, so a follower (`after_id`) never skips a batch that committed late.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Collection, Sequence

from unigate.gateway.store.common import (
    Row,
    decode_page_token,
    encode_page_token,
    page_size_of,
)
from unigate.gateway.store.models import (
    BUCKET_SECONDS,
    CallLog,
    CallLogFilter,
    GroupBy,
    Page,
    UsageQuery,
    UsageRow,
)
from unigate.gateway.store.rollup import (
    BIN_COLUMNS,
    FLOAT_COLUMNS,
    ROLLUPS,
    SUM_COLUMNS,
    VALUE_COLUMNS,
    Rollup,
    minute_sums,
    plan,
    quantile,
    rolled_up,
)
from unigate.gateway.store.sql.base import Filter, SqlBase, eq

MAX_BUCKETS = 100_000
_LAST_MINUTE = 2**31 - 1  # rollup minutes are 32-bit integers on PostgreSQL (year 6053)

_COLUMNS = tuple(f.name for f in dataclasses.fields(CallLog) if f.name != "id")
_FIELDS = (*_COLUMNS, "id")
_values_of = operator.attrgetter(*_COLUMNS)
_INSERT = f"INSERT INTO call_logs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_DELETE_CALLS = (
    "DELETE FROM call_logs WHERE id IN"
    " (SELECT id FROM call_logs WHERE ts < ? ORDER BY ts LIMIT ?) RETURNING id"
)

# Page tokens name the direction too: a newest-first token cannot continue a tail.
_NEWEST_FIRST, _FOLLOWING = "log_before_", "log_after_"

_GROUP_COLUMN = {
    GroupBy.NONE: "",
    GroupBy.TENANT: "tenant_id",
    GroupBy.CONSUMER: "consumer_id",
    GroupBy.ALIAS: "alias",
    GroupBy.PROVIDER: "provider",
}
# SUM of a BIGINT is NUMERIC on PostgreSQL (a Decimal in Python, slow to decode).
_SUMS = ", ".join(
    f"SUM({c}) AS {c}" if c in FLOAT_COLUMNS else f"CAST(SUM({c}) AS BIGINT) AS {c}"
    for c in VALUE_COLUMNS
)
_BINS_AT = 2 + len(SUM_COLUMNS)  # in a usage row, after bucket, grp and the sums


def _upsert(level: Rollup) -> str:
    keys = ", ".join(("minute", *level.dims))
    columns = (*("minute", *level.dims), *VALUE_COLUMNS)
    added = ", ".join(f"{c} = {level.table}.{c} + excluded.{c}" for c in VALUE_COLUMNS)
    return (
        f"INSERT INTO {level.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({keys}) DO UPDATE SET {added}"
    )


def _delete_usage(level: Rollup) -> str:
    keys = ", ".join(("minute", *level.dims))
    return (
        f"DELETE FROM {level.table} WHERE minute < ? AND ({keys}) IN"
        f" (SELECT {keys} FROM {level.table} WHERE minute < ? ORDER BY {keys} LIMIT ?)"
        " RETURNING minute"
    )


_UPSERTS = tuple((level, _upsert(level)) for level in ROLLUPS)
_DELETES_USAGE = tuple((level, _delete_usage(level)) for level in ROLLUPS)


def call_log_of(row: Row) -> CallLog:
    values = {name: row[name] for name in _FIELDS}
    values["cache_hit"] = bool(values["cache_hit"])  # SQLite hands back 0 or 1
    return CallLog(**values)


def _call_filters(where: CallLogFilter) -> list[Filter]:
    filters = [
        *([("ts >= ?", (where.since,))] if where.since is not None else []),
        *([("ts < ?", (where.until,))] if where.until is not None else []),
        *eq("tenant_id", where.tenant_id),
        *eq("consumer_id", where.consumer_id),
        *eq("alias", where.alias),
        *eq("request_id", where.request_id),
        *(
            [("latency_ms >= ?", (where.min_latency_ms,))]
            if where.min_latency_ms is not None
            else []
        ),
    ]
    if where.codes:
        filters.append((f"code IN ({', '.join('?' * len(where.codes))})", tuple(where.codes)))
    if where.errors_only:
        filters.append(("code <> 'OK'", ()))  # as the partial index call_logs_errors has it
    return filters


def _last_id(page_token: str, prefix: str) -> int | None:
    key = decode_page_token(page_token, prefix)
    if not key:
        return None
    try:
        return int(key.removeprefix(prefix))
    except ValueError:
        raise ValueError("invalid page_token: it does not belong to this list") from None


def _limit_of(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    return limit


class CallLogsSql(SqlBase):
    async def insert_call_logs(self, records: Sequence[CallLog]) -> None:
        """Insert the records and add them to every rollup level, in one transaction."""
        if not records:
            return
        rows = [_values_of(record) for record in records]
        minutes = minute_sums(records)
        rollups = [(sql, rolled_up(minutes, level)) for level, sql in _UPSERTS]
        async with self._write() as conn:
            await conn.serialize_writes("call_logs")
            await conn.executemany(_INSERT, rows)
            for sql, level_rows in rollups:  # in one order everywhere: no deadlocks
                await conn.executemany(sql, level_rows)

    async def list_call_logs(
        self, where: CallLogFilter, page_size: int = 0, page_token: str = ""
    ) -> Page[CallLog]:
        """Newest first (by id); with `where.after_id`, oldest first after that id."""
        size = page_size_of(page_size)
        following = where.after_id is not None
        prefix = _FOLLOWING if following else _NEWEST_FIRST
        last = _last_id(page_token, prefix)
        filters = _call_filters(where)
        if where.after_id is not None:
            filters.append(("id > ?", (max(where.after_id, last or 0),)))
        elif last is not None:
            filters.append(("id < ?", (last,)))
        sql = "SELECT * FROM call_logs"
        if filters:
            sql += " WHERE " + " AND ".join(condition for condition, _ in filters)
        sql += f" ORDER BY id {'ASC' if following else 'DESC'} LIMIT ?"
        args = [arg for _, values in filters for arg in values]
        async with self._read() as conn:
            rows = await conn.fetch(sql, *args, size + 1)
        token = encode_page_token(f"{prefix}{rows[size - 1]['id']}") if len(rows) > size else ""
        return Page([call_log_of(row) for row in rows[:size]], token)

    async def usage_stats(self, query: UsageQuery) -> list[UsageRow]:
        """One row per (bucket, group) that saw calls, ordered by bucket then group."""
        seconds = BUCKET_SECONDS[query.bucket]
        sql, args = _usage_sql(query)
        async with self._read() as conn:
            rows = await conn.fetch(sql, *args)
        return [_usage_row(row, seconds) for row in rows]

    async def delete_call_logs_before(self, ts: float, *, limit: int = 5000) -> int:
        """Delete up to `limit` call logs older than `ts`, oldest first; how many."""
        async with self._write() as conn:
            return len(await conn.fetch(_DELETE_CALLS, ts, _limit_of(limit)))

    async def delete_usage_before(
        self, ts: float, *, limit: int = 5000, periods: Collection[int] = ()
    ) -> int:
        """Delete up to `limit` rollup rows (of every level together, or of the levels
        whose period in minutes is in `periods`) whose whole period ended by `ts`,
        oldest first; how many."""
        left = _limit_of(limit)
        minute = math.floor(ts / 60)
        async with self._write() as conn:
            for level, sql in _DELETES_USAGE:
                if periods and level.minutes not in periods:
                    continue
                # the period of a row from minute m has ended when m + period <= minute
                before = minute - level.minutes + 1
                left -= len(await conn.fetch(sql, before, before, left))
                if left == 0:
                    break
        return limit - left


def _usage_sql(query: UsageQuery) -> tuple[str, list[object]]:
    """One statement: each part of the range summed from its level (rollup.plan),
    then the parts summed per (bucket, group)."""
    if not -_LAST_MINUTE * 60 <= query.since < query.until <= _LAST_MINUTE * 60:
        raise ValueError(
            f"usage needs since < until, both within ±{_LAST_MINUTE * 60}"
            f" (got since={query.since}, until={query.until})"
        )
    per = BUCKET_SECONDS[query.bucket] // 60
    first, end = math.floor(query.since / 60), math.ceil(query.until / 60)
    buckets = (end - 1) // per - first // per + 1
    if buckets > MAX_BUCKETS:
        raise ValueError(
            f"{query.bucket.value} buckets from {query.since} to {query.until} would be"
            f" {buckets}, more than {MAX_BUCKETS:,}: ask for a larger bucket or a shorter range"
        )
    group = _GROUP_COLUMN[query.group_by]
    filters = [
        (column, value)
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("consumer_id", query.consumer_id),
            ("alias", query.alias),
            ("provider", query.provider),
        )
        if value is not None
    ]
    needed = {column for column, _ in filters} | ({group} if group else set())
    conditions = " AND ".join(["minute >= ?", "minute < ?", *(f"{c} = ?" for c, _ in filters)])
    grp = group or "''"
    parts: list[str] = []
    args: list[object] = []
    for level, start, stop in plan(first, end, per, needed):
        parts.append(
            f"SELECT minute / ? AS bucket, {grp} AS grp, {_SUMS}"
            f" FROM {level.table} WHERE {conditions} GROUP BY bucket, grp"
        )
        args += [per, start, stop, *(value for _, value in filters)]
    if len(parts) == 1:
        return parts[0] + " ORDER BY bucket, grp", args
    sql = (
        f"SELECT bucket, grp, {_SUMS} FROM ({' UNION ALL '.join(parts)}) AS parts"
        " GROUP BY bucket, grp ORDER BY bucket, grp"
    )
    return sql, args


def _usage_row(row: Row, seconds: int) -> UsageRow:
    """A row of (bucket, grp, *VALUE_COLUMNS), read by position: sqlite3.Row finds a
    name by scanning all 72."""
    calls, errors, input_tokens, output_tokens, cached_tokens, cost, cache_hits, latency_sum = (
        row[i] for i in range(2, _BINS_AT)
    )
    bins = [int(row[i]) for i in range(_BINS_AT, _BINS_AT + len(BIN_COLUMNS))]
    return UsageRow(
        bucket_start=float(int(row[0]) * seconds),
        group=row[1],
        calls=int(calls),
        errors=int(errors),
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        cached_tokens=int(cached_tokens),
        cost=float(cost),
        cache_hits=int(cache_hits),
        latency_mean_ms=float(latency_sum) / int(calls),
        latency_p50_ms=quantile(bins, 0.50),
        latency_p95_ms=quantile(bins, 0.95),
        latency_p99_ms=quantile(bins, 0.99),
    )
