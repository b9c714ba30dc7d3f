"""API keys: `ug_<key id>_<secret>`, stored only as a hash, checked from memory.

A key id is 12 base62 characters (the public part, the store's lookup key); the secret
is 43 base62 characters (256 bits from `secrets`). Base62 keeps a key one "word" that
a double click selects and no delimiter can appear inside either part.

How long a revoked key may still pass: `KeyAuthenticator` keeps what the store said
about a key id (including "no such key") for `ttl` seconds, counted from when it began
to ask. Any read that could still see a key unrevoked began before the revocation was
committed, so a revoked key stops passing in every gateway process within `ttl` (default
5 s) of the commit. That TTL is the whole bound: no pub/sub or cross-process
invalidation is needed, and one store read per hot key per process per TTL is its cost.
`forget(key_id)` drops an entry in the process that made the change (a lookup already in
flight may still store the old verdict; the TTL bound holds regardless).

Expiry and scheduled revocation (`revoked_at` in the future is a rotation's grace
window: old and new key both pass until then) are compared with the wall clock on
every call, so they take effect to the second, cached or not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Protocol

from unigate.gateway.identity.cache import SingleFlight, TtlLru
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.identity.settings import ApiKeySettings
from unigate.gateway.store.models import ApiKey, Role

KEY_PREFIX = "ug_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 43  # 43 base62 characters carry 256.03 bits
_BASE62 = string.digits + string.ascii_letters
_KEY_PATTERN = re.compile(
    rf"{KEY_PREFIX}([0-9A-Za-z]{{{KEY_ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})"
)
_KEY_SHAPE = f"{KEY_PREFIX}<{KEY_ID_LENGTH} letters or digits>_<{SECRET_LENGTH} letters or digits>"


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def hash_secret(secret: str) -> str:
    # One SHA-256 is right for a 256-bit random secret: nobody can guess it, so the slow
    # salted hashes that protect low-entropy passwords would only slow every call down.
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Constant time in the compared hashes: the timing says nothing about the stored one."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


class NewKey(NamedTuple):
    key_id: str
    key: str  # shown to its owner once, never stored

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.key[-SECRET_LENGTH:])


def generate_key() -> NewKey:
    """A fresh `(key_id, key)`; store `key_id` and `.secret_hash`, show `key` once."""
    key_id = _random_base62(KEY_ID_LENGTH)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}_{_random_base62(SECRET_LENGTH)}")


def parse_key(text: str) -> tuple[str, str] | None:
    """`(key_id, secret)`, or None when `text` is not shaped like one of our keys."""
    match = _KEY_PATTERN.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


def looks_like_key(text: str) -> bool:
    """Whether a bearer credential is meant as an API key (rather than a JWT)."""
    return text.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the auth layer needs to know about a key id: the key and its owner's state.
    For an admin's key, `key.tenant_id` is the admin's tenant (None: a global admin)."""

    key: ApiKey
    consumer_disabled: bool = False
    tenant_disabled: bool = False


class KeyLookup(Protocol):
    """The one store read the key check makes. None: no key has this id."""

    async def __call__(self, key_id: str, /) -> KeyRecord | None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord | None
    principal: Principal | None  # None when the record names no usable owner


def _principal_for(key: ApiKey) -> Principal | None:
    if key.consumer_id is not None and key.admin_id is None:
        if key.tenant_id is None:
            return None
        roles = frozenset({Role.CONSUMER})
    elif key.admin_id is not None and key.consumer_id is None:
        roles = frozenset({Role.ADMIN if key.tenant_id is None else Role.TENANT_ADMIN})
    else:
        return None
    return Principal(
        via=Via.API_KEY,
        subject=key.id,
        tenant_id=key.tenant_id,
        consumer_id=key.consumer_id,
        admin_id=key.admin_id,
        roles=roles,
    )


class KeyAuthenticator:
    """Presented key → Principal, or AuthError. A cached key costs a dict lookup, one
    SHA-256 and one constant-time compare; concurrent misses for one key id share one
    lookup."""

    def __init__(
        self,
        lookup: KeyLookup,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        cache_size: int = 100_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: TtlLru[str, _Entry] = TtlLru(cache_size)
        # Unknown ids live apart, so a flood of made-up keys cannot push real ones out.
        self._unknown: TtlLru[str, _Entry] = TtlLru(max(cache_size // 10, 1))
        self._flights: SingleFlight[str, _Entry] = SingleFlight()

    @classmethod
    def from_settings(cls, lookup: KeyLookup, settings: ApiKeySettings) -> KeyAuthenticator:
        return cls(lookup, settings.cache_ttl, cache_size=settings.cache_size)

    async def authenticate(self, presented: str) -> Principal:
        if not presented:
            raise AuthError(AuthReason.MISSING_CREDENTIALS, "no API key was presented")
        parsed = parse_key(presented)
        if parsed is None:
            raise AuthError(AuthReason.MALFORMED_CREDENTIALS, f"an API key looks like {_KEY_SHAPE}")
        key_id, secret = parsed
        now = self._clock()
        entry = self._cache.get(key_id, now) or self._unknown.get(key_id, now)
        if entry is None:
            entry = await self._flights.run(key_id, partial(self._load, key_id))
        return self._check(entry, key_id, secret)

    def forget(self, key_id: str) -> None:
        """Drop what this process remembers about a key (e.g. right after revoking it)."""
        self._cache.discard(key_id)
        self._unknown.discard(key_id)

    async def _load(self, key_id: str) -> _Entry:
        asked_at = self._clock()  # the TTL counts from before the read: the bound holds
        record = await self._lookup(key_id)
        entry = _Entry(record, _principal_for(record.key) if record else None)
        (self._cache if record else self._unknown).put(key_id, entry, asked_at + self._ttl)
        return entry

    def _check(self, entry: _Entry, key_id: str, secret: str) -> Principal:
        record = entry.record
        # The secret first: without it, a caller learns nothing about a key id's state.
        if record is None or not verify_secret(secret, record.key.secret_hash):
            raise AuthError(AuthReason.INVALID_API_KEY, "the API key is not valid")
        key = record.key
        now = self._wall_clock()
        if key.revoked_at is not None and key.revoked_at <= now:
            raise AuthError(AuthReason.REVOKED_API_KEY, f"API key {key_id} has been revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthError(AuthReason.EXPIRED_API_KEY, f"API key {key_id} has expired")
        if record.tenant_disabled:
            raise AuthError(
                AuthReason.DISABLED_TENANT, f"the tenant of API key {key_id} is disabled"
            )
        if record.consumer_disabled:
            raise AuthError(
                AuthReason.DISABLED_CONSUMER, f"the consumer of API key {key_id} is disabled"
            )
        if entry.principal is None:
            raise AuthError(AuthReason.INVALID_API_KEY, f"API key {key_id} has no owner")
        return entry.principal
