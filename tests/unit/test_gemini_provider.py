"""GeminiProvider over a real HttpTransport against FakeGemini on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pydantic
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from tests.fakes.gemini_server import FakeGemini, Fault
from tests.fakes.openai_server import fake_vector
from tests.unit.test_http_providers import config_error
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.gemini import KIND, GeminiProvider, GeminiSettings
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "test-key-unigate-0123456789abcdef"  # not AIza-shaped: only the secrets list can hide it
MODEL = "gemini-2.5-flash"
GOLDEN = Path(__file__).parent.parent / "testdata" / "gemini"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    http = HttpTransport()
    yield http
    await http.close()


@pytest.fixture
def provider(fake: FakeGemini, transport: HttpTransport) -> GeminiProvider:
    return make_provider(fake, transport)


def make_provider(fake: FakeGemini, transport: HttpTransport, **settings: Any) -> GeminiProvider:
    options: dict[str, Any] = {"kind": "gemini", "base_url": fake.base_url, "api_key": KEY}
    return GeminiProvider("gem", GeminiSettings(**options | settings), transport)


def upstream(timeout: float = 5.0, **fields: Any) -> UpstreamCall:
    return UpstreamCall("dep-1", MODEL, timeout, "req-123", **fields)


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def chat_request(text: str = "hello world", **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(model="fast", messages=[user(text)], **fields)


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


async def test_chat(provider: GeminiProvider, fake: FakeGemini) -> None:
    system = pb.Message(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text="Be brief.")])
    request = pb.ChatRequest(messages=[system, user("hello world")], metadata={"team": "x"})
    response = await provider.chat(request, upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 3)
    assert (response.provider, response.model) == ("gemini", MODEL)
    assert len(response.id) == 23  # the fake's responseId, not the request id
    [sent] = fake.requests
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert "metadata" not in json.dumps(sent.body)


async def test_chat_tool_call_and_its_result_round_trip(
    provider: GeminiProvider, fake: FakeGemini
) -> None:
    fake.require_thought_signatures = True
    first = chat_request("Paris", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    response = await provider.chat(first, upstream())
    [call] = response.message.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_0__thought__")
    assert json.loads(call.arguments) == {"text": "Paris"}
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert response.usage.output_tokens == 5 + 12  # thinking tokens count as output
    assert fake.requests[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    result = pb.Message(
        role=pb.ROLE_TOOL, tool_call_id=call.id, content=[pb.ContentPart(text='{"temp": 21}')]
    )
    second = pb.ChatRequest(
        messages=[user("Paris"), response.message, result], tools=[WEATHER_TOOL]
    )
    answer = await provider.chat(second, upstream())
    assert answer.message.content[0].text == 'echo: {"temp":21}'
    model_turn = fake.requests[1].body["contents"][1]
    assert "thoughtSignature" in model_turn["parts"][0]

    # A caller that rewrites the id loses the signature, and Gemini says so.
    second.messages[1].tool_calls[0].id = "call_0"
    second.messages[2].tool_call_id = "call_0"
    with pytest.raises(GatewayError) as caught:
        await provider.chat(second, upstream())
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing a thought_signature" in caught.value.message


async def test_stream_chat_ends_with_finish_and_usage(
    provider: GeminiProvider, fake: FakeGemini
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
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert sent.headers["accept"] == "text/event-stream"
    assert fake.streams_finished == 1


async def test_stream_chat_tool_call_comes_whole(provider: GeminiProvider) -> None:
    request = chat_request(
        "Lyon", tools=[WEATHER_TOOL], tool_choice=pb.ToolChoice(function_name="get_weather")
    )
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    [piece] = [piece for m in deltas for piece in m.tool_calls]
    assert (piece.index, piece.name) == (0, "get_weather")
    assert piece.id.startswith("call_0__thought__")
    assert json.loads(piece.arguments) == {"text": "Lyon"}
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_json_schema_output(provider: GeminiProvider, fake: FakeGemini) -> None:
    schema = json_format.ParseDict({"type": "object"}, pb.JsonSchema().schema)
    fmt = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(schema=schema)
    )
    response = await provider.chat(chat_request("hi", response_format=fmt), upstream())
    assert json.loads(response.message.content[0].text) == {"echo": "hi"}
    config = fake.requests[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == {"type": "object"}


async def test_max_tokens(provider: GeminiProvider, fake: FakeGemini) -> None:
    request = chat_request("a b c d e", sampling=pb.SamplingParams(max_tokens=2))
    response = await provider.chat(request, upstream())
    assert fake.requests[0].body["generationConfig"]["maxOutputTokens"] == 2
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.message.content[0].text == "echo: a"


@pytest.mark.parametrize("trigger", ["[blocked]", "[unsafe]"])
async def test_safety_blocks_are_a_clear_finish_reason(
    provider: GeminiProvider, trigger: str
) -> None:
    response = await provider.chat(chat_request(f"tell me {trigger}"), upstream())
    assert response.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
    assert not response.message.content
    *_, last = await collect(provider.stream_chat(chat_request(f"x {trigger}"), upstream()))
    assert last.finish_reason == pb.FINISH_REASON_CONTENT_FILTER


async def test_every_field_we_send_is_one_gemini_knows(
    provider: GeminiProvider, fake: FakeGemini
) -> None:
    # The fake refuses unknown fields as Gemini does; this request sets every field we map.
    request = json_format.Parse(
        (GOLDEN / "chat_full" / "request.json").read_text(), pb.ChatRequest()
    )
    response = await provider.chat(request, upstream())
    assert response.message.tool_calls[0].name == "get_forecast"  # the request names it
    parts = fake.requests[0].body["contents"][0]["parts"]
    assert [next(iter(part)) for part in parts] == ["text", "fileData", "inlineData", "inlineData"]


async def test_embed_one_and_many(provider: GeminiProvider, fake: FakeGemini) -> None:
    for inputs, method in ((["a"], "embedContent"), (["a", "bbb", "cc"], "batchEmbedContents")):
        request = pb.EmbedRequest(model="embed", inputs=inputs, dimensions=5)
        response = await provider.embed(request, upstream())
        assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:{method}"
        assert [e.index for e in response.embeddings] == list(range(len(inputs)))
        for embedding, text in zip(response.embeddings, inputs, strict=True):
            assert list(embedding.values) == fake_vector(text, embedding.index, 5)
        assert response.usage.input_tokens == 0  # Gemini reports no embedding tokens
        assert (response.model, response.provider) == (MODEL, "gemini")


async def test_completion_is_unimplemented(provider: GeminiProvider, fake: FakeGemini) -> None:
    request = pb.CompleteRequest(prompt="roses are")
    with pytest.raises(GatewayError) as caught:
        await provider.complete(request, upstream())
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.reason == Reason.CAPABILITY_UNSUPPORTED
    received, error = await collect_until_error(provider.stream_complete(request, upstream()))
    assert (received, error.code) == ([], grpc.StatusCode.UNIMPLEMENTED)
    assert fake.requests == []


# --- headers ----------------------------------------------------------------------------------


async def test_headers(fake: FakeGemini, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, headers={"X-Tenant": "t"})
    await provider.chat(chat_request(), upstream(extra_headers={"traceparent": "00-abc-01"}))
    headers = fake.requests[0].headers
    assert headers["x-goog-api-key"] == KEY
    assert headers["x-request-id"] == "req-123"
    assert headers["x-tenant"] == "t"
    assert headers["traceparent"] == "00-abc-01"
    assert "authorization" not in headers
    assert KEY not in fake.requests[0].path  # never in the URL, where logs would keep it


async def test_no_key_sends_no_key_header(fake: FakeGemini, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, api_key=None)
    with pytest.raises(GatewayError) as caught:
        await provider.embed(pb.EmbedRequest(inputs=["x"]), upstream())
    assert "x-goog-api-key" not in fake.requests[0].headers
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED


# --- errors -----------------------------------------------------------------------------------

FAULTS = {
    "429": (Fault.rate_limited(retry_delay="7s"), grpc.StatusCode.RESOURCE_EXHAUSTED, 7.0),
    "429-header": (Fault.rate_limited("9s", "3"), grpc.StatusCode.RESOURCE_EXHAUSTED, 3.0),
    "400-key": (Fault.invalid_api_key(), grpc.StatusCode.INTERNAL, None),
    "403": (Fault.permission_denied(), grpc.StatusCode.PERMISSION_DENIED, None),
    "404": (Fault.model_not_found(MODEL), grpc.StatusCode.NOT_FOUND, None),
    "500": (Fault.internal(), grpc.StatusCode.UNAVAILABLE, None),
    "503": (Fault.overloaded(), grpc.StatusCode.UNAVAILABLE, None),
    "400": (Fault.bad_request(f"bad header value {KEY}"), grpc.StatusCode.INVALID_ARGUMENT, None),
}
REASONS = {
    "429": Reason.UPSTREAM_RATE_LIMITED,
    "429-header": Reason.UPSTREAM_RATE_LIMITED,
    "400-key": Reason.UPSTREAM_AUTH_FAILED,
    "403": Reason.UPSTREAM_PERMISSION_DENIED,
    "404": Reason.UPSTREAM_MODEL_NOT_FOUND,
    "500": Reason.UPSTREAM_UNAVAILABLE,
    "503": Reason.UPSTREAM_UNAVAILABLE,
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


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("rpc", ["chat", "stream_chat", "embed"])
async def test_upstream_errors(
    provider: GeminiProvider, fake: FakeGemini, fault: str, rpc: str
) -> None:
    answer, code, retry_after = FAULTS[fault]
    fake.fail_next(answer)
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
    assert info.reason == REASONS[fault]
    assert info.domain == "unigate"
    assert info.metadata["deployment"] == "dep-1"
    assert info.metadata["http_status"] == str(answer.status)
    assert delay == retry_after
    assert KEY not in error.message
    assert KEY[:12] not in str(error.to_status())


async def test_a_wrong_key_is_an_operator_problem(
    fake: FakeGemini, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_key="AIzaSyWRONGwrong0123456789abcdefghijk")
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INTERNAL,
        Reason.UPSTREAM_AUTH_FAILED,
    )
    assert caught.value.metadata["vendor_reason"] == "API_KEY_INVALID"
    assert "AIzaSy" not in caught.value.message


async def test_deadline(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


async def test_deadline_mid_stream(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.chunk_delay = 0.15
    stream = provider.stream_chat(chat_request("a b c d e f"), upstream(0.6))
    received, error = await collect_until_error(stream)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received  # the first deltas got through before the deadline


async def test_unreachable_upstream_is_unavailable(transport: HttpTransport) -> None:
    async with FakeGemini() as gone:
        provider = make_provider(gone, transport)
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("knob", ["cut_after", "end_after", "error_after"])
async def test_stream_broken_mid_way(provider: GeminiProvider, fake: FakeGemini, knob: str) -> None:
    setattr(fake, knob, 2)  # "echo:" and " a", then the break
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [message.text for message in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == Reason.UPSTREAM_UNAVAILABLE


async def test_cancelled_consumer_closes_upstream(
    provider: GeminiProvider, fake: FakeGemini
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
    provider: GeminiProvider, fake: FakeGemini
) -> None:
    fake.chunk_delay = 0.05
    stream = provider.stream_chat(chat_request("w " * 100), upstream())
    assert (await anext(stream)).text == "echo:"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(fake.client_disconnected.wait(), 2)


async def test_stream_of_an_invalid_request_fails_when_iterated(
    provider: GeminiProvider, fake: FakeGemini
) -> None:
    bad = pb.Message(role=pb.ROLE_TOOL, tool_call_id="nope", content=[pb.ContentPart(text="x")])
    stream = provider.stream_chat(pb.ChatRequest(messages=[user("hi"), bad]), upstream())
    received, error = await collect_until_error(stream)
    assert (received, error.code) == ([], grpc.StatusCode.INVALID_ARGUMENT)
    assert fake.requests == []


# --- registry entry and settings --------------------------------------------------------------


async def test_kind_builds_a_provider(fake: FakeGemini, transport: HttpTransport) -> None:
    block = {"kind": "gemini", "base_url": fake.base_url + "/", "api_key": f" {KEY}\n"}
    settings = KIND.settings.model_validate(block)
    provider = KIND.factory("google", settings, transport)
    assert (provider.name, provider.kind) == ("google", "gemini")
    assert provider.capabilities() == pb.Capabilities(
        chat=True, streaming=True, tools=True, images=True, json_output=True, embeddings=True
    )
    response = await provider.chat(chat_request(), upstream())
    assert response.message.content[0].text == "echo: hello world"
    await provider.close()


def test_default_settings_point_at_google() -> None:
    settings = GeminiSettings(kind="gemini")
    assert settings.base_url == "https://generativelanguage.googleapis.com"
    assert settings.api_version == "v1beta"


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "gemini", "api_kee": "typo"},
        {"kind": "openai"},
        {"kind": "gemini", "base_url": "generativelanguage.googleapis.com"},
        {"kind": "gemini", "api_version": "v1beta/../x"},
        {"kind": "gemini", "api_key": "AIza\x00key"},
        {"kind": "gemini", "headers": {"x-a": "b\r\nc"}},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        GeminiSettings.model_validate(block)


def test_a_refused_key_is_not_echoed_by_the_config_error() -> None:
    # pydantic's own message shows the value (escaped); the config error must not.
    message = config_error("gemini", api_key="AIzaSECRET\x00key")
    assert "api_key" in message and "AIzaSECRET" not in message


def test_settings_repr_hides_the_key() -> None:
    settings = GeminiSettings(kind="gemini", api_key=KEY, headers={"x-goog-api-key": KEY})
    assert KEY not in repr(settings)
