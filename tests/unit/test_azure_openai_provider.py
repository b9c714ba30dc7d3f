"""AzureOpenAIProvider over a real HttpTransport against FakeOpenAI's Azure routes, which check
the api-version and the credentials as Azure does and begin streams with Azure's prompt
filter chunk."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
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
from unigate.gateway.providers.azure_openai import (
    KIND,
    AzureOpenAIProvider,
    AzureOpenAISettings,
)
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

KEY = "0123456789abcdef0123456789abcdef"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-token.signature"


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
def provider(fake: FakeOpenAI, transport: HttpTransport) -> AzureOpenAIProvider:
    return make_provider(fake, transport)


def make_provider(
    fake: FakeOpenAI, transport: HttpTransport, **settings: Any
) -> AzureOpenAIProvider:
    options: dict[str, Any] = {"kind": "azure_openai", "base_url": fake.azure_endpoint}
    options["api_key"] = KEY
    return AzureOpenAIProvider("azure", AzureOpenAISettings(**options | settings), transport)


def upstream(timeout: float = 5.0, deployment: str = "gpt4o-prod") -> UpstreamCall:
    return UpstreamCall("dep-az", deployment, timeout, "req-az1")


async def test_chat_goes_to_the_deployment_with_the_api_key(
    provider: AzureOpenAIProvider, fake: FakeOpenAI
) -> None:
    response = await provider.chat(chat_request(), upstream())
    assert response.message.content[0].text == "echo: hello world"
    assert response.provider == "azure_openai"
    [sent] = fake.requests
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["x-request-id"] == "req-az1"


async def test_entra_id_token_is_a_bearer_header(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_key=None, bearer_token=TOKEN)
    await provider.embed(pb.EmbedRequest(inputs=["x"]), upstream(deployment="embed"))
    headers = fake.requests[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert "api-key" not in headers


async def test_token_echoed_in_an_error_is_redacted(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_key=None, bearer_token=TOKEN)
    fake.fail_next(Fault.bad_request(f"token {TOKEN} has no role on this resource"))
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert TOKEN not in caught.value.message
    assert "token [REDACTED] has no role" in caught.value.message


async def test_api_version_setting(fake: FakeOpenAI, transport: HttpTransport) -> None:
    provider = make_provider(fake, transport, api_version="2025-04-01-preview")
    await provider.chat(chat_request(), upstream())
    assert fake.requests[0].query == {"api-version": "2025-04-01-preview"}


async def test_v1_api_puts_the_model_in_the_body(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_style="v1")
    response = await provider.chat(chat_request(), upstream(deployment="gpt-4.1-nano"))
    assert response.model == "gpt-4.1-nano"
    [sent] = fake.requests
    assert (sent.path, sent.query) == ("/openai/v1/chat/completions", {})
    assert sent.body["model"] == "gpt-4.1-nano"


async def test_stream_chat_skips_the_prompt_filter_chunk(
    provider: AzureOpenAIProvider, fake: FakeOpenAI
) -> None:
    messages = await collect(provider.stream_chat(chat_request("one two"), upstream()))
    *deltas, last = messages
    assert "".join(m.text for m in deltas) == "echo: one two"
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.usage.total_tokens == 5
    # The first chunk had an empty id and model: every message has the real ones.
    assert {(m.id, m.model) for m in messages} == {(messages[0].id, "gpt4o-prod")}
    assert messages[0].id.startswith("chatcmpl-")
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}


async def test_stream_usage_can_be_switched_off_for_old_api_versions(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_version="2024-06-01", stream_usage=False)
    *_, last = await collect(provider.stream_chat(chat_request(), upstream()))
    assert "stream_options" not in fake.requests[0].body
    assert last.finish_reason == pb.FINISH_REASON_STOP


async def test_stream_tool_call(provider: AzureOpenAIProvider) -> None:
    request = chat_request("Oslo", tools=[WEATHER_TOOL], tool_choice=REQUIRED)
    *deltas, last = await collect(provider.stream_chat(request, upstream()))
    pieces = [piece for m in deltas for piece in m.tool_calls]
    assert pieces[0].name == "get_weather"
    assert json.loads("".join(p.arguments for p in pieces)) == {"text": "Oslo"}
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_complete_and_stream_complete(
    provider: AzureOpenAIProvider, fake: FakeOpenAI
) -> None:
    request = pb.CompleteRequest(prompt="roses are", sampling=pb.SamplingParams(max_tokens=2))
    response = await provider.complete(request, upstream(deployment="instruct"))
    assert response.text == " echo: roses"
    assert fake.requests[0].path == "/openai/deployments/instruct/completions"
    *deltas, last = await collect(
        provider.stream_complete(request, upstream(deployment="instruct"))
    )
    assert "".join(m.text for m in deltas) == " echo: roses"
    assert last.finish_reason == pb.FINISH_REASON_LENGTH


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embed(fake: FakeOpenAI, transport: HttpTransport, encoding: str) -> None:
    provider = make_provider(fake, transport, embedding_encoding=encoding)
    request = pb.EmbedRequest(inputs=["ab", "c"], dimensions=3)
    response = await provider.embed(request, upstream(deployment="embed-small"))
    assert [list(e.values) for e in response.embeddings] == [
        fake_vector("ab", 0, 3),
        fake_vector("c", 1, 3),
    ]
    assert fake.requests[0].path == "/openai/deployments/embed-small/embeddings"


# --- errors -----------------------------------------------------------------------------------

FAULTS = {
    "429": (Fault.azure_rate_limited(retry_after=6), grpc.StatusCode.RESOURCE_EXHAUSTED, 6.0),
    "400-filter": (Fault.azure_content_filter(), grpc.StatusCode.INVALID_ARGUMENT, None),
    "500": (Fault.server_error(), grpc.StatusCode.UNAVAILABLE, None),
}


@pytest.mark.parametrize("status", sorted(FAULTS))
@pytest.mark.parametrize("rpc", ["chat", "stream_chat"])
async def test_upstream_errors(
    provider: AzureOpenAIProvider, fake: FakeOpenAI, status: str, rpc: str
) -> None:
    fault, code, retry_after = FAULTS[status]
    fake.fail_next(fault)
    with pytest.raises(GatewayError) as caught:
        if rpc == "chat":
            await provider.chat(chat_request(), upstream())
        else:
            await collect(provider.stream_chat(chat_request(), upstream()))
    assert caught.value.code == code
    _, delay = status_details(caught.value)
    assert delay == retry_after


async def test_content_filter_refusal_keeps_azures_words(
    provider: AzureOpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.fail_next(Fault.azure_content_filter())
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert caught.value.reason == Reason.UPSTREAM_BAD_REQUEST
    assert caught.value.metadata["vendor_code"] == "content_filter"
    assert "triggering Azure OpenAI's content management policy" in caught.value.message


async def test_missing_credentials_are_azures_401(
    fake: FakeOpenAI, transport: HttpTransport
) -> None:
    provider = make_provider(fake, transport, api_key=None)
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream())
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INTERNAL,
        Reason.UPSTREAM_AUTH_FAILED,
    )


async def test_deadline(provider: AzureOpenAIProvider, fake: FakeOpenAI) -> None:
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), upstream(timeout=0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


async def test_stream_cut_mid_way(provider: AzureOpenAIProvider, fake: FakeOpenAI) -> None:
    fake.cut_after = 4  # the prompt filter chunk, the role chunk, then "echo:" and " a"
    received, error = await collect_until_error(
        provider.stream_chat(chat_request("a b c d"), upstream())
    )
    assert [m.text for m in received] == ["echo:", " a"]
    assert error.code == grpc.StatusCode.UNAVAILABLE


async def test_closing_the_stream_early_closes_upstream(
    provider: AzureOpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.chunk_delay = 0.05
    stream = provider.stream_chat(chat_request("w " * 100), upstream())
    assert (await anext(stream)).text == "echo:"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(fake.client_disconnected.wait(), 2)


async def test_kind_builds_a_provider(fake: FakeOpenAI, transport: HttpTransport) -> None:
    block = {"kind": "azure_openai", "base_url": fake.azure_endpoint, "api_key": KEY}
    provider = KIND.factory("azure", KIND.settings.model_validate(block), transport)
    assert provider.kind == "azure_openai"
    caps = provider.capabilities()
    assert all(getattr(caps, field.name) for field in pb.Capabilities.DESCRIPTOR.fields)
    assert (await provider.chat(chat_request(), upstream())).message.content[0].text


def test_settings_repr_hides_the_credentials() -> None:
    settings = AzureOpenAISettings(kind="azure_openai", base_url="https://r.example", api_key=KEY)
    assert KEY not in repr(settings)
    token = AzureOpenAISettings(
        kind="azure_openai", base_url="https://r.example", bearer_token=TOKEN
    )
    assert TOKEN not in repr(token)
