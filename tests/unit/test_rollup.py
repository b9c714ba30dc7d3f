"""The latency histogram (bins, quantiles and their precision), the per-level sums
and the choice of rollup level for each part of a usage query."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from unigate.gateway.store.models import CallLog
from unigate.gateway.store.rollup import (
    BIN_COLUMNS,
    DIMENSIONS,
    LATENCY_BOUNDS_MS,
    ROLLUPS,
    SUM_COLUMNS,
    bin_of,
    minute_sums,
    plan,
    quantile,
    rolled_up,
)

LEVELS = {level.table: level for level in ROLLUPS}


def test_the_bounds_are_the_schemas() -> None:
    # Migration 3 has a column per bin: changing the bounds needs a new migration.
    assert len(LATENCY_BOUNDS_MS) == len(BIN_COLUMNS) == 62
    assert LATENCY_BOUNDS_MS[0] == 1.0
    assert 600_000 < LATENCY_BOUNDS_MS[-2] < 700_000  # ~10.9 minutes
    assert LATENCY_BOUNDS_MS[-1] == math.inf
    ratios = {round(b / a, 9) for a, b in itertools.pairwise(LATENCY_BOUNDS_MS[:-1])}
    assert ratios == {1.25}


@pytest.mark.parametrize(
    ("latency", "expected"),
    [
        (-3.0, 0),
        (0.0, 0),
        (0.4, 0),
        (1.0, 0),  # upper bounds are inclusive
        (1.0000001, 1),
        (1.25, 1),
        (1.3, 2),
        (LATENCY_BOUNDS_MS[40], 40),
        (LATENCY_BOUNDS_MS[40] * 1.01, 41),
        (LATENCY_BOUNDS_MS[-2], 60),
        (LATENCY_BOUNDS_MS[-2] + 1, 61),
        (1e12, 61),
        (math.nan, 0),
    ],
)
def test_bin_of(latency: float, expected: int) -> None:
    assert bin_of(latency) == expected


def _counts(latencies: list[float]) -> list[int]:
    counts = [0] * len(LATENCY_BOUNDS_MS)
    for latency in latencies:
        counts[bin_of(latency)] += 1
    return counts


def _nearest_rank(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_quantiles_are_within_the_true_values_bin(seed: int, q: float) -> None:
    rng = random.Random(seed)
    latencies = [rng.lognormvariate(math.log(800), 1.0) for _ in range(rng.randint(1, 5000))]
    true = _nearest_rank(latencies, q)
    estimate = quantile(_counts(latencies), q)
    index = bin_of(true)
    lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
    assert lower <= estimate <= LATENCY_BOUNDS_MS[index]
    assert abs(estimate - true) <= 0.25 * true  # one bin: bounds are 1.25x apart


def test_quantile_interpolates_inside_the_bin() -> None:
    counts = [0] * len(LATENCY_BOUNDS_MS)
    counts[10] = 4  # (1.25**9, 1.25**10]
    lower, upper = LATENCY_BOUNDS_MS[9], LATENCY_BOUNDS_MS[10]
    assert quantile(counts, 0.5) == pytest.approx(lower + (upper - lower) * 0.5)
    assert quantile(counts, 1.0) == pytest.approx(upper)
    assert quantile(counts, 0.0) == pytest.approx(lower)


def test_quantile_edges() -> None:
    empty = [0] * len(LATENCY_BOUNDS_MS)
    assert quantile(empty, 0.5) == 0.0
    slowest = [*empty[:-1], 3]
    assert quantile(slowest, 0.99) == LATENCY_BOUNDS_MS[-2]  # +inf answers its lower bound
    assert quantile(_counts([0.2, 0.4]), 0.5) == pytest.approx(0.5)  # bin 0 starts at 0
    assert quantile(_counts([5.0]), 2.0) == quantile(_counts([5.0]), 1.0)  # q clamped


def _call(ts: float, **fields: object) -> CallLog:
    values: dict[str, object] = {"request_id": "r", "ts": ts, "method": "Chat", "code": "OK"}
    return CallLog(**(values | fields))  # type: ignore[arg-type]


def test_minute_sums_and_levels() -> None:
    records = [
        _call(120.0, tenant_id="t1", consumer_id="c1", alias="m", provider="p", latency_ms=3,
              input_tokens=10, output_tokens=5, cached_tokens=2, cost=0.5, cache_hit=True),
        _call(179.9, tenant_id="t1", consumer_id="c1", alias="m", provider="p", latency_ms=3,
              code="UNAVAILABLE", cost=0.25),
        _call(180.0, tenant_id="t1", consumer_id="c2", alias="m", provider="p", latency_ms=900),
        _call(3600.0 * 5, alias="m"),  # no tenant, consumer or provider
    ]  # fmt: skip
    minutes = minute_sums(records)
    first = minutes[(2, "t1", "c1", "m", "p")]
    assert first[: len(SUM_COLUMNS)] == [2, 1, 10, 5, 2, 0.75, 1, 6.0]
    assert first[len(SUM_COLUMNS) + bin_of(3)] == 2
    assert set(minutes) == {
        (2, "t1", "c1", "m", "p"),
        (3, "t1", "c2", "m", "p"),
        (300, "", "", "m", ""),
    }

    hours = rolled_up(minutes, LEVELS["usage_hours"])
    assert [row[:5] for row in hours] == [(0, "t1", "m", "p", 3), (300, "", "m", "", 1)]
    assert hours[0][5] == 1  # errors: after the key (4 columns) and calls
    consumers = rolled_up(minutes, LEVELS["usage_days_consumer"])
    assert [row[:4] for row in consumers] == [
        (0, "", "", 1),
        (0, "t1", "c1", 2),
        (0, "t1", "c2", 1),
    ]
    full = rolled_up(minutes, LEVELS["usage_minutes"])
    assert [row[:5] for row in full] == sorted(minutes)  # sorted: one lock order for writers
    assert sum(row[2] for row in rolled_up(minutes, LEVELS["usage_minutes_tenant"])) == 4


def test_every_level_keeps_a_subset_and_one_answers_anything() -> None:
    assert all(set(level.dims) <= set(DIMENSIONS) for level in ROLLUPS)
    assert ROLLUPS[-1].dims == DIMENSIONS and ROLLUPS[-1].minutes == 1
    assert [level.minutes for level in ROLLUPS] == sorted(
        (level.minutes for level in ROLLUPS), reverse=True
    )


def _tables(parts: list[tuple[object, int, int]]) -> list[tuple[str, int, int]]:
    return [(level.table, start, stop) for level, start, stop in parts]  # type: ignore[attr-defined]


DAY = 1440


def test_plan_aligned_day() -> None:
    assert _tables(plan(10 * DAY, 11 * DAY, 60, set())) == [("usage_hours", 10 * DAY, 11 * DAY)]
    assert _tables(plan(10 * DAY, 12 * DAY, DAY, {"tenant_id"})) == [
        ("usage_days", 10 * DAY, 12 * DAY)
    ]
    assert _tables(plan(10 * DAY, 11 * DAY, 60, {"consumer_id"})) == [
        ("usage_hours_consumer", 10 * DAY, 11 * DAY)
    ]
    assert _tables(plan(10 * DAY, 11 * DAY, 1, set())) == [
        ("usage_minutes_tenant", 10 * DAY, 11 * DAY)
    ]
    assert _tables(plan(10 * DAY, 11 * DAY, 1, {"alias"})) == [
        ("usage_minutes", 10 * DAY, 11 * DAY)
    ]
    both = {"consumer_id", "alias"}  # no coarse level has both
    assert _tables(plan(10 * DAY, 11 * DAY, 60, both)) == [("usage_minutes", 10 * DAY, 11 * DAY)]


def test_plan_covers_partial_periods_from_finer_levels() -> None:
    start, end = 10 * DAY + 61, 13 * DAY + 130  # 01:01 on day 10 to 02:10 on day 13
    assert _tables(plan(start, end, DAY, {"alias"})) == [
        ("usage_minutes", start, 10 * DAY + 120),
        ("usage_hours", 10 * DAY + 120, 11 * DAY),
        ("usage_days", 11 * DAY, 13 * DAY),
        ("usage_hours", 13 * DAY, 13 * DAY + 120),
        ("usage_minutes", 13 * DAY + 120, end),
    ]
    assert _tables(plan(start, start + 30, 60, set())) == [
        ("usage_minutes_tenant", start, start + 30)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_plans_tile_the_range(seed: int) -> None:
    rng = random.Random(seed)
    start = rng.randrange(0, 5 * DAY)
    end = start + rng.randrange(1, 5 * DAY)
    bucket = rng.choice([1, 60, DAY])
    needed = set(rng.sample(DIMENSIONS, rng.randrange(0, 3)))
    parts = plan(start, end, bucket, needed)
    assert parts[0][1] == start and parts[-1][2] == end
    for (_, _, stop), (_, next_start, _) in itertools.pairwise(parts):
        assert stop == next_start
    for level, part_start, part_stop in parts:
        assert part_start < part_stop
        assert needed <= set(level.dims) and bucket % level.minutes == 0
        assert part_start % level.minutes == 0 and part_stop % level.minutes == 0
