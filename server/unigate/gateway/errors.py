"""Every failure the gateway reports, and how it becomes a gRPC status.

    GatewayError            an expected failure: a gRPC code, a stable reason, a message
      raised by             validation, routing, provider adapters, the transport
      turned into a status  once, by interceptors/errors.py, with google.rpc details:
                            ErrorInfo always; BadRequest, RetryInfo where they apply

Anything else that escapes a handler is a bug: logged once and reported as INTERNAL.
Messages never contain secrets: adapters pass vendor messages through `redact`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "unigate"


class Reason:
    """Stable ErrorInfo reasons (UPPER_SNAKE), part of the public contract."""

    INVALID_REQUEST = "INVALID_REQUEST"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_DISABLED = "MODEL_DISABLED"
    CAPABILITY_UNSUPPORTED = "CAPABILITY_UNSUPPORTED"
    UPSTREAM_BAD_REQUEST = "UPSTREAM_BAD_REQUEST"
    UPSTREAM_MODEL_NOT_FOUND = "UPSTREAM_MODEL_NOT_FOUND"
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
    UPSTREAM_QUOTA_EXHAUSTED = "UPSTREAM_QUOTA_EXHAUSTED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_AUTH_FAILED = "UPSTREAM_AUTH_FAILED"
    UPSTREAM_PERMISSION_DENIED = "UPSTREAM_PERMISSION_DENIED"
    UPSTREAM_PROTOCOL_ERROR = "UPSTREAM_PROTOCOL_ERROR"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    NO_HEALTHY_DEPLOYMENT = "NO_HEALTHY_DEPLOYMENT"
    DEADLINE_TOO_SHORT = "DEADLINE_TOO_SHORT"
    DRAINING = "DRAINING"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    CONSUMER_REQUIRED = "CONSUMER_REQUIRED"
    ADMIN_ROLE_REQUIRED = "ADMIN_ROLE_REQUIRED"
    SUBSCRIPTION_MISSING = "SUBSCRIPTION_MISSING"
    SUBSCRIPTION_PENDING = "SUBSCRIPTION_PENDING"
    SUBSCRIPTION_REJECTED = "SUBSCRIPTION_REJECTED"
    SUBSCRIPTION_REVOKED = "SUBSCRIPTION_REVOKED"
    RATE_LIMITED = "RATE_LIMITED"
    TOKEN_QUOTA_EXCEEDED = "TOKEN_QUOTA_EXCEEDED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    CONCURRENCY_LIMITED = "CONCURRENCY_LIMITED"
    QUOTA_BACKEND_UNAVAILABLE = "QUOTA_BACKEND_UNAVAILABLE"
    QUOTAS_NOT_CONFIGURED = "QUOTAS_NOT_CONFIGURED"
    ROUTING_NOT_CONFIGURED = "ROUTING_NOT_CONFIGURED"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    RESOURCE_STATE_CONFLICT = "RESOURCE_STATE_CONFLICT"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One request field at fault, named by its path (e.g. `messages[2].role`)."""

    field: str
    description: str


@dataclass(eq=False)
class GatewayError(Exception):
    """An expected failure, reported to the caller as a gRPC status."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: Sequence[FieldViolation] = ()
    retry_after: float | None = None
    quota_violations: Sequence[tuple[str, str]] = ()  # (subject, description)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def to_status(self) -> grpc.Status:
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=DOMAIN, metadata=dict(self.metadata)
            )
        ]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.quota_violations:
            details.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                        for s, d in self.quota_violations
                    ]
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(max(self.retry_after, 0.0) * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        status = status_pb2.Status(code=_CODE_NUMBERS[self.code], message=self.message)
        for detail in details:
            status.details.add().Pack(detail)
        converted: grpc.Status = rpc_status.to_status(status)
        return converted


_CODE_NUMBERS = {code: code.value[0] for code in grpc.StatusCode}
assert _CODE_NUMBERS[grpc.StatusCode.INVALID_ARGUMENT] == code_pb2.INVALID_ARGUMENT


def invalid_argument(violations: Sequence[FieldViolation]) -> GatewayError:
    """A request the caller must fix; the message lists every field at fault."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
        f"invalid request: {summary}",
        field_violations=violations,
    )


