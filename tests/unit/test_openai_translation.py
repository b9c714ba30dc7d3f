"""OpenAI translation, driven by golden files in tests/testdata/openai/<case>/.

Each case has case.json (which RPC, the vendor model, settings, the upstream status), and:
request.json (a unigate request, proto JSON) -> upstream_request.json (the OpenAI body);
upstream_response.json|.sse|.txt (what OpenAI sent, byte for byte) -> response.json.
Adding a case adds files, not code.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import json_format

from tests.fakes import body_reader
from tests.golden import UPDATE_ENV, assert_golden, load_json
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import openai_translate as tr
from unigate.gateway.providers.common import MAX_VENDOR_MESSAGE
from unigate.gateway.providers.openai import (
    ChatStreamTranslator,
    CompleteStreamTranslator,
    OpenAISettings,
)
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

CASES_DIR = Path(__file__).parent.parent / "testdata" / "openai"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))
REQUEST_TYPES = {
    "chat": pb.ChatRequest,
    "stream_chat": pb.ChatRequest,
    "complete": pb.CompleteRequest,
    "stream_complete": pb.CompleteRequest,
    "embed": pb.EmbedRequest,
}


def error_dict(error: GatewayError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "metadata": dict(error.metadata),
        "retryAfter": error.retry_after,
    }


def upstream_body(case_dir: Path, spec: dict[str, Any], settings: OpenAISettings) -> Any:
    request = json_format.Parse(
        (case_dir / "request.json").read_text(), REQUEST_TYPES[spec["rpc"]]()
    )
    model, rpc = spec["model"], spec["rpc"]
    if rpc in ("chat", "stream_chat"):
        return tr.chat_request_body(
            request,
            model,
            stream=rpc == "stream_chat",
            max_tokens_field=settings.max_tokens_field,
        )
    if rpc in ("complete", "stream_complete"):
        return tr.complete_request_body(request, model, stream=rpc == "stream_complete")
    return tr.embed_request_body(request, model, encoding=settings.embedding_encoding)


def recorded_answer(case_dir: Path) -> bytes:
    [answer_file] = case_dir.glob("upstream_response.*")
    return answer_file.read_bytes()


async def translate_answer(body: bytes, spec: dict[str, Any], target: Target) -> Any:
    rpc, status = spec["rpc"], spec.get("status", 200)
    if status >= 300:
        return {
            "error": error_dict(tr.upstream_error(status, spec.get("headers", {}), body, target))
        }
    if rpc.startswith("stream_"):
        translator = (ChatStreamTranslator if rpc == "stream_chat" else CompleteStreamTranslator)(
            target
        )
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
        if rpc == "complete":
            return json_format.MessageToDict(tr.complete_response(body, target))
        inputs = len(orjson.loads(body)["data"])
        return json_format.MessageToDict(tr.embed_response(body, target, inputs=inputs))
    except GatewayError as exc:
        return {"error": error_dict(exc)}


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    settings = OpenAISettings(kind="openai", **spec.get("settings", {}))
    api_key = spec.get("api_key", "sk-golden-never-sent-0000")
    target = Target(provider="openai", deployment="golden", secrets=(api_key,))
    if (case_dir / "request.json").exists():
        body = upstream_body(case_dir, spec, settings)
        assert_golden(case_dir / "upstream_request.json", body)
    actual = await translate_answer(recorded_answer(case_dir), spec, target)
    assert api_key not in orjson.dumps(actual).decode()
    assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert set(REQUEST_TYPES) <= {spec["rpc"] for spec in specs}
    assert {401, 404, 429, 500} <= {spec.get("status", 200) for spec in specs}


# --- requests ---------------------------------------------------------------------------------


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def test_unset_sampling_is_omitted_but_explicit_zero_is_sent() -> None:
    request = pb.ChatRequest(messages=[user("hi")], metadata={"secret-ish": "x"})
    body = tr.chat_request_body(request, "m")
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request.sampling.temperature = 0.0
    request.sampling.seed = 0
    body = tr.chat_request_body(request, "m")
    assert body["temperature"] == 0.0
    assert body["seed"] == 0
    assert "top_p" not in body


def test_stream_asks_for_usage() -> None:
    body = tr.chat_request_body(pb.ChatRequest(messages=[user("hi")]), "m", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    complete = tr.complete_request_body(pb.CompleteRequest(prompt="p"), "m", stream=True)
    assert complete["stream_options"] == {"include_usage": True}


def test_several_text_parts_stay_parts() -> None:
    message = pb.Message(
        role=pb.ROLE_USER, content=[pb.ContentPart(text="a"), pb.ContentPart(text="b")]
    )
    body = tr.chat_request_body(pb.ChatRequest(messages=[message]), "m")
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]


def test_message_without_role_is_invalid_argument() -> None:
    request = pb.ChatRequest(messages=[user("hi"), pb.Message(content=[pb.ContentPart(text="x")])])
    with pytest.raises(GatewayError) as caught:
        tr.chat_request_body(request, "m")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "messages[1].role"


# --- responses --------------------------------------------------------------------------------

TARGET = Target(provider="openai", deployment="unit", secrets=("sk-unit-secret-0123456789",))


def test_embeddings_come_back_in_input_order() -> None:
    data = [{"index": i, "embedding": [float(i)]} for i in (2, 0, 1)]
    body = orjson.dumps({"data": data, "model": "e"})
    response = tr.embed_response(body, TARGET, inputs=3)
    assert [(e.index, list(e.values)) for e in response.embeddings] == [
        (0, [0.0]),
        (1, [1.0]),
        (2, [2.0]),
    ]


def test_base64_embedding_is_little_endian_float32() -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.5, -1.25, 3.0)).decode()
    body = orjson.dumps({"data": [{"index": 0, "embedding": packed}], "model": "e"})
    assert list(tr.embed_response(body, TARGET, inputs=1).embeddings[0].values) == [0.5, -1.25, 3.0]


@pytest.mark.parametrize(
    "data",
    [
        [{"index": 0, "embedding": [1.0]}],  # one vector short
        [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}],  # duplicate index
        [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "not base64!"}],
    ],
)
def test_embeddings_that_do_not_match_the_inputs_are_a_protocol_error(data: Any) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.embed_response(orjson.dumps({"data": data}), TARGET, inputs=2)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("body", [b"", b"[]", b'{"choices": []}', b'{"choices": [{}]}'])
def test_chat_answer_of_the_wrong_shape_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        tr.chat_response(body, TARGET)
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR


def test_unknown_finish_reason_of_a_compatible_server_is_a_stop() -> None:
    assert tr.finish_reason("eos") == pb.FINISH_REASON_STOP
    assert tr.finish_reason(None) == pb.FINISH_REASON_UNSPECIFIED


# --- streams ----------------------------------------------------------------------------------


def chunk(**fields: Any) -> str:
    return orjson.dumps({"id": "c1", "model": "m", **fields}).decode()


def test_finish_reason_waits_for_usage_and_done() -> None:
    translator = ChatStreamTranslator(TARGET)
    first = translator.feed(chunk(choices=[{"index": 0, "delta": {"content": "hi"}}]))
    assert [m.text for m in first] == ["hi"]
    assert not translator.feed(
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])
    )
    assert not translator.feed(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    assert not translator.feed(
        chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2})
    )
    [last] = translator.feed("[DONE]")
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert (last.usage.input_tokens, last.usage.total_tokens) == (3, 5)
    assert (last.id, last.model, last.provider) == ("c1", "m", "openai")
    assert translator.end() == []


def test_done_before_any_finish_reason_is_unavailable() -> None:
    translator = CompleteStreamTranslator(TARGET)
    translator.feed(chunk(choices=[{"index": 0, "text": "par"}]))
    with pytest.raises(GatewayError) as caught:
        translator.feed("[DONE]")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "stream ended before the answer finished" in caught.value.message


def test_body_ending_without_done_completes_only_with_finish_and_usage() -> None:
    finished = ChatStreamTranslator(TARGET)
    finished.feed(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    with pytest.raises(GatewayError):
        finished.end()  # the usage chunk never came
    finished.feed(chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1}))
    [last] = finished.end()
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.usage.total_tokens == 2


def test_chunk_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(GatewayError) as caught:
        ChatStreamTranslator(TARGET).feed('{"id": "c1", "choices": [')
    assert caught.value.reason == Reason.UPSTREAM_PROTOCOL_ERROR


def test_in_stream_rate_limit_error_keeps_its_meaning() -> None:
    error = {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}
    with pytest.raises(GatewayError) as caught:
        ChatStreamTranslator(TARGET).feed(orjson.dumps({"error": error}).decode())
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "failed mid-stream: slow down" in caught.value.message


def test_only_the_first_choice_is_read() -> None:
    translator = ChatStreamTranslator(TARGET)
    messages = translator.feed(
        chunk(
            choices=[
                {"index": 1, "delta": {"content": "other"}},
                {"index": 0, "delta": {"content": "mine"}},
            ]
        )
    )
    assert [m.text for m in messages] == ["mine"]


# --- errors -----------------------------------------------------------------------------------


def test_retry_after_ms_is_preferred() -> None:
    error = tr.upstream_error(429, {"Retry-After-Ms": "1500", "Retry-After": "2"}, b"{}", TARGET)
    assert error.retry_after == 1.5


def test_model_not_found_code_means_not_found_whatever_the_status() -> None:
    body = orjson.dumps({"error": {"message": "no such model", "code": "model_not_found"}})
    error = tr.upstream_error(400, {}, body, TARGET)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.metadata["vendor_code"] == "model_not_found"


def test_vllm_flat_error_body() -> None:
    body = b'{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError",'
    body += b'"param":null,"code":404}'
    error = tr.upstream_error(404, {}, body, TARGET)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "The model `x` does not exist." in error.message


def test_long_message_is_cut_after_redaction() -> None:
    secret = TARGET.secrets[0]
    # The secret straddles the cut: cutting first would keep a head too short to redact.
    text = "x" * (MAX_VENDOR_MESSAGE - 10) + secret + "y" * 1000
    error = tr.upstream_error(400, {}, orjson.dumps({"error": {"message": text}}), TARGET)
    assert secret[:8] not in error.message
    assert error.message.endswith("[REDACTED…")
    assert len(error.message) < MAX_VENDOR_MESSAGE + 100


# --- the golden helper itself -----------------------------------------------------------------


def test_golden_missing_file_fails_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        assert_golden(tmp_path / "new.json", {"a": 1})
    assert not (tmp_path / "new.json").exists()


def test_golden_difference_fails_with_a_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPDATE_ENV, "1")
    assert_golden(tmp_path / "g.json", {"a": 1, "b": [1, 2]})
    monkeypatch.delenv(UPDATE_ENV)
    assert_golden(tmp_path / "g.json", {"b": [1, 2], "a": 1})
    with pytest.raises(pytest.fail.Exception, match=r'(?s)-  "a": 1.*\+  "a": 2'):
        assert_golden(tmp_path / "g.json", {"a": 2, "b": [1, 2]})
