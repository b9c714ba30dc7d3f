"""AnthropicProvider over a real HttpTransport against FakeAnthropic on 127.0.0.1."""

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

from tests.fakes.anthropic_server import FakeAnthropic, Fault
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.anthropic import KIND, AnthropicProvider, AnthropicSettings
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "test-key-unigate-0123456789abcdef"  # not sk- shaped: only the secrets list can hide it


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    http = HttpTransport()
    yield http
    await http.close()


@pytest.fixture
def provider(fake: FakeAnthropic, transport: HttpTransport) -> AnthropicProvider:
    return make_provider(fake, transport)


def make_provider(
    fake: FakeAnthropic, transport: HttpTransport, **settings: Any
) -> AnthropicProvider:
    options: dict[str, Any] = {"kind": "anthropic", "base_url": fake.base_url, "api_key": KEY}
    return AnthropicProvider("claude", AnthropicSettings(**options | settings), transport)


def upstream(timeout: float = 5.0, **fields: Any) -> UpstreamCall:
    return UpstreamCall("dep-1", "claude-haiku-4-5", timeout, "req-123", **fields)


def message(role: pb.Role, text: str, **fields: Any) -> pb.Message:
    return pb.Message(role=role, content=[pb.ContentPart(text=text)], **fields)


def chat_request(text: str = "hello world", **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(model="claude", messages=[message(pb.ROLE_USER, text)], **fields)


WEATHER_TOOL = pb.Tool(name="get_weather", description="Weather for a city")
REQUIRED = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def collect_until_error(stream: AsyncIterator[Any]) -> tuple[list[Any], GatewayError]:
    received: list[Any] = []
    with pytest.raises(GatewayError) as caught:
        async for item in stream:
            received.append(item)
    return received, caught.value


# --- the happy paths --------------------------------------------------------------------------


async def test_chat(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    request = pb.ChatRequest(
        model="claude",
        messages=[message(pb.ROLE_SYSTEM, "be kind"), message(pb.ROLE_USER, "hello world")],
        metadata={"team": "x"},
    )
    response = await provider.chat(request, upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 3)
    assert response.provider == "anthropic"
    assert response.id.startswith("msg_")
    [sent] = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 4096,
        "system": "be kind",
        "messages": [{"role": "user", "content": "hello world"}],
    }


async def test_cached_tokens_count_as_input(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.cache_read_tokens, fake.cache_creation_tokens = 100, 20
    response = await provider.chat(chat_request("a b"), upstream())
    usage = response.usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_input_tokens) == (
        122,
        100,
        20,
    )
    assert usage.total_tokens == 122 + 3


async def test_max_tokens_default_per_model(fake: FakeAnthropic, transport: HttpTransport) -> None:
    provider = make_provider(
        fake, transport, default_max_tokens=64, max_tokens_by_model={"claude-haiku-4-5": 2}
    )
    response = await provider.chat(chat_request("a b c d e"), upstream())
    assert fake.requests[0].body["max_tokens"] == 2
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.message.content[0].text == "echo: a"
    await provider.chat(chat_request(), UpstreamCall("dep-2", "claude-other", 5.0, "req-2"))
    assert fake.requests[1].body["max_tokens"] == 64


async def test_stop_sequence(provider: AnthropicProvider) -> None:
    request = chat_request("one two three", sampling=pb.SamplingParams(stop_sequences=["three"]))
    response = await provider.chat(request, upstream())
    assert response.message.content[0].text == "echo: one two"
    assert response.finish_reason == pb.FINISH_REASON_STOP


async def test_chat_tool_call(provider: AnthropicProvider) -> None:
    request = chat_request("Paris", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    response = await provider.chat(request, upstream())
    [call] = response.message.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert json.loads(call.arguments) == {"text": "Paris"}
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_tool_results_round_trip(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    first = await provider.chat(
        chat_request("Paris", tools=[WEATHER_TOOL], tool_choice=REQUIRED), upstream()
    )
    [call] = first.message.tool_calls
    follow_up = pb.ChatRequest(
        messages=[
            message(pb.ROLE_USER, "Paris"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            message(pb.ROLE_TOOL, "sunny, 21C", tool_call_id=call.id),
        ],
        tools=[WEATHER_TOOL],
    )
    # The fake refuses a tool_result that does not answer the previous turn's tool_use, as
    # Anthropic does: this passes only if the ids and turns line up.
    response = await provider.chat(follow_up, upstream())
    assert response.message.content[0].text == "echo: sunny, 21C"
    sent = fake.requests[-1].body["messages"]
    assert sent[1]["content"][0]["input"] == {"text": "Paris"}
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}],
    }


async def test_stream_chat_ends_with_finish_and_usage(
    provider: AnthropicProvider, fake: FakeAnthropic
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
    assert sent.headers["accept"] == "text/event-stream"
    assert fake.streams_finished == 1


async def test_stream_chat_tool_call_deltas(provider: AnthropicProvider) -> None:
    request = chat_request("Lyon", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    pieces = [piece for m in deltas for piece in m.tool_calls]
    assert pieces[0].id.startswith("toolu_")
    assert pieces[0].name == "get_weather"
    assert len(pieces) > 2  # the arguments came in slices
    assert all(not piece.id and not piece.name for piece in pieces[1:])
    assert {piece.index for piece in pieces} == {0}
    assert json.loads("".join(piece.arguments for piece in pieces)) == {"text": "Lyon"}
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_json_schema_output(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fmt = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)
    fmt.json_schema.schema.update({"type": "object", "additionalProperties": False})
    response = await provider.chat(chat_request("hi", response_format=fmt), upstream())
    assert json.loads(response.message.content[0].text) == {"echo": "hi"}
    assert fake.requests[0].body["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {"type": "object", "additionalProperties": False},
        }
    }


async def test_images(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    parts = [
        pb.ContentPart(text="what is this"),
        pb.ContentPart(image=pb.Image(url="https://example.com/a.png")),
        pb.ContentPart(image=pb.Image(data=b"\x89PNG", mime_type="image/png")),
    ]
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=parts)])
    response = await provider.chat(request, upstream())
    assert response.message.content[0].text == "echo: what is this"
    sources = [block["source"] for block in fake.requests[0].body["messages"][0]["content"][1:]]
    assert sources == [
        {"type": "url", "url": "https://example.com/a.png"},
        {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
    ]


async def test_unsupported_rpcs_are_unimplemented(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    caught: list[GatewayError] = []
    for attempt in (
        provider.complete(pb.CompleteRequest(prompt="p"), upstream()),
        collect(provider.stream_complete(pb.CompleteRequest(prompt="p"), upstream())),
        provider.embed(pb.EmbedRequest(inputs=["x"]), upstream()),
    ):
        with pytest.raises(GatewayError) as error:
            await attempt
        caught.append(error.value)
    assert {(e.code, e.reason) for e in caught} == {
        (grpc.StatusCode.UNIMPLEMENTED, Reason.CAPABILITY_UNSUPPORTED)
    }
    assert [e.metadata["capability"] for e in caught] == ["completion", "completion", "embeddings"]
    assert fake.requests == []


async def test_unsupported_sampling_is_refused_before_sending(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    request = chat_request(sampling=pb.SamplingParams(frequency_penalty=1))
    received, error = await collect_until_error(provider.stream_chat(request, upstream()))
    assert (received, error.code) == ([], grpc.StatusCode.INVALID_ARGUMENT)
    assert error.reason == Reason.CAPABILITY_UNSUPPORTED
    assert fake.requests == []


# --- headers ----------------------------------------------------------------------------------


async def test_headers(fake: FakeAnthropic, transport: HttpTransport) -> None:
    provider = make_provider(
        fake, transport, anthropic_version="2024-01-01", headers={"anthropic-beta": "b1"}
    )
    await provider.chat(chat_request(), upstream(extra_headers={"traceparent": "00-abc-01"}))
    headers = fake.requests[0].headers
    assert headers["x-api-key"] == KEY
    assert "authorization" not in headers
    assert headers["anthropic-version"] == "2024-01-01"
    assert headers["anthropic-beta"] == "b1"
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "req-123"
    assert headers["traceparent"] == "00-abc-01"


async def test_default_version_and_no_key(transport: HttpTransport) -> None:
    async with FakeAnthropic() as open_fake:
        provider = make_provider(open_fake, transport, api_key=None)
        await provider.chat(chat_request(), upstream())
        headers = open_fake.requests[0].headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in headers


# --- errors -----------------------------------------------------------------------------------

FAULTS = {
    "429": (Fault.rate_limited(retry_after=7), grpc.StatusCode.RESOURCE_EXHAUSTED, 7.0),
    "401": (Fault.authentication(), grpc.StatusCode.INTERNAL, None),
    "403": (Fault.permission_denied(), grpc.StatusCode.PERMISSION_DENIED, None),
    "404": (Fault.model_not_found("claude-haiku-4-5"), grpc.StatusCode.NOT_FOUND, None),
    "500": (Fault.api_error(), grpc.StatusCode.UNAVAILABLE, None),
    "529": (Fault.overloaded(), grpc.StatusCode.UNAVAILABLE, None),
    "400": (Fault.bad_request(f"bad header value {KEY}"), grpc.StatusCode.INVALID_ARGUMENT, None),
}
REASONS = {
    "429": Reason.UPSTREAM_RATE_LIMITED,
    "401": Reason.UPSTREAM_AUTH_FAILED,
    "403": Reason.UPSTREAM_PERMISSION_DENIED,
    "404": Reason.UPSTREAM_MODEL_NOT_FOUND,
    "500": Reason.UPSTREAM_UNAVAILABLE,
    "529": Reason.UPSTREAM_UNAVAILABLE,
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
@pytest.mark.parametrize("rpc", ["chat", "stream_chat"])
async def test_upstream_errors(
    provider: AnthropicProvider, fake: FakeAnthropic, status: str, rpc: str
) -> None:
    fault, code, retry_after = FAULTS[status]
    fake.fail_next(fault)
    with pytest.raises(GatewayError) as caught:
        if rpc == "chat":
            await provider.chat(chat_request(), upstream())
        else:
            await collect(provider.stream_chat(chat_request(), upstream()))
    error = caught.value
    assert error.code == code
    info, delay = status_details(error)
    assert info.reason == REASONS[status]
    assert info.domain == "unigate"
    assert info.metadata["deployment"] == "dep-1"
    assert info.metadata["http_status"] == status
    assert info.metadata["vendor_code"] == fault.body["error"]["type"]
    assert delay == retry_after
    assert KEY not in error.message
    assert KEY[:12] not in str(error.to_status())


async def test_wrong_key_is_an_auth_failure(fake: FakeAnthropic, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, api_key="test-key-wrong-0000000000")
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INTERNAL,
        Reason.UPSTREAM_AUTH_FAILED,
    )
    assert "wrong" not in caught.value.message


async def test_key_in_an_extra_header_is_redacted_too(transport: HttpTransport) -> None:
    async with FakeAnthropic() as open_fake:
        provider = make_provider(
            open_fake, transport, api_key=None, headers={"Authorization": "Bearer hdr-secret-42"}
        )
        open_fake.fail_next(Fault.bad_request("unknown token hdr-secret-42"))
        with pytest.raises(GatewayError) as caught:
            await provider.chat(chat_request(), upstream())
    assert "hdr-secret-42" not in caught.value.message
    assert "unknown token [REDACTED]" in caught.value.message


async def test_deadline(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


async def test_deadline_mid_stream(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.chunk_delay = 0.1
    stream = provider.stream_chat(chat_request("a b c d e f"), upstream(0.6))
    received, error = await collect_until_error(stream)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received  # the first deltas got through before the deadline


async def test_unreachable_upstream_is_unavailable(transport: HttpTransport) -> None:
    async with FakeAnthropic() as gone:
        provider = make_provider(gone, transport)
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("knob", ["cut_after", "end_after", "error_after"])
async def test_stream_broken_mid_way(
    provider: AnthropicProvider, fake: FakeAnthropic, knob: str
) -> None:
    setattr(fake, knob, 5)  # message_start, content_block_start, ping, "echo:", " a"
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [m.text for m in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == Reason.UPSTREAM_UNAVAILABLE
    if knob == "error_after":
        assert "failed mid-stream: Overloaded" in error.message


async def test_cancelled_consumer_closes_upstream(
    provider: AnthropicProvider, fake: FakeAnthropic
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
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.chunk_delay = 0.05
    stream = provider.stream_chat(chat_request("w " * 100), upstream())
    assert (await anext(stream)).text == "echo:"
    await stream.aclose()
    await asyncio.wait_for(fake.client_disconnected.wait(), 2)


# --- registry entry and settings --------------------------------------------------------------


async def test_kind_builds_a_provider(fake: FakeAnthropic, transport: HttpTransport) -> None:
    settings = KIND.settings.model_validate(
        {"kind": "anthropic", "base_url": fake.base_url + "/", "api_key": f" {KEY}\n"}
    )
    provider = KIND.factory("claude-main", settings, transport)
    assert (provider.name, provider.kind) == ("claude-main", "anthropic")
    caps = provider.capabilities()
    assert (caps.chat, caps.streaming, caps.tools, caps.images, caps.json_output) == (
        True,
        True,
        True,
        True,
        True,
    )
    assert (caps.embeddings, caps.completion) == (False, False)
    response = await provider.chat(chat_request(), upstream())
    assert response.message.content[0].text == "echo: hello world"
    await provider.close()


def test_default_base_url_is_anthropics() -> None:
    assert AnthropicSettings(kind="anthropic").base_url == "https://api.anthropic.com"


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "anthropic", "api_kee": "typo"},
        {"kind": "openai"},
        {"kind": "anthropic", "base_url": "api.anthropic.com"},
        {"kind": "anthropic", "api_key": "sk-ant-\x00x"},
        {"kind": "anthropic", "anthropic_version": "latest"},
        {"kind": "anthropic", "default_max_tokens": 0},
        {"kind": "anthropic", "max_tokens_by_model": {"claude-x": -1}},
        {"kind": "anthropic", "headers": {"x-evil": "a\nb"}},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AnthropicSettings.model_validate(block)


def test_settings_repr_hides_the_key() -> None:
    settings = AnthropicSettings(kind="anthropic", api_key=KEY, headers={"x-api-key": KEY})
    assert KEY not in repr(settings)
