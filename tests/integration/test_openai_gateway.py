"""The real server in front of a real HTTP fake of OpenAI: translation, streaming,
error mapping, deadlines and cancellation, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.conftest import RunningGateway, StartGateway
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.helpers import error_info, retry_delay
from unigate.client import AsyncClient
from unigate.v1 import inference_pb2 as pb

KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def gateway(start_gateway: StartGateway, fake: FakeOpenAI) -> RunningGateway:
    config = {
        "logging": {"access_log": False},
        "auth": {"enabled": False},
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.base_url, "api_key": "${TEST_KEY}"}
        },
        "models": {
            # One attempt: these tests see each upstream answer as it is mapped (and the
            # client's own retry policy), not the gateway's retries (test_routing_gateway).
            "gpt": {
                "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
                "retry": {"attempts": 1},
            },
            "instruct": {
                "deployments": [{"provider": "openai", "model": "gpt-3.5-turbo-instruct"}]
            },
            "embed": {"deployments": [{"provider": "openai", "model": "text-embedding-3-small"}]},
        },
    }
    return await start_gateway(config, env={"TEST_KEY": KEY})


def chat(text: str = "hi there") -> pb.ChatRequest:
    return pb.ChatRequest(
        model="gpt", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


async def test_chat_round_trip(gateway: RunningGateway, fake: FakeOpenAI) -> None:
    response = await gateway.stub.Chat(chat(), metadata=(("x-request-id", "rid-7"),))
    assert response.message.content[0].text == "echo: hi there"
    assert (response.provider, response.model) == ("openai", "gpt-4o-mini")
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.output_tokens == 3
    assert response.gateway.deployment == "openai/gpt-4o-mini"
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"][-1]["role"] == "user"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-request-id"] == "rid-7"


async def test_stream_chat_round_trip(gateway: RunningGateway, fake: FakeOpenAI) -> None:
    chunks = [c async for c in gateway.stub.StreamChat(chat("one two three"))]
    assert "".join(c.text for c in chunks) == "echo: one two three"
    last = chunks[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.usage.output_tokens == 4
    assert last.gateway.deployment == "openai/gpt-4o-mini"
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert fake.requests[-1].body["stream"] is True
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_complete_stream_complete_and_embed(gateway: RunningGateway) -> None:
    request = pb.CompleteRequest(model="instruct", prompt="say this")
    unary = await gateway.stub.Complete(request)
    assert unary.text.strip() == "echo: say this"
    streamed = [c async for c in gateway.stub.StreamComplete(request)]
    assert "".join(c.text for c in streamed).strip() == "echo: say this"
    assert streamed[-1].finish_reason == pb.FINISH_REASON_STOP

    embedded = await gateway.stub.Embed(pb.EmbedRequest(model="embed", inputs=["a", "b c"]))
    assert [e.index for e in embedded.embeddings] == [0, 1]
    assert len(embedded.embeddings[0].values) == 8
    assert embedded.usage.input_tokens == 3


@pytest.mark.parametrize(
    ("fault", "code", "reason", "words"),
    [
        (Fault.rate_limited(7), grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", "TPM"),
        (Fault.invalid_api_key(KEY), grpc.StatusCode.INTERNAL, "UPSTREAM_AUTH_FAILED", "API key"),
        (
            Fault.insufficient_quota(),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "UPSTREAM_QUOTA_EXHAUSTED",
            "exceeded your current quota",
        ),
        (
            Fault.model_not_found("gpt-4o-mini"),
            grpc.StatusCode.NOT_FOUND,
            "UPSTREAM_MODEL_NOT_FOUND",
            "does not exist",
        ),
        (Fault.server_error(), grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "500"),
        (
            Fault.bad_request("'messages' must contain the word 'json'", "messages"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "must contain the word",
        ),
    ],
)
async def test_upstream_errors_map_to_statuses(
    gateway: RunningGateway,
    fake: FakeOpenAI,
    fault: Fault,
    code: grpc.StatusCode,
    reason: str,
    words: str,
) -> None:
    fake.fail_next(fault)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    error = caught.value
    details = error.details() or ""
    assert error.code() == code
    assert error_info(error).reason == reason
    assert words in details
    assert KEY not in details and KEY[:10] not in details and KEY[-4:] not in details
    if "Retry-After" in fault.headers:
        assert retry_delay(error) == pytest.approx(7)
    # The next call goes through: one failure never poisons the server.
    assert (await gateway.stub.Chat(chat("again"))).message.content[0].text == "echo: again"


async def test_stream_error_before_first_chunk(gateway: RunningGateway, fake: FakeOpenAI) -> None:
    fake.fail_next(Fault.rate_limited(3))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.StreamChat(chat()):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(caught.value) == pytest.approx(3)


async def test_stream_broken_midway_ends_with_error(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    fake.cut_after = 3
    received: list[pb.StreamChatResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in gateway.stub.StreamChat(chat("a b c d e f g")):
            received.append(chunk)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert received, "the deltas before the break reach the caller"
    assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in received)


async def test_stream_ending_without_finish_is_an_error(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    fake.end_after = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.StreamChat(chat("a b c d e f g")):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UPSTREAM_UNAVAILABLE"


async def test_caller_deadline_becomes_the_upstream_timeout(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    fake.delay = 3.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(), timeout=0.4)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway dropped the upstream request at the caller's deadline, not after 3 s.
    await asyncio.wait_for(fake.client_disconnected.wait(), timeout=1.0)
    assert loop.time() - started < 1.5


async def test_caller_deadline_cuts_the_upstream_stream(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    fake.chunk_delay = 0.1
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.StreamChat(chat("w " * 60), timeout=0.5):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(fake.client_disconnected.wait(), timeout=1.0)
    assert loop.time() - started < 1.5
    assert fake.streams_finished == 0


async def test_caller_cancel_closes_the_upstream_stream(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    fake.chunk_delay = 0.2
    call = gateway.stub.StreamChat(chat("w " * 40))
    first = await call.read()
    assert isinstance(first, pb.StreamChatResponse)
    call.cancel()
    await asyncio.wait_for(fake.client_disconnected.wait(), timeout=5)
    assert fake.streams_finished == 0


async def test_client_retries_an_unavailable_answer_before_any_headers(
    gateway: RunningGateway, fake: FakeOpenAI
) -> None:
    """Nothing is sent before the upstream answers, so gRPC's retry policy can work."""
    fake.fail_next(Fault.server_error())
    async with AsyncClient(gateway.target) as client:
        reply = await client.chat(model="gpt", messages=["retry me"])
        assert reply.message.content[0].text == "echo: retry me"
        assert len(fake.requests) == 2

        fake.fail_next(Fault.server_error())
        chunks = [c async for c in client.stream_chat(model="gpt", messages=["and me"])]
        assert "".join(c.text for c in chunks) == "echo: and me"
        assert len(fake.requests) == 4
