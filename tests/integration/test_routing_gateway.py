"""Retries, deadlines and fallbacks end to end: the real server in front of several
real HTTP fakes (FakeOpenAI instances as deployments of one alias, FakeAnthropic as
another vendor), with faults injected at the fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import RunningGateway, StartGateway, call_logs
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.base import VendorFake
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.helpers import error_info, retry_delay
from unigate.v1 import inference_pb2 as pb

KEY = "sk-test-0123456789abcdefROUTING"
FAST_RETRY = {"backoff": "1ms", "max_backoff": "5ms"}


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeOpenAI]]:
    async with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI() as c:
        yield [a, b, c]


@pytest.fixture
async def claude_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


def config(
    fakes: Iterable[VendorFake],
    tmp_path: Path,
    gpt: dict[str, Any] | None = None,
    claude: FakeAnthropic | None = None,
    **models: dict[str, Any],
) -> dict[str, Any]:
    """Alias `gpt` with one deployment per OpenAI fake (named a, b, c), `claude` on the
    Anthropic fake when given; the call log in a SQLite file, flushed quickly."""
    providers: dict[str, Any] = {}
    deployments = []
    for name, fake in zip("abc", fakes, strict=False):
        providers[f"openai-{name}"] = {
            "kind": "openai",
            "base_url": fake.base_url,
            "api_key": "${TEST_KEY}",
        }
        deployments.append({"provider": f"openai-{name}", "model": "gpt-4o-mini", "name": name})
    body: dict[str, Any] = {
        "logging": {"access_log": False},
        "auth": {"enabled": False},
        "store": {"url": f"sqlite:///{tmp_path / 'g.db'}"},
        "call_log": {"flush_interval": "20ms"},
        "providers": providers,
        "models": {"gpt": {"deployments": deployments, "retry": FAST_RETRY, **(gpt or {})}},
    }
    if claude is not None:
        providers["anthropic"] = {
            "kind": "anthropic",
            "base_url": claude.base_url,
            "api_key": "${TEST_KEY}",
        }
        body["models"]["claude"] = {
            "deployments": [{"provider": "anthropic", "model": "claude-haiku-4-5"}]
        }
    body["models"].update(models)
    return body


async def start(start_gateway: StartGateway, body: dict[str, Any]) -> RunningGateway:
    return await start_gateway(body, env={"TEST_KEY": KEY})


def chat(text: str = "hi there", model: str = "gpt") -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


def requests(fakes: Iterable[VendorFake]) -> list[int]:
    return [len(fake.requests) for fake in fakes]


async def test_a_failed_deployment_is_retried_on_another(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes, tmp_path))
    fakes[0].fail_next(Fault.error(503, "overloaded", type="server_error"))
    reply = await running.stub.Chat(chat(), metadata=(("x-request-id", "r-retried"),))
    assert reply.message.content[0].text == "echo: hi there"
    assert reply.gateway.attempts == 2
    assert reply.gateway.alias == "gpt" and not reply.gateway.fallbacks
    served = reply.gateway.deployment
    assert served in ("b", "c")
    assert requests(fakes) == [1, int(served == "b"), int(served == "c")]
    [logged] = await call_logs(running, 1)
    assert (logged.request_id, logged.code, logged.retries) == ("r-retried", "OK", 1)
    assert (logged.alias, logged.deployment, logged.fallbacks) == ("gpt", served, "")


async def test_a_deployments_rate_limit_is_retried_on_another(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes[:2], tmp_path))
    fakes[0].fail_next(Fault.rate_limited(7))
    reply = await running.stub.Chat(chat())
    assert (reply.gateway.attempts, reply.gateway.deployment) == (2, "b")


async def test_a_rate_limited_deployment_is_not_asked_again(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes[:1], tmp_path))
    fakes[0].fail_next(Fault.rate_limited(7))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat())
    assert error_info(caught.value).reason == "UPSTREAM_RATE_LIMITED"
    assert retry_delay(caught.value) == pytest.approx(7)
    assert requests(fakes[:1]) == [1]


async def test_the_callers_mistake_is_not_retried(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes, tmp_path))
    fakes[0].fail_next(Fault.bad_request("'messages' must contain the word 'json'", "messages"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "UPSTREAM_BAD_REQUEST"
    assert requests(fakes) == [1, 0, 0]
    [logged] = await call_logs(running, 1)
    assert (logged.code, logged.retries, logged.deployment) == ("INVALID_ARGUMENT", 0, "a")


async def test_the_attempts_limit_holds_across_deployments(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(
        start_gateway, config(fakes, tmp_path, {"retry": {**FAST_RETRY, "attempts": 2}})
    )
    for fake in fakes:
        fake.fail_next(Fault.server_error())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UPSTREAM_UNAVAILABLE"
    assert sum(requests(fakes)) == 2
    [logged] = await call_logs(running, 1)
    assert (logged.code, logged.retries, logged.alias) == ("UNAVAILABLE", 1, "gpt")


async def test_a_stream_that_failed_before_its_first_chunk_is_retried(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes[:2], tmp_path))
    fakes[0].fail_next(Fault.server_error())
    chunks = [c async for c in running.stub.StreamChat(chat("one two three"))]
    assert "".join(c.text for c in chunks) == "echo: one two three"
    assert (chunks[-1].gateway.attempts, chunks[-1].gateway.deployment) == (2, "b")
    assert requests(fakes[:2]) == [1, 1]


async def test_a_stream_that_failed_after_its_first_chunk_is_not_retried(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes[:2], tmp_path))
    fakes[0].cut_after = 3  # the role chunk, "echo:" and " a", then the connection drops
    received: list[pb.StreamChatResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in running.stub.StreamChat(chat("a b c d e f")):
            received.append(chunk)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(c.text for c in received) == "echo: a"  # once, never restarted
    assert requests(fakes[:2]) == [1, 0]
    [logged] = await call_logs(running, 1)
    assert (logged.code, logged.retries, logged.deployment) == ("UNAVAILABLE", 0, "a")


async def test_a_200ms_deadline_is_honoured_across_retries(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes, tmp_path))
    fakes[0].delay = 0.15
    fakes[0].fail_next(Fault.server_error())
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat(), timeout=0.2)
    elapsed = time.monotonic() - started
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 0.3
    # 50 ms were left after the failure: too little for another attempt to be started.
    assert requests(fakes) == [1, 0, 0]


async def test_each_attempt_gets_the_time_left_not_the_whole_deadline(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes[:2], tmp_path))
    fakes[0].delay = 0.3
    fakes[0].fail_next(Fault.server_error())
    fakes[1].delay = 3.0
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat(), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.3
    # The retry was cut off at the caller's deadline, not a fresh second later.
    await asyncio.wait_for(fakes[1].client_disconnected.wait(), timeout=1.0)
    assert time.monotonic() - started < 1.5


async def test_fallback_to_another_vendor_is_reported(
    start_gateway: StartGateway,
    fakes: list[FakeOpenAI],
    claude_fake: FakeAnthropic,
    tmp_path: Path,
) -> None:
    gpt = {"retry": {**FAST_RETRY, "attempts": 2}, "fallbacks": ["claude"]}
    running = await start(start_gateway, config(fakes[:1], tmp_path, gpt, claude=claude_fake))
    fakes[0].fail_next(Fault.error(503, "overloaded", type="server_error"), times=2)
    reply = await running.stub.Chat(chat(), metadata=(("x-request-id", "r-fallback"),))
    assert reply.message.content[0].text == "echo: hi there"
    assert (reply.provider, reply.model) == ("anthropic", "claude-haiku-4-5")
    assert reply.gateway.alias == "claude"
    assert list(reply.gateway.fallbacks) == ["gpt"]
    assert reply.gateway.attempts == 3
    assert (len(fakes[0].requests), len(claude_fake.requests)) == (2, 1)
    [logged] = await call_logs(running, 1)
    assert (logged.alias, logged.fallbacks, logged.retries) == ("claude", "gpt", 2)
    assert (logged.provider, logged.vendor_model) == ("anthropic", "claude-haiku-4-5")

    fakes[0].fail_next(Fault.server_error(), times=2)
    chunks = [c async for c in running.stub.StreamChat(chat("one two"))]
    assert "".join(c.text for c in chunks) == "echo: one two"
    assert chunks[-1].gateway.alias == "claude"
    assert list(chunks[-1].gateway.fallbacks) == ["gpt"]


async def test_a_fallback_does_not_follow_the_callers_mistake(
    start_gateway: StartGateway,
    fakes: list[FakeOpenAI],
    claude_fake: FakeAnthropic,
    tmp_path: Path,
) -> None:
    gpt = {"fallbacks": ["claude"]}
    running = await start(start_gateway, config(fakes[:1], tmp_path, gpt, claude=claude_fake))
    fakes[0].fail_next(Fault.bad_request("bad"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert claude_fake.requests == []


async def test_every_deployment_ejected_is_no_healthy_deployment_at_once(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    gpt = {
        "retry": {**FAST_RETRY, "attempts": 2},
        "circuit_breaker": {"consecutive_failures": 1, "ejection": "60s"},
    }
    running = await start(start_gateway, config(fakes[:2], tmp_path, gpt))
    for fake in fakes[:2]:
        fake.fail_next(Fault.server_error())
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await running.stub.Chat(chat())
    assert error_info(first.value).reason == "UPSTREAM_UNAVAILABLE"
    assert requests(fakes[:2]) == [1, 1]

    started = time.monotonic()
    for call in (running.stub.Chat(chat()), _drain(running.stub.StreamChat(chat()))):
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await call
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(down.value).reason == "NO_HEALTHY_DEPLOYMENT"
        assert error_info(down.value).metadata["alias"] == "gpt"
        assert "'gpt'" in (down.value.details() or "")
        assert 55 < (retry_delay(down.value) or 0) <= 60
    assert time.monotonic() - started < 0.5
    assert requests(fakes[:2]) == [1, 1]  # a dead deployment costs no call


async def test_a_down_alias_falls_back_at_once(
    start_gateway: StartGateway,
    fakes: list[FakeOpenAI],
    claude_fake: FakeAnthropic,
    tmp_path: Path,
) -> None:
    gpt = {
        "retry": {**FAST_RETRY, "attempts": 1},
        "circuit_breaker": {"consecutive_failures": 1, "ejection": "60s"},
        "fallbacks": ["claude"],
    }
    running = await start(start_gateway, config(fakes[:1], tmp_path, gpt, claude=claude_fake))
    fakes[0].fail_next(Fault.server_error())
    failed_over = await running.stub.Chat(chat())
    assert (failed_over.gateway.alias, failed_over.gateway.attempts) == ("claude", 2)
    # Its one deployment is ejected now: the alias is down, and costs no attempt.
    reply = await running.stub.Chat(chat())
    assert (reply.gateway.alias, list(reply.gateway.fallbacks)) == ("claude", ["gpt"])
    assert reply.gateway.attempts == 1
    assert len(fakes[0].requests) == 1
    assert len(claude_fake.requests) == 2


async def test_consistent_hash_keeps_a_session_on_one_deployment(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    gpt = {"balancer": "consistent_hash", "hash_key": "metadata:x-session-id"}
    running = await start(start_gateway, config(fakes, tmp_path, gpt))
    served: dict[str, set[str]] = {}
    for session in [f"s{n}" for n in range(24)] * 3:
        reply = await running.stub.Chat(chat(), metadata=(("x-session-id", session),))
        served.setdefault(session, set()).add(reply.gateway.deployment)
    assert all(len(deployments) == 1 for deployments in served.values())
    assert len(set().union(*served.values())) >= 2
    # Without the header, the caller's address: the same deployment every time.
    alone = {(await running.stub.Chat(chat())).gateway.deployment for _ in range(5)}
    assert len(alone) == 1


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_behind_a_trusted_proxy_the_forwarded_address_is_hashed(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    body = config(fakes, tmp_path, {"balancer": "consistent_hash"})
    body["routing"] = {"trust_forwarded_for": True}
    running = await start(start_gateway, body)
    served: dict[str, set[str]] = {}
    for address in [f"203.0.113.{n}" for n in range(24)] * 2:
        forwarded = (("x-forwarded-for", f"{address}, 10.0.0.1"),)
        reply = await running.stub.Chat(chat(), metadata=forwarded)
        served.setdefault(address, set()).add(reply.gateway.deployment)
    assert all(len(deployments) == 1 for deployments in served.values())
    assert len(set().union(*served.values())) >= 2


async def test_killing_one_of_three_upstreams_under_load_fails_no_call(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    running = await start(start_gateway, config(fakes, tmp_path))
    for fake in fakes:
        fake.delay = 0.02  # calls are in flight when the upstream dies
    answered: list[pb.ChatResponse] = []
    failed: list[grpc.aio.AioRpcError] = []
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            try:
                answered.append(await running.stub.Chat(chat(), timeout=5))
            except grpc.aio.AioRpcError as exc:
                failed.append(exc)

    callers = [asyncio.create_task(caller()) for _ in range(12)]
    await asyncio.sleep(0.3)
    await fakes[2].__aexit__(None, None, None)  # gone: its port refuses connections
    killed_at = len(answered)
    await asyncio.sleep(0.7)
    stop.set()
    await asyncio.gather(*callers)
    assert failed == []
    after = answered[killed_at + 12 :]  # past the calls in flight at the kill
    assert after and {r.gateway.deployment for r in after[-24:]} == {"a", "b"}
    assert any(r.gateway.attempts == 2 for r in answered[killed_at:])


async def test_a_failing_deployment_is_ejected_and_returns_after_recovery(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    a, b = fakes[:2]
    breaker = {"consecutive_failures": 2, "ejection": "1s", "max_ejection": "2s"}
    running = await start(start_gateway, config([a, b], tmp_path, gpt={"circuit_breaker": breaker}))
    [route] = [r for r in running.gateway.router.routes() if r.alias == "gpt"]
    health = {d.name: d.health for d in route.deployments}

    a.fail_next(Fault.server_error(), times=2)
    for _ in range(4):  # a fails twice (each call retried on b and answered): ejected
        answer = await running.stub.Chat(chat())
        assert answer.message.content
    assert health["a"].state() == "ejected"
    assert 0 < health["a"].ejected_for() <= 1.0

    seen = len(a.requests)
    for _ in range(6):  # while ejected, a costs nothing: every call goes to b first time
        answer = await running.stub.Chat(chat())
        assert answer.gateway.deployment == "b" and answer.gateway.attempts == 1
    assert len(a.requests) == seen

    await asyncio.sleep(
        health["a"].ejected_for() + 0.05
    )  # the ejection ends; a has recovered (its faults are used up)
    served = {(await running.stub.Chat(chat())).gateway.deployment for _ in range(4)}
    assert "a" in served, "the half-open probe succeeded and a takes calls again"
    assert health["a"].state() == "healthy"
    assert len(a.requests) > seen


async def test_a_callers_short_deadline_never_ejects_a_deployment(
    start_gateway: StartGateway, fakes: list[FakeOpenAI], tmp_path: Path
) -> None:
    slow = fakes[0]
    breaker = {"consecutive_failures": 2, "ejection": "1m"}
    body = config([slow], tmp_path, gpt={"circuit_breaker": breaker})
    running = await start(start_gateway, body)
    [route] = [r for r in running.gateway.router.routes() if r.alias == "gpt"]
    slow.delay = 0.3
    for _ in range(4):  # each call's own 50 ms run out while the upstream thinks
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.Chat(chat(), timeout=0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert route.deployments[0].health.state() == "healthy"
    slow.delay = 0
    assert (await running.stub.Chat(chat(), timeout=5)).gateway.deployment == "a"
