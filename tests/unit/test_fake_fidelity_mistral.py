"""FakeMistral speaks Mistral's wire format: the official `mistralai` SDK, pointed at it with
retries off, parses every answer it sends (the SDK validates bodies and stream chunks against
its own models, so a missing or misshapen field fails here)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from mistralai.client import Mistral, errors
from mistralai.client.utils import BackoffStrategy, RetryConfig

from tests.fakes.mistral_server import FakeMistral, MistralFault
from tests.fakes.openai_server import fake_vector

KEY = "mistral-fidelity-key-0123456789"
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), retry_connection_errors=False)
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeMistral]:
    async with FakeMistral() as server:
        yield server


@pytest.fixture
def client(fake: FakeMistral) -> Mistral:
    # server_url without /v1: the SDK adds /v1/... as the gateway's adapter does.
    return Mistral(api_key=KEY, server_url=fake.base_url, retry_config=NO_RETRIES)


async def test_chat(client: Mistral, fake: FakeMistral) -> None:
    response = await client.chat.complete_async(
        model="mistral-small-latest",
        messages=[{"role": "user", "content": "hello there"}],
        random_seed=7,
        safe_prompt=True,
    )
    assert response.choices[0].message.content == "echo: hello there"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 3
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"


async def test_stream_with_usage_on_the_last_chunk(client: Mistral) -> None:
    stream = await client.chat.stream_async(
        model="mistral-small-latest", messages=[{"role": "user", "content": "one two"}]
    )
    chunks = [event.data async for event in stream]
    text = "".join(str(c.choices[0].delta.content or "") for c in chunks)
    assert text == "echo: one two"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_of_a_forced_tool_call(client: Mistral) -> None:
    stream = await client.chat.stream_async(
        model="mistral-small-latest",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[TOOL],
        tool_choice="any",
    )
    chunks = [event.data async for event in stream]
    [call] = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert call.function.name == "lookup"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"text": "Paris"}
    assert len(call.id) == 9 and call.id.isalnum()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_result_round_trip(client: Mistral) -> None:
    forced = await client.chat.complete_async(
        model="mistral-small-latest",
        messages=[{"role": "user", "content": "Lyon"}],
        tools=[TOOL],
        tool_choice="any",
    )
    call = forced.choices[0].message.tool_calls[0]
    answer = await client.chat.complete_async(
        model="mistral-small-latest",
        messages=[
            {"role": "user", "content": "Lyon"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "lookup", "tool_call_id": call.id, "content": "sunny"},
            {"role": "user", "content": "so?"},
        ],
        tools=[TOOL],
    )
    assert answer.choices[0].message.content == "echo: so?"


async def test_fim_completion(client: Mistral) -> None:
    response = await client.fim.complete_async(
        model="codestral-latest", prompt="def f(", max_tokens=2
    )
    assert response.choices[0].message.content == " echo: def"
    assert response.choices[0].finish_reason == "length"


async def test_embeddings(client: Mistral) -> None:
    response = await client.embeddings.create_async(model="mistral-embed", inputs=["ab", "cde"])
    assert [d.index for d in response.data] == [0, 1]
    assert response.data[1].embedding == fake_vector("cde", 1, 8)
    assert response.usage.prompt_tokens == 2


async def test_unknown_field_is_the_sdks_typed_validation_error(
    client: Mistral, fake: FakeMistral
) -> None:
    fake.fail_next(MistralFault.unprocessable("seed", "stream_options"))
    with pytest.raises(errors.HTTPValidationError) as caught:
        await client.chat.complete_async(
            model="mistral-small-latest", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 422
    assert caught.value.data.detail is not None
    assert [d.loc for d in caught.value.data.detail] == [
        ["body", "seed"],
        ["body", "stream_options"],
    ]


async def test_rate_limit_is_an_sdk_error_with_its_status(
    client: Mistral, fake: FakeMistral
) -> None:
    fake.fail_next(MistralFault.rate_limited(retry_after=3))
    with pytest.raises(errors.SDKError) as caught:
        await client.embeddings.create_async(model="mistral-embed", inputs=["x"])
    assert caught.value.status_code == 429
    assert caught.value.headers["retry-after"] == "3"
    assert json.loads(caught.value.body)["type"] == "rate_limited"
    assert len(fake.requests) == 1  # retries off: one attempt
