"""Services (the model aliases a tenant may see) and consumers' subscriptions to them.

request ─▶ pending ─approve─▶ approved ─revoke─▶ revoked
              └─reject─▶ rejected

request when the service needs no approval ─▶ approved
request again after rejected or revoked ─▶ pending (or approved, as above), same id
"""

from __future__ import annotations

from collections.abc import Sequence

from unigate.gateway.store.base import ConflictError
from unigate.gateway.store.common import Conn, Row, consumer_of, new_id, service_of, subscription_of
from unigate.gateway.store.models import Page, Service, Subscription, SubscriptionStatus
from unigate.gateway.store.sql.base import Listing, SqlBase, eq, named
from unigate.gateway.store.sql.tenants import TENANT_EXISTS

SERVICES = Listing("services", "alias", service_of)
SUBSCRIPTIONS = Listing("subscriptions", "id", subscription_of, "sub_")

_PENDING, _APPROVED = SubscriptionStatus.PENDING, SubscriptionStatus.APPROVED
# a decision -> the one status it can be made from
_DECIDED_FROM = {
    SubscriptionStatus.APPROVED: _PENDING,
    SubscriptionStatus.REJECTED: _PENDING,
    SubscriptionStatus.REVOKED: _APPROVED,
}
_REQUEST_AGAIN = (
    "UPDATE subscriptions SET status = ?, requested_at = ?, decided_by = NULL, decided_at = ?,"
    " note = '' WHERE consumer_id = ? AND alias = ? AND status IN ('rejected', 'revoked')"
    " RETURNING *"
)
_REQUEST_FIRST = (
    "INSERT INTO subscriptions (id, tenant_id, consumer_id, alias, status, requested_at,"
    " decided_by, decided_at, note) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, '')"
    " ON CONFLICT DO NOTHING RETURNING *"
)


class SubscriptionsSql(SqlBase):
    async def upsert_service(
        self, tenant_id: str, alias: str, *, requires_approval: bool
    ) -> Service:
        """Create the service, or change whether it needs approval (subscriptions
        already pending or approved stay as they are)."""
        async with self._write() as conn:
            await self._one(conn, f"tenant {tenant_id!r}", TENANT_EXISTS, tenant_id)
            row = await self._one(
                conn,
                "service",
                "INSERT INTO services (tenant_id, alias, requires_approval, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, alias)"
                " DO UPDATE SET requires_approval = excluded.requires_approval RETURNING *",
                tenant_id,
                named(alias, "alias"),
                requires_approval,
                self._clock(),
            )
        return service_of(row)

    async def list_services(
        self, tenant_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[Service]:
        return await self._page(SERVICES, eq("tenant_id", tenant_id), page_size, page_token)

    async def get_service(self, tenant_id: str, alias: str) -> Service:
        async with self._read() as conn:
            return service_of(await self._service(conn, tenant_id, alias))

    async def _service(self, conn: Conn, tenant_id: str, alias: str) -> Row:
        sql = "SELECT * FROM services WHERE tenant_id = ? AND alias = ?"
        what = f"service {alias!r} of tenant {tenant_id!r}"
        return await self._one(conn, what, sql, tenant_id, alias)

    async def request_subscription(self, consumer_id: str, alias: str) -> Subscription:
        """Pending, or approved at once (decided_at set, decided_by None) when the
        service needs no approval. A rejected or revoked subscription is requested
        again and keeps its id; a pending or approved one is a ConflictError. Only
        the consumer's own tenant's services exist for it: any other alias is not found."""
        now = self._clock()
        async with self._write() as conn:
            sql = "SELECT * FROM consumers WHERE id = ?"
            consumer = consumer_of(
                await self._one(conn, f"consumer {consumer_id!r}", sql, consumer_id)
            )
            service = service_of(await self._service(conn, consumer.tenant_id, alias))
            status = _PENDING if service.requires_approval else _APPROVED
            decided_at = None if service.requires_approval else now
            row = await conn.fetchrow(
                _REQUEST_AGAIN, status.value, now, decided_at, consumer_id, alias
            ) or await conn.fetchrow(
                _REQUEST_FIRST,
                new_id("sub", now),
                consumer.tenant_id,
                consumer_id,
                alias,
                status.value,
                now,
                decided_at,
            )
            if row is None:
                found = await self._find(conn, consumer_id, alias)
                state = found.status.value if found else "concurrently requested"
                raise ConflictError(
                    f"consumer {consumer_id!r} already has a {state} subscription to {alias!r}"
                )
        return subscription_of(row)

    async def decide_subscription(
        self, subscription_id: str, status: SubscriptionStatus, *, by: str, note: str = ""
    ) -> Subscription:
        """Approve or reject a pending subscription, or revoke an approved one;
        records who decided (`by`, an admin id or subject) and when."""
        source = _DECIDED_FROM.get(SubscriptionStatus(status))
        if source is None:
            raise ValueError(f"{status!s} is not a decision: approve, reject or revoke")
        what = f"subscription {subscription_id!r}"
        async with self._write() as conn:
            row = await conn.fetchrow(
                "UPDATE subscriptions SET status = ?, decided_by = ?, decided_at = ?, note = ?"
                " WHERE id = ? AND status = ? RETURNING *",
                SubscriptionStatus(status).value,
                named(by, "decided by"),
                self._clock(),
                note,
                subscription_id,
                source.value,
            )
            if row is None:
                sql = "SELECT * FROM subscriptions WHERE id = ?"
                current = subscription_of(await self._one(conn, what, sql, subscription_id))
                raise ConflictError(
                    f"{what} is {current.status.value}; only a {source.value} subscription"
                    f" can become {SubscriptionStatus(status).value}"
                )
        return subscription_of(row)

    async def get_subscription(self, subscription_id: str) -> Subscription:
        sql = "SELECT * FROM subscriptions WHERE id = ?"
        what = f"subscription {subscription_id!r}"
        return subscription_of(await self._get(what, sql, subscription_id))

    async def find_subscription(self, consumer_id: str, alias: str) -> Subscription | None:
        async with self._read() as conn:
            return await self._find(conn, consumer_id, alias)

    @staticmethod
    async def _find(conn: Conn, consumer_id: str, alias: str) -> Subscription | None:
        row = await conn.fetchrow(
            "SELECT * FROM subscriptions WHERE consumer_id = ? AND alias = ?", consumer_id, alias
        )
        return None if row is None else subscription_of(row)

    async def list_subscriptions(
        self,
        *,
        tenant_id: str | None = None,
        consumer_id: str | None = None,
        statuses: Sequence[SubscriptionStatus] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Subscription]:
        """Every filter given must hold; no `statuses` means any status."""
        filters = eq("tenant_id", tenant_id) + eq("consumer_id", consumer_id)
        wanted = tuple(sorted({SubscriptionStatus(s).value for s in statuses}))
        if wanted:
            filters.append((f"status IN ({', '.join('?' * len(wanted))})", wanted))
        return await self._page(SUBSCRIPTIONS, filters, page_size, page_token)
