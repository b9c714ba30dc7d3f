"""The quota suite: shared tests run once per backend, `memory` and `redis`.

Redis (UNIGATE_TEST_REDIS_URL, default redis://127.0.0.1:6379/0) is shared, so
each test gets a key prefix of its own, unigate-test:<run>:<test>, and its keys
are deleted at its end; nothing else is touched. Unreachable Redis skips those
tests, or fails them when UNIGATE_REQUIRE_SERVICES=1. Fault tests start private
redis-servers on free ports (`private_redis`) and kill them by PID at teardown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NoReturn

import pytest
import redis
from redis.exceptions import RedisError

from unigate.gateway.quota.base import QuotaBackend
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.redis_backend import RedisQuota

DEFAULT_URL = "redis://127.0.0.1:6379/0"
RUN_PREFIX = f"unigate-test:{secrets.token_hex(4)}"

NewQuota = Callable[..., QuotaBackend]
NewRedisQuota = Callable[..., RedisQuota]


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("UNIGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (UNIGATE_REQUIRE_SERVICES=1 requires it)")
    pytest.skip(reason)


def delete_keys(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("UNIGATE_TEST_REDIS_URL", DEFAULT_URL)
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except (RedisError, OSError) as exc:
        unavailable(
            f"Redis is unreachable at UNIGATE_TEST_REDIS_URL (default {DEFAULT_URL}):"
            f" {type(exc).__name__}: {exc}"
        )
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"{RUN_PREFIX}:{secrets.token_hex(4)}"
    yield prefix
    delete_keys(redis_url, prefix)


class Made:
    """Backends a test made, closed at its end."""

    def __init__(self) -> None:
        self.quotas: list[QuotaBackend] = []

    def redis(self, url: str, prefix: str) -> NewRedisQuota:
        """RedisQuota instances, each with its own client (like separate gateway processes),
        on one prefix. The timeout is generous: the shared Redis may be busy."""

        def new(**options: Any) -> RedisQuota:
            options = {"prefix": prefix, "timeout": 2.0, **options}
            quota = RedisQuota(options.pop("url", url), **options)
            self.quotas.append(quota)
            return quota

        return new

    def memory(self, **options: Any) -> MemoryQuota:
        quota = MemoryQuota(**options)
        self.quotas.append(quota)
        return quota

    async def close(self) -> None:
        for quota in self.quotas:
            await quota.close()


@pytest.fixture
async def new_redis_quota(redis_url: str, redis_prefix: str) -> AsyncIterator[NewRedisQuota]:
    made = Made()
    yield made.redis(redis_url, redis_prefix)
    await made.close()


@pytest.fixture(params=["memory", "redis"])
async def new_quota(request: pytest.FixtureRequest) -> AsyncIterator[NewQuota]:
    made = Made()
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        yield made.redis(url, request.getfixturevalue("redis_prefix"))
    else:
        yield made.memory
    await made.close()


@pytest.fixture
def quota(new_quota: NewQuota) -> QuotaBackend:
    return new_quota()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port, without persistence."""

    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return
                except (RedisError, OSError):
                    time.sleep(0.02)
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()  # SIGKILL: stopped processes die too
            self.process.wait(5)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Redis)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT (from INFO commandstats)."""
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def reset_stats(self) -> None:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            client.config_resetstat()
        finally:
            client.close()


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed: the fault tests need a private one")
    server = PrivateRedis(binary, free_port(), str(tmp_path))
    server.start()
    yield server
    server.kill()
