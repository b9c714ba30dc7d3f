"""What authentication and the access check cost a call once their caches are warm
(issue 4's budget: at most 30 µs): a consumer's API key, a JWT, and the
subscription check, run in-process against a real SQLite store."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jwt as pyjwt
import uvloop

from unigate.gateway.identity.access import AccessPolicy
from unigate.gateway.identity.jwt import JwtAuthenticator
from unigate.gateway.identity.keys import KeyAuthenticator, generate_key
from unigate.gateway.identity.settings import JwtSettings
from unigate.gateway.interceptors.auth import Authenticator, store_key_lookup
from unigate.gateway.store.factory import open_store

SECRET = "bench-secret-bench-secret-bench-secret"


class Context:
    """Just what the authenticator reads from a grpc.aio ServicerContext."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


async def main(calls: int = 50_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(f"sqlite:///{Path(folder) / 'bench.db'}")
        tenant = await store.create_tenant("bench")
        consumer = await store.create_consumer(tenant.id, "bench")
        await store.upsert_service(tenant.id, "mock", requires_approval=False)
        await store.request_subscription(consumer.id, "mock")
        key = generate_key()
        await store.create_key(
            key_id=key.key_id,
            secret_hash=key.secret_hash,
            name="bench",
            tenant_id=tenant.id,
            consumer_id=consumer.id,
        )
        settings = JwtSettings(enabled=True, algorithms=["HS256"], secret=SECRET)
        jwts = JwtAuthenticator(settings)
        authenticator = Authenticator(KeyAuthenticator(store_key_lookup(store)), jwts)
        policy = AccessPolicy(store)
        claims = {"sub": consumer.id, "tenant": tenant.id, "exp": int(time.time()) + 3600}
        token = pyjwt.encode(claims, SECRET, algorithm="HS256")

        print(f"{calls} checks each, warm caches, one process (uvloop)")
        for name, credential in (("API key", key.key), ("JWT (HS256)", token)):
            context = Context(credential)
            principal = await authenticator.authenticate(context)  # type: ignore[arg-type]
            await policy.check(principal, "mock")
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(calls):
                    caller = await authenticator.authenticate(context)  # type: ignore[arg-type]
                    await policy.check(caller, "mock")
                best = min(best, (time.perf_counter() - started) / calls * 1e6)
            print(f"{name:<12} authenticate + access check: {best:.2f} µs per call (best of 5)")
        await authenticator.close()
        await store.close()


if __name__ == "__main__":
    uvloop.run(main())
