"""OpenAI-compatible servers (Ollama, vLLM, llama.cpp, Groq, Together, DeepSeek), driven by
golden files in tests/testdata/openai_compatible/<case>/, recorded from each server's own
answers: the OpenAI translation with the kind's quirk settings (stream_usage,
allow_missing_usage, max_tokens_field).

The layout is the OpenAI cases' (see test_openai_translation). `wire_body` and `wire_answer`
translate a case the way every adapter built on the OpenAI one does; the Azure cases use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format

from tests.fakes import body_reader
from tests.golden import assert_golden, load_json
from tests.unit.test_openai_translation import REQUEST_TYPES, error_dict, recorded_answer
from unigate.gateway.errors import GatewayError
from unigate.gateway.providers import openai_translate as tr
from unigate.gateway.providers.openai import (
    ChatStreamTranslator,
    CompleteStreamTranslator,
    StreamTranslator,
)
from unigate.gateway.providers.openai_compatible import OpenAICompatibleSettings
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import Target

CASES_DIR = Path(__file__).parent.parent / "testdata" / "openai_compatible"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))


def wire_body(
    case_dir: Path,
    spec: dict[str, Any],
    *,
    max_tokens_field: str,
    embedding_encoding: str,
    stream_usage: bool,
) -> Any:
    request = json_format.Parse(
        (case_dir / "request.json").read_text(), REQUEST_TYPES[spec["rpc"]]()
    )
    model, rpc = spec["model"], spec["rpc"]
    if rpc in ("chat", "stream_chat"):
        return tr.chat_request_body(
            request,
            model,
            stream=rpc == "stream_chat",
            max_tokens_field=max_tokens_field,
            stream_usage=stream_usage,
        )
    if rpc in ("complete", "stream_complete"):
        stream = rpc == "stream_complete"
        return tr.complete_request_body(request, model, stream=stream, stream_usage=stream_usage)
    return tr.embed_request_body(request, model, encoding=embedding_encoding)


async def wire_answer(
    body: bytes, spec: dict[str, Any], target: Target, *, provider: str, usage_optional: bool
) -> Any:
    rpc, status = spec["rpc"], spec.get("status", 200)
    if status >= 300:
        error = tr.upstream_error(status, spec.get("headers", {}), body, target)
        return {"error": error_dict(error)}
    if rpc.startswith("stream_"):
        kind = ChatStreamTranslator if rpc == "stream_chat" else CompleteStreamTranslator
        return await read_stream(
            body, kind(target, provider=provider, usage_optional=usage_optional)
        )
    try:
        if rpc == "chat":
            return json_format.MessageToDict(tr.chat_response(body, target, provider=provider))
        if rpc == "complete":
            response = tr.complete_response(body, target, provider=provider)
            return json_format.MessageToDict(response)
        inputs = len(orjson.loads(body)["data"])
        embeddings = tr.embed_response(body, target, inputs=inputs, provider=provider)
        return json_format.MessageToDict(embeddings)
    except GatewayError as exc:
        return {"error": error_dict(exc)}


async def read_stream(body: bytes, translator: StreamTranslator[Any]) -> dict[str, Any]:
    """A recorded SSE body through a stream translator, as the adapters read it."""
    messages: list[dict[str, Any]] = []
    result: dict[str, Any] = {"messages": messages}
    try:
        async for event in iter_sse(body_reader([body])):
            messages.extend(json_format.MessageToDict(m) for m in translator.feed(event.data))
            if translator.done:
                break
        messages.extend(json_format.MessageToDict(m) for m in translator.end())
    except GatewayError as exc:
        result["error"] = error_dict(exc)
    return result


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    settings = OpenAICompatibleSettings(
        kind="openai_compatible", base_url="http://golden.invalid/v1", **spec.get("settings", {})
    )
    api_key = spec.get("api_key", "compat-golden-never-sent-0000")
    target = Target(provider="local", deployment="golden", secrets=(api_key,))
    if (case_dir / "request.json").exists():
        body = wire_body(
            case_dir,
            spec,
            max_tokens_field=settings.max_tokens_field,
            embedding_encoding=settings.embedding_encoding,
            stream_usage=settings.stream_usage,
        )
        assert_golden(case_dir / "upstream_request.json", body)
    actual = await wire_answer(
        recorded_answer(case_dir),
        spec,
        target,
        provider="openai_compatible",
        usage_optional=settings.usage_optional,
    )
    assert api_key not in orjson.dumps(actual).decode()
    assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert set(REQUEST_TYPES) <= {spec["rpc"] for spec in specs}
    assert {401, 404, 429, 503} <= {spec.get("status", 200) for spec in specs}


@pytest.mark.parametrize(
    ("settings", "optional"),
    [
        ({}, False),
        ({"stream_usage": False}, True),
        ({"allow_missing_usage": True}, True),
    ],
)
def test_usage_is_optional_when_not_asked_for_or_allowed(
    settings: dict[str, Any], optional: bool
) -> None:
    block = OpenAICompatibleSettings(kind="openai_compatible", base_url="http://h/v1", **settings)
    assert block.usage_optional is optional
