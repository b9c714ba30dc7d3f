"""Anthropic translation, driven by golden files in tests/testdata/anthropic/<case>/.

Each case has case.json (which RPC, the vendor model, settings, the upstream status), and:
request.json (a unigate request, proto JSON) -> upstream_request.json (the Anthropic body);
upstream_response.json|.sse|.txt (what Anthropic sent, byte for byte) -> response.json.
Adding a case adds files, not code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import json_format

from tests.fakes import body_reader
from tests.golden import assert_golden, load_json
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import anthropic_translate as tr
from unigate.gateway.providers.anthropic import AnthropicSettings, ChatStreamTranslator
from unigate.gateway.providers.common import MAX_VENDOR_MESSAGE
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

CASES_DIR = Path(__file__).parent.parent / "testdata" / "anthropic"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))


def error_dict(error: GatewayError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "metadata": dict(error.metadata),
        "retryAfter": error.retry_after,
        "fieldViolations": {v.field: v.description for v in error.field_violations},
    }


def upstream_body(case_dir: Path, spec: dict[str, Any], settings: AnthropicSettings) -> Any:
    request = json_format.Parse((case_dir / "request.json").read_text(), pb.ChatRequest())
    model = spec["model"]
    default = settings.max_tokens_by_model.get(model, settings.default_max_tokens)
    try:
        return tr.chat_request_body(
            request, model, default_max_tokens=default, stream=spec["rpc"] == "stream_chat"
        )
    except GatewayError as exc:
        return {"error": error_dict(exc)}


def recorded_answer(case_dir: Path) -> bytes | None:
    """What the vendor sent, if the case has it (a refused request never reaches it)."""
    answers = list(case_dir.glob("upstream_response.*"))
    return answers[0].read_bytes() if len(answers) == 1 else None


async def translate_answer(body: bytes, spec: dict[str, Any], target: Target) -> Any:
    status = spec.get("status", 200)
    if status >= 300:
        error = tr.upstream_error(status, spec.get("headers", {}), body, target)
        return {"error": error_dict(error)}
    if spec["rpc"] == "stream_chat":
        translator = ChatStreamTranslator(target)
        messages: list[dict[str, Any]] = []
        result: dict[str, Any] = {"messages": messages}
        try:
            async for event in iter_sse(body_reader([body])):
                messages.extend(
                    json_format.MessageToDict(m) for m in translator.feed(event.event, event.data)
                )
                if translator.done:
                    break
            messages.extend(json_format.MessageToDict(m) for m in translator.end())
        except GatewayError as exc:
            result["error"] = error_dict(exc)
        return result
    try:
        return json_format.MessageToDict(tr.chat_response(body, target))
    except GatewayError as exc:
        return {"error": error_dict(exc)}


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    settings = AnthropicSettings(kind="anthropic", **spec.get("settings", {}))
    api_key = spec.get("api_key", "sk-ant-api03-golden-never-sent-0000")
    target = Target(provider="anthropic", deployment="golden", secrets=(api_key,))
    if (case_dir / "request.json").exists():
        assert_golden(case_dir / "upstream_request.json", upstream_body(case_dir, spec, settings))
    if (answer := recorded_answer(case_dir)) is not None:
        actual = await translate_answer(answer, spec, target)
        assert api_key not in orjson.dumps(actual).decode()
        assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert {"chat", "stream_chat"} <= {spec["rpc"] for spec in specs}
    assert {400, 401, 403, 404, 429, 500, 529} <= {spec.get("status", 200) for spec in specs}
    streams = [case for case in CASES if (case / "upstream_response.sse").exists()]
    assert len(streams) >= 4


# --- requests ---------------------------------------------------------------------------------


def text(role: pb.Role, *texts: str, **fields: Any) -> pb.Message:
    return pb.Message(role=role, content=[pb.ContentPart(text=t) for t in texts], **fields)


def body_of(*messages: pb.Message, default: int = 4096, **fields: Any) -> tr.Json:
    request = pb.ChatRequest(messages=messages, **fields)
    return tr.chat_request_body(request, "claude-x", default_max_tokens=default)


def test_system_messages_are_hoisted() -> None:
    one = body_of(text(pb.ROLE_SYSTEM, "be brief"), text(pb.ROLE_USER, "hi"))
    assert one["system"] == "be brief"
    assert [turn["role"] for turn in one["messages"]] == ["user"]
    two = body_of(
        text(pb.ROLE_SYSTEM, "be brief"),
        text(pb.ROLE_USER, "hi"),
        text(pb.ROLE_SYSTEM, "in French"),
    )
    assert two["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "in French"},
    ]


def test_image_in_a_system_message_is_refused() -> None:
    image = pb.ContentPart(image=pb.Image(url="https://x/y.png"))
    with pytest.raises(GatewayError) as caught:
        body_of(pb.Message(role=pb.ROLE_SYSTEM, content=[image]), text(pb.ROLE_USER, "hi"))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "messages[0].content"


def test_consecutive_turns_of_one_role_are_merged() -> None:
    body = body_of(
        text(pb.ROLE_USER, "one"),
        text(pb.ROLE_USER, "two"),
        text(pb.ROLE_ASSISTANT, "three"),
        text(pb.ROLE_ASSISTANT, "four"),
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
        },
    ]


def test_tool_results_join_one_user_turn_and_come_first() -> None:
    calls = [pb.ToolCall(id="a", name="f", arguments='{"x":1}'), pb.ToolCall(id="b", name="f")]
    body = body_of(
        text(pb.ROLE_USER, "go"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=calls),
        text(pb.ROLE_USER, "and hurry"),  # a user note before the results: Anthropic wants it after
        text(pb.ROLE_TOOL, "1", tool_call_id="a"),
        text(pb.ROLE_TOOL, "2", tool_call_id="b"),
    )
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "b", "name": "f", "input": {}},
    ]
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "1"},
            {"type": "tool_result", "tool_use_id": "b", "content": "2"},
            {"type": "text", "text": "and hurry"},
        ],
    }


def test_empty_text_parts_are_left_out() -> None:
    call = pb.ToolCall(id="a", name="f", arguments="{}")
    body = body_of(text(pb.ROLE_USER, "go"), text(pb.ROLE_ASSISTANT, "", tool_calls=[call]))
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}
    ]


@pytest.mark.parametrize("arguments", ["[1, 2]", "not json", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    call = pb.ToolCall(id="a", name="f", arguments=arguments)
    with pytest.raises(GatewayError) as caught:
        body_of(text(pb.ROLE_USER, "go"), pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "messages[1].tool_calls[0].arguments"


def test_message_without_role_is_invalid_argument() -> None:
    with pytest.raises(GatewayError) as caught:
        body_of(text(pb.ROLE_USER, "hi"), pb.Message(content=[pb.ContentPart(text="x")]))
    assert caught.value.field_violations[0].field == "messages[1].role"


def test_penalties_are_refused_but_zero_and_seed_pass() -> None:
    sampling = pb.SamplingParams(presence_penalty=0.5, frequency_penalty=-1)
    with pytest.raises(GatewayError) as caught:
        body_of(text(pb.ROLE_USER, "hi"), sampling=sampling)
    error = caught.value
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.CAPABILITY_UNSUPPORTED,
    )
    assert [v.field for v in error.field_violations] == [
        "sampling.presence_penalty",
        "sampling.frequency_penalty",
    ]
    neutral = pb.SamplingParams(presence_penalty=0, frequency_penalty=0, seed=7)
    body = body_of(text(pb.ROLE_USER, "hi"), sampling=neutral)
    assert not {"seed", "presence_penalty", "frequency_penalty"} & set(body)


def test_json_object_without_schema_is_refused() -> None:
    fmt = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    with pytest.raises(GatewayError) as caught:
        body_of(text(pb.ROLE_USER, "hi"), response_format=fmt)
    assert caught.value.reason == Reason.CAPABILITY_UNSUPPORTED
    assert caught.value.field_violations[0].field == "response_format.type"
    plain = body_of(
        text(pb.ROLE_USER, "hi"),
        response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT),
    )
    assert "output_config" not in plain


TOOL = pb.Tool(name="f")


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), None, {"type": "auto"}),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE), False, {"type": "none"}),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), True, {"type": "any"}),
        (
            pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
            False,
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (pb.ToolChoice(function_name="f"), None, {"type": "tool", "name": "f"}),
        (None, None, None),
    ],
)
def test_tool_choice(
    choice: pb.ToolChoice | None, parallel: bool | None, expected: tr.Json | None
) -> None:
    fields: dict[str, Any] = {"tools": [TOOL]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    body = body_of(text(pb.ROLE_USER, "hi"), **fields)
    assert body.get("tool_choice") == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_parallel_false_without_tools_sends_nothing() -> None:
    assert "tool_choice" not in body_of(text(pb.ROLE_USER, "hi"), parallel_tool_calls=False)


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "data:;base64,AAAA", "data:image/png"])
def test_data_url_that_is_not_base64_is_refused(url: str) -> None:
    image = pb.ContentPart(image=pb.Image(url=url))
    with pytest.raises(GatewayError) as caught:
        body_of(pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="look"), image]))
    assert caught.value.field_violations[0].field == "messages[0].content[1].image.url"


# --- responses --------------------------------------------------------------------------------

TARGET = Target(provider="claude", deployment="unit", secrets=("unit-secret-0123456789",))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"id": "msg_1"}',
        b'{"content": [{"text": "no type"}]}',
        b'{"content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}',
    ],
)
def test_chat_answer_of_the_wrong_shape_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_response(body, TARGET)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "not valid Anthropic JSON" in caught.value.message


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", pb.FINISH_REASON_STOP),
        ("stop_sequence", pb.FINISH_REASON_STOP),
        ("max_tokens", pb.FINISH_REASON_LENGTH),
        ("model_context_window_exceeded", pb.FINISH_REASON_LENGTH),
        ("pause_turn", pb.FINISH_REASON_LENGTH),
        ("tool_use", pb.FINISH_REASON_TOOL_CALLS),
        ("refusal", pb.FINISH_REASON_CONTENT_FILTER),
        ("some_future_reason", pb.FINISH_REASON_STOP),
        (None, pb.FINISH_REASON_UNSPECIFIED),
    ],
)
def test_finish_reasons(reason: str | None, expected: int) -> None:
    assert tr.finish_reason(reason) == expected


def test_usage_counts_cached_tokens_as_input() -> None:
    usage = tr.usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 1000,
            "output_tokens": 5,
        }
    )
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_input_tokens) == (
        1110,
        100,
        1000,
    )
    assert (usage.output_tokens, usage.total_tokens) == (5, 1115)
    assert tr.usage(None) is None


# --- streams ----------------------------------------------------------------------------------


def event(kind: str, **fields: Any) -> tuple[str, str]:
    return kind, orjson.dumps({"type": kind, **fields}).decode()


START = event(
    "message_start",
    message={"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}},
)
TEXT_START = event("content_block_start", index=0, content_block={"type": "text", "text": ""})
DELTA_END = event(
    "message_delta",
    delta={"stop_reason": "end_turn", "stop_sequence": None},
    usage={"output_tokens": 2},
)


def test_finish_waits_for_message_stop() -> None:
    translator = ChatStreamTranslator(TARGET)
    assert translator.feed(*START) == []
    assert translator.feed(*TEXT_START) == []
    assert translator.feed(*event("ping")) == []
    [delta] = translator.feed(
        *event("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi"})
    )
    assert (delta.text, delta.id, delta.model, delta.provider) == (
        "hi",
        "msg_1",
        "claude-x",
        "anthropic",
    )
    assert translator.feed(*event("content_block_stop", index=0)) == []
    assert translator.feed(*DELTA_END) == []
    [last] = translator.feed(*event("message_stop"))
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert (last.usage.input_tokens, last.usage.output_tokens, last.usage.total_tokens) == (3, 2, 5)
    assert translator.done
    assert translator.feed(*DELTA_END) == []
    assert translator.end() == []


def test_body_ending_before_a_stop_reason_is_unavailable() -> None:
    translator = ChatStreamTranslator(TARGET)
    translator.feed(*START)
    translator.feed(*TEXT_START)
    with pytest.raises(GatewayError) as caught:
        translator.end()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == Reason.UPSTREAM_UNAVAILABLE
    assert "stream ended before the answer finished" in caught.value.message


def test_body_ending_after_message_delta_is_complete() -> None:
    translator = ChatStreamTranslator(TARGET, fallback_id="req-1")
    translator.feed(*DELTA_END)
    [last] = translator.end()
    assert (last.id, last.finish_reason, last.usage.output_tokens) == (
        "req-1",
        pb.FINISH_REASON_STOP,
        2,
    )


def test_message_delta_usage_is_cumulative() -> None:
    translator = ChatStreamTranslator(TARGET)
    translator.feed(*START)
    translator.feed(
        *event(
            "message_delta",
            delta={"stop_reason": "max_tokens"},
            usage={"input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 9},
        )
    )
    [last] = translator.feed(*event("message_stop"))
    assert last.finish_reason == pb.FINISH_REASON_LENGTH
    assert (last.usage.input_tokens, last.usage.cached_input_tokens) == (10, 6)
    assert last.usage.output_tokens == 9


def test_null_counts_in_message_delta_keep_earlier_ones() -> None:
    translator = ChatStreamTranslator(TARGET)
    translator.feed(*START)
    translator.feed(
        *event(
            "message_delta",
            delta={"stop_reason": "end_turn"},
            usage={"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 9},
        )
    )
    [last] = translator.feed(*event("message_stop"))
    assert (last.usage.input_tokens, last.usage.output_tokens) == (3, 9)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("overloaded_error", grpc.StatusCode.UNAVAILABLE),
        ("api_error", grpc.StatusCode.UNAVAILABLE),
        ("invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
        ("brand_new_error", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_in_stream_error_keeps_its_meaning(kind: str, code: grpc.StatusCode) -> None:
    translator = ChatStreamTranslator(TARGET)
    translator.feed(*START)
    with pytest.raises(GatewayError) as caught:
        translator.feed(*event("error", error={"type": kind, "message": "slow down"}))
    assert caught.value.code == code
    assert "failed mid-stream: slow down" in caught.value.message
    assert "http_status" not in caught.value.metadata
    assert caught.value.metadata["vendor_code"] == kind


@pytest.mark.parametrize(
    "bad",
    [
        ("message_start", '{"type": "message_start", "message": '),
        event(
            "content_block_delta", index=5, delta={"type": "input_json_delta", "partial_json": "{"}
        ),
        event("content_block_start", index=0),
        event("content_block_delta", index=0, delta={"type": "text_delta"}),
    ],
)
def test_event_of_the_wrong_shape_is_a_protocol_error(bad: tuple[str, str]) -> None:
    with pytest.raises(GatewayError) as caught:
        ChatStreamTranslator(TARGET).feed(*bad)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR


def test_unknown_events_and_blocks_are_skipped() -> None:
    translator = ChatStreamTranslator(TARGET)
    assert translator.feed(*event("brand_new_event", anything=1)) == []
    assert (
        translator.feed(
            *event(
                "content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}
            )
        )
        == []
    )
    assert (
        translator.feed(
            *event(
                "content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}
            )
        )
        == []
    )
    assert translator.feed(*event("content_block_stop", index=0)) == []


# --- errors -----------------------------------------------------------------------------------


def envelope(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def test_retry_after_is_kept_for_rate_limits_only() -> None:
    limited = tr.upstream_error(
        429, {"Retry-After": "3"}, envelope("rate_limit_error", "x"), TARGET
    )
    assert (limited.code, limited.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 3.0)
    overloaded = tr.upstream_error(
        529, {"retry-after": "3"}, envelope("overloaded_error", "x"), TARGET
    )
    assert (overloaded.code, overloaded.retry_after) == (grpc.StatusCode.UNAVAILABLE, None)
    assert overloaded.metadata["vendor_code"] == "overloaded_error"


def test_long_message_is_cut_after_redaction() -> None:
    secret = TARGET.secrets[0]
    message = "x" * (MAX_VENDOR_MESSAGE - 10) + secret + "y" * 1000
    error = tr.upstream_error(400, {}, envelope("invalid_request_error", message), TARGET)
    assert secret[:8] not in error.message
    assert error.message.endswith("[REDACTED…")


def test_error_body_of_another_shape_is_kept_as_text() -> None:
    error = tr.upstream_error(400, {}, b'{"message": "bad thing"}', TARGET)
    assert "bad thing" in error.message
    assert "vendor_code" not in error.metadata


def test_tool_choice_is_sent_only_with_tools() -> None:
    request = pb.ChatRequest(
        model="claude",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])],
        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE),
        parallel_tool_calls=False,
    )
    body = tr.chat_request_body(request, "claude-haiku-4-5", default_max_tokens=64)
    assert "tool_choice" not in body
    request.tools.add(name="lookup")
    body = tr.chat_request_body(request, "claude-haiku-4-5", default_max_tokens=64)
    assert body["tool_choice"] == {"type": "none"}


def test_temperature_and_top_p_together_are_refused() -> None:
    request = pb.ChatRequest(
        model="claude",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])],
        sampling=pb.SamplingParams(temperature=0.5, top_p=0.9),
    )
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(request, "claude-haiku-4-5", default_max_tokens=64)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["sampling.top_p"]
    request.sampling.ClearField("temperature")
    assert tr.chat_request_body(request, "claude-haiku-4-5", default_max_tokens=64)["top_p"] == 0.9
