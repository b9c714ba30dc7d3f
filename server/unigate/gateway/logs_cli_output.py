"""How `unigate logs` shows call logs and usage statistics: one readable line per
call, a table per usage row, and sparklines of calls and p95 latency over the
buckets. Pure functions of the AdminService's messages, no I/O but `out`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from unigate.v1 import admin_pb2 as pb

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 72
"""Marks in one sparkline; more buckets than this are merged, several per mark."""
TOP_GROUPS = 5

BUCKET_SECONDS = {
    pb.USAGE_BUCKET_MINUTE: 60,
    pb.USAGE_BUCKET_HOUR: 3600,
    pb.USAGE_BUCKET_DAY: 86400,
}
BUCKET_NAMES = {
    pb.USAGE_BUCKET_MINUTE: "minute",
    pb.USAGE_BUCKET_HOUR: "hour",
    pb.USAGE_BUCKET_DAY: "day",
}


def as_json(message: Message) -> str:
    """One line of protobuf's JSON mapping, with the .proto's field names and
    every plain field, zero or not (as `unigate admin --output json`)."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, ensure_ascii=False)


def _epoch(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def _ms(duration: duration_pb2.Duration) -> float:
    return duration.ToNanoseconds() / 1e6


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    moment = datetime.fromtimestamp(_epoch(stamp), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _latency(duration: duration_pb2.Duration) -> str:
    millis = _ms(duration)
    return f"{millis:.0f}ms" if millis < 10_000 else f"{millis / 1000:.1f}s"


def _upstream(log: pb.CallLog) -> str:
    """`provider/deployment`, without saying the provider twice when the
    deployment's name already starts with it (`<provider>/<model>`)."""
    if not log.deployment:
        return log.provider or "-"
    if not log.provider or log.deployment.startswith(f"{log.provider}/"):
        return log.deployment
    return f"{log.provider}/{log.deployment}"


def call_line(log: pb.CallLog) -> str:
    """time  request id  tenant/consumer  alias → upstream  method  code[/reason]
    latency  ttft  tokens in/out  cost"""
    who = "/".join(part for part in (log.tenant_id, log.consumer_id) if part) or "-"
    code = f"{log.code}/{log.reason}" if log.reason else log.code
    ttft = _latency(log.time_to_first_token) if log.HasField("time_to_first_token") else "-"
    parts = [
        _time(log.start_time),
        log.request_id or "-",
        who,
        f"{log.alias or '-'} → {_upstream(log)}",
        log.method or "-",
        code or "-",
        _latency(log.latency),
        f"ttft {ttft}",
        f"tokens {log.input_tokens}/{log.output_tokens}",
        f"cost {log.cost:.6g}",
    ]
    return "  ".join(parts)


def _bucket_label(stamp: timestamp_pb2.Timestamp, bucket: int) -> str:
    moment = datetime.fromtimestamp(_epoch(stamp), tz=UTC)
    return moment.strftime("%Y-%m-%d" if bucket == pb.USAGE_BUCKET_DAY else "%Y-%m-%d %H:%M")


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}"


def write_usage(response: pb.GetUsageStatsResponse, out: TextIO) -> None:
    """The rows as a table, then sparklines of calls and p95 latency."""
    span = f"{_time(response.start_time)} to {_time(response.end_time)}"
    if not response.rows:
        out.write(f"(no calls from {span})\n")
        return
    grouped = response.group_by != pb.USAGE_GROUP_BY_UNSPECIFIED
    header = ["bucket (UTC)", *(["group"] if grouped else [])]
    header += ["calls", "error %", "p50 ms", "p95 ms", "p99 ms", "tokens in", "tokens out"]
    header += ["cost", "cache hit %"]
    rows = []
    for row in response.rows:
        label = [_bucket_label(row.bucket_start_time, response.bucket)]
        label += [row.group or "-"] if grouped else []
        rows.append(
            [
                *label,
                str(row.calls),
                _percent(row.error_rate),
                f"{_ms(row.latency_p50):.0f}",
                f"{_ms(row.latency_p95):.0f}",
                f"{_ms(row.latency_p99):.0f}",
                str(row.input_tokens),
                str(row.output_tokens),
                f"{row.cost:.6g}",
                _percent(row.cache_hit_rate),
            ]
        )
    _table(header, rows, len(header) - 9, out)
    out.write("\n")
    _sparklines(response, out)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text: int, out: TextIO) -> None:
    """Columns before index `text` are left-aligned, numbers after them right-aligned."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        cells = [
            value.ljust(width) if i < text else value.rjust(width)
            for i, (value, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def sparkline(values: Sequence[float | None], top: float | None = None) -> str:
    """One mark per value, scaled from 0 to `top` (the largest value when None);
    None (no data) is blank."""
    if top is None:
        top = max((v for v in values if v is not None), default=0.0)
    marks = []
    for value in values:
        if value is None:
            marks.append(" ")
        else:
            level = round(value / top * (len(SPARKS) - 1)) if top > 0 else 0
            marks.append(SPARKS[level])
    return "".join(marks)


Series = dict[str, tuple[list[float | None], list[float | None]]]


def _series(response: pb.GetUsageStatsResponse) -> tuple[Series, int]:
    """Per group: calls and p95 ms per mark (several buckets merged into one mark
    when there are too many), and how many buckets each mark stands for."""
    width = BUCKET_SECONDS.get(response.bucket, 3600)
    start = _epoch(response.start_time)
    buckets = max(1, -(-round(_epoch(response.end_time) - start) // width))
    per_mark = -(-buckets // SPARK_WIDTH)
    marks = -(-buckets // per_mark)
    series: Series = {}
    for row in response.rows:
        calls, p95 = series.setdefault(row.group, ([0.0] * marks, [None] * marks))
        index = min(int((_epoch(row.bucket_start_time) - start) // width) // per_mark, marks - 1)
        calls[index] = (calls[index] or 0.0) + row.calls
        p95[index] = max(p95[index] or 0.0, _ms(row.latency_p95))
    return series, per_mark


def _sparklines(response: pb.GetUsageStatsResponse, out: TextIO) -> None:
    series, per_mark = _series(response)
    unit = BUCKET_NAMES.get(response.bucket, "bucket")
    each = f"one mark per {unit}" if per_mark == 1 else f"one mark per {per_mark} {unit}s"
    ranked = sorted(series, key=lambda group: -sum(v or 0.0 for v in series[group][0]))
    shown = ranked[:TOP_GROUPS]
    names = {group: group or "-" for group in shown}
    pad = max(len(name) for name in names.values())
    grouped = response.group_by != pb.USAGE_GROUP_BY_UNSPECIFIED
    for title, which, fmt in (("calls", 0, "{:.0f}"), ("p95 latency, ms", 1, "{:.0f}")):
        peak = max((v for g in shown for v in series[g][which] if v is not None), default=0.0)
        out.write(f"{title} ({each}; max {fmt.format(peak)})\n")
        for group in shown:
            line = sparkline(series[group][which], peak)
            out.write(f"  {names[group].ljust(pad)}  {line}\n" if grouped else f"  {line}\n")
    if len(ranked) > len(shown):
        out.write(f"(top {len(shown)} of {len(ranked)} groups by calls)\n")