# One explicit table from an upstream HTTP status to a gRPC code and reason.
# 401 is the vendor refusing the gateway's own credentials: the caller cannot fix
# that, so it is INTERNAL with a reason operators can alert on. 408 and 504 are the
# vendor (or a proxy before it) giving up, not the caller's deadline running out:
# UNAVAILABLE, so that callers retry, as gRPC's own HTTP mapping does.
HTTP_STATUS_TO_GRPC: Mapping[int, tuple[grpc.StatusCode, str]] = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, Reason.UPSTREAM_BAD_REQUEST),
    401: (grpc.StatusCode.INTERNAL, Reason.UPSTREAM_AUTH_FAILED),
    402: (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.UPSTREAM_QUOTA_EXHAUSTED),
    403: (grpc.StatusCode.PERMISSION_DENIED, Reason.UPSTREAM_PERMISSION_DENIED),
    404: (grpc.StatusCode.NOT_FOUND, Reason.UPSTREAM_MODEL_NOT_FOUND),
    408: (grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_TIMEOUT),
    409: (grpc.StatusCode.ABORTED, Reason.UPSTREAM_ERROR),
    413: (grpc.StatusCode.INVALID_ARGUMENT, Reason.UPSTREAM_BAD_REQUEST),
    422: (grpc.StatusCode.INVALID_ARGUMENT, Reason.UPSTREAM_BAD_REQUEST),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.UPSTREAM_RATE_LIMITED),
    499: (grpc.StatusCode.CANCELLED, Reason.UPSTREAM_ERROR),
    504: (grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_TIMEOUT),
}


def from_http_status(
    status: int,
    vendor_message: str,
    *,
    provider: str,
    deployment: str,
    retry_after: float | None = None,
    secrets: Sequence[str] = (),
) -> GatewayError:
    """Map an upstream HTTP error to a GatewayError, keeping the vendor's own words."""
    if status in HTTP_STATUS_TO_GRPC:
        code, reason = HTTP_STATUS_TO_GRPC[status]
    elif status >= 500:
        code, reason = grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_UNAVAILABLE
    elif status >= 400:
        code, reason = grpc.StatusCode.INVALID_ARGUMENT, Reason.UPSTREAM_BAD_REQUEST
    else:
        code, reason = grpc.StatusCode.UNKNOWN, Reason.UPSTREAM_ERROR
    if reason == Reason.UPSTREAM_AUTH_FAILED:
        # The vendor's words may echo part of the key; the operator's log has the rest.
        text = "the upstream rejected the gateway's credentials; an operator must fix its API key"
    else:
        text = redact(vendor_message, secrets) or f"HTTP {status}"
    return GatewayError(
        code,
        reason,
        f"{provider} deployment {deployment!r} answered {status}: {text}",
        metadata={"provider": provider, "deployment": deployment, "http_status": str(status)},
        retry_after=retry_after if reason == Reason.UPSTREAM_RATE_LIMITED else None,
    )


_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,})"
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove known secrets and anything shaped like a vendor key from text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return _KEY_PATTERNS.sub("[REDACTED]", text)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; dates are rare from vendors)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def status_of(exc: BaseException | None) -> tuple[str, str]:
    """The status name and ErrorInfo reason a call ends with when `exc` leaves its
    handler (None: OK): a GatewayError's own, CANCELLED for a cancel or a stop, and
    INTERNAL for a bug (interceptors/errors.py turns it into that status)."""
    if exc is None:
        return "OK", ""
    if isinstance(exc, GatewayError):
        return exc.code.name, exc.reason
    if not isinstance(exc, Exception):
        return "CANCELLED", ""
    return "INTERNAL", Reason.INTERNAL
