"""Graceful drain of a real gateway process on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

from .conftest import GatewayProcess, SpawnGateway

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def chat_request(words: int) -> pb.ChatRequest:
    text = " ".join(f"word{i}" for i in range(words))
    return pb.ChatRequest(
        model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


def prompt_of(request: pb.ChatRequest) -> str:
    return request.messages[0].content[0].text


async def exit_code(gateway: GatewayProcess, within: float) -> int:
    try:
        return await asyncio.to_thread(gateway.process.wait, within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"unigate still running {within}s after the signal:\n{gateway.log()}")


async def collect(call: grpc.aio.UnaryStreamCall, into: list[pb.StreamChatResponse]) -> None:
    """Read the rest of a stream whose first message was taken with read()."""
    while (message := await call.read()) is not grpc.aio.EOF:
        into.append(message)


async def watch_until_not_serving(watch: grpc.aio.UnaryStreamCall, statuses: list[int]) -> None:
    while (reply := await watch.read()) is not grpc.aio.EOF:
        statuses.append(reply.status)
        if reply.status == NOT_SERVING:
            watch.cancel()
            return


async def test_sigterm_drains_in_flight_stream_and_refuses_new_calls(
    spawn_gateway: SpawnGateway,
) -> None:
    drain_delay, grace = 1.0, 10.0
    gateway = spawn_gateway(tokens_per_second=5, grace_period=grace, drain_delay=drain_delay)
    request = chat_request(words=12)  # 11 gaps of 0.2 s: about 2.2 s of streaming

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        statuses = [(await watch.read()).status]
        assert statuses == [SERVING]
        call = inference_pb2_grpc.InferenceServiceStub(channel).StreamChat(request, timeout=20)
        first = await call.read()
        assert isinstance(first, pb.StreamChatResponse)

        gateway.send(signal.SIGTERM)
        signalled = time.monotonic()
        messages = [first]
        rest = asyncio.create_task(collect(call, messages))
        watching = asyncio.create_task(watch_until_not_serving(watch, statuses))

        await asyncio.wait_for(watching, timeout=drain_delay)
        assert statuses == [SERVING, NOT_SERVING]
        assert not rest.done(), "the stream ended before health turned NOT_SERVING"
        # The drain delay keeps serving while balancers notice NOT_SERVING.
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        during_delay = await stub.Chat(chat_request(words=1), timeout=drain_delay)
        assert during_delay.message.content[0].text == "word0"

        await asyncio.sleep(max(0.0, signalled + drain_delay + 0.3 - time.monotonic()))
        assert not rest.done(), "the stream ended before the drain delay was over"
        async with grpc.aio.insecure_channel(gateway.address) as fresh:
            for new_on in (channel, fresh):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await inference_pb2_grpc.InferenceServiceStub(new_on).Chat(
                        chat_request(words=1), timeout=3
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value

        await asyncio.wait_for(rest, timeout=grace)
        assert await call.code() == grpc.StatusCode.OK

    assert "".join(m.text for m in messages) == prompt_of(request)
    assert [m.finish_reason for m in messages[:-1]] == [0] * (len(messages) - 1)
    assert messages[-1].finish_reason == pb.FINISH_REASON_STOP
    assert messages[-1].usage.output_tokens == 12
    assert await exit_code(gateway, within=grace) == 0, gateway.log()
    log = gateway.log()
    assert "received SIGTERM: draining" in log
    assert "unigate stopped" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_grace_period_cuts_a_long_stream(
    spawn_gateway: SpawnGateway, signum: signal.Signals
) -> None:
    grace = 1.0
    gateway = spawn_gateway(tokens_per_second=2, grace_period=grace)
    request = chat_request(words=11)  # 10 gaps of 0.5 s: about 5 s of streaming

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).StreamChat(request, timeout=20)
        messages = [await call.read()]
        gateway.send(signum)
        signalled = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await asyncio.wait_for(collect(call, messages), timeout=10)
        cut_after = time.monotonic() - signalled

    assert cut.value.code() != grpc.StatusCode.OK
    assert cut_after < grace + 1.0, f"stream cut {cut_after:.2f}s after {signum.name}"
    received = "".join(m.text for m in messages)
    assert prompt_of(request).startswith(received)
    assert received != prompt_of(request)
    assert all(m.finish_reason == 0 for m in messages)
    assert await exit_code(gateway, within=grace + 3) == 0, gateway.log()
    assert f"received {signum.name}: draining" in gateway.log()


async def test_second_signal_stops_at_once(spawn_gateway: SpawnGateway) -> None:
    gateway = spawn_gateway(tokens_per_second=2, grace_period="30s")
    request = chat_request(words=11)

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).StreamChat(request, timeout=20)
        messages = [await call.read()]
        gateway.send(signal.SIGTERM)
        await asyncio.sleep(0.3)
        gateway.send(signal.SIGTERM)
        signalled = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await asyncio.wait_for(collect(call, messages), timeout=10)
        cut_after = time.monotonic() - signalled

    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert cut_after < 1.0, f"stream cut {cut_after:.2f}s after the second signal"
    assert all(m.finish_reason == 0 for m in messages)
    assert await exit_code(gateway, within=3) == 0, gateway.log()
    assert "second signal: stopping now" in gateway.log()


async def test_second_signal_cuts_the_drain_delay_short(spawn_gateway: SpawnGateway) -> None:
    gateway = spawn_gateway(tokens_per_second=2, grace_period="30s", drain_delay="20s")
    gateway.send(signal.SIGTERM)
    await asyncio.sleep(0.3)
    gateway.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await exit_code(gateway, within=5) == 0, gateway.log()
    assert time.monotonic() - signalled < 3, "the second signal must not wait out drain_delay"


async def test_an_open_health_watch_does_not_hold_the_drain(spawn_gateway: SpawnGateway) -> None:
    """Client-side health checking keeps a Watch open; only real calls may delay exit."""
    gateway = spawn_gateway(grace_period="20s")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        gateway.send(signal.SIGTERM)
        signalled = time.monotonic()
        assert await exit_code(gateway, within=10) == 0, gateway.log()
        assert time.monotonic() - signalled < 3, "the drain waited on the health Watch"
        watch.cancel()
