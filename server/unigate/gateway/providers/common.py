"""Pure helpers every vendor's translation shares. No I/O here.

Vendor JSON in (`json_object`, `protocol_errors`) and out (`struct_to_dict`, `base64_text`,
`data_url`); the unigate answer message; and the safe reading of vendor errors: a vendor's
message is redacted, put on one line and cut (`vendor_message`) before a GatewayError carries it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

import grpc
import orjson
from google.protobuf import json_format, struct_pb2

from unigate.gateway.errors import (
    FieldViolation,
    GatewayError,
    Reason,
    from_http_status,
    invalid_argument,
    redact,
)
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

MAX_VENDOR_MESSAGE = 500

Json = dict[str, Any]


# --- requests ---------------------------------------------------------------------------------


def struct_to_dict(struct: struct_pb2.Struct) -> Json:
    """A Struct as plain JSON, with whole numbers back as ints (Struct keeps only doubles)."""
    value = _whole_numbers(json_format.MessageToDict(struct))
    assert isinstance(value, dict)
    return value


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(url: str, where: str, *, require_data: bool = False) -> tuple[str, str]:
    """The MIME type and base64 payload of a `data:<mime type>;base64,<data>` URL.

    Anything else is INVALID_ARGUMENT on `<where>.url`; so is an empty payload if
    `require_data`.
    """
    header, comma, data = url[len("data:") :].partition(",")
    mime_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or not mime_type or (require_data and not data):
        raise invalid_argument(
            [FieldViolation(f"{where}.url", "a data: URL must be data:<mime type>;base64,<data>")]
        )
    return mime_type, data


# --- responses --------------------------------------------------------------------------------


class protocol_errors:
    """Turn any surprise in the shape of a vendor body into one UPSTREAM_PROTOCOL_ERROR.

    A class, not a @contextmanager: it guards every streamed event, and a generator-
    based context manager cost ~1.1 µs per event (a quarter of translating one)."""

    __slots__ = ("_target", "_what", "_wire")

    def __init__(self, target: Target, what: str, *, wire: str) -> None:
        self._target, self._what, self._wire = target, what, wire

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, _SHAPE_ERRORS):
            return
        target = self._target
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_PROTOCOL_ERROR,
            f"{target.provider} deployment {target.deployment!r} sent {self._what} "
            f"that is not valid {self._wire} JSON ({type(exc).__name__})",
            metadata={"provider": target.provider, "deployment": target.deployment},
        ) from exc


_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def json_object(body: bytes | str) -> Json:
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    return data


def json_or_none(body: bytes | str) -> Any:
    """The JSON value of a body, or None if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def assistant_message(text: str, tool_calls: Iterable[pb.ToolCall]) -> pb.Message:
    """An answer's message: its text (no content part if empty) and its tool calls."""
    return pb.Message(
        role=pb.ROLE_ASSISTANT,
        content=[pb.ContentPart(text=text)] if text else [],
        tool_calls=tool_calls,
    )


def finish_reason_of(reason: str | None, known: Mapping[str, pb.FinishReason]) -> pb.FinishReason:
    """A vendor's finish reason: none is UNSPECIFIED, and one the table does not know (a
    reason newer than the adapter, or a compatible server's own) still means the model stopped.
    """
    if not reason:
        return pb.FINISH_REASON_UNSPECIFIED
    return known.get(reason, pb.FINISH_REASON_STOP)


def unfinished_stream(target: Target) -> GatewayError:
    """A stream body that ended before the answer did: retryable, never a silent truncation."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.UPSTREAM_UNAVAILABLE,
        f"{target.provider} deployment {target.deployment!r}: "
        "stream ended before the answer finished",
        metadata={"provider": target.provider, "deployment": target.deployment},
    )


# --- errors -----------------------------------------------------------------------------------


def vendor_message(text: str, target: Target) -> str:
    """A vendor's error text, safe to show: redacted, on one line, at most MAX_VENDOR_MESSAGE."""
    # Redact before cutting, so no secret is cut in two and half of it kept.
    message = " ".join(redact(text, target.secrets).split())
    if len(message) > MAX_VENDOR_MESSAGE:
        message = message[: MAX_VENDOR_MESSAGE - 1] + "…"
    return message


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A response header by its lower-case name, in whatever case the upstream sent it."""
    return {key.lower(): value for key, value in headers.items()}.get(name)


def http_error(
    status: int, message: str, target: Target, *, retry_after: float | None = None
) -> GatewayError:
    """An upstream's HTTP error status, with its (already safe) message, as a GatewayError."""
    return from_http_status(
        status,
        message,
        provider=target.provider,
        deployment=target.deployment,
        retry_after=retry_after,
        secrets=target.secrets,
    )


def mid_stream_error(status: int, message: str, target: Target) -> GatewayError:
    """An error a stream reported after its 200 status line.

    `status` is the HTTP status the error's type stands for: it only picks the gRPC code, so
    the message and metadata do not claim the upstream answered it.
    """
    error = http_error(status, message, target)
    return replace(
        error,
        message=error.message.replace(f"answered {status}", "failed mid-stream", 1),
        metadata={k: v for k, v in error.metadata.items() if k != "http_status"},
    )


def with_vendor_code(error: GatewayError, code: Any) -> GatewayError:
    """The error with the vendor's own error code or type in its metadata, if it sent one."""
    if not isinstance(code, str) or not code:
        return error
    return replace(error, metadata={**error.metadata, "vendor_code": code})
