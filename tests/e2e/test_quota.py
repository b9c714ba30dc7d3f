"""One limit across gateway processes: two `unigate serve` processes sharing one
Redis let through exactly the configured number of calls, not twice that."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
import yaml

from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

from .conftest import launch

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("UNIGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is unreachable at UNIGATE_TEST_REDIS_URL ({REDIS_URL}): {exc}"
        if os.environ.get("UNIGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (UNIGATE_REQUIRE_SERVICES=1 requires it)")
        pytest.skip(reason)
    prefix = f"unigate-test-{secrets.token_hex(4)}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_processes_share_one_limit(tmp_path: Path, redis_prefix: str) -> None:
    config = {
        "auth": {"enabled": False},
        "providers": {"m": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "m", "model": "echo"}]}},
        "quotas": {
            "backend": "redis",
            "redis_url": REDIS_URL,
            "key_prefix": redis_prefix,
            "on_redis_failure": "fail_closed",
            "policies": [{"scope": "global", "requests_per_minute": 5}],
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    gateways = [launch(path, tmp_path / f"gateway-{i}.log") for i in range(2)]
    request = pb.ChatRequest(
        model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="x")])]
    )
    outcomes: list[str] = []
    try:
        channels = [grpc.insecure_channel(g.address) for g in gateways]
        stubs = [inference_pb2_grpc.InferenceServiceStub(c) for c in channels]
        for index in range(12):
            try:
                stubs[index % 2].Chat(request, timeout=5)
                outcomes.append("ok")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                outcomes.append("limited")
        for channel in channels:
            channel.close()
    finally:
        for gateway in gateways:
            gateway.stop()
    assert outcomes.count("ok") == 5, outcomes
    # Both processes served some of the five: the count really was shared.
    assert "ok" in outcomes[0::2] and "ok" in outcomes[1::2]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("the private redis-server did not start")


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_a_dead_redis_is_handled_as_configured(tmp_path: Path, mode: str) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for this test (apt-get install redis-server)")
    port = _free_port()
    redis_process = _start_redis(port)
    config = {
        "auth": {"enabled": False},
        "providers": {"m": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "m", "model": "echo"}]}},
        "quotas": {
            "backend": "redis",
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "on_redis_failure": mode,
            "policies": [{"scope": "global", "requests_per_minute": 1000}],
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    gateway = launch(path, tmp_path / "gateway.log")
    request = pb.ChatRequest(
        model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="x")])]
    )
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stub.Chat(request, timeout=5)
            redis_process.kill()
            redis_process.wait(5)
            for _ in range(3):
                started = time.monotonic()
                try:
                    stub.Chat(request, timeout=5)
                    outcome = "ok"
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                    assert "fail closed" in (error.details() or "")
                    outcome = "unavailable"
                assert time.monotonic() - started < 1.0, "a dead Redis must not stall calls"
                assert outcome == ("ok" if mode == "fail_open" else "unavailable")
            redis_process = _start_redis(port)
            revived = redis.Redis(port=port)
            deadline = time.monotonic() + 5
            # Back on Redis on its own (retried at most once a second): calls pass
            # again and are counted in Redis, not only in the process.
            while True:
                try:
                    stub.Chat(request, timeout=5)
                    if revived.keys("*"):
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "did not recover when Redis returned"
                time.sleep(0.2)
    finally:
        gateway.stop()
        redis_process.kill()
        redis_process.wait(5)
