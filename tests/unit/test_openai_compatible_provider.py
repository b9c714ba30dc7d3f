"""OpenAICompatibleProvider over a real HttpTransport against FakeOpenAI standing in for a
compatible server (Ollama, vLLM, llama.cpp...): the quirk switches and capability honesty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pydantic
import pytest

from tests.fakes.openai_server import FakeOpenAI, Fault, fake_vector
from tests.unit.test_openai_provider import (
    REQUIRED,
    WEATHER_TOOL,
    chat_request,
    collect,
    collect_until_error,
    status_details,
)
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.openai_compatible import (
    KIND,
    OpenAICompatibleProvider,
    OpenAICompatibleSettings,
)
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "local-server-token-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    http = HttpTransport()
    yield http
    await http.close()


@pytest.fixture
def provider(fake: FakeOpenAI, transport: HttpTransport) -> OpenAICompatibleProvider:
    return make_provider(fake, transport, api_key=KEY)


def make_provider(
    fake: FakeOpenAI, transport: HttpTransport, **settings: Any
) -> OpenAICompatibleProvider:
    block: dict[str, Any] = {"kind": "openai_compatible", "base_url": fake.base_url}
    return OpenAICompatibleProvider(
        "ollama", OpenAICompatibleSettings(**block | settings), transport
    )


def upstream(timeout: float = 5.0) -> UpstreamCall:
    return UpstreamCall("dep-llama", "llama3.2", timeout, "req-l1")


async def test_chat_without_a_key_sends_no_credentials(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, headers={"X-Tenant": "lab"})
    response = await provider.chat(chat_request(), upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert (response.provider, response.model) == ("openai_compatible", "llama3.2")
    headers = fake.requests[0].headers
    assert "authorization" not in headers
    assert headers["x-tenant"] == "lab"


async def test_chat_with_a_key(provider: OpenAICompatibleProvider, fake: FakeOpenAI) -> None:
    await provider.chat(chat_request(), upstream())
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert fake.requests[0].path == "/v1/chat/completions"


async def test_stream_asks_for_usage_by_default(
    provider: OpenAICompatibleProvider, fake: FakeOpenAI
) -> None:
    *_, last = await collect(provider.stream_chat(chat_request("a b"), upstream()))
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    assert (last.usage.input_tokens, last.usage.output_tokens) == (2, 3)


async def test_stream_usage_off_reports_zero_usage(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, stream_usage=False)
    *deltas, last = await collect(provider.stream_chat(chat_request("a b"), upstream()))
    assert "stream_options" not in fake.requests[0].body
    assert "".join(m.text for m in deltas) == "echo: a b"
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.HasField("usage") and last.usage.total_tokens == 0


async def test_stream_usage_off_still_needs_a_finish_reason(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, stream_usage=False)
    fake.end_after = 3  # the role chunk, "echo:" and " a": the body ends cleanly, unfinished
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c"), upstream())
    )
    assert [m.text for m in received] == ["echo:", " a"]
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_UNAVAILABLE)


async def test_allow_missing_usage_accepts_a_body_ending_after_the_finish(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    strict = make_provider(fake, transport)
    lenient = make_provider(fake, transport, allow_missing_usage=True)
    # Every chunk but the usage chunk and [DONE]: a server that ignored include_usage.
    fake.end_after = 5  # role, "echo:", " a", " b", the finish chunk
    _, error = await collect_until_error(strict.stream_chat(chat_request("a b"), upstream()))
    assert error.code == grpc.StatusCode.UNAVAILABLE
    *_, last = await collect(lenient.stream_chat(chat_request("a b"), upstream()))
    assert (last.finish_reason, last.usage.total_tokens) == (pb.FINISH_REASON_STOP, 0)


async def test_max_completion_tokens_setting(fake: FakeOpenAI, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, max_tokens_field="max_completion_tokens")
    request = chat_request("a b c", sampling=pb.SamplingParams(max_tokens=1))
    response = await provider.chat(request, upstream())
    assert fake.requests[0].body["max_completion_tokens"] == 1
    assert response.finish_reason == pb.FINISH_REASON_LENGTH


async def test_streamed_tool_call(provider: OpenAICompatibleProvider) -> None:
    request = chat_request("Oslo", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    assert [p.name for m in deltas for p in m.tool_calls if p.name] == ["get_weather"]
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


# --- capabilities -----------------------------------------------------------------------------


def test_default_capabilities() -> None:
    settings = OpenAICompatibleSettings(kind="openai_compatible", base_url="http://h:11434/v1")
    caps = KIND.factory("local", settings, HttpTransport()).capabilities()
    assert (caps.chat, caps.streaming, caps.tools, caps.json_output) == (True, True, True, True)
    assert (caps.images, caps.embeddings, caps.completion) == (False, False, False)


def test_switches_turn_capabilities_on_and_off() -> None:
    settings = OpenAICompatibleSettings(
        kind="openai_compatible",
        base_url="http://h/v1",
        supports_tools=False,
        supports_json_output=False,
        supports_images=True,
        supports_embeddings=True,
        supports_completion=True,
    )
    caps = KIND.factory("local", settings, HttpTransport()).capabilities()
    assert (caps.tools, caps.json_output) == (False, False)
    assert (caps.images, caps.embeddings, caps.completion) == (True, True, True)


async def test_rpcs_switched_off_are_unimplemented_without_a_call(
    provider: OpenAICompatibleProvider, fake: FakeOpenAI
) -> None:
    errors = []
    for call in (
        provider.embed(pb.EmbedRequest(inputs=["x"]), upstream()),
        provider.complete(pb.CompleteRequest(prompt="x"), upstream()),
    ):
        with pytest.raises(GatewayError) as caught:
            await call
        errors.append(caught.value)
    _, streamed = await collect_until_error(
        provider.stream_complete(pb.CompleteRequest(prompt="x"), upstream())
    )
    for error in (*errors, streamed):
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNIMPLEMENTED,
            Reason.CAPABILITY_UNSUPPORTED,
        )
        assert error.metadata == {"provider": "ollama", "capability": error.metadata["capability"]}
    assert fake.requests == []


async def test_embeddings_and_completion_when_switched_on(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, supports_embeddings=True, supports_completion=True)
    response = await provider.embed(pb.EmbedRequest(inputs=["abc"]), upstream())
    assert list(response.embeddings[0].values) == fake_vector("abc", 0, 8)
    completion = await provider.complete(pb.CompleteRequest(prompt="go"), upstream())
    assert completion.text == " echo: go"
    *_, last = await collect(provider.stream_complete(pb.CompleteRequest(prompt="go"), upstream()))
    assert last.usage.output_tokens == 2


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.rate_limited(retry_after=2), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Fault.model_not_found("llama9"), grpc.StatusCode.NOT_FOUND),
        (Fault.server_error(), grpc.StatusCode.UNAVAILABLE),
        (Fault.invalid_api_key(KEY), grpc.StatusCode.INTERNAL),
        (
            Fault.bad_request(f"the key {KEY} may not use this model"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_upstream_errors(
    provider: OpenAICompatibleProvider, fake: FakeOpenAI, fault: Fault, code: grpc.StatusCode
) -> None:
    fake.fail_next(fault)
    with pytest.raises(GatewayError) as caught:
        await collect(provider.stream_chat(chat_request(), upstream()))
    assert caught.value.code == code
    info, _ = status_details(caught.value)
    assert info.metadata["provider"] == "ollama"
    assert KEY not in caught.value.message


async def test_deadline(provider: OpenAICompatibleProvider, fake: FakeOpenAI) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


async def test_cut_stream_is_unavailable_even_without_usage(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, stream_usage=False)
    fake.cut_after = 3
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [m.text for m in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE


async def test_cancelled_consumer_closes_upstream(
    provider: OpenAICompatibleProvider, fake: FakeOpenAI
) -> None:
    fake.chunk_delay = 0.05
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream_chat(chat_request("w " * 100), upstream()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.client_disconnected.wait(), 2)


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "openai_compatible"},  # the base URL is required
        {"kind": "openai_compatible", "base_url": "localhost:11434"},
        {"kind": "openai_compatible", "base_url": "http://h/v1", "organization": "o"},
        {"kind": "openai_compatible", "base_url": "http://h/v1", "supports_audio": True},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        OpenAICompatibleSettings.model_validate(block)
