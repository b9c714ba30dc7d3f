"""FakeAnthropic speaks the real wire format: the official `anthropic` SDK parses all it sends.

The SDK validates every body into its typed models (Message, RawMessageStreamEvent...), and its
`messages.stream()` helper rebuilds the final message from the events, tool input JSON included;
an error answer becomes the SDK's typed exception for that status. Retries are off, so each
call is one request to the fake on 127.0.0.1.

Note: this SDK (2.x) sends its api_key as `Authorization: Bearer`, where the adapter sends the
documented `x-api-key`; the fake accepts both, and test_anthropic_provider checks x-api-key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest

from tests.fakes.anthropic_server import FakeAnthropic, Fault

KEY = "sk-ant-fidelity-0123456789"
MODEL = "claude-haiku-4-5"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0)
    yield sdk
    await sdk.close()


WEATHER: anthropic.types.ToolParam = {
    "name": "get_weather",
    "description": "Current weather.",
    "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
}


async def test_unary_message(client: anthropic.AsyncAnthropic, fake: FakeAnthropic) -> None:
    fake.cache_read_tokens = 7
    message = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        system="be brief",
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    [block] = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)
    assert message.usage.cache_read_input_tokens == 7
    assert (message._request_id or "").startswith("req_")
    assert fake.requests[0].path == "/v1/messages"


async def test_unary_tool_use(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    [block] = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert (block.name, block.input) == ("get_weather", {"text": "Paris"})
    assert message.stop_reason == "tool_use"


async def test_raw_event_stream(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "one two"}],
        stream=True,
    )
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the ping between them is read and skipped by the SDK
    text = "".join(
        e.delta.text
        for e in events
        if isinstance(e, anthropic.types.RawContentBlockDeltaEvent)
        and isinstance(e.delta, anthropic.types.TextDelta)
    )
    assert text == "echo: one two"
    delta = events[-2]
    assert isinstance(delta, anthropic.types.RawMessageDeltaEvent)
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("end_turn", 3)


async def test_stream_helper_rebuilds_a_tool_call(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Lyon and more words to slice"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    ) as stream:
        partials = [event.partial_json async for event in stream if event.type == "input_json"]
        final = await stream.get_final_message()
    assert len([p for p in partials if p]) > 2  # the input came in slices
    [block] = final.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert block.input == {"text": "Lyon and more words to slice"}
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.rate_limited(retry_after=3), anthropic.RateLimitError),
        (Fault.overloaded(), anthropic.OverloadedError),
        (Fault.authentication(), anthropic.AuthenticationError),
        (Fault.model_not_found(MODEL), anthropic.NotFoundError),
        (Fault.bad_request("max_tokens: Field required"), anthropic.BadRequestError),
        (Fault.api_error(), anthropic.InternalServerError),
    ],
)
async def test_error_answers_become_typed_errors(
    client: anthropic.AsyncAnthropic,
    fake: FakeAnthropic,
    fault: Fault,
    error_type: type[anthropic.APIStatusError],
) -> None:
    fake.fail_next(fault)
    with pytest.raises(error_type) as caught:
        await client.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == fault.status
    assert caught.value.body == fault.body
    assert caught.value.request_id == fault.body["request_id"]


async def test_in_stream_error_event(client: anthropic.AsyncAnthropic, fake: FakeAnthropic) -> None:
    fake.error_after = 4  # message_start, content_block_start, ping, first delta
    stream = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "a b c"}],
        stream=True,
    )
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async for event in stream:
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_the_fake_refuses_what_anthropic_refuses(
    client: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="tool_result"):
        await client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}],
                },
            ],
        )
    with pytest.raises(anthropic.AuthenticationError):
        await client.with_options(api_key="sk-ant-wrong").messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
