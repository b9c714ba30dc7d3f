"""The shared HTTP transport: how network failures become statuses."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import grpc
import pytest

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.transport import HttpTransport, Target, TransportLimits

TARGET = Target("openai", "primary")


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A loopback port whose accept backlog is full, so new connections hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, server):
        sock.close()


@pytest.fixture
def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


async def test_connect_timeout_is_unavailable_not_deadline(unanswering_port: int) -> None:
    await asyncio.sleep(0.05)
    transport = HttpTransport(TransportLimits(connect_timeout=0.3))
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await transport.request(
            "GET", f"http://127.0.0.1:{unanswering_port}/v1/models", target=TARGET, timeout=5
        )
    await transport.close()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == Reason.UPSTREAM_UNAVAILABLE
    assert "connecting timed out" in caught.value.message
    assert time.monotonic() - started < 2


async def test_the_call_deadline_bounds_a_slow_connect(unanswering_port: int) -> None:
    await asyncio.sleep(0.05)
    transport = HttpTransport(TransportLimits(connect_timeout=10))
    started = time.monotonic()
    with pytest.raises(GatewayError):
        await transport.request(
            "GET", f"http://127.0.0.1:{unanswering_port}/v1/models", target=TARGET, timeout=0.3
        )
    await transport.close()
    assert time.monotonic() - started < 1.5


async def test_refused_connection_is_unavailable(closed_port: int) -> None:
    transport = HttpTransport()
    with pytest.raises(GatewayError) as caught:
        await transport.request(
            "GET", f"http://127.0.0.1:{closed_port}/v1/models", target=TARGET, timeout=5
        )
    await transport.close()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.metadata == {"provider": "openai", "deployment": "primary"}


async def test_redirects_are_not_followed() -> None:
    """A redirect would carry the vendor key headers to another host."""
    from aiohttp import web

    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_get("/start", redirect)
    app.router.add_get("/elsewhere", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = HttpTransport()
    try:
        result = await transport.request(
            "GET",
            f"http://127.0.0.1:{port}/start",
            target=TARGET,
            timeout=5,
            headers={"x-api-key": "secret"},
        )
    finally:
        await transport.close()
        await runner.cleanup()
    assert result.status == 302
    assert hits == ["/start"]
