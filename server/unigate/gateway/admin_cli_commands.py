"""The `unigate admin` commands that call the AdminService: one parser each, and
how each turns its arguments into the RPC's request.

Every command's defaults carry `rpc` (the method name), `build` (arguments →
request) and `listing` (a paginated list), for admin_cli to run generically.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from unigate.gateway.config_types import parse_duration
from unigate.v1 import admin_pb2 as pb

STATUSES = {
    "pending": pb.SUBSCRIPTION_STATUS_PENDING,
    "approved": pb.SUBSCRIPTION_STATUS_APPROVED,
    "rejected": pb.SUBSCRIPTION_STATUS_REJECTED,
    "revoked": pb.SUBSCRIPTION_STATUS_REVOKED,
}

QUOTA_SCOPES = {
    "key": pb.QUOTA_SCOPE_KEY,
    "consumer": pb.QUOTA_SCOPE_CONSUMER,
    "tenant": pb.QUOTA_SCOPE_TENANT,
    "alias": pb.QUOTA_SCOPE_ALIAS,
    "deployment": pb.QUOTA_SCOPE_DEPLOYMENT,
    "global": pb.QUOTA_SCOPE_GLOBAL,
}

Build = Callable[[argparse.Namespace], Message]


class UsageError(Exception):
    """Something the operator must change on the command line (exit 2)."""


def _duration(text: str) -> duration_pb2.Duration:
    try:
        seconds = float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _time(text: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; write ISO 8601, e.g. 2030-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _expiry(args: argparse.Namespace) -> timestamp_pb2.Timestamp | None:
    if args.expires_at is not None:
        stamp: timestamp_pb2.Timestamp = args.expires_at
        return stamp
    if args.expires_in is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        stamp.FromNanoseconds(stamp.ToNanoseconds() + args.expires_in.ToNanoseconds())
        return stamp
    return None


def _paged() -> argparse.ArgumentParser:
    paged = argparse.ArgumentParser(add_help=False)
    paged.add_argument("--page-size", type=int, default=0)
    paged.add_argument("--page-token", default="")
    paged.add_argument("--all", action="store_true", help="follow every page")
    return paged


def _enable_flags(parser: argparse.ArgumentParser) -> None:
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument("--disable", dest="disabled", action="store_const", const=True)
    flags.add_argument("--enable", dest="disabled", action="store_const", const=False)


def _expiry_flags(parser: argparse.ArgumentParser) -> None:
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument("--expires-in", type=_duration, help="a duration: 30m, 12h, 2160h")
    flags.add_argument("--expires-at", type=_time, help="ISO 8601, e.g. 2030-01-31T00:00:00Z")


def _quota_subject(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", required=True, choices=list(QUOTA_SCOPES))
    parser.add_argument("--id", help="a key, consumer or tenant id, an alias or a deployment")


def _update_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if args.disabled is not None:
        fields["disabled"] = args.disabled
    if not fields:
        raise UsageError("nothing to update: pass --name, --disable or --enable")
    return fields


def _decision(message: type[Message]) -> Build:
    return lambda a: message(subscription_id=a.id, note=a.note)


def _page(args: argparse.Namespace) -> dict[str, Any]:
    return {"page_size": args.page_size, "page_token": args.page_token}


def add_rpc_commands(
    groups: Any, parents: list[argparse.ArgumentParser], run: Callable[[argparse.Namespace], int]
) -> None:
    """Add the command groups (tenants, consumers, ...) under `unigate admin`."""
    paged = [*parents, _paged()]

    def command(group: Any, name: str, rpc: str, build: Build, *, listing: bool = False) -> Any:
        parser = group.add_parser(name, parents=paged if listing else parents)
        parser.set_defaults(run=run, rpc=rpc, build=build, listing=listing)
        return parser

    tenants = groups.add_parser("tenants", help="tenants").add_subparsers(required=True)
    p = command(tenants, "create", "CreateTenant", lambda a: pb.CreateTenantRequest(name=a.name))
    p.add_argument("name")
    p = command(tenants, "get", "GetTenant", lambda a: pb.GetTenantRequest(tenant_id=a.id))
    p.add_argument("id")
    command(
        tenants, "list", "ListTenants", lambda a: pb.ListTenantsRequest(**_page(a)), listing=True
    )
    p = command(
        tenants,
        "update",
        "UpdateTenant",
        lambda a: pb.UpdateTenantRequest(tenant_id=a.id, **_update_fields(a)),
    )
    p.add_argument("id")
    p.add_argument("--name")
    _enable_flags(p)

    consumers = groups.add_parser("consumers", help="consumers").add_subparsers(required=True)
    p = command(
        consumers,
        "create",
        "CreateConsumer",
        lambda a: pb.CreateConsumerRequest(tenant_id=a.tenant or "", name=a.name),
    )
    p.add_argument("name")
    p.add_argument("--tenant", help="the tenant id (a tenant admin's own by default)")
    p = command(consumers, "get", "GetConsumer", lambda a: pb.GetConsumerRequest(consumer_id=a.id))
    p.add_argument("id")
    p = command(
        consumers,
        "list",
        "ListConsumers",
        lambda a: pb.ListConsumersRequest(tenant_id=a.tenant or "", **_page(a)),
        listing=True,
    )
    p.add_argument("--tenant")
    p = command(
        consumers,
        "update",
        "UpdateConsumer",
        lambda a: pb.UpdateConsumerRequest(consumer_id=a.id, **_update_fields(a)),
    )
    p.add_argument("id")
    p.add_argument("--name")
    _enable_flags(p)

    admins = groups.add_parser("admins", help="administrators").add_subparsers(required=True)
    p = command(
        admins,
        "create",
        "CreateAdmin",
        lambda a: pb.CreateAdminRequest(name=a.name, tenant_id=a.tenant or ""),
    )
    p.add_argument("name")
    p.add_argument("--tenant", help="the tenant it administers (none: a global admin)")

    keys = groups.add_parser("keys", help="API keys").add_subparsers(required=True)
    p = command(
        keys,
        "create",
        "CreateApiKey",
        lambda a: pb.CreateApiKeyRequest(
            consumer_id=a.consumer, admin_id=a.admin, name=a.name, expire_time=_expiry(a)
        ),
    )
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--consumer", help="a consumer id: the key calls models as it")
    owner.add_argument("--admin", help="an admin id: the key administers as it")
    p.add_argument("--name", default="")
    _expiry_flags(p)
    p = command(
        keys,
        "list",
        "ListApiKeys",
        lambda a: pb.ListApiKeysRequest(
            tenant_id=a.tenant or "", consumer_id=a.consumer or "", **_page(a)
        ),
        listing=True,
    )
    p.add_argument("--tenant")
    p.add_argument("--consumer")
    p = command(keys, "revoke", "RevokeApiKey", lambda a: pb.RevokeApiKeyRequest(key_id=a.id))
    p.add_argument("id")
    p = command(
        keys,
        "rotate",
        "RotateApiKey",
        lambda a: pb.RotateApiKeyRequest(key_id=a.id, grace_period=a.grace, expire_time=_expiry(a)),
    )
    p.add_argument("id")
    p.add_argument("--grace", type=_duration, help="how long the old key still works (24h)")
    _expiry_flags(p)

    services = groups.add_parser("services", help="model aliases").add_subparsers(required=True)
    p = command(
        services,
        "list",
        "ListServices",
        lambda a: pb.ListServicesRequest(tenant_id=a.tenant or "", **_page(a)),
        listing=True,
    )
    p.add_argument("--tenant")
    p = command(
        services,
        "upsert",
        "UpsertService",
        lambda a: pb.UpsertServiceRequest(
            tenant_id=a.tenant, alias=a.alias, requires_approval=a.requires_approval
        ),
    )
    p.add_argument("alias")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--requires-approval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subscriptions wait for an admin's approval (default: yes)",
    )

    subs = groups.add_parser("subscriptions", help="subscriptions").add_subparsers(required=True)
    p = command(
        subs,
        "request",
        "RequestSubscription",
        lambda a: pb.RequestSubscriptionRequest(consumer_id=a.consumer or "", alias=a.alias),
    )
    p.add_argument("alias")
    p.add_argument("--consumer", help="the consumer (default: the caller's own)")
    for verb, rpc, message in (
        ("approve", "ApproveSubscription", pb.ApproveSubscriptionRequest),
        ("reject", "RejectSubscription", pb.RejectSubscriptionRequest),
        ("revoke", "RevokeSubscription", pb.RevokeSubscriptionRequest),
    ):
        p = command(subs, verb, rpc, _decision(message))
        p.add_argument("id")
        p.add_argument("--note", default="")
    p = command(
        subs,
        "list",
        "ListSubscriptions",
        lambda a: pb.ListSubscriptionsRequest(
            tenant_id=a.tenant or "",
            consumer_id=a.consumer or "",
            statuses=[STATUSES[s] for s in a.status or ()],
            **_page(a),
        ),
        listing=True,
    )
    p.add_argument("--tenant")
    p.add_argument("--consumer")
    p.add_argument("--status", action="append", choices=sorted(STATUSES))

    p = groups.add_parser(
        "deployments",
        parents=parents,
        help="each deployment's health in the gateway process that answers",
    )
    p.set_defaults(
        run=run,
        rpc="ListDeployments",
        build=lambda a: pb.ListDeploymentsRequest(alias=a.alias or ""),
        listing=False,
    )
    p.add_argument("--alias", help="only this model alias's deployments")

    quotas = groups.add_parser("quotas", help="quota usage").add_subparsers(required=True)
    p = command(
        quotas,
        "usage",
        "GetQuotaUsage",
        lambda a: pb.GetQuotaUsageRequest(scope=QUOTA_SCOPES[a.scope], id=a.id or ""),
    )
    _quota_subject(p)
    p = command(
        quotas,
        "reset",
        "ResetQuotaUsage",
        lambda a: pb.ResetQuotaUsageRequest(scope=QUOTA_SCOPES[a.scope], id=a.id or ""),
    )
    _quota_subject(p)
