"""The whole call path through a real server, on the built-in mock provider."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import MOCK_CONFIG, RunningGateway, StartGateway
from tests.helpers import bad_request_fields, error_info
from unigate.gateway.providers.mock import embedding_of
from unigate.v1 import inference_pb2 as pb


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def chat(text: str = "hello there gateway", model: str = "mock") -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[user(text)])


async def test_chat_echoes_with_usage_and_gateway_facts(mock_gateway: RunningGateway) -> None:
    call = mock_gateway.stub.Chat(chat(), metadata=(("x-request-id", "req-42"),))
    response = await call
    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.message.content[0].text == "hello there gateway"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.provider == "mock"
    assert response.model == "echo"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3, 3)
    assert response.usage.total_tokens == 6
    assert response.gateway.request_id == "req-42"
    assert response.gateway.alias == "mock"
    assert response.gateway.deployment == "local-mock/echo"
    assert response.gateway.attempts == 1
    assert response.gateway.latency.ToNanoseconds() > 0
    assert ("x-request-id", "req-42") in tuple(await call.trailing_metadata())


async def test_request_id_is_generated_when_absent(mock_gateway: RunningGateway) -> None:
    call = mock_gateway.stub.Chat(chat())
    response = await call
    metadata = dict(await call.trailing_metadata())
    assert len(metadata["x-request-id"]) == 32
    assert response.gateway.request_id == metadata["x-request-id"]


async def test_stream_returns_request_id_in_headers(mock_gateway: RunningGateway) -> None:
    call = mock_gateway.stub.StreamChat(chat("a b"), metadata=(("x-request-id", "s-1"),))
    chunks = [c async for c in call]
    assert dict(await call.initial_metadata())["x-request-id"] == "s-1"
    assert chunks[-1].gateway.request_id == "s-1"


async def test_failed_call_returns_request_id_in_trailers(mock_gateway: RunningGateway) -> None:
    call = mock_gateway.stub.Chat(chat(model="nope"), metadata=(("x-request-id", "e-1"),))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert ("x-request-id", "e-1") in tuple(caught.value.trailing_metadata() or ())
    assert error_info(caught.value).reason == "MODEL_NOT_FOUND"
    assert tuple(await call.initial_metadata()) == ()


async def test_stream_chat_deltas_then_final_message(mock_gateway: RunningGateway) -> None:
    chunks = [c async for c in mock_gateway.stub.StreamChat(chat("one two three four"))]
    assert "".join(c.text for c in chunks) == "one two three four"
    assert len(chunks) == 5
    assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.usage.output_tokens == 4
    assert last.gateway.alias == "mock"
    assert len({c.id for c in chunks}) == 1


async def test_complete_and_stream_complete(mock_gateway: RunningGateway) -> None:
    request = pb.CompleteRequest(model="mock", prompt="once upon a time")
    response = await mock_gateway.stub.Complete(request)
    assert response.text == "once upon a time"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    chunks = [c async for c in mock_gateway.stub.StreamComplete(request)]
    assert "".join(c.text for c in chunks) == "once upon a time"
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP
    assert chunks[-1].usage.input_tokens == 4


async def test_embed_is_deterministic_and_ordered(mock_gateway: RunningGateway) -> None:
    request = pb.EmbedRequest(model="mock", inputs=["alpha", "beta gamma"], dimensions=8)
    first = await mock_gateway.stub.Embed(request)
    second = await mock_gateway.stub.Embed(request)
    assert [e.index for e in first.embeddings] == [0, 1]
    assert len(first.embeddings[0].values) == 8
    assert list(first.embeddings[0].values) == list(second.embeddings[0].values)
    assert first.embeddings[0].values != first.embeddings[1].values
    expected = embedding_of("alpha", 8)
    assert list(first.embeddings[0].values) == pytest.approx(expected, rel=1e-6)
    assert first.usage.input_tokens == 3


async def test_list_models_shows_aliases_and_capabilities(start_gateway: StartGateway) -> None:
    config = {
        **MOCK_CONFIG,
        "models": {
            "mock": MOCK_CONFIG["models"]["mock"],
            "mock-text-only": {
                "description": "no pictures",
                "deployments": [{"provider": "local-mock", "model": "echo"}],
                "capabilities": {"images": False},
            },
        },
    }
    gateway = await start_gateway(config)
    listing = await gateway.stub.ListModels(pb.ListModelsRequest())
    assert [m.alias for m in listing.models] == ["mock", "mock-text-only"]
    text_only = listing.models[1]
    assert text_only.description == "no pictures"
    assert list(text_only.providers) == ["mock"]
    assert text_only.capabilities.chat and not text_only.capabilities.images

    image = pb.ContentPart(image=pb.Image(url="https://example.invalid/cat.png"))
    request = pb.ChatRequest(
        model="mock-text-only",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="see"), image])],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'mock-text-only' does not support images" in (caught.value.details() or "")
    assert error_info(caught.value).reason == "CAPABILITY_UNSUPPORTED"


BAD_REQUESTS = [
    (pb.ChatRequest(messages=[user("x")]), "model", "model alias"),
    (pb.ChatRequest(model="mock"), "messages", "at least one message"),
    (
        pb.ChatRequest(model="mock", messages=[pb.Message(content=[pb.ContentPart(text="x")])]),
        "messages[0].role",
        "ROLE_USER",
    ),
    (
        pb.ChatRequest(
            model="mock", messages=[pb.Message(role=7, content=[pb.ContentPart(text="x")])]
        ),
        "messages[0].role",
        "ROLE_SYSTEM",
    ),
    (
        pb.ChatRequest(
            model="mock",
            messages=[pb.Message(role=pb.ROLE_TOOL, content=[pb.ContentPart(text="4")])],
        ),
        "messages[0].tool_call_id",
        "required",
    ),
    (
        pb.ChatRequest(
            model="mock",
            messages=[user("x")],
            sampling=pb.SamplingParams(temperature=-1),
        ),
        "sampling.temperature",
        "0 or more",
    ),
    (
        pb.ChatRequest(
            model="mock",
            messages=[
                pb.Message(
                    role=pb.ROLE_USER, content=[pb.ContentPart(image=pb.Image(data=b"\x89PNG"))]
                )
            ],
        ),
        "messages[0].content[0].image.mime_type",
        "required",
    ),
]


@pytest.mark.parametrize(("request_", "field", "hint"), BAD_REQUESTS)
async def test_bad_chat_requests_name_the_field(
    mock_gateway: RunningGateway, request_: pb.ChatRequest, field: str, hint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Chat(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_REQUEST"
    assert hint in bad_request_fields(caught.value)[field]
    assert field in (caught.value.details() or "")
    # The server keeps serving after every bad call.
    assert (await mock_gateway.stub.Chat(chat("still here"))).message.content[0].text


async def test_bad_stream_and_embed_requests(mock_gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Embed(pb.EmbedRequest(model="mock"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs" in bad_request_fields(caught.value)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Embed(pb.EmbedRequest(model="mock", inputs=["x"], dimensions=10**6))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 8192" in bad_request_fields(caught.value)["dimensions"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in mock_gateway.stub.StreamChat(pb.ChatRequest(model="mock")):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Complete(pb.CompleteRequest(model="mock"))
    assert "prompt" in bad_request_fields(caught.value)


async def test_unknown_alias_is_not_found(mock_gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Chat(chat(model="gpt-17"))
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'gpt-17'" in (error.details() or "") and "ListModels" in (error.details() or "")
    info = error_info(error)
    assert (info.reason, info.domain, info.metadata["alias"]) == (
        "MODEL_NOT_FOUND",
        "unigate",
        "gpt-17",
    )
    assert "model" in bad_request_fields(error)


async def test_alias_of_disabled_provider_says_why(start_gateway: StartGateway) -> None:
    config = {
        **MOCK_CONFIG,
        "providers": {
            **MOCK_CONFIG["providers"],
            "openai": {"kind": "openai", "api_key": "${OPENAI_API_KEY:-}"},
        },
        "models": {
            **MOCK_CONFIG["models"],
            "gpt": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        },
    }
    gateway = await start_gateway(config, env={})
    listing = await gateway.stub.ListModels(pb.ListModelsRequest())
    assert [m.alias for m in listing.models] == ["mock"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(model="gpt"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'gpt' is disabled" in (caught.value.details() or "")
    assert "its api_key is empty (set OPENAI_API_KEY)" in (caught.value.details() or "")


async def test_server_default_deadline_bounds_the_upstream(start_gateway: StartGateway) -> None:
    """Without a caller deadline only the gateway's own timeout can stop the call."""
    config = {
        **MOCK_CONFIG,
        "server": {"default_deadline": "300ms"},
        "providers": {"local-mock": {"kind": "mock", "latency": "5s"}},
    }
    gateway = await start_gateway(config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(caught.value).reason == "UPSTREAM_TIMEOUT"
    assert 0.25 < loop.time() - started < 1.5


async def test_health_per_service_and_drain(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "unigate.v1.InferenceService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await gateway.gateway.health.enter_graceful_shutdown()
    reply = await health.Check(health_pb2.HealthCheckRequest(service="unigate.v1.InferenceService"))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_unexpected_error_is_internal_with_request_id(
    mock_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = mock_gateway.gateway.providers["local-mock"]

    async def broken(*_: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(provider, "chat", broken)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Chat(chat(), metadata=(("x-request-id", "boom-1"),))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "boom-1" in (caught.value.details() or "")
    assert "secret internals" not in (caught.value.details() or "")
    monkeypatch.undo()
    assert (await mock_gateway.stub.Chat(chat("ok now"))).message.content[0].text == "ok now"


async def test_draining_gateway_refuses_new_calls_but_answers_health(
    mock_gateway: RunningGateway,
) -> None:
    mock_gateway.gateway.inflight.refuse_new_calls()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "DRAINING"
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in mock_gateway.stub.StreamChat(chat()):
            pass
    health = health_pb2_grpc.HealthStub(mock_gateway.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_message_size_limit_from_config(start_gateway: StartGateway) -> None:
    gateway = await start_gateway({**MOCK_CONFIG, "server": {"max_receive_message_bytes": 2048}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("x" * 4096))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await gateway.stub.Chat(chat("small"))).message.content[0].text == "small"


async def test_rpc_the_alias_lacks_is_unimplemented(start_gateway: StartGateway) -> None:
    config = {
        **MOCK_CONFIG,
        "models": {
            "chat-only": {
                "deployments": [{"provider": "local-mock", "model": "echo"}],
                "capabilities": {"embeddings": False, "streaming": False},
            }
        },
    }
    gateway = await start_gateway(config)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Embed(pb.EmbedRequest(model="chat-only", inputs=["x"]))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "'chat-only' does not support embeddings" in (caught.value.details() or "")
    info = error_info(caught.value)
    assert (info.reason, info.metadata["capability"]) == ("CAPABILITY_UNSUPPORTED", "embeddings")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.StreamChat(chat(model="chat-only")):
            pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "streaming" in (caught.value.details() or "")


async def test_empty_text_is_refused_unless_beside_tool_calls(
    mock_gateway: RunningGateway,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mock_gateway.stub.Chat(chat(""))
    assert bad_request_fields(caught.value) == {"messages[0].content[0].text": "must not be empty"}
    assistant = pb.Message(
        role=pb.ROLE_ASSISTANT,
        content=[pb.ContentPart(text="")],
        tool_calls=[pb.ToolCall(id="c1", name="lookup", arguments="{}")],
    )
    answer = pb.Message(role=pb.ROLE_TOOL, tool_call_id="c1", content=[pb.ContentPart(text="42")])
    request = pb.ChatRequest(model="mock", messages=[user("q"), assistant, answer, user("and?")])
    assert (await mock_gateway.stub.Chat(request)).message.content[0].text == "and?"


async def test_request_id_in_unary_headers_when_asked(start_gateway: StartGateway) -> None:
    running = await start_gateway({**MOCK_CONFIG, "server": {"request_id_in_headers": True}})
    call = running.stub.Chat(chat(), metadata=(("x-request-id", "hdr-1"),))
    response = await call
    assert ("x-request-id", "hdr-1") in tuple(await call.initial_metadata())
    assert response.gateway.request_id == "hdr-1"
