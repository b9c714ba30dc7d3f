"""Which model aliases a caller may use: its tenant's services and its approved
subscriptions, answered from a short-lived cache so a hot caller costs dict lookups.

A decision may be up to `ttl` seconds old in each process (default 5 s): that is
the documented bound on how long an approval or revocation takes to apply.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.store.base import NotFoundError, Store
from unigate.gateway.store.models import SubscriptionStatus

_ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str  # a SubscriptionStatus, "absent", or for services "approval"/"open"/"absent"
    until: float


class AccessPolicy:
    def __init__(
        self, store: Store, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._services: dict[tuple[str, str], _Entry] = {}
        self._subscriptions: dict[tuple[str, str], _Entry] = {}
        self._owners: dict[tuple[str, str], _Entry] = {}
        self._visible: dict[str, tuple[frozenset[str], float]] = {}

    async def _cached(
        self,
        cache: dict[tuple[str, str], _Entry],
        key: tuple[str, str],
        load: Callable[[], Awaitable[str]],
    ) -> str:
        now = self._clock()
        entry = cache.get(key)
        if entry is not None and entry.until > now:
            return entry.value
        value = await load()
        if len(cache) > 100_000:
            cache.clear()
        cache[key] = _Entry(value, now + self._ttl)
        return value

    async def check(self, principal: Principal, alias: str) -> None:
        """Raise NOT_FOUND or PERMISSION_DENIED unless `principal` may call `alias`."""
        if principal.consumer_id is None or principal.tenant_id is None:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.CONSUMER_REQUIRED,
                "inference calls need a consumer's credentials; admin credentials only administer",
            )
        tenant_id, consumer_id = principal.tenant_id, principal.consumer_id

        async def service() -> str:
            try:
                found = await self._store.get_service(tenant_id, alias)
            except NotFoundError:
                return _ABSENT
            return "approval" if found.requires_approval else "open"

        if await self._cached(self._services, (tenant_id, alias), service) == _ABSENT:
            # Another tenant's services are not even acknowledged to exist.
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.MODEL_NOT_FOUND,
                f"unknown model alias {alias!r}; ListModels shows the aliases you may use",
                metadata={"alias": alias},
            )

        async def subscription() -> str:
            found = await self._store.find_subscription(consumer_id, alias)
            return _ABSENT if found is None else found.status.value

        status = await self._cached(self._subscriptions, (consumer_id, alias), subscription)
        if status == SubscriptionStatus.APPROVED:
            return
        raise _denied(alias, status)

    async def check_identity(self, principal: Principal) -> None:
        """A JWT or a certificate only names its tenant and consumer: they must exist,
        belong together and be enabled (a key's owner is checked with the key)."""
        if principal.via == Via.API_KEY or principal.tenant_id is None:
            return
        tenant_id, consumer_id = principal.tenant_id, principal.consumer_id or ""

        async def state() -> str:
            try:
                tenant = await self._store.get_tenant(tenant_id)
            except NotFoundError:
                return AuthReason.UNKNOWN_TENANT
            if tenant.disabled:
                return AuthReason.DISABLED_TENANT
            if not consumer_id:
                return "ok"
            try:
                consumer = await self._store.get_consumer(consumer_id)
            except NotFoundError:
                return AuthReason.UNKNOWN_CONSUMER
            if consumer.tenant_id != tenant_id:
                return AuthReason.UNKNOWN_CONSUMER
            return AuthReason.DISABLED_CONSUMER if consumer.disabled else "ok"

        verdict = await self._cached(self._owners, (tenant_id, consumer_id), state)
        if verdict == "ok":
            return
        named = (
            f"consumer {consumer_id!r} of tenant {tenant_id!r}"
            if consumer_id
            else (f"tenant {tenant_id!r}")
        )
        problem = "does not exist" if verdict.startswith("UNKNOWN") else "is disabled"
        raise AuthError(
            verdict, f"the {principal.via.value} credential names {named}, which {problem}"
        )

    async def visible_aliases(self, principal: Principal) -> frozenset[str]:
        """The aliases of the caller's tenant's services (all of them for global admins)."""
        if principal.tenant_id is None:
            return frozenset()
        now = self._clock()
        cached = self._visible.get(principal.tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        aliases: set[str] = set()
        token = ""
        while True:
            page = await self._store.list_services(principal.tenant_id, 1000, token)
            aliases.update(service.alias for service in page.items)
            token = page.next_page_token
            if not token:
                break
        result = frozenset(aliases)
        self._visible[principal.tenant_id] = (result, now + self._ttl)
        return result


_DENIALS = {
    _ABSENT: (
        Reason.SUBSCRIPTION_MISSING,
        "you have no subscription to model alias {alias!r}: request one"
        " (AdminService.RequestSubscription, or `unigate admin subscriptions request`)",
    ),
    SubscriptionStatus.PENDING.value: (
        Reason.SUBSCRIPTION_PENDING,
        "your subscription to model alias {alias!r} is waiting for an administrator's approval",
    ),
    SubscriptionStatus.REJECTED.value: (
        Reason.SUBSCRIPTION_REJECTED,
        "your subscription to model alias {alias!r} was rejected; ask an administrator,"
        " or request it again",
    ),
    SubscriptionStatus.REVOKED.value: (
        Reason.SUBSCRIPTION_REVOKED,
        "your subscription to model alias {alias!r} was revoked; request it again",
    ),
}


def _denied(alias: str, status: str) -> GatewayError:
    reason, text = _DENIALS[status]
    return GatewayError(
        grpc.StatusCode.PERMISSION_DENIED,
        reason,
        text.format(alias=alias),
        metadata={"alias": alias, "subscription": status},
    )
