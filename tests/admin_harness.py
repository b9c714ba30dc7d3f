"""A real grpc.aio server with the AdminService over a real SQLite store, for the
admin service and CLI tests.

Who calls is decided by a test-only interceptor (the gateway's own auth
interceptor is tested elsewhere): an `x-test-principal` header names a Principal
directly (`admin`, `tenant_admin:<tenant>`, `consumer:<tenant>:<consumer>`), and
an `authorization: Bearer ug_...` key is checked against the store as the real
gateway would, so the CLI can use keys it created or bootstrapped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from tests.helpers import error_info
from unigate.gateway import callstate
from unigate.gateway.identity.keys import KeyAuthenticator, generate_key
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.interceptors.auth import store_key_lookup
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.interceptors.errors import ErrorInterceptor
from unigate.gateway.services.admin import AdminService, QuotaView
from unigate.gateway.store.models import Role
from unigate.gateway.store.sqlite import SqliteStore
from unigate.v1 import admin_pb2_grpc

PRINCIPAL_HEADER = "x-test-principal"
GLOBAL_ADMIN = "admin"


def tenant_admin(tenant_id: str) -> str:
    return f"tenant_admin:{tenant_id}"


def consumer(tenant_id: str, consumer_id: str) -> str:
    return f"consumer:{tenant_id}:{consumer_id}"


def principal_of(spec: str) -> Principal:
    kind, _, rest = spec.partition(":")
    if kind == "admin":
        return Principal(
            Via.API_KEY, "adm-test", None, admin_id="adm_test", roles=frozenset({Role.ADMIN})
        )
    if kind == "tenant_admin":
        return Principal(
            Via.API_KEY,
            f"tadm-{rest}",
            rest,
            admin_id=f"adm_of_{rest}",
            roles=frozenset({Role.TENANT_ADMIN}),
        )
    if kind == "consumer":
        tenant_id, _, consumer_id = rest.partition(":")
        return Principal(
            Via.API_KEY,
            f"key-{consumer_id}",
            tenant_id,
            consumer_id=consumer_id,
            roles=frozenset({Role.CONSUMER}),
        )
    raise AssertionError(f"unknown test principal {spec!r}")


class TestPrincipalInterceptor(HandlerInterceptor):
    """Sets callstate.principal for the call, as the real auth interceptor does."""

    __test__ = False  # not a pytest class

    def __init__(self, keys: KeyAuthenticator) -> None:
        super().__init__()
        self._keys = keys

    async def _principal(self, context: Context) -> Principal | None:
        metadata = dict(context.invocation_metadata() or ())
        spec = metadata.get(PRINCIPAL_HEADER)
        if spec:
            return principal_of(str(spec))
        bearer = str(metadata.get("authorization", ""))
        if bearer.startswith("Bearer "):
            return await self._keys.authenticate(bearer.removeprefix("Bearer "))
        return None

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def unary(request: Any, context: Context) -> Any:
            token = callstate.principal.set(await self._principal(context))
            try:
                return await behavior(request, context)
            finally:
                callstate.principal.reset(token)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        return behavior


@dataclass
class AdminServer:
    store: SqliteStore
    port: int
    channel: grpc.aio.Channel
    stub: admin_pb2_grpc.AdminServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def as_(spec: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that makes the call as `spec`."""
    return ((PRINCIPAL_HEADER, spec),)


async def start_admin_server(
    path: str = ":memory:", quotas: QuotaView | None = None, **service: Any
) -> tuple[grpc.aio.Server, AdminServer]:
    """The AdminService on a free port; `service` goes to its constructor (router, clock)."""
    store = SqliteStore(path)
    await store.open()
    keys = KeyAuthenticator(store_key_lookup(store), ttl=0.0)
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), TestPrincipalInterceptor(keys)])
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminService(store, quotas=quotas, **service), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, AdminServer(store, port, channel, admin_pb2_grpc.AdminServiceStub(channel))


@pytest.fixture
async def admin_server(tmp_path: Any) -> AsyncIterator[AdminServer]:
    server, handle = await start_admin_server(str(tmp_path / "unigate.db"))
    yield handle
    await handle.channel.close()
    await server.stop(0)
    await handle.store.close()


@dataclass
class World:
    """Two tenants with a bit of everything; A's admin must never see B's."""

    server: AdminServer
    a: str
    b: str
    a1: str
    a2: str
    b1: str
    a_admin: str
    b_admin: str
    global_admin: str
    a1_key: str
    b1_key: str
    b_admin_key: str
    global_key: str
    a1_sub: str
    b1_sub: str

    async def call(self, rpc: str, request: Any, who: str | None = GLOBAL_ADMIN) -> Any:
        metadata = as_(who) if who is not None else ()
        return await getattr(self.server.stub, rpc)(request, metadata=metadata)


async def _key(server: AdminServer, **owner: Any) -> str:
    new = generate_key()
    await server.store.create_key(key_id=new.key_id, secret_hash=new.secret_hash, name="k", **owner)
    return new.key_id


@pytest.fixture
async def world(admin_server: AdminServer) -> World:
    store = admin_server.store
    a, b = (await store.create_tenant("acme")).id, (await store.create_tenant("bobs")).id
    a1 = (await store.create_consumer(a, "a-app-1")).id
    a2 = (await store.create_consumer(a, "a-app-2")).id
    b1 = (await store.create_consumer(b, "b-app-1")).id
    for tenant in (a, b):
        await store.upsert_service(tenant, "gpt", requires_approval=True)
    await store.upsert_service(a, "free", requires_approval=False)
    a_admin = (await store.create_admin("a-ops", a)).id
    b_admin = (await store.create_admin("b-ops", b)).id
    global_admin = (await store.create_admin("root", None)).id
    return World(
        server=admin_server,
        a=a,
        b=b,
        a1=a1,
        a2=a2,
        b1=b1,
        a_admin=a_admin,
        b_admin=b_admin,
        global_admin=global_admin,
        a1_key=await _key(admin_server, tenant_id=a, consumer_id=a1),
        b1_key=await _key(admin_server, tenant_id=b, consumer_id=b1),
        b_admin_key=await _key(admin_server, tenant_id=b, admin_id=b_admin),
        global_key=await _key(admin_server, tenant_id=None, admin_id=global_admin),
        a1_sub=(await store.request_subscription(a1, "gpt")).id,
        b1_sub=(await store.request_subscription(b1, "gpt")).id,
    )


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def expect(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    error = await failure(call)
    assert (error.code(), error_info(error).reason) == (code, reason), error.details()
    return error


NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ROLE_REQUIRED")
INVALID = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
