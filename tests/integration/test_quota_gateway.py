"""Quotas through the real server (in-memory backend): requests, tokens (streams
included), budgets and concurrency, with the answers a caller can act on."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.conftest import MOCK_CONFIG, StartGateway
from tests.helpers import error_info, retry_delay, rich_status
from unigate.v1 import inference_pb2 as pb


def chat(text: str = "a b c") -> pb.ChatRequest:
    return pb.ChatRequest(
        model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


def with_quotas(*policies: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**MOCK_CONFIG, "quotas": {"policies": list(policies), **extra}}


def quota_failures(error: grpc.aio.AioRpcError) -> list[str]:
    for detail in rich_status(error).details:
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            return [v.subject for v in failure.violations]
    return []


async def test_requests_per_minute_exactly(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(with_quotas({"scope": "alias", "requests_per_minute": 3}))
    for expected_remaining in ("2", "1", "0"):
        call = gateway.stub.Chat(chat())
        await call
        trailers = dict(await call.trailing_metadata())
        assert trailers["x-ratelimit-limit-requests-per-minute"] == "3"
        assert trailers["x-ratelimit-remaining-requests-per-minute"] == expected_remaining
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "RATE_LIMITED"
    assert quota_failures(error) == ["alias:mock"]
    delay = retry_delay(error)
    assert delay is not None and 0 < delay <= 60
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["x-ratelimit-remaining-requests-per-minute"] == "0"


async def test_tokens_are_charged_for_unary_and_streamed_answers(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(with_quotas({"scope": "global", "tokens_per_minute": 10}))
    await gateway.stub.Chat(chat("a b c"))  # 3 in + 3 out = 6 tokens
    chunks = [c async for c in gateway.stub.StreamChat(chat("d e"))]  # 2 + 2 = 4 more
    assert chunks[-1].usage.total_tokens == 4
    await asyncio.sleep(0.05)  # the charge lands when the call has ended
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "TOKEN_QUOTA_EXCEEDED"


async def test_a_budget_stops_calls_once_spent(start_gateway: StartGateway) -> None:
    prices = {"mock": {"input": 1_000_000, "output": 1_000_000}}  # 1 unit per token
    gateway = await start_gateway(
        with_quotas({"scope": "global", "spend_per_day": 5}, prices=prices)
    )
    await gateway.stub.Chat(chat("a b c"))  # 6 units: over budget after this call
    await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    assert error_info(caught.value).reason == "BUDGET_EXCEEDED"


async def test_concurrency_slots_come_back_after_cancel(start_gateway: StartGateway) -> None:
    config = with_quotas({"scope": "global", "concurrent": 1})
    config["providers"] = {"local-mock": {"kind": "mock", "tokens_per_second": 5}}
    gateway = await start_gateway(config)
    first = gateway.stub.StreamChat(chat("one two three four five six seven eight"))
    await first.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("x"))
    assert error_info(caught.value).reason == "CONCURRENCY_LIMITED"
    first.cancel()
    for _ in range(50):
        await asyncio.sleep(0.05)
        try:
            reply = await gateway.stub.Chat(chat("back"))
        except grpc.aio.AioRpcError:
            continue
        assert reply.message.content[0].text == "back"
        return
    pytest.fail("the cancelled stream's slot never came back")


async def test_no_policy_no_headers(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    call = gateway.stub.Chat(chat())
    await call
    assert not any(k.startswith("x-ratelimit") for k, _ in await call.trailing_metadata())


async def test_a_deployment_limit_holds_whoever_calls(start_gateway: StartGateway) -> None:
    policy = {"scope": "deployment", "match": "local-mock/echo", "requests_per_minute": 2}
    gateway = await start_gateway(with_quotas(policy))
    await gateway.stub.Chat(chat())
    chunks = [c async for c in gateway.stub.StreamChat(chat())]
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert quota_failures(caught.value) == ["deployment:local-mock/echo"]
