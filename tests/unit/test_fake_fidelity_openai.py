"""FakeOpenAI speaks OpenAI's (and Azure OpenAI's) wire format: the official `openai` SDK,
pointed at it with retries off, parses every answer it sends (the SDK builds typed models from
bodies and stream chunks, and raises its typed errors from error answers)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Fault, fake_vector

KEY = "sk-fidelity-0123456789abcdef"
TOOL: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
        yield sdk


async def test_chat(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    response = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert response.choices[0].message.content == "echo: hello there"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens == 3
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_stream_with_include_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


async def test_streamed_tool_call(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[TOOL],
        tool_choice="required",
        stream=True,
    )
    pieces = [call async for chunk in stream for call in chunk.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "lookup"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments) == {"text": "Paris"}


async def test_completions(client: openai.AsyncOpenAI) -> None:
    response = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="roses")
    assert response.choices[0].text == " echo: roses"
    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="a b", stream=True, max_tokens=2
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == " echo: a"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_embeddings_float(client: openai.AsyncOpenAI) -> None:
    response = await client.embeddings.create(
        model="text-embedding-3-small", input=["ab", "cde"], encoding_format="float", dimensions=4
    )
    assert [e.embedding for e in response.data] == [
        fake_vector("ab", 0, 4),
        fake_vector("cde", 1, 4),
    ]


async def test_embeddings_base64(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    explicit = await client.embeddings.create(
        model="text-embedding-3-small", input="abc", encoding_format="base64"
    )
    raw = base64.b64decode(str(explicit.data[0].embedding))
    assert list(struct.unpack("<8f", raw)) == fake_vector("abc", 0, 8)
    # Without a format the SDK asks for base64 itself and decodes it to floats.
    implicit = await client.embeddings.create(model="text-embedding-3-small", input="abc")
    assert fake.requests[-1].body["encoding_format"] == "base64"
    assert implicit.data[0].embedding == fake_vector("abc", 0, 8)


async def test_rate_limit_is_the_sdks_rate_limit_error(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.fail_next(Fault.rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"
    assert len(fake.requests) == 1


# --- Azure OpenAI -----------------------------------------------------------------------------


@pytest.fixture
async def azure(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake.azure_endpoint, api_version="2024-10-21", api_key=KEY, max_retries=0
    ) as sdk:
        yield sdk


async def test_azure_chat_at_the_deployment_url(
    azure: openai.AsyncAzureOpenAI, fake: FakeOpenAI
) -> None:
    response = await azure.chat.completions.create(
        model="my-gpt4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.choices[0].message.content == "echo: hi"
    [sent] = fake.requests
    assert sent.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers


async def test_azure_stream_begins_with_the_prompt_filter_chunk(
    azure: openai.AsyncAzureOpenAI,
) -> None:
    stream = await azure.chat.completions.create(
        model="my-gpt4o",
        messages=[{"role": "user", "content": "a b"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert (chunks[0].id, chunks[0].model, chunks[0].choices) == ("", "", [])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"
    assert chunks[-1].usage is not None


async def test_azure_embeddings_and_completions(azure: openai.AsyncAzureOpenAI) -> None:
    vectors = await azure.embeddings.create(model="my-embed", input=["x"], encoding_format="float")
    assert vectors.data[0].embedding == fake_vector("x", 0, 8)
    completion = await azure.completions.create(model="my-instruct", prompt="go")
    assert completion.choices[0].text == " echo: go"


async def test_azure_content_filter_is_a_bad_request(
    azure: openai.AsyncAzureOpenAI, fake: FakeOpenAI
) -> None:
    fake.fail_next(Fault.azure_content_filter())
    with pytest.raises(openai.BadRequestError) as caught:
        await azure.chat.completions.create(
            model="my-gpt4o", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "content_filter"


async def test_azure_rate_limit(azure: openai.AsyncAzureOpenAI, fake: FakeOpenAI) -> None:
    fake.fail_next(Fault.azure_rate_limited(retry_after=6))
    with pytest.raises(openai.RateLimitError) as caught:
        await azure.chat.completions.create(
            model="my-gpt4o", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after-ms"] == "6000"


async def test_azure_v1_api_with_the_plain_client(fake: FakeOpenAI) -> None:
    base_url = f"{fake.azure_endpoint}/openai/v1/"
    async with openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0) as sdk:
        response = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hey"}]
        )
    assert response.choices[0].message.content == "echo: hey"
    assert fake.requests[0].path == "/openai/v1/chat/completions"
