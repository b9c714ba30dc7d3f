"""The issue's acceptance check: the same grpcurl Chat, StreamChat (with a tool) and
Embed calls, changed only in their model alias, work through every vendor's fake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.mistral_server import FakeMistral
from tests.fakes.openai_server import FakeAzureOpenAI, FakeOpenAI

from .conftest import GatewayProcess, SpawnGateway, ThreadedFake, gateway_env, threaded_fake
from .test_grpcurl import json_messages, ok, run_grpcurl

pytestmark = pytest.mark.e2e

KEY_VARIABLE = "UNIGATE_E2E_VENDOR_KEY"
KEY = "vendor-key-e2e-0123456789"


@dataclass(frozen=True)
class Vendor:
    kind: str
    fake: Callable[[], Any]
    chat_model: str
    embed_model: str | None
    extra: dict[str, Any]

    def provider_block(self, base_url: str) -> dict[str, Any]:
        return {"kind": self.kind, "base_url": base_url, "api_key": f"${{{KEY_VARIABLE}}}"}


VENDORS = [
    Vendor("openai", FakeOpenAI, "gpt-4o-mini", "text-embedding-3-small", {}),
    Vendor("anthropic", FakeAnthropic, "claude-haiku-4-5", None, {}),
    Vendor("gemini", FakeGemini, "gemini-2.5-flash", "gemini-embedding-001", {}),
    Vendor("mistral", FakeMistral, "mistral-small-latest", "mistral-embed", {}),
    Vendor("azure_openai", FakeAzureOpenAI, "gpt4o", "embed", {}),
    Vendor(
        "openai_compatible",
        FakeOpenAI,
        "llama3.2",
        "nomic-embed-text",
        {"supports_embeddings": True},
    ),
]


@dataclass
class Running:
    vendor: Vendor
    fake: ThreadedFake
    gateway: GatewayProcess


@pytest.fixture(params=VENDORS, ids=lambda v: v.kind)
def running(request: pytest.FixtureRequest, spawn_gateway: SpawnGateway) -> Iterator[Running]:
    vendor: Vendor = request.param
    with threaded_fake(vendor.fake) as fake:
        block = {**vendor.provider_block(fake.fake.base_url), **vendor.extra}
        models: dict[str, Any] = {
            "chat": {"deployments": [{"provider": "vendor", "model": vendor.chat_model}]}
        }
        if vendor.embed_model:
            models["embed"] = {"deployments": [{"provider": "vendor", "model": vendor.embed_model}]}
        config = {"auth": {"enabled": False}, "providers": {"vendor": block}, "models": models}
        gateway = spawn_gateway(config, env=gateway_env(**{KEY_VARIABLE: KEY}))
        yield Running(vendor, fake, gateway)
        gateway.stop()
        assert KEY not in gateway.log()


def user_turn(text: str) -> dict[str, Any]:
    return {"role": "ROLE_USER", "content": [{"text": text}]}


def test_chat(grpcurl: str, running: Running) -> None:
    body = json.dumps({"model": "chat", "messages": [user_turn("hi")]})
    out = ok(run_grpcurl(grpcurl, running.gateway, "unigate.v1.InferenceService/Chat", data=body))
    [reply] = json_messages(out)
    assert reply["message"]["content"] == [{"text": "echo: hi"}]
    assert reply["finishReason"] == "FINISH_REASON_STOP"
    assert reply["provider"] == running.vendor.kind
    assert int(reply["usage"]["outputTokens"]) > 0


def test_stream_chat_with_a_tool(grpcurl: str, running: Running) -> None:
    body = json.dumps(
        {
            "model": "chat",
            "messages": [user_turn("weather in Paris")],
            "tools": [
                {
                    "name": "lookup",
                    "description": "Look something up.",
                    "parameters": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                        "required": ["text"],
                    },
                }
            ],
            "toolChoice": {"mode": "TOOL_CHOICE_MODE_REQUIRED"},
        }
    )
    out = ok(
        run_grpcurl(grpcurl, running.gateway, "unigate.v1.InferenceService/StreamChat", data=body)
    )
    chunks = json_messages(out)
    assert len(chunks) >= 2
    pieces = [piece for chunk in chunks for piece in chunk.get("toolCalls", [])]
    assert pieces and pieces[0]["name"] == "lookup" and pieces[0]["id"]
    arguments = json.loads("".join(piece.get("arguments", "") for piece in pieces))
    assert arguments == {"text": "weather in Paris"}
    assert chunks[-1]["finishReason"] == "FINISH_REASON_TOOL_CALLS"
    assert "usage" in chunks[-1]


def test_embed(grpcurl: str, running: Running) -> None:
    alias = "embed" if running.vendor.embed_model else "chat"
    body = json.dumps({"model": alias, "inputs": ["alpha", "beta"]})
    result = run_grpcurl(grpcurl, running.gateway, "unigate.v1.InferenceService/Embed", data=body)
    if running.vendor.embed_model is None:
        # The vendor has no embeddings API: the gateway says so, naming alias and capability.
        assert "Code: Unimplemented" in result.stderr, result.stderr
        assert "'chat' does not support embeddings" in result.stderr
        return
    [reply] = json_messages(ok(result))
    vectors = reply["embeddings"]
    assert [v.get("index", 0) for v in vectors] == [0, 1]
    assert len(vectors[0]["values"]) > 0
    assert vectors[0]["values"] != vectors[1]["values"]
