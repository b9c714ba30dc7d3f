"""Shared fixtures: a real gateway on a free port, and a stub to call it with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import yaml

from unigate.gateway.app import Gateway, create_server
from unigate.gateway.config import parse_config
from unigate.gateway.store.models import CallLog, CallLogFilter
from unigate.v1 import inference_pb2_grpc


@dataclass
class RunningGateway:
    gateway: Gateway
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


MOCK_CONFIG: dict[str, Any] = {
    "logging": {"access_log": False},
    "auth": {"enabled": False},
    "providers": {"local-mock": {"kind": "mock"}},
    "models": {"mock": {"deployments": [{"provider": "local-mock", "model": "echo"}]}},
}

StartGateway = Callable[..., Awaitable[RunningGateway]]


async def call_logs(running: RunningGateway, expected: int, timeout: float = 5.0) -> list[CallLog]:
    """The gateway's call logs, oldest first, once `expected` have been written (or
    `timeout` passed: the caller's assertions then say what is missing)."""
    store = running.gateway.observability.call_log_store
    assert store is not None
    deadline = time.monotonic() + timeout
    while True:
        page = await store.list_call_logs(CallLogFilter(), page_size=1000)
        if len(page.items) >= expected or time.monotonic() > deadline:
            return list(reversed(page.items))
        await asyncio.sleep(0.02)


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start real gateways on 127.0.0.1:0 from a config dict; all stopped at teardown."""
    running: list[RunningGateway] = []

    async def start(
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> RunningGateway:
        body = dict(config if config is not None else MOCK_CONFIG)
        if "store" not in body and "call_log" not in body:
            # Call logs are on by default, into the store: without one named, keep
            # them in memory rather than in a unigate.db in the working directory.
            body["call_log"] = {"store_url": "sqlite://:memory:"}
        text = yaml.safe_dump(body)
        parsed = parse_config(text, "test-config.yaml", env=env or {})
        gateway = await create_server(parsed, host="127.0.0.1", port=0, **options)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
        handle = RunningGateway(gateway, channel, inference_pb2_grpc.InferenceServiceStub(channel))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.channel.close()
        await handle.gateway.stop(grace=0)


@pytest.fixture
async def mock_gateway(start_gateway: StartGateway) -> RunningGateway:
    return await start_gateway()
