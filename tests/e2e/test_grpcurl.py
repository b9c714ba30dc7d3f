"""The gateway as an operator meets it: the real grpcurl binary, reflection only."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from .conftest import GatewayProcess, SpawnGateway, ThreadedFake, gateway_env, mock_config

pytestmark = pytest.mark.e2e

PROMPT = "the quick brown fox jumps over the lazy dog"
GRPCURL_RPC_ERROR_BASE = 64  # grpcurl exits with 64 + the gRPC status code


def chat_body(text: str, model: str = "mock") -> str:
    return json.dumps(
        {"model": model, "messages": [{"role": "ROLE_USER", "content": [{"text": text}]}]}
    )


def run_grpcurl(
    grpcurl: str,
    gateway: GatewayProcess,
    *target: str,
    flags: tuple[str, ...] = (),
    data: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """grpcurl [flags] ADDRESS target..., e.g. target ("describe", "unigate.v1.ChatRequest")."""
    command = [grpcurl, "-plaintext", "-max-time", "20", *flags]
    if data is not None:
        command += ["-d", data]
    return subprocess.run(
        [*command, gateway.address, *target], capture_output=True, text=True, timeout=30
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"grpcurl exit {result.returncode}:\n{result.stderr}"
    return result.stdout


def json_messages(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per response message, back to back."""
    decoder = json.JSONDecoder()
    messages: list[dict[str, Any]] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return messages
        message, index = decoder.raw_decode(text, index)
        messages.append(message)


def test_list_shows_services_via_reflection(grpcurl: str, shared_gateway: GatewayProcess) -> None:
    services = ok(run_grpcurl(grpcurl, shared_gateway, "list")).split()
    assert "unigate.v1.InferenceService" in services
    assert "grpc.health.v1.Health" in services


def test_describe_chat_request_shows_its_fields(
    grpcurl: str, shared_gateway: GatewayProcess
) -> None:
    out = ok(run_grpcurl(grpcurl, shared_gateway, "describe", "unigate.v1.ChatRequest"))
    assert "unigate.v1.ChatRequest is a message" in out
    for declaration in (
        r"string model = 1;",
        r"repeated \.unigate\.v1\.Message messages = 2;",
        r"\.unigate\.v1\.SamplingParams sampling = 3;",
        r"repeated \.unigate\.v1\.Tool tools = 4;",
        r"\.unigate\.v1\.ResponseFormat response_format = 7;",
    ):
        assert re.search(declaration, out), f"{declaration!r} not in:\n{out}"
    # The .proto comments are the documentation grpcurl shows.
    assert "// The model alias, as listed by ListModels. Required.\n  string model = 1;" in out


def test_describe_service_shows_six_rpcs(grpcurl: str, shared_gateway: GatewayProcess) -> None:
    out = ok(run_grpcurl(grpcurl, shared_gateway, "describe", "unigate.v1.InferenceService"))
    rpcs = dict(re.findall(r"rpc (\w+) \( \.unigate\.v1\.\w+ \) returns \( (stream )?", out))
    assert rpcs == {
        "Chat": "",
        "StreamChat": "stream ",
        "Complete": "",
        "StreamComplete": "stream ",
        "Embed": "",
        "ListModels": "",
    }, out
    assert "// Chat sends a conversation and returns the assistant's whole reply." in out


def test_chat_echoes_the_prompt(grpcurl: str, shared_gateway: GatewayProcess) -> None:
    out = ok(
        run_grpcurl(
            grpcurl, shared_gateway, "unigate.v1.InferenceService/Chat", data=chat_body("hi")
        )
    )
    (reply,) = json_messages(out)
    assert reply["message"]["role"] == "ROLE_ASSISTANT"
    assert reply["message"]["content"] == [{"text": "hi"}]
    assert reply["finishReason"] == "FINISH_REASON_STOP"
    assert reply["provider"] == "mock"
    assert reply["gateway"]["alias"] == "mock"


def test_stream_chat_deltas_concatenate_to_the_prompt(
    grpcurl: str, shared_gateway: GatewayProcess
) -> None:
    out = ok(
        run_grpcurl(
            grpcurl,
            shared_gateway,
            "unigate.v1.InferenceService/StreamChat",
            data=chat_body(PROMPT),
        )
    )
    messages = json_messages(out)
    assert len(messages) == len(PROMPT.split()) + 1
    assert "".join(m.get("text", "") for m in messages) == PROMPT
    assert [m.get("finishReason") for m in messages[:-1]] == [None] * (len(messages) - 1)
    last = messages[-1]
    assert last["finishReason"] == "FINISH_REASON_STOP"
    assert last["usage"]["outputTokens"] == len(PROMPT.split())
    assert len({m["id"] for m in messages}) == 1


