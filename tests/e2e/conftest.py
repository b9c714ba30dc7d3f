"""Run a real `unigate serve` subprocess for tests that drive it from outside.

`spawn_gateway(...)` writes a config with one `mock` alias on a mock provider,
starts the gateway on a free loopback port, waits for gRPC health and stops the
process when the test ends. `grpcurl` is the path of the real grpcurl binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.openai_server import FakeOpenAI, RecordedRequest

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
UNIGATE = (sys.executable, "-m", "unigate.gateway")


@dataclass
class GatewayProcess:
    """A running `unigate serve` process and where to find it."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_env(**overrides: str) -> dict[str, str]:
    """The test's environment without vendor credentials, so only mock providers run."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def mock_config(
    *,
    latency: str | float = 0,
    tokens_per_second: float = 0,
    grace_period: str | float = "5s",
    drain_delay: str | float = 0,
) -> dict[str, Any]:
    return {
        "server": {"grace_period": grace_period, "drain_delay": drain_delay},
        "auth": {"enabled": False},
        "logging": {"level": "info", "format": "text"},
        "providers": {
            "local-mock": {
                "kind": "mock",
                "latency": latency,
                "tokens_per_second": tokens_per_second,
            }
        },
        "models": {"mock": {"deployments": [{"provider": "local-mock", "model": "echo"}]}},
    }


def _health_status(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return None
        status: int = reply.status
        return status


def launch(
    config_path: Path,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    host: str | None = "127.0.0.1",
) -> GatewayProcess:
    """Start `unigate serve` and return once it answers health SERVING."""
    port = free_port()
    command = [*UNIGATE, "serve", "--config", str(config_path), "--port", str(port)]
    if host is not None:
        command += ["--host", host]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else gateway_env(),
            cwd=log_path.parent,  # relative paths in a config (a SQLite store) stay in tmp
        )
    gateway = GatewayProcess(port, process, log_path, config_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"unigate exited with code {process.returncode} during start-up:\n{gateway.log()}"
            )
        if _health_status(gateway.address) == health_pb2.HealthCheckResponse.SERVING:
            return gateway
        time.sleep(0.1)
    gateway.stop()
    pytest.fail(f"unigate did not answer health within {STARTUP_TIMEOUT}s:\n{gateway.log()}")


SpawnGateway = Callable[..., GatewayProcess]


def _spawner(directory: Path, started: list[GatewayProcess]) -> SpawnGateway:
    def spawn(
        config: Mapping[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        host: str | None = "127.0.0.1",
        **settings: Any,
    ) -> GatewayProcess:
        """Start a gateway on `config` (default: mock_config(**settings)) or on `config_path`."""
        index = len(started)
        if config_path is None:
            config_path = directory / f"gateway-{index}.yaml"
            body = mock_config(**settings) if config is None else config
            config_path.write_text(yaml.safe_dump(dict(body)), encoding="utf-8")
        gateway = launch(config_path, directory / f"gateway-{index}.log", env=env, host=host)
        started.append(gateway)
        return gateway

    return spawn


@pytest.fixture
def spawn_gateway(tmp_path: Path) -> Iterator[SpawnGateway]:
    """A function that starts gateways; every one is stopped when the test ends."""
    started: list[GatewayProcess] = []
    yield _spawner(tmp_path, started)
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One default mock gateway for a whole module of read-only tests."""
    started: list[GatewayProcess] = []
    yield _spawner(tmp_path_factory.mktemp("gateway"), started)()
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def grpcurl() -> str:
    """The real grpcurl binary; its absence is a broken dev setup, not a reason to skip."""
    beside_python = Path(sys.executable).parent / "grpcurl"
    path = shutil.which("grpcurl") or (str(beside_python) if beside_python.exists() else None)
    if path is None:
        pytest.fail("grpcurl is not installed: run `make test`, which installs it")
    probe = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=20)
    if "grpcurl" not in probe.stdout + probe.stderr:
        pytest.fail(
            f"{path} -version did not answer as grpcurl (exit {probe.returncode}):\n"
            f"{probe.stdout}{probe.stderr}\nrun `make test`, which installs it"
        )
    return path


@dataclass
class ThreadedFake:
    """A vendor fake served from its own event loop in a thread, so that synchronous
    test code (subprocess.run of grpcurl) does not stop it from answering."""

    fake: Any
    loop: asyncio.AbstractEventLoop

    def requests(self) -> list[RecordedRequest]:
        async def snapshot() -> list[RecordedRequest]:
            return list(self.fake.requests)

        return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result(timeout=5)


@contextlib.contextmanager
def threaded_fake(factory: Callable[[], Any]) -> Iterator[ThreadedFake]:
    """Run `async with factory()` on a private loop in a thread for the block's length."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="vendor-fake", daemon=True)
    thread.start()
    fake = factory()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(timeout=10)
    try:
        yield ThreadedFake(fake, loop)
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def fake_openai_thread() -> Iterator[ThreadedFake]:
    with threaded_fake(FakeOpenAI) as fake:
        yield fake
