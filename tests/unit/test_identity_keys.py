"""API keys: format, hashing, and the cached check with its revocation bound."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import grpc
import pytest

from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.keys import (
    KeyAuthenticator,
    KeyRecord,
    generate_key,
    hash_secret,
    parse_key,
    verify_secret,
)
from unigate.gateway.identity.principal import Via
from unigate.gateway.store.models import ApiKey, Role

WALL_START = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeLookup:
    """The store as the key check sees it: a dict, a call count and an optional gate."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def __call__(self, key_id: str, /) -> KeyRecord | None:
        self.calls.append(key_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("store down")
        return self.records.get(key_id)

    def add(self, *, consumer: bool = True, tenant_id: str | None = "ten_a", **facts: Any) -> str:
        key_id, key = generate_key()
        self.put(key_id, key, consumer=consumer, tenant_id=tenant_id, **facts)
        return key

    def put(
        self,
        key_id: str,
        key: str,
        *,
        consumer: bool = True,
        tenant_id: str | None = "ten_a",
        expires_at: float | None = None,
        revoked_at: float | None = None,
        consumer_disabled: bool = False,
        tenant_disabled: bool = False,
    ) -> None:
        api_key = ApiKey(
            id=key_id,
            tenant_id=tenant_id,
            consumer_id="con_a" if consumer else None,
            admin_id=None if consumer else "adm_a",
            name="test",
            secret_hash=hash_secret(key.split("_", 2)[2]),
            created_at=WALL_START - 100,
            expires_at=expires_at,
            revoked_at=revoked_at,
        )
        self.records[key_id] = KeyRecord(api_key, consumer_disabled, tenant_disabled)


@pytest.fixture
def lookup() -> FakeLookup:
    return FakeLookup()


@pytest.fixture
def mono() -> Clock:
    return Clock(100.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(WALL_START)


@pytest.fixture
def auth(lookup: FakeLookup, mono: Clock, wall: Clock) -> KeyAuthenticator:
    return KeyAuthenticator(lookup, ttl=5.0, clock=mono, wall_clock=wall)


async def reason_of(auth: KeyAuthenticator, key: str) -> str:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(key)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    return caught.value.reason


def test_generated_keys_have_the_documented_shape() -> None:
    key_id, key = generate_key()
    assert re.fullmatch(r"ug_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}", key)
    assert key.startswith(f"ug_{key_id}_")
    assert parse_key(key) == (key_id, key[-43:])
    assert generate_key().key != key
    assert len({generate_key().key_id for _ in range(200)}) == 200


def test_secret_hash_is_sha256_of_the_secret_and_verifies_in_constant_time() -> None:
    new = generate_key()
    secret = new.key[-43:]
    assert new.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert verify_secret(secret, new.secret_hash)
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), new.secret_hash)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ug_",
        "ug_abc_def",
        "sk-proj-abcdefghijklmnopqrstuvwxyz",
        "UG_" + "a" * 12 + "_" + "b" * 43,
        "ug_" + "a" * 11 + "_" + "b" * 43,
        "ug_" + "a" * 12 + "_" + "b" * 42,
        "ug_" + "a" * 12 + "_" + "b" * 44,
        "ug_" + "a" * 11 + "-_" + "b" * 43,
        "ug_" + "a" * 12 + "_" + "b" * 42 + "/",
        " ug_" + "a" * 12 + "_" + "b" * 43,
        "ug_" + "a" * 12 + "_" + "b" * 43 + "\n",
    ],
)
def test_parse_key_refuses_anything_not_shaped_like_a_key(text: str) -> None:
    assert parse_key(text) is None