def test_request_id_is_echoed_in_response_headers(
    grpcurl: str, shared_gateway: GatewayProcess
) -> None:
    out = ok(
        run_grpcurl(
            grpcurl,
            shared_gateway,
            "unigate.v1.InferenceService/Chat",
            flags=("-v", "-rpc-header", "x-request-id: abc123"),
            data=chat_body("hi"),
        )
    )
    # Unary answers carry the id in trailers (see interceptors/request_id.py).
    trailers = out.split("Response trailers received:", 1)[1]
    assert re.search(r"^x-request-id: abc123$", trailers, re.MULTILINE), out
    assert '"requestId": "abc123"' in out


def test_stream_returns_request_id_in_headers(grpcurl: str, shared_gateway: GatewayProcess) -> None:
    out = ok(
        run_grpcurl(
            grpcurl,
            shared_gateway,
            "unigate.v1.InferenceService/StreamChat",
            flags=("-v", "-rpc-header", "x-request-id: s-77"),
            data=chat_body("one two"),
        )
    )
    headers = out.split("Response headers received:", 1)[1].split("Response contents:", 1)[0]
    assert re.search(r"^x-request-id: s-77$", headers, re.MULTILINE), out


def test_unknown_alias_is_not_found_and_points_at_list_models(
    grpcurl: str, shared_gateway: GatewayProcess
) -> None:
    result = run_grpcurl(
        grpcurl,
        shared_gateway,
        "unigate.v1.InferenceService/Chat",
        data=chat_body("hi", model="no-such-alias"),
    )
    assert result.returncode == GRPCURL_RPC_ERROR_BASE + 5, result  # NOT_FOUND is 5
    assert "Code: NotFound" in result.stderr
    message = re.search(r"Message: (.*)", result.stderr)
    assert message is not None, result.stderr
    assert "'no-such-alias'" in message.group(1)
    assert "ListModels" in message.group(1)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("service", ["", "unigate.v1.InferenceService"])
def test_health_check_is_serving(
    grpcurl: str, shared_gateway: GatewayProcess, service: str
) -> None:
    out = ok(
        run_grpcurl(
            grpcurl,
            shared_gateway,
            "grpc.health.v1.Health/Check",
            data=json.dumps({"service": service}),
        )
    )
    assert json_messages(out) == [{"status": "SERVING"}]


def test_health_check_of_an_unknown_service_is_not_found(
    grpcurl: str, shared_gateway: GatewayProcess
) -> None:
    result = run_grpcurl(
        grpcurl,
        shared_gateway,
        "grpc.health.v1.Health/Check",
        data=json.dumps({"service": "no.such.Service"}),
    )
    assert result.returncode == GRPCURL_RPC_ERROR_BASE + 5, result
    assert "Code: NotFound" in result.stderr


def test_chat_through_the_openai_adapter_returns_the_fakes_answer(
    grpcurl: str, spawn_gateway: SpawnGateway, fake_openai_thread: ThreadedFake
) -> None:
    config = {
        "auth": {"enabled": False},
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": fake_openai_thread.fake.base_url,
                "api_key": "${UNIGATE_E2E_VENDOR_KEY}",
            }
        },
        "models": {"gpt": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}},
    }
    key = "sk-e2e-not-a-real-key-1234"
    gateway = spawn_gateway(config, env=gateway_env(UNIGATE_E2E_VENDOR_KEY=key))
    out = ok(
        run_grpcurl(
            grpcurl, gateway, "unigate.v1.InferenceService/Chat", data=chat_body("hi", "gpt")
        )
    )
    [reply] = json_messages(out)
    assert reply["message"]["content"] == [{"text": "echo: hi"}]
    assert (reply["provider"], reply["model"]) == ("openai", "gpt-4o-mini")
    assert reply["finishReason"] == "FINISH_REASON_STOP"
    [sent] = fake_openai_thread.requests()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {key}"
    assert key not in gateway.log()


def test_access_log_line_sees_request_id_and_final_status(
    grpcurl: str, spawn_gateway: SpawnGateway
) -> None:
    """The interceptor order shows in the access log: the request id is already set
    and the status is the one the caller got (the error mapping wraps the log)."""
    config = mock_config()
    config["logging"] = {"format": "json", "access_log": True}
    gateway = spawn_gateway(config)
    run_grpcurl(
        grpcurl,
        gateway,
        "unigate.v1.InferenceService/Chat",
        flags=("-rpc-header", "x-request-id: order-1"),
        data=chat_body("hi", model="no-such-alias"),
    )
    gateway.stop()  # flushes the batched access log
    entries = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    [access] = [e for e in entries if e.get("logger") == "unigate.access"]
    assert access["request_id"] == "order-1"
    assert (access["code"], access["reason"]) == ("NOT_FOUND", "MODEL_NOT_FOUND")
    assert access["method"] == "/unigate.v1.InferenceService/Chat"
