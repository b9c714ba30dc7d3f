"""What every adapter over a vendor HTTP API shares, checked for each such kind: the settings
fields and their checks, credentials kept out of error messages, and tool_choice only with tools.

The transport is replaced by one that records what it is asked to send and answers as told.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from unigate.gateway.config import ConfigError, parse_config
from unigate.gateway.errors import GatewayError
from unigate.gateway.providers.base import HttpProviderSettings, Provider, UpstreamCall
from unigate.gateway.providers.http_adapter import credential_secrets
from unigate.gateway.providers.registry import PROVIDER_KINDS
from unigate.gateway.providers.transport import HttpResult, HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

# The smallest valid block of each kind, and the example a bad base_url's message suggests.
BLOCKS: dict[str, tuple[dict[str, Any], str]] = {
    "openai": ({}, "https://host/v1"),
    "azure_openai": ({"base_url": "https://res.openai.azure.com"}, "https://host/v1"),
    "openai_compatible": ({"base_url": "http://localhost:11434/v1"}, "https://host/v1"),
    "mistral": ({}, "https://api.mistral.ai"),
    "anthropic": ({}, "https://api.anthropic.com"),
    "gemini": ({}, "https://host"),
}
OPENAI_WIRE = ("openai", "azure_openai", "openai_compatible", "mistral")
OPENAI_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
)


class RecordingTransport(HttpTransport):
    def __init__(self, answer: HttpResult) -> None:
        super().__init__()
        self.answer = answer
        self.bodies: list[Any] = []

    async def request(
        self,
        method: str,
        url: str,
        *,
        target: Target,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> HttpResult:
        self.bodies.append(json)
        return self.answer


def settings_of(kind: str, **fields: Any) -> HttpProviderSettings:
    settings = PROVIDER_KINDS[kind].settings.model_validate(
        {"kind": kind, **BLOCKS[kind][0], **fields}
    )
    assert isinstance(settings, HttpProviderSettings)
    return settings


def make_provider(kind: str, transport: HttpTransport, **fields: Any) -> Provider:
    return PROVIDER_KINDS[kind].factory("p", settings_of(kind, **fields), transport)


def config_error(kind: str, **fields: Any) -> str:
    block = orjson.dumps({"kind": kind, **BLOCKS[kind][0], **fields}).decode()
    with pytest.raises(ConfigError) as caught:
        parse_config(f"providers:\n  p: {block}\n")
    return str(caught.value)


def chat_request(**fields: Any) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])
    return pb.ChatRequest(model="fast", messages=[message], **fields)


CALL = UpstreamCall("dep-1", "model-1", 5.0, "req-1")


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BLOCKS)
def test_base_url_must_be_absolute_and_loses_its_trailing_slash(kind: str) -> None:
    example = BLOCKS[kind][1]
    message = config_error(kind, base_url="api.example.com/v1")
    assert message.endswith(
        f"providers.p.base_url: must be an absolute http(s) URL such as {example}"
        " (got 'api.example.com/v1')"
    ), message
    assert settings_of(kind, base_url="https://h.example/v1/").base_url == "https://h.example/v1"


@pytest.mark.parametrize("kind", BLOCKS)
def test_api_key_is_trimmed_and_refused_without_being_shown(kind: str) -> None:
    assert settings_of(kind, api_key="key-abc123\n").api_key == "key-abc123"
    message = config_error(kind, api_key="key-abc 123")
    assert "providers.p.api_key: contains whitespace or control characters" in message
    assert "key-abc" not in message


@pytest.mark.parametrize("kind", BLOCKS)
def test_header_values_without_control_characters(kind: str) -> None:
    message = config_error(kind, headers={"X-Team": "a\nb"})
    assert "providers.p.headers: header 'X-Team' contains control characters" in message


# --- secrets ----------------------------------------------------------------------------------


def test_credential_secrets_include_bare_tokens_longest_first() -> None:
    headers = {"AUTHORIZATION": "Bearer tok-1", "api-key": "k-2", "X-Team": "not-secret"}
    assert credential_secrets(headers, "key-3", None) == ("Bearer tok-1", "key-3", "tok-1", "k-2")


@pytest.mark.parametrize("kind", BLOCKS)
@pytest.mark.parametrize(
    "header",
    ["Authorization: Bearer hdr-token-42", "api-key: hdr-token-42", "x-api-key: hdr-token-42"],
)
async def test_a_configured_credential_header_is_redacted_even_as_a_bare_token(
    kind: str, header: str
) -> None:
    name, _, value = header.partition(": ")
    said = b"the credential hdr-token-42 is not valid here (sent as '" + value.encode() + b"')"
    transport = RecordingTransport(HttpResult(400, {}, said))
    provider = make_provider(kind, transport, headers={name: value})
    with pytest.raises(GatewayError) as caught:
        await provider.chat(chat_request(), CALL)
    assert "hdr-token-42" not in caught.value.message
    assert "the credential [REDACTED] is not valid here" in caught.value.message


# --- tool_choice ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPENAI_WIRE)
async def test_tool_choice_is_sent_only_with_tools(kind: str) -> None:
    # OpenAI (and Mistral) answer 400 to a tool_choice without tools.
    transport = RecordingTransport(HttpResult(200, {}, OPENAI_ANSWER))
    provider = make_provider(kind, transport)
    choice = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
    tool = pb.Tool(name="get_weather")
    await provider.chat(chat_request(tool_choice=choice, parallel_tool_calls=False), CALL)
    await provider.chat(chat_request(tool_choice=choice, tools=[tool]), CALL)
    without, with_tools = transport.bodies
    assert "tool_choice" not in without
    assert "parallel_tool_calls" not in without
    assert with_tools["tool_choice"] == ("any" if kind == "mistral" else "required")


def test_long_custom_header_values_are_secrets_too() -> None:
    from unigate.gateway.providers.http_adapter import credential_secrets

    secrets = credential_secrets(
        {"Ocp-Apim-Subscription-Key": "0123456789abcdef0123", "X-Trace": "on"}, "sk-key"
    )
    assert "0123456789abcdef0123" in secrets
    assert "on" not in secrets
    assert "sk-key" in secrets
