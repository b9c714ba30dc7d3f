"""Issuing API keys: the seam to identity/keys.py, rotation's arithmetic, and the
bootstrap of the first global admin.

The store only ever sees a key's hash; the whole key string leaves the gateway
once, in the response that created it (or on the terminal, for bootstrap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from unigate.gateway.identity.keys import NewKey, generate_key
from unigate.gateway.store.base import Store
from unigate.gateway.store.models import ApiKey

DEFAULT_ROTATION_GRACE = 24 * 3600.0
BOOTSTRAP_KEY_NAME = "bootstrap"


KeyFactory = Callable[[], NewKey]
"""Makes a key: identity.keys.generate_key, or a test's own."""


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Whom a key authenticates: a consumer, or an admin (tenant None: global)."""

    tenant_id: str | None
    consumer_id: str | None = None
    admin_id: str | None = None

    @classmethod
    def of(cls, key: ApiKey) -> KeyHolder:
        return cls(key.tenant_id, consumer_id=key.consumer_id, admin_id=key.admin_id)


class BootstrapRefused(Exception):
    """An admin exists already: bootstrap only ever creates the first one."""


async def bootstrap_admin(
    store: Store,
    name: str = "admin",
    *,
    key_factory: KeyFactory = generate_key,
) -> str:
    """Create the first global admin and its key; return the whole key string.

    Refuses (BootstrapRefused) once any admin exists, so running it twice cannot
    mint a second all-powerful credential; further keys come from CreateApiKey.
    """
    if await store.count_admins() > 0:
        raise BootstrapRefused(
            "an admin exists already; bootstrap only creates the first one."
            " Create further keys with an admin key: `unigate admin keys create --admin-id ...`"
        )
    admin = await store.create_admin(name, None)
    new = key_factory()
    await store.create_key(
        key_id=new.key_id,
        secret_hash=new.secret_hash,
        name=BOOTSTRAP_KEY_NAME,
        tenant_id=None,
        admin_id=admin.id,
    )
    return new.key


def rotated_expiry(old: ApiKey, requested: float | None, now: float) -> float | None:
    """The new key's expiry: as requested, else the old key's lifetime from now."""
    if requested is not None:
        return requested
    if old.expires_at is None:
        return None
    return now + (old.expires_at - old.created_at)


def revocation_time(old: ApiKey, grace: float, now: float) -> float:
    """When a rotated key stops working: after the grace window, never later than
    a revocation already scheduled."""
    at = now + grace
    if old.revoked_at is not None:
        at = min(at, old.revoked_at)
    return at


def is_live(key: ApiKey, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    revoked = key.revoked_at is not None and key.revoked_at <= now
    expired = key.expires_at is not None and key.expires_at <= now
    return not (revoked or expired)
