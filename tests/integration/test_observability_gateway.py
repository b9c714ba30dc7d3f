"""Metrics and traces through the real server: /metrics scraped over HTTP shows the
counters moving; a call's trace, exported in memory, has the upstream attempt as
a child span; the caller's traceparent reaches the vendor; the request id is in
the process log lines of the call."""

from __future__ import annotations

import asyncio
import io
import logging
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.fakes.openai_server import FakeOpenAI, Fault
from unigate.gateway.observability.logs import configure_logging
from unigate.gateway.observability.tracing import Tracing
from unigate.v1 import inference_pb2 as pb

KEY = "sk-test-0123456789abcdefSECRET"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = "00f067aa0ba902b7"


def chat(model: str, text: str = "hello there") -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def config(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "logging": {"access_log": False},
        "auth": {"enabled": False},
        "store": {"url": f"sqlite:///{tmp_path}/g.db"},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "quotas": {
            "policies": [{"scope": "alias", "match": "limited", "requests_per_minute": 1}],
            "prices": {"gpt": {"input": 1.0, "output": 2.0}},
        },
        "providers": {
            "local-mock": {"kind": "mock"},
            "openai": {"kind": "openai", "base_url": fake.base_url, "api_key": "${TEST_KEY}"},
        },
        "models": {
            "gpt": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            "limited": {"deployments": [{"provider": "local-mock", "model": "echo"}]},
        },
        **extra,
    }


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_are_scraped_over_http_and_move(
    start_gateway: StartGateway, fake: FakeOpenAI, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path, fake), env={"TEST_KEY": KEY})
    port = running.gateway.metrics_port
    assert port
    before = await asyncio.to_thread(scrape, port)

    for _ in range(3):
        await running.stub.Chat(chat("gpt"))
    _ = [c async for c in running.stub.StreamChat(chat("gpt", "one two"))]
    fake.fail_next(Fault.server_error(), times=3)  # every attempt of the call
    with pytest.raises(grpc.aio.AioRpcError):
        await running.stub.Chat(chat("gpt"))
    await running.stub.Chat(chat("limited"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stub.Chat(chat("limited"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    after = await asyncio.to_thread(scrape, port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    service = "unigate.v1.InferenceService"
    assert moved("unigate_calls_total", service=service, method="Chat", code="OK") == 4
    assert moved("unigate_calls_total", service=service, method="StreamChat", code="OK") == 1
    failed = [
        key
        for key, v in after.items()
        if key[0] == "unigate_calls_total" and ("method", "Chat") in key[1] and v > 0
    ]
    assert {dict(labels)["code"] for _, labels in failed} >= {"OK", "RESOURCE_EXHAUSTED"}
    assert moved("unigate_quota_rejections_total", reason="RATE_LIMITED") == 1
    count = "unigate_call_duration_seconds_count"
    assert moved(count, service=service, method="Chat") == 6
    upstream = "unigate_upstream_duration_seconds_count"
    assert moved(upstream, alias="gpt", provider="openai") == 5
    assert moved("unigate_time_to_first_token_seconds_count", alias="gpt") == 1
    tokens = moved("unigate_tokens_total", tenant="", alias="gpt", kind="output")
    assert tokens > 0
    assert moved("unigate_cost_total", tenant="", alias="gpt") > 0
    assert (
        value(
            after,
            "unigate_deployment_up",
            deployment="openai/gpt-4o-mini",
            alias="gpt",
            provider="openai",
        )
        == 1
    )
    assert ("unigate_queue_depth", (("queue", "call_log"),)) in after
    assert after[("unigate_queue_dropped_total", (("queue", "call_log"),))] == 0


async def test_a_trace_has_the_upstream_attempt_as_a_child_and_reaches_the_vendor(
    start_gateway: StartGateway, fake: FakeOpenAI, tmp_path: Path
) -> None:
    exported = InMemorySpanExporter()
    tracing = Tracing(exported, batch=False)
    running = await start_gateway(config(tmp_path, fake), env={"TEST_KEY": KEY}, tracing=tracing)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
    await running.stub.Chat(
        chat("gpt"), metadata=(("traceparent", traceparent), ("x-request-id", "t-1"))
    )
    _ = [c async for c in running.stub.StreamChat(chat("gpt"))]

    spans = exported.get_finished_spans()
    calls = [s for s in spans if s.kind is SpanKind.SERVER]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.name for s in calls] == [
        "unigate.v1.InferenceService/Chat",
        "unigate.v1.InferenceService/StreamChat",
    ]
    first, streamed = calls
    assert f"{first.context.trace_id:032x}" == CALLER_TRACE
    assert first.parent is not None and f"{first.parent.span_id:016x}" == CALLER_PARENT
    assert first.attributes is not None and first.attributes["unigate.request_id"] == "t-1"
    assert len(attempts) == 2
    for call, attempt in zip(calls, attempts, strict=True):
        assert attempt.parent is not None and attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id
        assert attempt.attributes is not None
        assert attempt.attributes["unigate.deployment"] == "openai/gpt-4o-mini"
    assert f"{streamed.context.trace_id:032x}" != CALLER_TRACE  # a new trace

    # The vendor saw the attempt span as its parent.
    sent = fake.requests[0].headers["traceparent"]
    assert sent.split("-")[1] == CALLER_TRACE
    assert sent.split("-")[2] == f"{attempts[0].context.span_id:016x}"


async def test_without_tracing_the_callers_traceparent_is_forwarded(
    start_gateway: StartGateway, fake: FakeOpenAI, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path, fake), env={"TEST_KEY": KEY})
    traceparent = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
    await running.stub.Chat(chat("gpt"), metadata=(("traceparent", traceparent),))
    await running.stub.Chat(chat("gpt"))
    assert fake.requests[0].headers["traceparent"] == traceparent
    assert "traceparent" not in fake.requests[1].headers


async def test_the_callers_traceparent_is_forwarded_with_nothing_recorded(
    start_gateway: StartGateway, fake: FakeOpenAI, tmp_path: Path
) -> None:
    body = config(tmp_path, fake, call_log={"enabled": False})
    body["metrics"] = {"enabled": False}
    running = await start_gateway(body, env={"TEST_KEY": KEY})
    traceparent = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
    await running.stub.Chat(chat("gpt"), metadata=(("traceparent", traceparent),))
    assert fake.requests[0].headers["traceparent"] == traceparent


async def test_process_log_lines_carry_the_request_id(
    start_gateway: StartGateway, fake: FakeOpenAI, tmp_path: Path
) -> None:
    stream = io.StringIO()
    pipeline = configure_logging("info", "json", stream=stream)
    try:
        running = await start_gateway(config(tmp_path, fake), env={"TEST_KEY": KEY})
        fake.fail_next(Fault.server_error(), times=3)  # every attempt of the call
        with pytest.raises(grpc.aio.AioRpcError):
            await running.stub.Chat(chat("gpt"), metadata=(("x-request-id", "log-7"),))
        logging.getLogger("unigate.test").info("outside any call")
    finally:
        pipeline.stop()
        logging.getLogger().handlers.clear()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    in_call = [line for line in lines if line.get("request_id") == "log-7"]
    assert in_call, lines
    assert all(KEY not in str(line) for line in lines)
    outside = [line for line in lines if line["msg"] == "outside any call"]
    assert outside and "request_id" not in outside[0]
