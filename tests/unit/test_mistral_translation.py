"""Mistral translation, driven by golden files in tests/testdata/mistral/<case>/.

The layout is the OpenAI cases' (see test_openai_translation): case.json (rpc, model, settings,
status, headers), request.json -> upstream_request.json (or the error refusing the request),
upstream_response.json|.sse|.txt, as Mistral sends it -> response.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import json_format

from tests.golden import assert_golden, load_json
from tests.unit.test_openai_compatible_translation import read_stream
from tests.unit.test_openai_translation import REQUEST_TYPES, error_dict, recorded_answer
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import mistral_translate as mt
from unigate.gateway.providers.mistral import (
    MistralChatStreamTranslator,
    MistralCompleteStreamTranslator,
    MistralSettings,
)
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

CASES_DIR = Path(__file__).parent.parent / "testdata" / "mistral"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))


def upstream_body(request: Any, spec: dict[str, Any], settings: MistralSettings) -> Any:
    model, rpc = spec["model"], spec["rpc"]
    try:
        if rpc in ("chat", "stream_chat"):
            return mt.chat_request_body(
                request, model, stream=rpc == "stream_chat", safe_prompt=settings.safe_prompt
            )
        if rpc in ("complete", "stream_complete"):
            return mt.fim_request_body(request, model, stream=rpc == "stream_complete")
        return mt.embed_request_body(request, model, dtype=settings.embedding_dtype)
    except GatewayError as exc:
        return {"error": error_dict(exc)}


async def translate_answer(body: bytes, spec: dict[str, Any], target: Target) -> Any:
    rpc, status = spec["rpc"], spec.get("status", 200)
    if status >= 300:
        return {
            "error": error_dict(mt.upstream_error(status, spec.get("headers", {}), body, target))
        }
    if rpc.startswith("stream_"):
        kind = (
            MistralChatStreamTranslator if rpc == "stream_chat" else MistralCompleteStreamTranslator
        )
        return await read_stream(body, kind(target, provider="mistral"))
    try:
        if rpc == "chat":
            return json_format.MessageToDict(mt.chat_response(body, target))
        if rpc == "complete":
            return json_format.MessageToDict(mt.fim_response(body, target))
        inputs = len(orjson.loads(body)["data"])
        return json_format.MessageToDict(mt.embed_response(body, target, inputs=inputs))
    except GatewayError as exc:
        return {"error": error_dict(exc)}


def recorded_answer_if_any(case_dir: Path) -> bytes | None:
    """What Mistral sent; None for cases whose request is refused before it is sent."""
    answers = list(case_dir.glob("upstream_response.*"))
    return recorded_answer(case_dir) if answers else None


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    settings = MistralSettings(kind="mistral", **spec.get("settings", {}))
    api_key = spec.get("api_key", "mistral-golden-never-sent-0000")
    target = Target(provider="mistral", deployment="golden", secrets=(api_key,))
    if (case_dir / "request.json").exists():
        request = json_format.Parse(
            (case_dir / "request.json").read_text(), REQUEST_TYPES[spec["rpc"]]()
        )
        assert_golden(case_dir / "upstream_request.json", upstream_body(request, spec, settings))
    if (answer := recorded_answer_if_any(case_dir)) is not None:
        actual = await translate_answer(answer, spec, target)
        assert api_key not in orjson.dumps(actual).decode()
        assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert set(REQUEST_TYPES) <= {spec["rpc"] for spec in specs}
    assert {400, 401, 422, 429, 500} <= {spec.get("status", 200) for spec in specs}


# --- requests ---------------------------------------------------------------------------------


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def test_no_openai_only_fields_are_sent() -> None:
    request = pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, name="ana", content=[pb.ContentPart(text="hi")])],
        sampling=pb.SamplingParams(seed=0),
        user="u-1",
    )
    body = mt.chat_request_body(request, "m", stream=True)
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "random_seed": 0,
        "stream": True,
    }


@pytest.mark.parametrize(
    ("raw", "kept"),
    [("D681PevKs", True), ("call_W3aTq9", False), ("abc", False), ("toolu_01A09q90qw90lq", False)],
)
def test_tool_call_ids_become_nine_letters_or_digits(raw: str, kept: bool) -> None:
    mapped = mt.tool_call_id(raw)
    assert len(mapped) == 9 and mapped.isascii() and mapped.isalnum()
    assert (mapped == raw) is kept
    assert mt.tool_call_id(raw) == mapped  # the same in the call and in its result


def test_distinct_foreign_ids_stay_distinct() -> None:
    ids = {mt.tool_call_id(f"call_{n}") for n in range(2000)}
    assert len(ids) == 2000


def test_a_tool_without_parameters_gets_an_empty_schema() -> None:
    request = pb.ChatRequest(messages=[user("x")], tools=[pb.Tool(name="now")])
    [tool] = mt.chat_request_body(request, "m")["tools"]
    assert tool == {
        "type": "function",
        "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
    }


def test_fim_drops_the_user_and_renames_the_seed() -> None:
    request = pb.CompleteRequest(prompt="def f(", user="u", sampling=pb.SamplingParams(seed=3))
    body = mt.fim_request_body(request, "codestral-latest")
    assert body == {"model": "codestral-latest", "prompt": "def f(", "random_seed": 3}


# --- responses --------------------------------------------------------------------------------

TARGET = Target(provider="mistral", deployment="unit", secrets=("unit-secret-0123456789",))


def test_content_text_of_chunks_keeps_only_text() -> None:
    chunks = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
        {"type": "text", "text": "Hello"},
        {"type": "reference", "reference_ids": [1]},
        {"type": "text", "text": "!"},
    ]
    assert mt.content_text(chunks) == "Hello!"
    assert mt.content_text(None) == ""


@pytest.mark.parametrize(
    "body", [b"{}", b'{"choices": [{}]}', b'{"choices":[{"message":{"content":7}}]}']
)
def test_chat_answer_of_the_wrong_shape_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        mt.chat_response(body, TARGET)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR
    assert "not valid Mistral JSON" in caught.value.message


def test_unknown_finish_reason_is_a_stop_but_error_is_a_failure() -> None:
    assert mt.finish_reason("something_new", TARGET) == pb.FINISH_REASON_STOP
    with pytest.raises(GatewayError) as caught:
        mt.finish_reason("error", TARGET)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_in_stream_openai_style_error_is_understood_too() -> None:
    chunk = {"error": {"message": "slow down", "type": "rate_limited"}}
    error = mt.stream_error(chunk, TARGET)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.metadata["vendor_code"] == "rate_limited"
    assert "failed mid-stream: slow down" in error.message


def test_tool_calls_in_one_delta_with_the_same_index_stay_apart() -> None:
    translator = MistralChatStreamTranslator(TARGET)
    calls = [
        {"id": "aaaaaaaa1", "function": {"name": "f", "arguments": "{}"}, "index": 0},
        {"id": "bbbbbbbb2", "function": {"name": "g", "arguments": {"x": 1}}, "index": 0},
    ]
    chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]}
    [message] = translator.feed(orjson.dumps(chunk).decode())
    assert [(c.index, c.id, c.arguments) for c in message.tool_calls] == [
        (0, "aaaaaaaa1", "{}"),
        (1, "bbbbbbbb2", '{"x":1}'),
    ]
