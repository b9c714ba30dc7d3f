"""MistralProvider over a real HttpTransport against FakeMistral on 127.0.0.1.

FakeMistral refuses unknown fields (422) and foreign tool call ids (400) as Mistral does, so
these tests also prove that the adapter sends nothing Mistral would reject."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pydantic
import pytest

from tests.fakes.mistral_server import FakeMistral, MistralFault
from tests.fakes.openai_server import fake_vector
from tests.unit.test_openai_provider import collect, collect_until_error, status_details
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.mistral import KIND, MistralProvider, MistralSettings
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "mistral-test-key-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeMistral]:
    async with FakeMistral() as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    http = HttpTransport()
    yield http
    await http.close()


@pytest.fixture
def provider(fake: FakeMistral, transport: HttpTransport) -> MistralProvider:
    return make_provider(fake, transport)


def make_provider(fake: FakeMistral, transport: HttpTransport, **settings: Any) -> MistralProvider:
    options: dict[str, Any] = {"kind": "mistral", "base_url": fake.base_url, "api_key": KEY}
    return MistralProvider("mis", MistralSettings(**options | settings), transport)


def upstream(timeout: float = 5.0, model: str = "mistral-small-latest") -> UpstreamCall:
    return UpstreamCall("dep-m", model, timeout, "req-m1")


def chat_request(text: str = "hello world", **fields: Any) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])
    return pb.ChatRequest(model="fast", messages=[message], **fields)


WEATHER_TOOL = pb.Tool(name="get_weather", description="Weather for a city")
REQUIRED = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)


# --- the happy paths --------------------------------------------------------------------------


async def test_chat(provider: MistralProvider, fake: FakeMistral) -> None:
    request = chat_request(user="u-1", sampling=pb.SamplingParams(seed=5, presence_penalty=0.1))
    response = await provider.chat(request, upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)
    assert response.provider == "mistral"
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-request-id"] == "req-m1"
    assert sent.body["random_seed"] == 5
    assert "safe_prompt" not in sent.body


async def test_safe_prompt_setting(fake: FakeMistral, transport: HttpTransport) -> None:
    await make_provider(fake, transport, safe_prompt=True).chat(chat_request(), upstream())
    assert fake.requests[0].body["safe_prompt"] is True


async def test_forced_tool_call_and_its_result_round_trip(provider: MistralProvider) -> None:
    request = chat_request("Paris", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    response = await provider.chat(request, upstream())
    [call] = response.message.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"text": "Paris"})
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    # The caller sends Mistral's call back, and one made by another vendor: both accepted.
    foreign = pb.ToolCall(id="call_Aa1Bb2Cc3Dd4", name="get_weather", arguments="{}")
    follow_up = pb.ChatRequest(
        tools=[WEATHER_TOOL],
        messages=[
            *request.messages,
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call, foreign]),
            tool_result(call.id, "sunny"),
            tool_result(foreign.id, "cloudy"),
            pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="and so?")]),
        ],
    )
    answer = await provider.chat(follow_up, upstream())
    assert answer.message.content[0].text == "echo: and so?"


def tool_result(call_id: str, text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_TOOL, tool_call_id=call_id, content=[pb.ContentPart(text=text)])


async def test_stream_chat_ends_with_finish_and_usage(
    provider: MistralProvider, fake: FakeMistral
) -> None:
    *deltas, last = await collect(provider.stream_chat(chat_request("one two three"), upstream()))
    assert "".join(m.text for m in deltas) == "echo: one two three"
    assert not any(m.HasField("usage") or m.finish_reason for m in deltas)
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert (last.usage.input_tokens, last.usage.output_tokens) == (3, 4)
    assert last.provider == "mistral"
    [sent] = fake.requests
    assert sent.body["stream"] is True
    assert "stream_options" not in sent.body
    assert sent.headers["accept"] == "text/event-stream"


async def test_stream_chat_tool_call(provider: MistralProvider) -> None:
    request = chat_request("Lyon", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    [piece] = [piece for m in deltas for piece in m.tool_calls]
    assert (piece.index, piece.name, len(piece.id)) == (0, "get_weather", 9)
    assert json.loads(piece.arguments) == {"text": "Lyon"}
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert last.usage.output_tokens > 0


async def test_images_are_sent_as_image_url_chunks(
    provider: MistralProvider, fake: FakeMistral
) -> None:
    image = pb.Image(data=b"\x89PNG", mime_type="image/png")
    message = pb.Message(
        role=pb.ROLE_USER,
        content=[pb.ContentPart(text="what is this"), pb.ContentPart(image=image)],
    )
    await provider.chat(pb.ChatRequest(messages=[message]), upstream())
    [_, sent_image] = fake.requests[0].body["messages"][0]["content"]
    assert sent_image == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw=="},
    }


async def test_fim_completion(fake: FakeMistral, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, fim_completion=True)
    assert provider.capabilities().completion
    call = upstream(model="codestral-latest")
    request = pb.CompleteRequest(prompt="def f(", sampling=pb.SamplingParams(max_tokens=2))
    response = await provider.complete(request, call)
    assert (response.text, response.finish_reason) == (" echo: def", pb.FINISH_REASON_LENGTH)
    assert fake.requests[0].path == "/v1/fim/completions"
    *deltas, last = await collect(provider.stream_complete(request, call))
    assert "".join(m.text for m in deltas) == " echo: def"
    assert (last.finish_reason, last.usage.output_tokens) == (pb.FINISH_REASON_LENGTH, 2)


async def test_fim_on_a_chat_model_is_refused_by_mistral(
    fake: FakeMistral, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, fim_completion=True)
    with pytest.raises(GatewayError) as caught:
        await provider.complete(pb.CompleteRequest(prompt="x"), upstream())
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "Invalid model: mistral-small-latest" in caught.value.message


async def test_completion_is_off_by_default(provider: MistralProvider, fake: FakeMistral) -> None:
    assert not provider.capabilities().completion
    with pytest.raises(GatewayError) as caught:
        await provider.complete(pb.CompleteRequest(prompt="x"), upstream())
    _, error = await collect_until_error(
        provider.stream_complete(pb.CompleteRequest(prompt="x"), upstream())
    )
    for refused in (caught.value, error):
        assert refused.code == grpc.StatusCode.UNIMPLEMENTED
        assert refused.reason == Reason.CAPABILITY_UNSUPPORTED
    assert fake.requests == []


async def test_embed(fake: FakeMistral, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, embedding_dtype="int8")
    request = pb.EmbedRequest(inputs=["a", "bbb"], dimensions=4, user="u")
    response = await provider.embed(request, upstream(model="codestral-embed"))
    assert [list(e.values) for e in response.embeddings] == [
        [v * 8 for v in fake_vector(text, i, 4)] for i, text in enumerate(request.inputs)
    ]
    assert response.usage.input_tokens == 2
    body = fake.requests[0].body
    assert (body["output_dimension"], body["output_dtype"]) == (4, "int8")


# --- errors -----------------------------------------------------------------------------------

FAULTS = {
    "429": (MistralFault.rate_limited(retry_after=3), grpc.StatusCode.RESOURCE_EXHAUSTED, 3.0),
    "401": (MistralFault.unauthorized(), grpc.StatusCode.INTERNAL, None),
    "400-model": (MistralFault.invalid_model("nope"), grpc.StatusCode.NOT_FOUND, None),
    "500": (MistralFault.server_error(), grpc.StatusCode.UNAVAILABLE, None),
    "400": (MistralFault.bad_request(f"bad key {KEY}"), grpc.StatusCode.INVALID_ARGUMENT, None),
    "422": (MistralFault.unprocessable("seed"), grpc.StatusCode.INVALID_ARGUMENT, None),
}


@pytest.mark.parametrize("status", sorted(FAULTS))
@pytest.mark.parametrize("rpc", ["chat", "stream_chat", "embed"])
async def test_upstream_errors(
    provider: MistralProvider, fake: FakeMistral, status: str, rpc: str
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
    assert info.domain == "unigate"
    assert info.metadata["deployment"] == "dep-m"
    assert delay == retry_after
    assert KEY not in error.message
    assert KEY[:12] not in str(error.to_status())


async def test_validation_error_names_the_field(
    provider: MistralProvider, fake: FakeMistral
) -> None:
    fake.fail_next(MistralFault.unprocessable("messages.0.name"))
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert "body.messages.0.name: Extra inputs are not permitted" in caught.value.message


async def test_deadline(provider: MistralProvider, fake: FakeMistral) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("knob", ["cut_after", "end_after", "error_after"])
async def test_stream_broken_mid_way(
    provider: MistralProvider, fake: FakeMistral, knob: str
) -> None:
    setattr(fake, knob, 3)  # the role chunk, then "echo:" and " a"
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [message.text for message in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == Reason.UPSTREAM_UNAVAILABLE


async def test_cancelled_consumer_closes_upstream(
    provider: MistralProvider, fake: FakeMistral
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


# --- registry entry and settings --------------------------------------------------------------


async def test_kind_builds_a_provider(fake: FakeMistral, transport: HttpTransport) -> None:
    settings = KIND.settings.model_validate({"kind": "mistral", "base_url": fake.base_url})
    provider = KIND.factory("mis", settings, transport)
    assert provider.kind == "mistral"
    caps = provider.capabilities()
    assert (caps.chat, caps.streaming, caps.tools, caps.images) == (True, True, True, True)
    assert (caps.json_output, caps.embeddings, caps.completion) == (True, True, False)
    response = await provider.chat(chat_request(), upstream())
    assert "authorization" not in fake.requests[0].headers
    assert response.message.content[0].text == "echo: hello world"


def test_default_base_url_is_mistrals() -> None:
    assert MistralSettings(kind="mistral").base_url == "https://api.mistral.ai"


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "mistral", "random_seed": 1},
        {"kind": "mistral", "base_url": "api.mistral.ai"},
        {"kind": "mistral", "embedding_dtype": "float16"},
        {"kind": "mistral", "api_key": "two words"},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        MistralSettings.model_validate(block)


def test_settings_repr_hides_the_key() -> None:
    assert KEY not in repr(MistralSettings(kind="mistral", api_key=KEY))
