"""Usage rollups: the latency histogram, the rollup tables, and which of them
answers a usage query. Pure functions; store/sql/call_logs.py runs the SQL.

Latency histogram: bin i counts the calls with LATENCY_BOUNDS_MS[i-1] < latency
<= LATENCY_BOUNDS_MS[i] (bin 0 starts at 0). The bounds grow 1.25x from 1 ms to
~10.9 min, then +inf: 62 bins. A quantile is read from summed bins by finding
the bin that holds its rank and interpolating linearly inside it, so it is
precise to one bin: the estimate lies in the bin that holds the true value, at
most a bin's width away, i.e. ±~12% around the bin's middle (the +inf bin
answers with its lower bound, ~10.9 min).

Rollup levels: every call is added to one row of each level in `ROLLUPS`. A row
sums the calls of one period (`minutes` long, UTC-aligned) and one key (the
level's `dims`; '' where a call had no tenant, consumer or provider).
`usage_minutes` keeps every dimension at minute precision and can answer any
query, but at a busy gateway it holds about one row per call; the coarser levels
(fewer dimensions, or hours and days) are what keeps a day's or a year's usage
query small. `plan` reads each part of a range from the coarsest level that
knows the dimensions asked for.

The bounds and the levels are part of the schema (migration 3 has a table per
level and a column per bin): change them only together with a new migration.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from unigate.gateway.store.models import CallLog

LATENCY_BOUNDS_MS: tuple[float, ...] = (*(1.25**k for k in range(61)), math.inf)
BIN_COLUMNS = tuple(f"h{i:02d}" for i in range(len(LATENCY_BOUNDS_MS)))
SUM_COLUMNS = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost",
    "cache_hits",
    "latency_ms_sum",
)
VALUE_COLUMNS = SUM_COLUMNS + BIN_COLUMNS
"""The summed columns of every rollup table, in the order `Sums` holds them."""
FLOAT_COLUMNS = frozenset({"cost", "latency_ms_sum"})  # the others count: integers

DIMENSIONS = ("tenant_id", "consumer_id", "alias", "provider")

Sums = list[float]
"""One value per VALUE_COLUMNS; the counts and tokens are ints."""
MinuteKey = tuple[int, str, str, str, str]
"""(minute, tenant_id, consumer_id, alias, provider); minute = floor(ts / 60)."""


def bin_of(latency_ms: float) -> int:
    """The histogram bin of a latency (negative or NaN: bin 0)."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def quantile(counts: Sequence[int], q: float) -> float:
    """The q-quantile (0..1) of the latencies counted in `counts`, in ms; 0 if none.

    The rank q * total falls in the first bin whose running count reaches it (the
    bin of the true nearest-rank quantile), and the value is interpolated
    linearly between that bin's bounds."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    rank = min(max(q, 0.0), 1.0) * total
    seen = 0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_MS[index]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    raise AssertionError("unreachable: the last non-empty bin reaches every rank")


@dataclass(frozen=True, slots=True)
class Rollup:
    table: str
    minutes: int  # the period one row covers: 1, 60 or 1440 (UTC days)
    dims: tuple[str, ...]  # the key columns besides `minute`, a subset of DIMENSIONS


ROLLUPS = (
    Rollup("usage_days", 1440, ("tenant_id", "alias", "provider")),
    Rollup("usage_days_consumer", 1440, ("tenant_id", "consumer_id")),
    Rollup("usage_hours", 60, ("tenant_id", "alias", "provider")),
    Rollup("usage_hours_consumer", 60, ("tenant_id", "consumer_id")),
    Rollup("usage_minutes_tenant", 1, ("tenant_id",)),
    Rollup("usage_minutes", 1, DIMENSIONS),
)
"""In the order usage queries prefer them; `usage_minutes`, last, answers anything."""


_EMPTY: Sums = [0.0 if column in FLOAT_COLUMNS else 0 for column in VALUE_COLUMNS]


def empty_sums() -> Sums:
    return _EMPTY.copy()


def minute_sums(records: Iterable[CallLog]) -> dict[MinuteKey, Sums]:
    """The records summed per minute and full key, as `usage_minutes` rows."""
    rows: dict[MinuteKey, Sums] = {}
    bins_at = len(SUM_COLUMNS)
    for r in records:
        key = (int(r.ts // 60), r.tenant_id or "", r.consumer_id or "", r.alias, r.provider)
        sums = rows.get(key)
        if sums is None:
            sums = rows[key] = empty_sums()
        sums[0] += 1
        sums[1] += r.code != "OK"
        sums[2] += int(r.input_tokens)
        sums[3] += int(r.output_tokens)
        sums[4] += int(r.cached_tokens)
        sums[5] += float(r.cost)
        sums[6] += bool(r.cache_hit)
        sums[7] += float(r.latency_ms)
        sums[bins_at + bin_of(r.latency_ms)] += 1
    return rows


def rolled_up(minutes: dict[MinuteKey, Sums], level: Rollup) -> list[tuple[object, ...]]:
    """`level`'s rows for these minute rows, as (minute, *dims, *sums), sorted by key.

    Sorted, so that concurrent writers upsert rows in one order and cannot deadlock."""
    if level.minutes == 1 and level.dims == DIMENSIONS:
        return [(*key, *minutes[key]) for key in sorted(minutes)]
    pick = operator.itemgetter(0, *(1 + DIMENSIONS.index(dim) for dim in level.dims))
    rows: dict[tuple[object, ...], Sums] = {}
    for key, sums in minutes.items():
        rolled = pick(key)
        if level.minutes > 1:
            rolled = (key[0] - key[0] % level.minutes, *rolled[1:])
        found = rows.get(rolled)
        rows[rolled] = sums if found is None else list(map(operator.add, found, sums))
    return [(*key, *rows[key]) for key in sorted(rows)]


def plan(
    first: int, end: int, bucket_minutes: int, needed: Collection[str]
) -> list[tuple[Rollup, int, int]]:
    """Which level to read each part of the minutes [first, end) from: (level, from,
    to). A level qualifies when it keeps every `needed` dimension and its period
    divides the bucket; the coarsest covers the whole periods in the range, and
    finer ones the partial periods at either end."""
    usable = [
        level
        for level in ROLLUPS
        if set(needed) <= set(level.dims) and bucket_minutes % level.minutes == 0
    ]
    return _cover(first, end, usable)


def _cover(first: int, end: int, levels: Sequence[Rollup]) -> list[tuple[Rollup, int, int]]:
    if first >= end:
        return []
    level, finer = levels[0], levels[1:]
    start = -(-first // level.minutes) * level.minutes
    stop = end // level.minutes * level.minutes
    if start >= stop:
        return _cover(first, end, finer)
    return [*_cover(first, start, finer), (level, start, stop), *_cover(stop, end, finer)]