async def test_a_consumer_key_authenticates_as_its_consumer(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key = lookup.add()
    principal = await auth.authenticate(key)
    assert principal.via == Via.API_KEY
    assert (principal.tenant_id, principal.consumer_id, principal.admin_id) == (
        "ten_a",
        "con_a",
        None,
    )
    assert principal.roles == {Role.CONSUMER}
    assert principal.subject == key[3:15]


async def test_admin_keys_are_global_or_tenant_admins(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    global_admin = await auth.authenticate(lookup.add(consumer=False, tenant_id=None))
    assert global_admin.roles == {Role.ADMIN} and global_admin.tenant_id is None
    assert global_admin.admin_id == "adm_a" and global_admin.is_admin()
    tenant_admin = await auth.authenticate(lookup.add(consumer=False, tenant_id="ten_b"))
    assert tenant_admin.roles == {Role.TENANT_ADMIN} and tenant_admin.tenant_id == "ten_b"
    assert not tenant_admin.is_admin() and tenant_admin.can_administer("ten_b")


async def test_missing_and_malformed_keys_never_reach_the_store(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    assert await reason_of(auth, "") == AuthReason.MISSING_CREDENTIALS
    assert await reason_of(auth, "ug_not-a-key") == AuthReason.MALFORMED_CREDENTIALS
    assert lookup.calls == []


async def test_wrong_secret_and_unknown_id_read_the_same(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key = lookup.add()
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    assert await reason_of(auth, wrong) == AuthReason.INVALID_API_KEY
    assert await reason_of(auth, generate_key().key) == AuthReason.INVALID_API_KEY


async def test_expired_key(auth: KeyAuthenticator, lookup: FakeLookup) -> None:
    key = lookup.add(expires_at=WALL_START - 1)
    assert await reason_of(auth, key) == AuthReason.EXPIRED_API_KEY
    # the secret is checked first: a wrong secret says nothing about the key's state
    assert await reason_of(auth, key[:-1] + ("x" if key[-1] != "x" else "y")) == "INVALID_API_KEY"


async def test_key_revoked_now_fails(auth: KeyAuthenticator, lookup: FakeLookup) -> None:
    assert await reason_of(auth, lookup.add(revoked_at=WALL_START)) == AuthReason.REVOKED_API_KEY


async def test_scheduled_revocation_passes_until_then_even_from_cache(
    auth: KeyAuthenticator, lookup: FakeLookup, wall: Clock
) -> None:
    key = lookup.add(revoked_at=WALL_START + 60)
    assert (await auth.authenticate(key)).consumer_id == "con_a"
    wall.now = WALL_START + 59.9
    await auth.authenticate(key)
    wall.now = WALL_START + 60
    assert await reason_of(auth, key) == AuthReason.REVOKED_API_KEY
    assert len(lookup.calls) == 1  # decided by the wall clock, not by a refresh


async def test_expiry_is_checked_on_every_call_from_cache(
    auth: KeyAuthenticator, lookup: FakeLookup, wall: Clock
) -> None:
    key = lookup.add(expires_at=WALL_START + 1)
    await auth.authenticate(key)
    wall.now = WALL_START + 1
    assert await reason_of(auth, key) == AuthReason.EXPIRED_API_KEY
    assert len(lookup.calls) == 1


async def test_disabled_owner(auth: KeyAuthenticator, lookup: FakeLookup) -> None:
    assert await reason_of(auth, lookup.add(consumer_disabled=True)) == "DISABLED_CONSUMER"
    assert await reason_of(auth, lookup.add(tenant_disabled=True)) == "DISABLED_TENANT"


async def test_a_key_record_without_an_owner_is_invalid(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key_id, key = generate_key()
    lookup.put(key_id, key, consumer=True, tenant_id=None)  # a consumer key with no tenant
    assert await reason_of(auth, key) == AuthReason.INVALID_API_KEY


async def test_a_cache_hit_does_not_call_the_lookup(
    auth: KeyAuthenticator, lookup: FakeLookup, mono: Clock
) -> None:
    key = lookup.add()
    first = await auth.authenticate(key)
    mono.now += 4.9
    assert await auth.authenticate(key) is first
    assert len(lookup.calls) == 1


async def test_a_revoked_key_stops_passing_once_the_ttl_passes(
    auth: KeyAuthenticator, lookup: FakeLookup, mono: Clock
) -> None:
    key_id, key = generate_key()
    lookup.put(key_id, key)
    await auth.authenticate(key)
    lookup.put(key_id, key, revoked_at=WALL_START - 1)  # revoked in the store, elsewhere
    mono.now += 4.99
    await auth.authenticate(key)  # still inside the documented bound
    mono.now += 0.01
    assert await reason_of(auth, key) == AuthReason.REVOKED_API_KEY
    assert len(lookup.calls) == 2


async def test_the_ttl_counts_from_before_a_slow_lookup(
    lookup: FakeLookup, mono: Clock, wall: Clock
) -> None:
    class SlowLookup(FakeLookup):
        async def __call__(self, key_id: str, /) -> KeyRecord | None:
            mono.now += 2.0  # the store took 2 s to answer
            return await super().__call__(key_id)

    slow = SlowLookup()
    auth = KeyAuthenticator(slow, ttl=5.0, clock=mono, wall_clock=wall)
    key = slow.add()
    asked_at = mono.now
    await auth.authenticate(key)
    mono.now = asked_at + 5.0
    await auth.authenticate(key)
    assert len(slow.calls) == 2


async def test_unknown_key_ids_are_cached_too(
    auth: KeyAuthenticator, lookup: FakeLookup, mono: Clock
) -> None:
    key_id, key = generate_key()
    assert await reason_of(auth, key) == AuthReason.INVALID_API_KEY
    lookup.put(key_id, key)  # created just after the miss
    assert await reason_of(auth, key) == AuthReason.INVALID_API_KEY
    assert len(lookup.calls) == 1
    mono.now += 5.0
    assert (await auth.authenticate(key)).consumer_id == "con_a"


async def test_concurrent_misses_share_one_lookup(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key = lookup.add()
    lookup.gate = asyncio.Event()
    calls = [asyncio.create_task(auth.authenticate(key)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert len(lookup.calls) == 1
    lookup.gate.set()
    principals = await asyncio.gather(*calls)
    assert {p.consumer_id for p in principals} == {"con_a"}
    assert len(lookup.calls) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key = lookup.add()
    lookup.gate = asyncio.Event()
    first = asyncio.create_task(auth.authenticate(key))
    second = asyncio.create_task(auth.authenticate(key))
    await asyncio.sleep(0.01)
    first.cancel()
    lookup.gate.set()
    assert (await second).consumer_id == "con_a"
    assert first.cancelled()
    assert len(lookup.calls) == 1


async def test_a_failed_lookup_reaches_the_caller_and_is_not_cached(
    auth: KeyAuthenticator, lookup: FakeLookup
) -> None:
    key = lookup.add()
    lookup.fail_next = True
    with pytest.raises(RuntimeError):
        await auth.authenticate(key)
    assert (await auth.authenticate(key)).consumer_id == "con_a"
    assert len(lookup.calls) == 2


async def test_the_cache_is_bounded(lookup: FakeLookup, mono: Clock, wall: Clock) -> None:
    auth = KeyAuthenticator(lookup, clock=mono, wall_clock=wall, cache_size=2)
    first, second, third = lookup.add(), lookup.add(), lookup.add()
    for key in (first, second, first, third):  # `second` is now the least recently used
        await auth.authenticate(key)
    assert len(lookup.calls) == 3
    await auth.authenticate(first)
    assert len(lookup.calls) == 3
    await auth.authenticate(second)
    assert len(lookup.calls) == 4


async def test_forget_drops_the_entry_at_once(auth: KeyAuthenticator, lookup: FakeLookup) -> None:
    key_id, key = generate_key()
    lookup.put(key_id, key)
    await auth.authenticate(key)
    lookup.put(key_id, key, revoked_at=WALL_START)
    auth.forget(key_id)
    assert await reason_of(auth, key) == AuthReason.REVOKED_API_KEY


async def test_made_up_keys_cannot_evict_real_ones() -> None:
    from unigate.gateway.identity.keys import KeyAuthenticator, KeyRecord, generate_key
    from unigate.gateway.store.models import ApiKey

    real = generate_key()
    record = KeyRecord(
        ApiKey(
            id=real.key_id,
            tenant_id="ten_1",
            consumer_id="con_1",
            admin_id=None,
            name="k",
            secret_hash=real.secret_hash,
            created_at=0.0,
        )
    )
    lookups: list[str] = []

    async def lookup(key_id: str, /) -> KeyRecord | None:
        lookups.append(key_id)
        return record if key_id == real.key_id else None

    auth = KeyAuthenticator(lookup, ttl=60, cache_size=20)
    await auth.authenticate(real.key)
    for _ in range(50):
        with pytest.raises(AuthError):
            await auth.authenticate(generate_key().key)
    lookups.clear()
    await auth.authenticate(real.key)
    assert lookups == [], "the real key was evicted by made-up ones"
