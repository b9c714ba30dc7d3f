"""Tenants, their consumers (applications) and admin principals."""

from __future__ import annotations

from unigate.gateway.store.base import ConflictError
from unigate.gateway.store.common import Row, admin_of, consumer_of, new_id, tenant_of
from unigate.gateway.store.models import Admin, Consumer, Page, Tenant
from unigate.gateway.store.sql.base import Listing, SqlBase, eq, named

TENANTS = Listing("tenants", "id", tenant_of, "ten_")
CONSUMERS = Listing("consumers", "id", consumer_of, "con_")
TENANT_EXISTS = "SELECT id FROM tenants WHERE id = ?"


class TenantsSql(SqlBase):
    async def create_tenant(self, name: str) -> Tenant:
        now = self._clock()
        tenant = Tenant(new_id("ten", now), named(name, "tenant name"), now)
        async with self._write() as conn:
            row = await conn.fetchrow(
                "INSERT INTO tenants (id, name, disabled, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                tenant.id,
                tenant.name,
                False,
                now,
            )
        if row is None:
            raise ConflictError(f"a tenant named {name!r} already exists")
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        sql = "SELECT * FROM tenants WHERE id = ?"
        return tenant_of(await self._get(f"tenant {tenant_id!r}", sql, tenant_id))

    async def list_tenants(self, page_size: int = 0, page_token: str = "") -> Page[Tenant]:
        return await self._page(TENANTS, (), page_size, page_token)

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, disabled: bool | None = None
    ) -> Tenant:
        row = await self._update("tenants", "tenant", tenant_id, name=name, disabled=disabled)
        return tenant_of(row)

    async def create_consumer(self, tenant_id: str, name: str) -> Consumer:
        now = self._clock()
        consumer = Consumer(new_id("con", now), tenant_id, named(name, "consumer name"), now)
        async with self._write() as conn:
            await self._one(conn, f"tenant {tenant_id!r}", TENANT_EXISTS, tenant_id)
            row = await conn.fetchrow(
                "INSERT INTO consumers (id, tenant_id, name, disabled, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                consumer.id,
                tenant_id,
                consumer.name,
                False,
                now,
            )
        if row is None:
            raise ConflictError(f"tenant {tenant_id!r} already has a consumer named {name!r}")
        return consumer

    async def get_consumer(self, consumer_id: str) -> Consumer:
        sql = "SELECT * FROM consumers WHERE id = ?"
        return consumer_of(await self._get(f"consumer {consumer_id!r}", sql, consumer_id))

    async def list_consumers(
        self, tenant_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[Consumer]:
        return await self._page(CONSUMERS, eq("tenant_id", tenant_id), page_size, page_token)

    async def update_consumer(
        self, consumer_id: str, *, name: str | None = None, disabled: bool | None = None
    ) -> Consumer:
        row = await self._update("consumers", "consumer", consumer_id, name=name, disabled=disabled)
        return consumer_of(row)

    async def _update(
        self, table: str, what: str, row_id: str, *, name: str | None, disabled: bool | None
    ) -> Row:
        changes: list[tuple[str, object]] = []
        if name is not None:
            changes.append(("name = ?", named(name, f"{what} name")))
        if disabled is not None:
            changes.append(("disabled = ?", disabled))
        sets = ", ".join(column for column, _ in changes) or "id = id"
        sql = f"UPDATE {table} SET {sets} WHERE id = ? RETURNING *"
        try:
            async with self._write() as conn:
                values = [value for _, value in changes]
                return await self._one(conn, f"{what} {row_id!r}", sql, *values, row_id)
        except ConflictError:  # the only unique column an update can touch is the name
            raise ConflictError(f"a {what} named {name!r} already exists") from None

    async def create_admin(self, name: str, tenant_id: str | None) -> Admin:
        """A tenant admin when `tenant_id` is set; a global admin when it is None."""
        now = self._clock()
        admin = Admin(new_id("adm", now), tenant_id, named(name, "admin name"), now)
        async with self._write() as conn:
            if tenant_id is not None:
                await self._one(conn, f"tenant {tenant_id!r}", TENANT_EXISTS, tenant_id)
            await conn.execute(
                "INSERT INTO admins (id, tenant_id, name, created_at) VALUES (?, ?, ?, ?)",
                admin.id,
                tenant_id,
                admin.name,
                now,
            )
        return admin

    async def get_admin(self, admin_id: str) -> Admin:
        sql = "SELECT * FROM admins WHERE id = ?"
        return admin_of(await self._get(f"admin {admin_id!r}", sql, admin_id))

    async def count_admins(self) -> int:
        row = await self._get("admin count", "SELECT COUNT(*) AS n FROM admins")
        return int(row["n"])
