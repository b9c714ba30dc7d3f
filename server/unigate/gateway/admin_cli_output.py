"""How `unigate admin` shows AdminService answers and failures.

JSON is the response message as protobuf's JSON mapping (proto field names), for
scripts. A table lists the response's records (every unigate.v1 message in it)
one per row, then its plain fields (`secret`, `next_page_token`) as `name: value`
lines: the generic shape keeps this module free of per-command code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_OWN_PACKAGE = "unigate.v1."
Field = Any  # protobuf's pure-Python and upb descriptor classes differ in the stubs


def render(response: Message, output: str, out: TextIO) -> None:
    if output == "json":
        as_dict = json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        out.write(json.dumps(as_dict, indent=2, sort_keys=False) + "\n")
        return
    records, plain = _split(response)
    if records:
        columns = [f.name for f in records[0].DESCRIPTOR.fields]
        _table(
            columns,
            [[_cell(r, r.DESCRIPTOR.fields_by_name[c]) for c in columns] for r in records],
            out,
        )
    elif not plain:
        out.write("(none)\n")
    for name, value in plain:
        out.write(f"{name}: {value}\n")


def _split(response: Message) -> tuple[list[Message], list[tuple[str, str]]]:
    records: list[Message] = []
    plain: list[tuple[str, str]] = []
    for field in response.DESCRIPTOR.fields:
        value = getattr(response, field.name)
        own = field.message_type is not None and field.message_type.full_name.startswith(
            _OWN_PACKAGE
        )
        if own and field.is_repeated:
            records.extend(value)
        elif own:
            if response.HasField(field.name):
                records.append(value)
        elif value:
            plain.append((field.name, str(value)))
    return records, plain


def _cell(record: Message, field: Field) -> str:
    value: Any = getattr(record, field.name)
    if (
        field.message_type is not None
        and field.message_type.full_name == "google.protobuf.Timestamp"
    ):
        return format_time(value) if record.HasField(field.name) else ""
    if (
        field.message_type is not None
        and field.message_type.full_name == "google.protobuf.Duration"
    ):
        return f"{value.ToNanoseconds() / 1e9:g}s" if record.HasField(field.name) else ""
    if field.enum_type is not None:
        name: str = field.enum_type.values_by_number[value].name
        prefix = _enum_prefix(field.enum_type.name)
        return name.removeprefix(prefix).lower()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and 0 < abs(value) < 1:
        return f"{value:.6g}"  # a ratio's 0.3333333333333333 is noise past six digits
    return str(value)


def _enum_prefix(enum_name: str) -> str:
    """SubscriptionStatus → SUBSCRIPTION_STATUS_ (buf's enum value prefix)."""
    snake = "".join(f"_{c}" if c.isupper() else c for c in enum_name).lstrip("_").upper()
    return f"{snake}_"


def format_time(stamp: timestamp_pb2.Timestamp) -> str:
    moment = datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9, tz=UTC)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = [columns, *rows]
    for line in lines:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def describe_failure(error: grpc.RpcError) -> str:
    """`CODE: message (reason REASON)` plus one line per bad field: what to act on."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    text = f"{code.name}: {details}"
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    if status is None:
        return text
    lines = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            text += f" (reason {info.reason})"
        elif detail.Unpack(bad):
            violations = (f"{v.field}: {v.description}" for v in bad.field_violations)
            lines.extend(f"  {v}" for v in violations if v not in details)
    return "\n".join([text, *lines])
