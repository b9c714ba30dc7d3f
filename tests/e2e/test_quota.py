"""One limit across gateway processes: two `unigate serve` processes sharing one
Redis let through exactly the configured number of calls, not twice that."""

from __future__ import annotations

import os
import secrets
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
