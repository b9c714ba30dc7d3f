"""Quota policies kept in the store: one per tenant, and one per consumer.

A body holds the limit fields of a `quota.policy.Policy` (requests_per_minute,
tokens_per_day, concurrent, ...); scope and match are implied by the row (the
tenant's id, or the consumer's), so a body naming them is refused. Bodies are
validated with `Policy` before they are written and kept as JSON text.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

from unigate.gateway.quota.policy import LIMIT_FIELDS, Policy
from unigate.gateway.store.base import NotFoundError
from unigate.gateway.store.sql.base import SqlBase
from unigate.gateway.store.sql.tenants import TENANT_EXISTS

_UPSERT_TENANT = (
    "INSERT INTO quota_policies (tenant_id, consumer_id, body, updated_at)"
    " VALUES (?, NULL, ?, ?) ON CONFLICT (tenant_id) WHERE consumer_id IS NULL"
    " DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
)
_UPSERT_CONSUMER = (
    "INSERT INTO quota_policies (tenant_id, consumer_id, body, updated_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, consumer_id) WHERE consumer_id IS NOT NULL"
    " DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
)
_CONSUMER_IN_TENANT = "SELECT id FROM consumers WHERE id = ? AND tenant_id = ?"


def quota_policy_body(policy: dict[str, Any], scope: str = "tenant") -> dict[str, Any]:
    """The limits of `policy`, validated and normalised; ValueError when a field is
    unknown or a value out of range, or when no limit is set."""
    if "scope" in policy or "match" in policy:
        raise ValueError("a stored quota policy takes its scope and match from its row")
    try:
        checked = Policy(scope=scope, **policy)
    except pydantic.ValidationError as exc:
        raise ValueError(f"invalid quota policy: {exc}") from None
    body = checked.model_dump(exclude_none=True, exclude={"scope", "match"})
    if not body:
        names = ", ".join(name for name, _, _ in LIMIT_FIELDS)
        raise ValueError(f"a quota policy needs at least one limit ({names})")
    return body


class QuotaPoliciesSql(SqlBase):
    async def set_quota_policy(
        self, tenant_id: str, consumer_id: str | None, policy: dict[str, Any]
    ) -> None:
        """Create or replace the tenant's policy (consumer_id None) or its consumer's."""
        scope = "tenant" if consumer_id is None else "consumer"
        body = json.dumps(quota_policy_body(policy, scope), sort_keys=True)
        now = self._clock()
        async with self._write() as conn:
            await self._one(conn, f"tenant {tenant_id!r}", TENANT_EXISTS, tenant_id)
            if consumer_id is None:
                await conn.execute(_UPSERT_TENANT, tenant_id, body, now)
                return
            what = f"consumer {consumer_id!r} of tenant {tenant_id!r}"
            await self._one(conn, what, _CONSUMER_IN_TENANT, consumer_id, tenant_id)
            await conn.execute(_UPSERT_CONSUMER, tenant_id, consumer_id, body, now)

    async def get_quota_policies(
        self, tenant_id: str, consumer_id: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """("tenant", limits) if the tenant has a policy, then ("consumer", limits) if
        `consumer_id` (of that tenant) has one; empty when neither has."""
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT consumer_id, body FROM quota_policies WHERE tenant_id = ?"
                " AND (consumer_id IS NULL OR consumer_id = ?)",
                tenant_id,
                consumer_id,
            )
        found = [
            ("tenant" if row["consumer_id"] is None else "consumer", json.loads(row["body"]))
            for row in rows
        ]
        return sorted(found, key=lambda item: item[0] != "tenant")

    async def delete_quota_policy(self, tenant_id: str, consumer_id: str | None) -> None:
        """NotFoundError when the tenant or consumer has no policy."""
        async with self._write() as conn:
            if consumer_id is None:
                row = await conn.fetchrow(
                    "DELETE FROM quota_policies WHERE tenant_id = ? AND consumer_id IS NULL"
                    " RETURNING tenant_id",
                    tenant_id,
                )
                what = f"quota policy of tenant {tenant_id!r}"
            else:
                row = await conn.fetchrow(
                    "DELETE FROM quota_policies WHERE tenant_id = ? AND consumer_id = ?"
                    " RETURNING tenant_id",
                    tenant_id,
                    consumer_id,
                )
                what = f"quota policy of consumer {consumer_id!r}"
        if row is None:
            raise NotFoundError(f"{what} not found")
