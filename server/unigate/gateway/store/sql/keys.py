"""API keys: the store keeps a key's public id and its secret's hash, never the secret."""

from __future__ import annotations

from unigate.gateway.store.base import ConflictError
from unigate.gateway.store.common import Row, key_of
from unigate.gateway.store.models import Admin, ApiKey, Consumer, KeyOwner, Page, Tenant
from unigate.gateway.store.sql.base import Listing, SqlBase, eq, named

KEYS = Listing("api_keys", "id", key_of)  # key ids are the caller's: no prefix to check

_WITH_OWNER = """
SELECT k.*,
       t.name AS t_name, t.disabled AS t_disabled, t.created_at AS t_created_at,
       c.name AS c_name, c.disabled AS c_disabled, c.created_at AS c_created_at,
       a.tenant_id AS a_tenant_id, a.name AS a_name, a.created_at AS a_created_at
FROM api_keys k
LEFT JOIN tenants t ON t.id = k.tenant_id
LEFT JOIN consumers c ON c.id = k.consumer_id
LEFT JOIN admins a ON a.id = k.admin_id
WHERE k.id = ?"""


def _owner_of(row: Row) -> KeyOwner:
    key = key_of(row)
    tenant = consumer = admin = None
    if key.tenant_id is not None:
        tenant = Tenant(
            key.tenant_id, row["t_name"], float(row["t_created_at"]), bool(row["t_disabled"])
        )
        if key.consumer_id is not None:
            consumer = Consumer(
                key.consumer_id,
                key.tenant_id,
                row["c_name"],
                float(row["c_created_at"]),
                bool(row["c_disabled"]),
            )
    if key.admin_id is not None:
        admin = Admin(key.admin_id, row["a_tenant_id"], row["a_name"], float(row["a_created_at"]))
    return KeyOwner(key, tenant, consumer, admin)


class KeysSql(SqlBase):
    async def create_key(
        self,
        *,
        key_id: str,
        secret_hash: str,
        name: str,
        tenant_id: str | None,
        consumer_id: str | None = None,
        admin_id: str | None = None,
        expires_at: float | None = None,
    ) -> ApiKey:
        """A key belongs to one consumer or one admin, and to that owner's tenant."""
        if (consumer_id is None) == (admin_id is None):
            raise ValueError("a key belongs to exactly one consumer or one admin")
        now = self._clock()
        key = ApiKey(
            id=named(key_id, "key id"),
            tenant_id=tenant_id,
            consumer_id=consumer_id,
            admin_id=admin_id,
            name=name,
            secret_hash=named(secret_hash, "secret hash"),
            created_at=now,
            expires_at=None if expires_at is None else float(expires_at),
        )
        if consumer_id is not None:
            what, sql = f"consumer {consumer_id!r}", "SELECT tenant_id FROM consumers WHERE id = ?"
        else:
            what, sql = f"admin {admin_id!r}", "SELECT tenant_id FROM admins WHERE id = ?"
        async with self._write() as conn:
            owner = await self._one(conn, what, sql, consumer_id or admin_id)
            if owner["tenant_id"] != tenant_id:
                raise ValueError(
                    f"{what} belongs to tenant {owner['tenant_id']!r}, not {tenant_id!r}"
                )
            row = await conn.fetchrow(
                "INSERT INTO api_keys (id, tenant_id, consumer_id, admin_id, name, secret_hash,"
                " created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
                " ON CONFLICT DO NOTHING RETURNING id",
                key.id,
                tenant_id,
                consumer_id,
                admin_id,
                name,
                secret_hash,
                now,
                key.expires_at,
            )
        if row is None:
            raise ConflictError(f"a key with id {key_id!r} already exists")
        return key

    async def get_key(self, key_id: str) -> ApiKey:
        sql = "SELECT * FROM api_keys WHERE id = ?"
        return key_of(await self._get(f"key {key_id!r}", sql, key_id))

    async def get_key_with_owner(self, key_id: str) -> KeyOwner:
        """The key, its tenant and its consumer or admin, in one round trip."""
        return _owner_of(await self._get(f"key {key_id!r}", _WITH_OWNER, key_id))

    async def list_keys(
        self,
        *,
        tenant_id: str | None = None,
        consumer_id: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[ApiKey]:
        filters = eq("tenant_id", tenant_id) + eq("consumer_id", consumer_id)
        return await self._page(KEYS, filters, page_size, page_token)

    async def revoke_key(self, key_id: str, *, at: float | None = None) -> ApiKey:
        """Revoke now, or schedule it (`at`). The earlier time always wins: scheduling
        never postpones a revocation already made, and revoking now cuts a grace
        window short."""
        when = self._clock() if at is None else float(at)
        sql = (
            "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > ?"
            " THEN ? ELSE revoked_at END WHERE id = ? RETURNING *"
        )
        async with self._write() as conn:
            return key_of(await self._one(conn, f"key {key_id!r}", sql, when, when, key_id))
