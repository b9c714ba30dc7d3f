"""After calls of mixed outcomes through the real server (auth, access and quotas on),
ListCallLogs and GetUsageStats answer exactly what happened, on SQLite and on
PostgreSQL, and a tenant admin sees only their tenant."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import RunningGateway, StartGateway
from tests.store.conftest import RUN_PREFIX, drop_schemas, postgres_dsn, run_sync
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.store.base import Store
from unigate.v1 import admin_pb2, admin_pb2_grpc
from unigate.v1 import inference_pb2 as pb

__all__ = ["postgres_dsn"]  # the fixture, shared with the store suite

PRICE_IN, PRICE_OUT = 1.0, 2.0  # per million tokens


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/unigate.db"
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema = f"{RUN_PREFIX}_calllog_{secrets.token_hex(4)}"
    yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    run_sync(drop_schemas(dsn, schema))


def chat(text: str, model: str = "mock") -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


async def key_for(store: Store, name: str, tenant: str | None, **owner: str) -> str:
    new = generate_key()
    await store.create_key(
        key_id=new.key_id, secret_hash=new.secret_hash, name=name, tenant_id=tenant, **owner
    )
    return new.key


@dataclass
class Expected:
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, usage: pb.Usage | None) -> None:
        self.calls += 1
        if usage is None:
            self.errors += 1
            return
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens

    @property
    def cost(self) -> float:
        return (self.input_tokens * PRICE_IN + self.output_tokens * PRICE_OUT) / 1e6


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def attempt(expected: Expected, call: Any) -> None:
    try:
        answer = await call
    except grpc.aio.AioRpcError:
        expected.add(None)
        return
    expected.add(answer.usage)


async def test_mixed_calls_are_listed_and_summarised_exactly(
    start_gateway: StartGateway, store_url: str
) -> None:
    config = {
        "logging": {"access_log": False},
        "store": {"url": store_url},
        "auth": {"api_keys": {"cache_ttl": "0s"}, "access_cache_ttl": "0s"},
        "call_log": {"flush_interval": "20ms"},
        "quotas": {"prices": {"mock": {"input": PRICE_IN, "output": PRICE_OUT}}},
        "providers": {"local-mock": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "local-mock", "model": "echo"}]}},
    }
    running: RunningGateway = await start_gateway(config)
    store = running.gateway.security.store
    assert store is not None
    keys: dict[str, str] = {}
    tenants: dict[str, str] = {}
    for name in ("acme", "globex"):
        tenant = (await store.create_tenant(name)).id
        consumer = await store.create_consumer(tenant, "app")
        await store.upsert_service(tenant, "mock", requires_approval=False)
        await store.request_subscription(consumer.id, "mock")
        keys[name] = await key_for(store, "app", tenant, consumer_id=consumer.id)
        tenants[name] = tenant
    await store.set_quota_policy(tenants["globex"], None, {"requests_per_minute": 2})
    root = await store.create_admin("root", None)
    root_key = await key_for(store, "root", None, admin_id=root.id)
    acme_ops = await store.create_admin("acme-ops", tenants["acme"])
    acme_admin_key = await key_for(store, "ops", tenants["acme"], admin_id=acme_ops.id)

    stub = running.stub
    acme, globex, nobody = Expected(), Expected(), Expected()
    for text in ("one", "one two", "one two three"):
        await attempt(acme, stub.Chat(chat(text), metadata=auth(keys["acme"])))
    for text in ("a b", "c d e"):
        chunks = [c async for c in stub.StreamChat(chat(text), metadata=auth(keys["acme"]))]
        acme.add(chunks[-1].usage)
    embed = pb.EmbedRequest(model="mock", inputs=["x y z", "w"])
    await attempt(acme, stub.Embed(embed, metadata=auth(keys["acme"])))
    await attempt(acme, stub.Chat(chat("hi", model="nope"), metadata=auth(keys["acme"])))
    for text in ("g1", "g2 g2", "g3"):  # the third is over globex's 2 a minute
        await attempt(globex, stub.Chat(chat(text), metadata=auth(keys["globex"])))
    await attempt(nobody, stub.Chat(chat("anyone?"), metadata=auth("ug_" + "x" * 40)))
    assert (acme.calls, acme.errors, globex.errors, nobody.errors) == (7, 1, 1, 1)

    admin = admin_pb2_grpc.AdminServiceStub(running.channel)
    as_root = auth(root_key)

    async def listed(**fields: Any) -> list[admin_pb2.CallLog]:
        answer = await admin.ListCallLogs(
            admin_pb2.ListCallLogsRequest(page_size=100, **fields), metadata=as_root
        )
        return list(answer.call_logs)

    writer = running.gateway.observability.call_log
    assert writer is not None
    await writer.flush()  # what the background task would do within flush_interval
    everything = await listed()
    assert len(everything) == 11
    assert [r.code for r in everything if r.code != "OK"] == [
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "NOT_FOUND",
    ]  # newest first
    assert len(await listed(tenant_id=tenants["acme"])) == 7
    assert len(await listed(errors_only=True)) == 3
    assert [r.reason for r in await listed(codes=["RESOURCE_EXHAUSTED"])] == ["RATE_LIMITED"]
    streamed = await listed(tenant_id=tenants["acme"], alias="mock")
    assert sum(r.method == "StreamChat" for r in streamed) == 2
    assert all(r.key_id for r in everything if r.tenant_id)

    now = time.time()
    since, until = Timestamp(), Timestamp()
    since.FromSeconds(int(now) - 3600)
    until.FromSeconds(int(now) + 120)
    stats = await admin.GetUsageStats(
        admin_pb2.GetUsageStatsRequest(
            start_time=since,
            end_time=until,
            bucket=admin_pb2.USAGE_BUCKET_DAY,
            group_by=admin_pb2.USAGE_GROUP_BY_TENANT,
        ),
        metadata=as_root,
    )
    totals: dict[str, list[float]] = {}
    for row in stats.rows:  # a day boundary may split a group over two rows
        acc = totals.setdefault(row.group, [0, 0, 0, 0, 0.0])
        for index, add in enumerate(
            (row.calls, row.errors, row.input_tokens, row.output_tokens, row.cost)
        ):
            acc[index] += add
    for group, want in ((tenants["acme"], acme), (tenants["globex"], globex), ("", nobody)):
        calls, errors, tokens_in, tokens_out, cost = totals[group]
        assert (calls, errors, tokens_in, tokens_out) == (
            want.calls,
            want.errors,
            want.input_tokens,
            want.output_tokens,
        ), group
        assert cost == pytest.approx(want.cost)
    for row in stats.rows:
        assert row.error_rate == pytest.approx(row.errors / row.calls)

    # A tenant admin sees their tenant only; another tenant is NOT_FOUND.
    as_acme = auth(acme_admin_key)
    mine = await admin.ListCallLogs(admin_pb2.ListCallLogsRequest(page_size=100), metadata=as_acme)
    assert len(mine.call_logs) == 7
    assert {r.tenant_id for r in mine.call_logs} == {tenants["acme"]}
    own_stats = await admin.GetUsageStats(
        admin_pb2.GetUsageStatsRequest(
            start_time=since, end_time=until, group_by=admin_pb2.USAGE_GROUP_BY_TENANT
        ),
        metadata=as_acme,
    )
    assert {row.group for row in own_stats.rows} == {tenants["acme"]}
    assert sum(row.calls for row in own_stats.rows) == 7
    for call in (
        admin.ListCallLogs(
            admin_pb2.ListCallLogsRequest(tenant_id=tenants["globex"]), metadata=as_acme
        ),
        admin.GetUsageStats(
            admin_pb2.GetUsageStatsRequest(tenant_id=tenants["globex"]), metadata=as_acme
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
