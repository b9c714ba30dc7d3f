"""Gemini translation, driven by golden files in tests/testdata/gemini/<case>/.

Each case has case.json (which RPC, the vendor model, the upstream status and headers), and:
request.json (a unigate request, proto JSON) -> upstream_request.json (the path and body sent to
Gemini); upstream_response.json|.sse|.txt (what Gemini sent, byte for byte) -> response.json.
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
from unigate.gateway.providers import gemini_translate as tr
from unigate.gateway.providers.gemini import ChatStreamTranslator, stream_error, upstream_error
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

CASES_DIR = Path(__file__).parent.parent / "testdata" / "gemini"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))
REQUEST_TYPES = {"chat": pb.ChatRequest, "stream_chat": pb.ChatRequest, "embed": pb.EmbedRequest}
GOLDEN_KEY = "AIzaSyUNIGATEgolden0123456789abcdefXYZ"


def error_dict(error: GatewayError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "metadata": dict(error.metadata),
        "retryAfter": error.retry_after,
    }


def upstream_request(request: Any, spec: dict[str, Any]) -> dict[str, Any]:
    model, rpc = spec["model"], spec["rpc"]
    if rpc == "embed":
        method, body = tr.embed_request(request, model)
    else:
        method = "streamGenerateContent" if rpc == "stream_chat" else "generateContent"
        body = tr.chat_request_body(request)
    return {"path": tr.request_path(model, method), "body": body}


def recorded_answer(case_dir: Path) -> bytes:
    [answer_file] = case_dir.glob("upstream_response.*")
    return answer_file.read_bytes()


async def translate_answer(body: bytes, spec: dict[str, Any], target: Target, inputs: int) -> Any:
    rpc, status = spec["rpc"], spec.get("status", 200)
    if status >= 300:
        return {"error": error_dict(upstream_error(status, spec.get("headers", {}), body, target))}
    if rpc == "stream_chat":
        translator = ChatStreamTranslator(target)
        messages: list[dict[str, Any]] = []
        result: dict[str, Any] = {"messages": messages}
        try:
            async for event in iter_sse(body_reader([body])):
                messages.extend(json_format.MessageToDict(m) for m in translator.feed(event.data))
            messages.extend(json_format.MessageToDict(m) for m in translator.end())
        except GatewayError as exc:
            result["error"] = error_dict(exc)
        return result
    try:
        if rpc == "chat":
            return json_format.MessageToDict(tr.chat_response(body, target))
        return json_format.MessageToDict(tr.embed_response(body, target, inputs=inputs))
    except GatewayError as exc:
        return {"error": error_dict(exc)}


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    api_key = spec.get("api_key", GOLDEN_KEY)
    target = Target(provider="gemini", deployment="golden", secrets=(api_key,))
    inputs = spec.get("inputs", 1)
    if (case_dir / "request.json").exists():
        request_type = REQUEST_TYPES[spec["rpc"]]
        request = json_format.Parse((case_dir / "request.json").read_text(), request_type())
        assert_golden(case_dir / "upstream_request.json", upstream_request(request, spec))
        inputs = len(getattr(request, "inputs", []))
    actual = await translate_answer(recorded_answer(case_dir), spec, target, inputs)
    assert api_key not in orjson.dumps(actual).decode()
    assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert set(REQUEST_TYPES) <= {spec["rpc"] for spec in specs}
    assert {400, 403, 404, 429, 500, 503} <= {spec.get("status", 200) for spec in specs}
    sse = [case for case in CASES if (case / "upstream_response.sse").exists()]
    for case in sse:  # recorded as Google sends them: CRLF line ends, no [DONE]
        raw = (case / "upstream_response.sse").read_bytes()
        assert b"\r\n\r\n" in raw
        assert b"[DONE]" not in raw


# --- requests ---------------------------------------------------------------------------------


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def assistant_calls(*calls: tuple[str, str]) -> pb.Message:
    return pb.Message(
        role=pb.ROLE_ASSISTANT,
        tool_calls=[pb.ToolCall(id=ident, name=name, arguments="{}") for ident, name in calls],
    )


def tool(call_id: str, text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_TOOL, tool_call_id=call_id, content=[pb.ContentPart(text=text)])


def test_unset_sampling_is_omitted_but_explicit_zero_is_sent() -> None:
    request = pb.ChatRequest(messages=[user("hi")], user="u-1", metadata={"team": "x"})
    body = tr.chat_request_body(request)
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"candidateCount": 1},
    }
    request.sampling.temperature = 0.0
    request.sampling.seed = 0
    config = tr.chat_request_body(request)["generationConfig"]
    assert (config["temperature"], config["seed"]) == (0.0, 0)
    assert "topP" not in config


def test_seed_beyond_32_bits_is_invalid_argument() -> None:
    request = pb.ChatRequest(messages=[user("hi")], sampling=pb.SamplingParams(seed=2**31))
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "sampling.seed"


def test_tool_result_takes_the_name_of_the_nearest_call_with_its_id() -> None:
    messages = [
        user("a"),
        assistant_calls(("call_0", "get_time")),
        tool("call_0", "noon"),
        user("b"),
        assistant_calls(("call_0", "get_forecast")),
        tool("call_0", "{}"),
    ]
    contents = tr.chat_request_body(pb.ChatRequest(messages=messages))["contents"]
    responses = [
        p["functionResponse"] for c in contents for p in c["parts"] if "functionResponse" in p
    ]
    assert responses == [
        {"name": "get_time", "response": {"output": "noon"}},
        {"name": "get_forecast", "response": {}},  # an empty JSON object is an object
    ]


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([user("a"), tool("call_9", "x")], "messages[1].tool_call_id"),
        ([tool("call_0", "x"), assistant_calls(("call_0", "f"))], "messages[0].tool_call_id"),
    ],
)
def test_tool_result_without_an_earlier_call_is_invalid_argument(
    messages: list[pb.Message], field: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(pb.ChatRequest(messages=messages))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == field


@pytest.mark.parametrize("arguments", ["[1, 2]", "{not json", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    call = pb.ToolCall(id="call_0", name="f", arguments=arguments)
    request = pb.ChatRequest(
        messages=[user("a"), pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call])]
    )
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(request)
    assert caught.value.field_violations[0].field == "messages[1].tool_calls[0].arguments"


def test_empty_tool_call_arguments_are_an_empty_object() -> None:
    call = pb.ToolCall(id="call_0", name="f", arguments="")
    request = pb.ChatRequest(
        messages=[user("a"), pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call])]
    )
    [_, model] = tr.chat_request_body(request)["contents"]
    assert model == {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}


def image_request(**image: Any) -> pb.ChatRequest:
    part = pb.ContentPart(image=pb.Image(**image))
    return pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=[part])])


@pytest.mark.parametrize(
    ("image", "field"),
    [
        ({"url": "gs://bucket/cat.png"}, "messages[0].content[0].image.url"),
        ({"url": "ftp://example.com/cat.png"}, "messages[0].content[0].image.url"),
        ({"url": "data:image/png,rawbytes"}, "messages[0].content[0].image.url"),
        ({"url": "https://example.com/render?id=7"}, "messages[0].content[0].image.mime_type"),
    ],
)
def test_images_gemini_cannot_take_are_invalid_argument(image: dict[str, str], field: str) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(image_request(**image))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == field


def test_image_url_mime_type_from_the_request_or_the_extension() -> None:
    body = tr.chat_request_body(
        image_request(url="https://x.test/render?id=7", mime_type="image/png")
    )
    assert body["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/render?id=7"}}
    ]
    body = tr.chat_request_body(image_request(url="https://x.test/a/Cat.WEBP?size=2"))
    assert body["contents"][0]["parts"][0]["fileData"]["mimeType"] == "image/webp"


def test_model_name_and_path() -> None:
    assert tr.request_path("gemini-2.5-flash", "generateContent") == (
        "/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert tr.request_path("tunedModels/my-tune", "streamGenerateContent", "v1") == (
        "/v1/tunedModels/my-tune:streamGenerateContent?alt=sse"
    )
    assert tr.request_path("a b", "embedContent") == "/v1beta/models/a%20b:embedContent"


# --- responses --------------------------------------------------------------------------------

TARGET = Target(provider="gemini", deployment="unit", secrets=("unit-secret-0123456789",))


def answer(*parts: dict[str, Any], finish: str | None = "STOP", **extra: Any) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return orjson.dumps({"candidates": [candidate], **extra})


def test_gemini_call_ids_are_kept_and_signatures_ride_along() -> None:
    call = {
        "functionCall": {"id": "fc-7", "name": "f", "args": {"a": 1}},
        "thoughtSignature": "c2ln",
    }
    [made] = tr.chat_response(answer(call), TARGET).message.tool_calls
    assert made.id == "fc-7__thought__c2ln"
    assert tr.split_tool_call_id(made.id) == ("fc-7", "c2ln")
    back = pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[made])
    [_, model] = tr.chat_request_body(pb.ChatRequest(messages=[user("x"), back]))["contents"]
    assert model["parts"] == [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", pb.FINISH_REASON_STOP),
        ("MAX_TOKENS", pb.FINISH_REASON_LENGTH),
        ("RECITATION", pb.FINISH_REASON_CONTENT_FILTER),
        ("SPII", pb.FINISH_REASON_CONTENT_FILTER),
        ("BLOCKLIST", pb.FINISH_REASON_CONTENT_FILTER),
        ("OTHER", pb.FINISH_REASON_STOP),
        ("SOMETHING_NEW", pb.FINISH_REASON_STOP),
        (None, pb.FINISH_REASON_UNSPECIFIED),
    ],
)
def test_finish_reasons(reason: str | None, expected: pb.FinishReason) -> None:
    assert tr.finish_reason(reason, tool_calls=False, target=TARGET) == expected


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("MALFORMED_FUNCTION_CALL", grpc.StatusCode.UNAVAILABLE),
        ("UNEXPECTED_TOOL_CALL", grpc.StatusCode.UNAVAILABLE),
        ("MISSING_THOUGHT_SIGNATURE", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_unusable_answers_are_errors_not_empty_stops(reason: str, code: grpc.StatusCode) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_response(answer(finish=reason), TARGET)
    assert caught.value.code == code
    assert caught.value.metadata["vendor_code"] == reason


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"candidates": [{"content": 3}]}'])
def test_chat_answer_of_the_wrong_shape_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_response(body, TARGET)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR
    assert "not valid Gemini JSON" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [b'{"embeddings": [{"values": [1]}]}', b'{"embedding": {"values": [1]}}', b'{"x": 1}'],
)
def test_embeddings_that_do_not_match_the_inputs_are_a_protocol_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.embed_response(body, TARGET, inputs=2)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR


def test_embedding_usage_when_gemini_reports_it() -> None:
    body = b'{"embedding": {"values": [0.5]}, "usageMetadata": {"promptTokenCount": 4}}'
    response = tr.embed_response(body, TARGET, inputs=1)
    assert (response.usage.input_tokens, response.usage.total_tokens) == (4, 4)


# --- streams ----------------------------------------------------------------------------------


def test_stream_text_and_finish_in_one_chunk_then_usage_at_the_end() -> None:
    translator = ChatStreamTranslator(TARGET, fallback_id="req-1")
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    [delta] = translator.feed(answer({"text": "hi"}, usageMetadata=usage).decode())
    assert (delta.text, delta.finish_reason, delta.HasField("usage")) == ("hi", 0, False)
    [last] = translator.end()
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.usage.total_tokens == 5
    assert last.id == "req-1"  # no responseId came


def test_stream_function_calls_are_numbered_across_chunks() -> None:
    translator = ChatStreamTranslator(TARGET)
    first = translator.feed(answer({"functionCall": {"name": "a"}}, finish=None).decode())
    second = translator.feed(answer({"functionCall": {"name": "b", "args": {"x": 1}}}).decode())
    pieces = [piece for m in first + second for piece in m.tool_calls]
    assert [(p.index, p.id, p.name, p.arguments) for p in pieces] == [
        (0, "call_0", "a", "{}"),
        (1, "call_1", "b", '{"x":1}'),
    ]
    [last] = translator.end()
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


def test_stream_ending_without_a_finish_reason_is_unavailable() -> None:
    translator = ChatStreamTranslator(TARGET)
    translator.feed(answer({"text": "par"}, finish=None).decode())
    with pytest.raises(GatewayError) as caught:
        translator.end()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "stream ended before the answer finished" in caught.value.message


def test_in_stream_error_without_a_code_maps_by_its_status() -> None:
    error = {"message": "slow down", "status": "RESOURCE_EXHAUSTED"}
    with pytest.raises(GatewayError) as caught:
        ChatStreamTranslator(TARGET).feed(orjson.dumps({"error": error}).decode())
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.message == "gemini deployment 'unit' failed mid-stream: slow down"
    assert "http_status" not in caught.value.metadata
    assert stream_error("boom", TARGET).code == grpc.StatusCode.UNAVAILABLE


# --- errors -----------------------------------------------------------------------------------


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error = {"code": code, "message": message, "status": status, "details": list(details)}
    return orjson.dumps({"error": error})


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}


def test_retry_after_header_wins_over_retry_info() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "quota", RETRY_INFO)
    assert upstream_error(429, {"Retry-After": "3"}, body, TARGET).retry_after == 3.0
    assert upstream_error(429, {}, body, TARGET).retry_after == 1.5


@pytest.mark.parametrize("delay", ["soon", "5m", 7, None])
def test_unreadable_retry_delay_is_ignored(delay: Any) -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "quota", {"retryDelay": delay})
    error = upstream_error(429, {}, body, TARGET)
    assert (error.code, error.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, None)


def test_long_message_is_cut_after_redaction() -> None:
    secret = TARGET.secrets[0]
    text = "x" * 490 + secret + "y" * 1000
    error = upstream_error(400, {}, google_error(400, "INVALID_ARGUMENT", text), TARGET)
    assert secret[:8] not in error.message
    assert error.message.endswith("[REDACTED…")


def test_one_call_per_turn_is_refused_not_dropped() -> None:
    request = pb.ChatRequest(
        model="gemini",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])],
        tools=[pb.Tool(name="lookup")],
        parallel_tool_calls=False,
    )
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.field_violations] == ["parallel_tool_calls"]
    request.parallel_tool_calls = True
    assert "tools" in tr.chat_request_body(request)
