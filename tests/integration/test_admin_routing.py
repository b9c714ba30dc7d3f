"""AdminService.ListDeployments over a real grpc.aio server: each deployment's health
as the router holds it, for global admins only, and `unigate admin deployments`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from tests.admin_harness import (
    DENIED,
    GLOBAL_ADMIN,
    NOT_FOUND,
    as_,
    consumer,
    expect,
    start_admin_server,
    tenant_admin,
)
from unigate.gateway import admin_cli
from unigate.gateway.app import build_providers
from unigate.gateway.config import GatewayConfig
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.providers.transport import HttpTransport
from unigate.gateway.routing.health import Outcome
from unigate.gateway.routing.router import Router, build_router
from unigate.gateway.store.sqlite import SqliteStore
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

NOW = 1_900_000_000.0


@dataclass
class StubHealth:
    """The router's Health, as the admin service reads it."""

    in_flight: int = 0
    consecutive_failures: int = 0
    ewma_latency: float | None = None
    current: str = "healthy"
    left: float = 0.0
    rate: float = 0.0

    def state(self) -> str:
        return self.current

    def ejected_for(self) -> float:
        return self.left

    def error_rate(self) -> float:
        return self.rate


def deployment(name: str, provider: str, model: str, **health: Any) -> SimpleNamespace:
    weight, priority = health.pop("weight", 1), health.pop("priority", 0)
    return SimpleNamespace(
        name=name,
        provider=SimpleNamespace(name=provider, kind="openai"),
        model=model,
        weight=weight,
        priority=priority,
        health=StubHealth(**health),
    )


@dataclass
class StubRouter:
    routes_: list[SimpleNamespace]
    disabled_aliases: list[str] = field(default_factory=list)

    def routes(self) -> list[SimpleNamespace]:
        return self.routes_


def stub_router() -> StubRouter:
    gpt = SimpleNamespace(
        alias="gpt",
        deployments=[
            deployment("east", "openai-east", "gpt-4o", weight=3, in_flight=2, ewma_latency=0.25),
            deployment(
                "west",
                "openai-west",
                "gpt-4o",
                priority=1,
                current="ejected",
                left=12.5,
                rate=0.6,
                consecutive_failures=4,
            ),
            deployment("spare", "azure", "gpt4o", priority=2, current="half_open"),
        ],
    )
    embed = SimpleNamespace(alias="embed", deployments=[deployment("e1", "openai-east", "emb")])
    # Router.routes() is in alias order: embed before gpt.
    return StubRouter([embed, gpt], disabled_aliases=["claude"])


@dataclass
class Served:
    stub: admin_pb2_grpc.AdminServiceStub
    store: SqliteStore
    target: str

    async def list(self, alias: str = "", who: str = GLOBAL_ADMIN) -> pb.ListDeploymentsResponse:
        reply: pb.ListDeploymentsResponse = await self.stub.ListDeployments(
            pb.ListDeploymentsRequest(alias=alias), metadata=as_(who)
        )
        return reply


async def _serve(tmp_path: Path, router: Any) -> AsyncIterator[Served]:
    path = str(tmp_path / "unigate.db")
    server, handle = await start_admin_server(path, clock=lambda: NOW, router=router)
    yield Served(handle.stub, handle.store, f"127.0.0.1:{handle.port}")
    await handle.channel.close()
    await server.stop(0)
    await handle.store.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for handle in _serve(tmp_path, stub_router()):
        yield handle


async def test_lists_every_deployment_by_alias_in_config_order(served: Served) -> None:
    listed = await served.list()
    assert [(d.alias, d.deployment) for d in listed.deployments] == [
        ("embed", "e1"),
        ("gpt", "east"),
        ("gpt", "west"),
        ("gpt", "spare"),
    ]


async def test_each_status_carries_the_routers_view(served: Served) -> None:
    east, west, spare = (await served.list("gpt")).deployments

    assert (east.provider, east.model, east.weight, east.priority) == (
        "openai-east",
        "gpt-4o",
        3,
        0,
    )
    assert east.state == pb.DEPLOYMENT_STATE_HEALTHY
    assert not east.HasField("ejected_until")
    assert east.in_flight == 2
    assert east.latency_ewma.ToNanoseconds() == 250_000_000
    assert (east.error_rate, east.consecutive_failures) == (0.0, 0)

    assert west.state == pb.DEPLOYMENT_STATE_EJECTED
    assert west.ejected_until.ToNanoseconds() == round((NOW + 12.5) * 1e9)
    assert (west.error_rate, west.consecutive_failures, west.priority) == (0.6, 4, 1)
    assert not west.HasField("latency_ewma")  # no call has finished yet

    assert spare.state == pb.DEPLOYMENT_STATE_HALF_OPEN
    assert not spare.HasField("ejected_until")


async def test_an_unknown_alias_is_not_found_and_a_disabled_one_is_empty(served: Served) -> None:
    error = await expect(served.list("nope"), *NOT_FOUND)
    assert "nope" in (error.details() or "")
    assert list((await served.list("claude")).deployments) == []


