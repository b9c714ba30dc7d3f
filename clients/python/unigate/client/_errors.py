"""Reading the gateway's error details without grpcio-status or googleapis-common-protos.

A failed call raises grpc.RpcError (grpc.aio.AioRpcError from AsyncClient) with `code()`
and `details()`. The gateway also puts a google.rpc.Status in the `grpc-status-details-bin`
trailer, packing ErrorInfo (always: a stable reason, domain "unigate"), and BadRequest or
RetryInfo where they apply. `error_details` decodes those with message types declared here
that match the google.rpc wire format, in a private descriptor pool so they never clash
with the real google.rpc modules when those are installed too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_PACKAGE = "unigate.client.wire"
_Field = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One request field at fault, named by its path (e.g. `messages[2].role`)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What the gateway said about a failed call, beyond its code and message."""

    reason: str
    domain: str
    metadata: Mapping[str, str]
    retry_delay: float | None
    field_violations: tuple[FieldViolation, ...]


def error_details(error: BaseException) -> ErrorDetails | None:
    """The details of a failed call, or None when it carries none (e.g. a local timeout).

    Works with grpc.RpcError from Client and grpc.aio.AioRpcError from AsyncClient.
    """
    blob = _status_blob(error)
    if blob is None:
        return None
    try:
        status: Any = _WIRE["Status"].FromString(blob)
    except DecodeError:
        return None
    unpacked = {_type_name(d.type_url): d.value for d in status.details}
    info: Any = _parse("ErrorInfo", unpacked.get("google.rpc.ErrorInfo"))
    retry: Any = _parse("RetryInfo", unpacked.get("google.rpc.RetryInfo"))
    bad_request: Any = _parse("BadRequest", unpacked.get("google.rpc.BadRequest"))
    return ErrorDetails(
        reason=str(info.reason),
        domain=str(info.domain),
        metadata={str(e.key): str(e.value) for e in info.metadata},
        retry_delay=(
            float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
            if retry.HasField("retry_delay")
            else None
        ),
        field_violations=tuple(
            FieldViolation(str(v.field), str(v.description)) for v in bad_request.field_violations
        ),
    )


def _status_blob(error: BaseException) -> bytes | None:
    trailing_metadata = getattr(error, "trailing_metadata", None)
    if not callable(trailing_metadata):
        return None
    for key, value in trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def _type_name(type_url: str) -> str:
    return type_url.rpartition("/")[2]


def _parse(name: str, blob: bytes | None) -> Message:
    message = _WIRE[name]()
    if blob is not None:
        try:
            message.ParseFromString(blob)
        except DecodeError:
            message.Clear()
    return message


def _wire_types() -> Mapping[str, type[Message]]:
    """google.rpc.Status and friends, field for field (a map is a repeated entry on the wire)."""
    string, bytes_ = _Field.TYPE_STRING, _Field.TYPE_BYTES
    int32, int64 = _Field.TYPE_INT32, _Field.TYPE_INT64
    # A str kind names a message of this file; a leading * makes the field repeated.
    shapes: dict[str, list[tuple[str, int, str | _Field.Type.ValueType]]] = {
        "Any": [("type_url", 1, string), ("value", 2, bytes_)],
        "Status": [("code", 1, int32), ("message", 2, string), ("details", 3, "*Any")],
        "Entry": [("key", 1, string), ("value", 2, string)],
        "ErrorInfo": [("reason", 1, string), ("domain", 2, string), ("metadata", 3, "*Entry")],
        "Duration": [("seconds", 1, int64), ("nanos", 2, int32)],
        "RetryInfo": [("retry_delay", 1, "Duration")],
        "FieldViolation": [("field", 1, string), ("description", 2, string)],
        "BadRequest": [("field_violations", 1, "*FieldViolation")],
    }
    file = descriptor_pb2.FileDescriptorProto(
        name="unigate/client/wire.proto", package=_PACKAGE, syntax="proto3"
    )
    for message_name, fields in shapes.items():
        message = file.message_type.add(name=message_name)
        for field_name, number, kind in fields:
            field = message.field.add(name=field_name, number=number)
            if not isinstance(kind, str):
                field.type, field.label = kind, _Field.LABEL_OPTIONAL
                continue
            field.type = _Field.TYPE_MESSAGE
            field.type_name = f".{_PACKAGE}.{kind.lstrip('*')}"
            repeated = kind.startswith("*")
            field.label = _Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in shapes
    }


_WIRE = _wire_types()
