"""Store records → AdminService messages, and checks of request fields.

Pure functions: no store, no caller. An ApiKey message never carries the hash;
the secret appears only in Create/RotateApiKey responses, set by the servicer.
Milliseconds in the store's records become google.protobuf.Duration.
A deployment's health (seconds left in an ejection) becomes a wall-clock time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2, timestamp_pb2

from unigate.gateway.errors import FieldViolation, invalid_argument
from unigate.gateway.store.base import MAX_PAGE_SIZE
from unigate.gateway.store.models import (
    Admin,
    ApiKey,
    CallLog,
    Consumer,
    Service,
    Subscription,
    SubscriptionStatus,
    Tenant,
    UsageRow,
)
from unigate.v1 import admin_pb2 as pb

if TYPE_CHECKING:
    from unigate.gateway.routing.router import Deployment

MAX_NAME_LENGTH = 200

STATUS_TO_PB = {
    SubscriptionStatus.PENDING: pb.SUBSCRIPTION_STATUS_PENDING,
    SubscriptionStatus.APPROVED: pb.SUBSCRIPTION_STATUS_APPROVED,
    SubscriptionStatus.REJECTED: pb.SUBSCRIPTION_STATUS_REJECTED,
    SubscriptionStatus.REVOKED: pb.SUBSCRIPTION_STATUS_REVOKED,
}
STATUS_FROM_PB: dict[int, SubscriptionStatus] = {
    number: status for status, number in STATUS_TO_PB.items()
}
DEPLOYMENT_STATES = {
    "healthy": pb.DEPLOYMENT_STATE_HEALTHY,
    "ejected": pb.DEPLOYMENT_STATE_EJECTED,
    "half_open": pb.DEPLOYMENT_STATE_HALF_OPEN,
}


def timestamp(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    if epoch is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(epoch * 1e9))
    return stamp


def epoch_of(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def seconds_of(duration: duration_pb2.Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def duration_ms(millis: float | None) -> duration_pb2.Duration | None:
    if millis is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(millis * 1e6))
    return duration


def tenant_pb(tenant: Tenant) -> pb.Tenant:
    return pb.Tenant(
        id=tenant.id,
        name=tenant.name,
        disabled=tenant.disabled,
        create_time=timestamp(tenant.created_at),
    )


def consumer_pb(consumer: Consumer) -> pb.Consumer:
    return pb.Consumer(
        id=consumer.id,
        tenant_id=consumer.tenant_id,
        name=consumer.name,
        disabled=consumer.disabled,
        create_time=timestamp(consumer.created_at),
    )


def admin_pb(admin: Admin) -> pb.Admin:
    return pb.Admin(
        id=admin.id,
        tenant_id=admin.tenant_id or "",
        name=admin.name,
        create_time=timestamp(admin.created_at),
    )


def api_key_pb(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        name=key.name,
        tenant_id=key.tenant_id or "",
        consumer_id=key.consumer_id or "",
        admin_id=key.admin_id or "",
        create_time=timestamp(key.created_at),
        expire_time=timestamp(key.expires_at),
        revoke_time=timestamp(key.revoked_at),
    )


def service_pb(service: Service) -> pb.Service:
    return pb.Service(
        tenant_id=service.tenant_id,
        alias=service.alias,
        requires_approval=service.requires_approval,
        create_time=timestamp(service.created_at),
    )


def subscription_pb(subscription: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=subscription.id,
        tenant_id=subscription.tenant_id,
        consumer_id=subscription.consumer_id,
        alias=subscription.alias,
        status=STATUS_TO_PB[subscription.status],
        request_time=timestamp(subscription.requested_at),
        decided_by=subscription.decided_by or "",
        decide_time=timestamp(subscription.decided_at),
        note=subscription.note,
    )


def call_log_pb(log: CallLog) -> pb.CallLog:
    return pb.CallLog(
        id=log.id,
        request_id=log.request_id,
        start_time=timestamp(log.ts),
        method=log.method,
        code=log.code,
        reason=log.reason,
        tenant_id=log.tenant_id or "",
        consumer_id=log.consumer_id or "",
        key_id=log.key_id or "",
        alias=log.alias,
        provider=log.provider,
        deployment=log.deployment,
        vendor_model=log.vendor_model,
        latency=duration_ms(log.latency_ms),
        upstream_latency=duration_ms(log.upstream_latency_ms),
        time_to_first_token=duration_ms(log.ttft_ms),
        input_tokens=log.input_tokens,
        output_tokens=log.output_tokens,
        cached_tokens=log.cached_tokens,
        cost=log.cost,
        cache_hit=log.cache_hit,
        retries=log.retries,
        fallbacks=[alias for alias in log.fallbacks.split(",") if alias],
        client_address=log.client_address,
        end_user=log.end_user,
        request_body=log.request_body,
        response_body=log.response_body,
    )


def deployment_status_pb(alias: str, deployment: Deployment, now: float) -> pb.DeploymentStatus:
    """`now` (epoch seconds) turns the seconds left in an ejection into its end."""
    health = deployment.health
    state = health.state()
    status = pb.DeploymentStatus(
        alias=alias,
        deployment=deployment.name,
        provider=deployment.provider.name,
        model=deployment.model,
        weight=deployment.weight,
        priority=deployment.priority,
        state=DEPLOYMENT_STATES.get(state, pb.DEPLOYMENT_STATE_UNSPECIFIED),
        in_flight=health.in_flight,
        error_rate=health.error_rate(),
        consecutive_failures=health.consecutive_failures,
    )
    if state == "ejected":
        status.ejected_until.FromNanoseconds(round((now + health.ejected_for()) * 1e9))
    if health.ewma_latency is not None:
        status.latency_ewma.FromNanoseconds(round(health.ewma_latency * 1e9))
    return status


def usage_row_pb(row: UsageRow) -> pb.UsageRow:
    return pb.UsageRow(
        bucket_start_time=timestamp(row.bucket_start),
        group=row.group,
        calls=row.calls,
        errors=row.errors,
        error_rate=row.error_rate,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_tokens=row.cached_tokens,
        cost=row.cost,
        cache_hits=row.cache_hits,
        cache_hit_rate=row.cache_hit_rate,
        latency_mean=duration_ms(row.latency_mean_ms),
        latency_p50=duration_ms(row.latency_p50_ms),
        latency_p95=duration_ms(row.latency_p95_ms),
        latency_p99=duration_ms(row.latency_p99_ms),
    )


def check_name(name: str, field: str = "name") -> list[FieldViolation]:
    if not name.strip():
        return [FieldViolation(field, "required: a non-blank name")]
    if len(name) > MAX_NAME_LENGTH:
        return [FieldViolation(field, f"at most {MAX_NAME_LENGTH} characters")]
    if any(ord(c) < 32 for c in name):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def require_name(name: str, field: str = "name") -> None:
    problems = check_name(name, field)
    if problems:
        raise invalid_argument(problems)


def page_size(requested: int) -> int:
    """AIP-158: negative is an error; more than the maximum is lowered to it."""
    if requested < 0:
        raise invalid_argument([FieldViolation("page_size", "must be 0 (the default) or more")])
    return min(requested, MAX_PAGE_SIZE)


def statuses_of(
    values: Sequence[int],
) -> tuple[SubscriptionStatus, ...]:
    problems = [
        FieldViolation(f"statuses[{index}]", "must be PENDING, APPROVED, REJECTED or REVOKED")
        for index, value in enumerate(values)
        if value not in STATUS_FROM_PB
    ]
    if problems:
        raise invalid_argument(problems)
    return tuple(STATUS_FROM_PB[value] for value in values)