@pytest.mark.parametrize("who", [tenant_admin("ten_a"), consumer("ten_a", "con_1")])
async def test_only_global_admins_may_list(served: Served, who: str) -> None:
    await expect(served.list(who=who), *DENIED)
    await expect(served.list("gpt", who=who), *DENIED)


async def test_without_a_router_the_call_is_a_failed_precondition(tmp_path: Path) -> None:
    async for handle in _serve(tmp_path, None):
        await expect(handle.list(), grpc.StatusCode.FAILED_PRECONDITION, "ROUTING_NOT_CONFIGURED")
        await expect(handle.list(who=tenant_admin("ten_a")), *DENIED)


@pytest.fixture
def real_router() -> Iterator[Router]:
    config = GatewayConfig.model_validate(
        {
            "providers": {"mock-a": {"kind": "mock"}, "mock-b": {"kind": "mock"}},
            "models": {
                "chat": {
                    "balancer": "weighted",
                    "deployments": [
                        {"provider": "mock-a", "model": "echo", "name": "a", "weight": 5},
                        {"provider": "mock-b", "model": "echo", "priority": 1},
                    ],
                }
            },
        }
    )
    yield build_router(config, build_providers(config, HttpTransport()))


async def test_a_real_routers_fresh_deployments_are_healthy(
    tmp_path: Path, real_router: Router
) -> None:
    async for handle in _serve(tmp_path, real_router):
        a, b = (await handle.list("chat")).deployments
        assert (a.deployment, a.provider, a.weight, a.priority) == ("a", "mock-a", 5, 0)
        assert (b.deployment, b.provider, b.weight, b.priority) == ("mock-b/echo", "mock-b", 1, 1)
        for status in (a, b):
            assert status.state == pb.DEPLOYMENT_STATE_HEALTHY
            assert (status.in_flight, status.consecutive_failures, status.error_rate) == (0, 0, 0)
            assert not status.HasField("ejected_until") and not status.HasField("latency_ewma")


async def test_a_real_routers_ejection_shows_until_when(tmp_path: Path) -> None:
    """Health counts on the monotonic clock; the answer turns it into wall-clock time."""
    config = GatewayConfig.model_validate(
        {
            "providers": {"mock": {"kind": "mock"}},
            "models": {
                "chat": {
                    "circuit_breaker": {"consecutive_failures": 2, "ejection": "8s"},
                    "deployments": [
                        {"provider": "mock", "model": "one", "name": "one"},
                        {"provider": "mock", "model": "two", "name": "two"},
                    ],
                }
            },
        }
    )
    router = build_router(config, build_providers(config, HttpTransport()), clock=lambda: 50.0)
    one, two = router.routes()[0].deployments
    for _ in range(2):
        one.health.begin()
        one.health.end(Outcome.FAILURE, None)
    two.health.begin()  # still in flight
    async for handle in _serve(tmp_path, router):
        listed_one, listed_two = (await handle.list("chat")).deployments
    assert listed_one.state == pb.DEPLOYMENT_STATE_EJECTED
    assert listed_one.ejected_until.ToNanoseconds() == round((NOW + 8) * 1e9)
    assert (listed_one.consecutive_failures, listed_one.error_rate) == (2, 1.0)
    assert listed_two.state == pb.DEPLOYMENT_STATE_HEALTHY
    assert listed_two.in_flight == 1


async def _admin_key(store: SqliteStore) -> str:
    admin = await store.create_admin("root", None)
    new = generate_key()
    await store.create_key(
        key_id=new.key_id, secret_hash=new.secret_hash, name="k", tenant_id=None, admin_id=admin.id
    )
    return new.key


async def test_cli_shows_a_table_and_json(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(admin_cli.KEY_ENV, await _admin_key(served.store))
    connect = ["--target", served.target, "--plaintext"]

    capsys.readouterr()
    code = await asyncio.to_thread(
        admin_cli.main, ["admin", "deployments", "--alias", "gpt", *connect]
    )
    out = capsys.readouterr().out
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["alias", "deployment", "provider"]
    assert [row.split()[1] for row in rows] == ["east", "west", "spare"]
    west = rows[1].split()
    assert "ejected" in west and "0.6" in west
    assert any(cell.endswith("Z") for cell in west)  # ejected_until, as a UTC time
    assert "half_open" in rows[2].split()

    code = await asyncio.to_thread(
        admin_cli.main, ["admin", "deployments", *connect, "--output", "json"]
    )
    listed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [d["deployment"] for d in listed["deployments"]] == ["e1", "east", "west", "spare"]
    assert listed["deployments"][2]["state"] == "DEPLOYMENT_STATE_EJECTED"

    code = await asyncio.to_thread(
        admin_cli.main, ["admin", "deployments", "--alias", "nope", *connect]
    )
    assert code == 1 and "NOT_FOUND" in capsys.readouterr().err
