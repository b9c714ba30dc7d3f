"""The routing issue's acceptance check: killing one of three upstreams under steady
load fails no call beyond those in flight to it at that moment, the circuit breaker
ejects it (ListDeployments through `unigate admin deployments`, and /metrics), and
the balancer's picks counter shows it is no longer chosen.

Three real HTTP servers speak OpenAI's chat API behind one round-robin alias of a real
`unigate serve` process; a client keeps 8 calls in flight over loopback, 300 in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import FakeOpenAI
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.store.sqlite import SqliteStore
from unigate.v1 import inference_pb2 as ipb
from unigate.v1 import inference_pb2_grpc

from .conftest import (
    UNIGATE,
    GatewayProcess,
    ThreadedFake,
    free_port,
    gateway_env,
    launch,
    threaded_fake,
)

pytestmark = pytest.mark.e2e

VENDOR_KEY_VARIABLE = "UNIGATE_E2E_VENDOR_KEY"
VENDOR_KEY = "vendor-key-e2e-0123456789"
UPSTREAMS = ("up-0", "up-1", "up-2")
KILLED = "up-1"
TOTAL_CALLS = 300
CONCURRENCY = 8
KILL_AFTER = 100  # calls answered before the upstream dies
MID_SCRAPE_AFTER = 200  # by then the breaker has long ejected it
CALL_TIMEOUT = 10.0


class CountingOpenAI(FakeOpenAI):
    """FakeOpenAI that knows how many requests it is answering right now."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.01  # each answer takes a moment, so some are in flight at the kill
        self.in_flight = 0

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.in_flight += 1
            try:
                response: web.StreamResponse = await handler(request)
                return response
            finally:
                self.in_flight -= 1

        app.middlewares.append(count)


@dataclass
class Upstream:
    name: str
    fake: ThreadedFake

    async def kill(self) -> int:
        """Stop the server (new connections are refused); how many requests it was
        answering at that moment. Runs on the fake's own loop, from the caller's."""

        async def stop() -> int:
            in_flight: int = self.fake.fake.in_flight
            await self.fake.fake.__aexit__(None, None, None)
            return in_flight

        future = asyncio.run_coroutine_threadsafe(stop(), self.fake.loop)
        return await asyncio.wrap_future(future)


@dataclass
class Keys:
    consumer: str
    admin: str


async def _provision(store_path: Path) -> Keys:
    """A tenant whose consumer may call `chat` without approval, and a global admin."""
    store = SqliteStore(str(store_path))
    await store.open()
    try:
        tenant = await store.create_tenant("acme")
        await store.upsert_service(tenant.id, "chat", requires_approval=False)
        consumer = await store.create_consumer(tenant.id, "load")
        await store.request_subscription(consumer.id, "chat")
        admin = await store.create_admin("ops", None)
        consumer_key, admin_key = generate_key(), generate_key()
        for new, owner in (
            (consumer_key, {"tenant_id": tenant.id, "consumer_id": consumer.id}),
            (admin_key, {"tenant_id": None, "admin_id": admin.id}),
        ):
            await store.create_key(
                key_id=new.key_id, secret_hash=new.secret_hash, name="e2e", **owner
            )
        return Keys(consumer_key.key, admin_key.key)
    finally:
        await store.close()


def gateway_config(
    store_path: Path, metrics_port: int, upstreams: list[Upstream]
) -> dict[str, Any]:
    return {
        "auth": {"api_keys": {"cache_ttl": "60s"}, "access_cache_ttl": "60s"},
        "store": {"url": f"sqlite:///{store_path}"},
        "call_log": {"enabled": False},
        "logging": {"level": "warning", "format": "text"},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port},
        "providers": {
            u.name: {
                "kind": "openai",
                "base_url": u.fake.fake.base_url,
                "api_key": f"${{{VENDOR_KEY_VARIABLE}}}",
            }
            for u in upstreams
        },
        "models": {
            "chat": {
                "balancer": "round_robin",
                "retry": {"attempts": 3, "backoff": "10ms", "max_backoff": "50ms"},
                # A long ejection: no half-open probe during the test.
                "circuit_breaker": {"consecutive_failures": 2, "ejection": "120s"},
                "deployments": [
                    {"provider": u.name, "model": "gpt-4o-mini", "name": u.name} for u in upstreams
                ],
            }
        },
    }


