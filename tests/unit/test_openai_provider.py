"""OpenAIProvider over a real HttpTransport against FakeOpenAI on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pydantic
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.fakes.openai_server import FakeOpenAI, Fault, fake_vector
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.openai import KIND, OpenAIProvider, OpenAISettings
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "test-key-unigate-0123456789abcdef"  # not sk- shaped: only the secrets list can hide it


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
def provider(fake: FakeOpenAI, transport: HttpTransport) -> OpenAIProvider:
    return make_provider(fake, transport)


def make_provider(fake: FakeOpenAI, transport: HttpTransport, **settings: Any) -> OpenAIProvider:
    options: dict[str, Any] = {"kind": "openai", "base_url": fake.base_url, "api_key": KEY}
    return OpenAIProvider("oai", OpenAISettings(**options | settings), transport)


def upstream(timeout: float = 5.0, **fields: Any) -> UpstreamCall:
    return UpstreamCall("dep-1", "gpt-4o-mini", timeout, "req-123", **fields)


def chat_request(text: str = "hello world", **fields: Any) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])
    return pb.ChatRequest(model="fast", messages=[message], **fields)


WEATHER_TOOL = pb.Tool(name="get_weather", description="Weather for a city")
REQUIRED = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [message async for message in stream]


async def collect_until_error(stream: AsyncIterator[Any]) -> tuple[list[Any], GatewayError]:
    received: list[Any] = []
    with pytest.raises(GatewayError) as caught:
        async for message in stream:
            received.append(message)
    return received, caught.value


# --- the happy paths --------------------------------------------------------------------------


async def test_chat(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    response = await provider.chat(chat_request(metadata={"team": "x"}), upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)
    assert response.provider == "openai"
    assert response.id.startswith("chatcmpl-")
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini"  # the vendor's name, not the alias
    assert "metadata" not in sent.body
    assert "stream" not in sent.body


async def test_chat_tool_call(provider: OpenAIProvider) -> None:
    request = chat_request("Paris", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    response = await provider.chat(request, upstream())
    [call] = response.message.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    assert json.loads(call.arguments) == {"text": "Paris"}
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_stream_chat_ends_with_finish_and_usage(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    messages = await collect(provider.stream_chat(chat_request("one two three"), upstream()))
    *deltas, last = messages
    assert "".join(m.text for m in deltas) == "echo: one two three"
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in deltas)
    assert not any(m.HasField("usage") for m in deltas)
    assert last.text == ""
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert (last.usage.input_tokens, last.usage.output_tokens, last.usage.total_tokens) == (3, 4, 7)
    assert len({m.id for m in messages}) == 1
    [sent] = fake.requests
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["accept"] == "text/event-stream"
    assert fake.streams_finished == 1


async def test_stream_chat_tool_call_deltas(provider: OpenAIProvider) -> None:
    request = chat_request("Lyon", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    pieces = [piece for m in deltas for piece in m.tool_calls]
    assert pieces[0].id.startswith("call_")
    assert pieces[0].name == "get_weather"
    assert len(pieces) > 2  # the arguments came in slices
    assert {piece.index for piece in pieces} == {0}
    assert json.loads("".join(piece.arguments for piece in pieces)) == {"text": "Lyon"}
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_max_completion_tokens_setting(fake: FakeOpenAI, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, max_tokens_field="max_completion_tokens")
    request = chat_request("a b c d e", sampling=pb.SamplingParams(max_tokens=2))
    response = await provider.chat(request, upstream())
    assert fake.requests[0].body["max_completion_tokens"] == 2
    assert "max_tokens" not in fake.requests[0].body
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.message.content[0].text == "echo: a"


async def test_complete(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    request = pb.CompleteRequest(model="instruct", prompt="roses are", user="u-9")
    response = await provider.complete(request, upstream())
    assert response.text == " echo: roses are"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.total_tokens == 5
    assert fake.requests[0].path == "/v1/completions"
    assert fake.requests[0].body == {"model": "gpt-4o-mini", "prompt": "roses are", "user": "u-9"}


async def test_stream_complete(provider: OpenAIProvider) -> None:
    request = pb.CompleteRequest(prompt="abc", sampling=pb.SamplingParams(max_tokens=1))
    *deltas, last = await collect(provider.stream_complete(request, upstream()))
    assert "".join(m.text for m in deltas) == " echo:"
    assert last.finish_reason == pb.FINISH_REASON_LENGTH
    assert last.usage.output_tokens == 1


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embed(fake: FakeOpenAI, transport: HttpTransport, encoding: str) -> None:
    provider = make_provider(fake, transport, embedding_encoding=encoding)
    request = pb.EmbedRequest(model="embed", inputs=["a", "bbb", "cc"], dimensions=5)
    response = await provider.embed(request, upstream())
    assert [e.index for e in response.embeddings] == [0, 1, 2]
    for embedding, text in zip(response.embeddings, request.inputs, strict=True):
        assert list(embedding.values) == fake_vector(text, embedding.index, 5)
    assert response.usage.input_tokens == 3
    assert fake.requests[0].body["encoding_format"] == encoding
    assert fake.requests[0].body["dimensions"] == 5


# --- headers ----------------------------------------------------------------------------------


async def test_headers_with_key(fake: FakeOpenAI, transport: HttpTransport) -> None:
    provider = make_provider(
        fake, transport, organization="org-1", project="proj-2", headers={"X-Tenant": "t"}
    )
    await provider.chat(chat_request(), upstream(extra_headers={"traceparent": "00-abc-01"}))
    headers = fake.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-2"
    assert headers["x-request-id"] == "req-123"
    assert headers["x-tenant"] == "t"
    assert headers["traceparent"] == "00-abc-01"


async def test_no_authorization_without_key(fake: FakeOpenAI, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, api_key=None)
    await provider.embed(pb.EmbedRequest(inputs=["x"]), upstream())
    headers = fake.requests[0].headers
    assert "authorization" not in headers
    assert "openai-organization" not in headers


# --- errors -----------------------------------------------------------------------------------

FAULTS = {
    "429": (Fault.rate_limited(retry_after=7), grpc.StatusCode.RESOURCE_EXHAUSTED, 7.0),
    "401": (Fault.invalid_api_key(KEY), grpc.StatusCode.INTERNAL, None),
    "404": (Fault.model_not_found("gpt-4o-mini"), grpc.StatusCode.NOT_FOUND, None),
    "500": (Fault.server_error(), grpc.StatusCode.UNAVAILABLE, None),
    "400": (Fault.bad_request(f"bad header value {KEY}"), grpc.StatusCode.INVALID_ARGUMENT, None),
}
REASONS = {
    "429": Reason.UPSTREAM_RATE_LIMITED,
    "401": Reason.UPSTREAM_AUTH_FAILED,
    "404": Reason.UPSTREAM_MODEL_NOT_FOUND,
    "500": Reason.UPSTREAM_UNAVAILABLE,
    "400": Reason.UPSTREAM_BAD_REQUEST,
}


def status_details(error: GatewayError) -> tuple[error_details_pb2.ErrorInfo, float | None]:
    """The ErrorInfo and RetryInfo delay a caller would decode from the trailers."""
    [(_, blob)] = [kv for kv in error.to_status().trailing_metadata if kv[0].endswith("-bin")]
    status = status_pb2.Status.FromString(blob)
    info, delay = error_details_pb2.ErrorInfo(), None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return info, delay


@pytest.mark.parametrize("status", sorted(FAULTS))
@pytest.mark.parametrize("rpc", ["chat", "stream_chat", "embed"])
async def test_upstream_errors(
    provider: OpenAIProvider, fake: FakeOpenAI, status: str, rpc: str
) -> None:
    fault, code, retry_after = FAULTS[status]
    fake.fail_next(fault)
    with pytest.raises(GatewayError) as caught:
        if rpc == "chat":
            await provider.chat(chat_request(), upstream())
        elif rpc == "embed":
            await provider.embed(pb.EmbedRequest(inputs=["x"]), upstream())
        else:
            await collect(provider.stream_chat(chat_request(), upstream()))
    error = caught.value
    assert error.code == code
    info, delay = status_details(error)
    assert info.reason == REASONS[status]
    assert info.domain == "unigate"
    assert info.metadata["deployment"] == "dep-1"
    assert delay == retry_after
    assert KEY not in error.message
    assert KEY[:12] not in str(error.to_status())


async def test_key_in_an_extra_header_is_redacted_too(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_key=None, headers={"api-key": "hdr-secret-42"})
    fake.fail_next(Fault.bad_request("unknown api-key hdr-secret-42"))
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert "hdr-secret-42" not in caught.value.message
    assert "unknown api-key [REDACTED]" in caught.value.message


async def test_deadline(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


async def test_deadline_mid_stream(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.15
    stream = provider.stream_chat(chat_request("a b c d e f"), upstream(0.6))
    received, error = await collect_until_error(stream)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received  # the first deltas got through before the deadline


async def test_unreachable_upstream_is_unavailable(transport: HttpTransport) -> None:
    async with FakeOpenAI() as gone:
        provider = make_provider(gone, transport)
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("knob", ["cut_after", "end_after", "error_after"])
async def test_stream_broken_mid_way(provider: OpenAIProvider, fake: FakeOpenAI, knob: str) -> None:
    setattr(fake, knob, 3)  # the role chunk, then "echo:" and " a"
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [message.text for message in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == Reason.UPSTREAM_UNAVAILABLE


async def test_cancelled_consumer_closes_upstream(
    provider: OpenAIProvider, fake: FakeOpenAI
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
    assert fake.streams_finished == 0


async def test_closing_the_stream_early_closes_upstream(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.chunk_delay = 0.05
    stream = provider.stream_chat(chat_request("w " * 100), upstream())
    assert (await anext(stream)).text == "echo:"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(fake.client_disconnected.wait(), 2)


async def test_stream_of_an_invalid_request_fails_when_iterated(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    stream = provider.stream_chat(pb.ChatRequest(messages=[pb.Message()]), upstream())
    received, error = await collect_until_error(stream)
    assert (received, error.code) == ([], grpc.StatusCode.INVALID_ARGUMENT)
    assert fake.requests == []


# --- registry entry ---------------------------------------------------------------------------


async def test_kind_builds_a_provider(fake: FakeOpenAI, transport: HttpTransport) -> None:
    settings = KIND.settings.model_validate({"kind": "openai", "base_url": fake.base_url})
    provider = KIND.factory("local", settings, transport)
    assert provider.name == "local"
    assert provider.kind == "openai"
    caps = provider.capabilities()
    assert all(getattr(caps, field.name) for field in pb.Capabilities.DESCRIPTOR.fields)
    response = await provider.chat(chat_request(), upstream())
    assert response.message.content[0].text == "echo: hello world"
    await provider.close()


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "openai", "api_kee": "typo"},
        {"kind": "anthropic"},
        {"kind": "openai", "embedding_encoding": "int8"},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        OpenAISettings.model_validate(block)


def test_settings_repr_hides_the_key() -> None:
    settings = OpenAISettings(kind="openai", api_key=KEY, headers={"api-key": KEY})
    assert KEY not in repr(settings)