@dataclass
class Load:
    """What the client saw: each answered call's deployment and attempts, each failure."""

    served_by: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    killed_in_flight: int = -1
    picks_mid: dict[str, float] = field(default_factory=dict)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def picks(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {
        dict(labels)["deployment"]: value
        for (name, labels), value in samples.items()
        if name == "unigate_deployment_picks_total" and dict(labels)["alias"] == "chat"
    }


async def steady_load(
    gateway: GatewayProcess, key: str, killed: Upstream, metrics_port: int
) -> Load:
    load = Load()
    started = finished = 0
    killing: asyncio.Task[int] | None = None
    mid_scrape: asyncio.Task[Any] | None = None
    metadata = (("authorization", f"Bearer {key}"),)

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def worker() -> None:
            nonlocal started, finished, killing, mid_scrape
            while started < TOTAL_CALLS:
                started += 1
                request = ipb.ChatRequest(
                    model="chat",
                    messages=[
                        ipb.Message(
                            role=ipb.ROLE_USER, content=[ipb.ContentPart(text=f"n{started}")]
                        )
                    ],
                )
                try:
                    reply = await stub.Chat(request, metadata=metadata, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as error:
                    load.failures.append(f"{error.code().name}: {error.details()}")
                else:
                    load.served_by.append(reply.gateway.deployment)
                    load.attempts.append(reply.gateway.attempts)
                finished += 1
                if finished == KILL_AFTER and killing is None:
                    killing = asyncio.ensure_future(killed.kill())
                if finished == MID_SCRAPE_AFTER and mid_scrape is None:
                    mid_scrape = asyncio.ensure_future(asyncio.to_thread(scrape, metrics_port))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert killing is not None and mid_scrape is not None
    load.killed_in_flight = await killing
    load.picks_mid = picks(await mid_scrape)
    return load


@pytest.fixture
def upstreams() -> Iterator[list[Upstream]]:
    with contextlib.ExitStack() as stack:
        yield [
            Upstream(name, stack.enter_context(threaded_fake(CountingOpenAI))) for name in UPSTREAMS
        ]


def admin_deployments(gateway: GatewayProcess, admin_key: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            *UNIGATE,
            "admin",
            "deployments",
            "--alias",
            "chat",
            "--target",
            gateway.address,
            "--plaintext",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=gateway_env(UNIGATE_ADMIN_KEY=admin_key),
    )
    assert result.returncode == 0, result.stderr
    listed: dict[str, Any] = json.loads(result.stdout)
    return listed


def test_killing_one_of_three_upstreams_under_load(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    store_path = tmp_path / "unigate.db"
    keys = asyncio.run(_provision(store_path))
    metrics_port = free_port()
    config_path = tmp_path / "gateway.yaml"
    config = gateway_config(store_path, metrics_port, upstreams)
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = gateway_env(**{VENDOR_KEY_VARIABLE: VENDOR_KEY})
    gateway = launch(config_path, tmp_path / "gateway.log", env=env)
    try:
        killed = next(u for u in upstreams if u.name == KILLED)
        load = asyncio.run(steady_load(gateway, keys.consumer, killed, metrics_port))
        final = scrape(metrics_port)
        listed = admin_deployments(gateway, keys.admin)
    finally:
        gateway.stop()
    log = gateway.log()
    assert VENDOR_KEY not in log and keys.consumer not in log

    # Before the kill every upstream took its turn.
    before = load.served_by[: KILL_AFTER // 2]
    assert set(before) == set(UPSTREAMS), before

    # No failure beyond the calls the dead upstream was answering when it died
    # (graceful shutdown lets those finish, and retries cover refused connections).
    assert len(load.failures) <= load.killed_in_flight, (load.killed_in_flight, load.failures)
    assert len(load.served_by) + len(load.failures) == TOTAL_CALLS
    assert max(load.attempts) >= 2, "a call that met the dead upstream was retried elsewhere"
    assert KILLED not in load.served_by[KILL_AFTER + 3 * CONCURRENCY :]

    # The breaker ejected it: in ListDeployments ...
    states = {d["deployment"]: d for d in listed["deployments"]}
    assert set(states) == set(UPSTREAMS)
    assert states[KILLED]["state"] == "DEPLOYMENT_STATE_EJECTED"
    assert states[KILLED]["ejected_until"]
    # (consecutive_failures may be back to 0: a call it was answering at the kill
    # can still succeed after the ejection, which that does not end.)
    assert states[KILLED]["error_rate"] > 0
    for name in set(UPSTREAMS) - {KILLED}:
        assert states[name]["state"] == "DEPLOYMENT_STATE_HEALTHY", states[name]

    # ... and in the gauges.
    def gauge(name: str, **labels: str) -> float:
        return final.get((name, frozenset(labels.items())), -1.0)

    dead = {"deployment": KILLED, "alias": "chat"}
    assert gauge("unigate_deployment_up", **dead, provider=KILLED) == 0
    assert gauge("unigate_deployment_circuit_state", **dead, state="ejected") == 1
    assert gauge("unigate_deployment_ejected_seconds", **dead, provider=KILLED) > 0

    # The balancer's choices: each upstream was picked before the kill; the dead one
    # not once between the mid-load scrape and the end, while the others took the load.
    end = picks(final)
    assert set(load.picks_mid) == set(UPSTREAMS), f"picks by deployment: {load.picks_mid}"
    assert end[KILLED] == load.picks_mid[KILLED], (load.picks_mid, end)
    # The scrape runs while calls go on, so some of the last 100 were picked before it.
    moved = sum(end[name] - load.picks_mid[name] for name in set(UPSTREAMS) - {KILLED})
    assert moved >= (TOTAL_CALLS - MID_SCRAPE_AFTER) / 2, (load.picks_mid, end)
    # Its round-robin share of the calls started before the kill, and after it at
    # most one attempt per call in flight until the breaker tripped.
    assert end[KILLED] <= (KILL_AFTER + CONCURRENCY) / len(UPSTREAMS) + CONCURRENCY, end
