"""Pure translation between unigate.v1 messages and Mistral's REST wire format.

Mistral's chat API has OpenAI's shape with differences, so a chat body is the OpenAI adapter's,
reshaped (Mistral refuses unknown fields with a 422):

- `random_seed` for seed; tool_choice "any" for required, and only with tools; no `user`; no
  stream_options (usage comes on the last chunk); `name` only on tool messages (the function's);
- tool call ids must be nine letters or digits: other ids (another vendor's, or the caller's
  own) are mapped to such ids, the same way in assistant tool calls and in tool results;
- every function tool needs `parameters`.

Answers may carry content as a list of chunks (text, thinking...) and tool arguments as an
object; finish reasons add "model_length" (LENGTH) and "error" (a failure, not an answer).
The only plain-completion API is FIM (/v1/fim/completions, Codestral models). Error bodies are
{"object": "error", "message": ..., "type": ..., "code": ...}, whose message is a
{"detail": [...]} list for 422 validation errors, or the API gateway's {"message": ...}.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import grpc
import orjson

from unigate.gateway.errors import FieldViolation, GatewayError, Reason, invalid_argument
from unigate.gateway.providers import openai_translate as tr
from unigate.gateway.providers.common import (
    Json,
    assistant_message,
    finish_reason_of,
    json_object,
    protocol_errors,
    with_vendor_code,
)
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

PROVIDER = "mistral"
WIRE = "Mistral"

_TOOL_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")
_ID_ALPHABET = string.ascii_letters + string.digits
_FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "model_length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
# Error types whose meaning the HTTP status does not carry (an unknown model is a 400).
_TYPE_STATUS = {"invalid_model": 404, "service_tier_capacity_exceeded": 503}
# In-stream errors carry no HTTP status at all.
_STREAM_TYPE_STATUS = {
    "invalid_request_error": 400,
    "invalid_function_call": 400,
    "invalid_model": 404,
    "rate_limited": 429,
    "service_tier_capacity_exceeded": 503,
}


# --- requests ---------------------------------------------------------------------------------


def chat_request_body(
    request: pb.ChatRequest, model: str, *, stream: bool = False, safe_prompt: bool = False
) -> Json:
    """The /v1/chat/completions body."""
    body = _mistral_fields(tr.chat_request_body(request, model))
    if body.get("tool_choice") == "required":
        body["tool_choice"] = "any"
    names = {call.id: call.name for message in request.messages for call in message.tool_calls}
    body["messages"] = [_message(message, names) for message in body["messages"]]
    for tool in body.get("tools", ()):
        tool["function"].setdefault("parameters", {"type": "object", "properties": {}})
    if safe_prompt:
        body["safe_prompt"] = True
    return body | {"stream": True} if stream else body


def fim_request_body(request: pb.CompleteRequest, model: str, *, stream: bool = False) -> Json:
    """The /v1/fim/completions body: the prompt, no suffix (Codestral models only)."""
    violations = [
        FieldViolation(f"sampling.{name}", "Mistral's FIM completion does not take it")
        for name in ("presence_penalty", "frequency_penalty")
        if request.sampling.HasField(name)
    ]
    if violations:
        raise invalid_argument(violations)
    body = _mistral_fields(tr.complete_request_body(request, model))
    return body | {"stream": True} if stream else body


def embed_request_body(request: pb.EmbedRequest, model: str, *, dtype: str | None = None) -> Json:
    body: Json = {"model": model, "input": list(request.inputs)}
    if request.HasField("dimensions"):
        body["output_dimension"] = request.dimensions
    if dtype:
        body["output_dtype"] = dtype
    return body


def _mistral_fields(body: Json) -> Json:
    body.pop("user", None)
    if "seed" in body:
        body["random_seed"] = body.pop("seed")
    return body


def _message(message: Json, names: Mapping[str, str]) -> Json:
    out = {key: value for key, value in message.items() if key != "name"}
    if out["role"] == "tool":
        if name := names.get(out["tool_call_id"]):
            out["name"] = name
        out["tool_call_id"] = tool_call_id(out["tool_call_id"])
    for call in out.get("tool_calls") or ():
        call["id"] = tool_call_id(call["id"])
    return out


def tool_call_id(raw: str) -> str:
    """A Mistral id (nine letters or digits) for any tool call id; Mistral's own are kept."""
    if _TOOL_CALL_ID.fullmatch(raw):
        return raw
    number = int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big")
    letters = []
    for _ in range(9):
        number, digit = divmod(number, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "".join(letters)


# --- responses --------------------------------------------------------------------------------


def chat_response(body: bytes, target: Target) -> pb.ChatResponse:
    with protocol_errors(target, "a chat answer", wire=WIRE):
        data = json_object(body)
        choice = data["choices"][0]
        message = choice["message"]
        text = content_text(message.get("content"))
        calls = [_tool_call(call) for call in message.get("tool_calls") or []]
        return pb.ChatResponse(
            id=data.get("id") or "",
            model=data.get("model") or "",
            provider=PROVIDER,
            message=assistant_message(text, calls),
            finish_reason=finish_reason(choice.get("finish_reason"), target),
            usage=tr.usage(data.get("usage")),
        )


def fim_response(body: bytes, target: Target) -> pb.CompleteResponse:
    with protocol_errors(target, "a completion", wire=WIRE):
        data = json_object(body)
        choice = data["choices"][0]
        return pb.CompleteResponse(
            id=data.get("id") or "",
            model=data.get("model") or "",
            provider=PROVIDER,
            text=content_text(choice["message"].get("content")),
            finish_reason=finish_reason(choice.get("finish_reason"), target),
            usage=tr.usage(data.get("usage")),
        )


def embed_response(body: bytes, target: Target, *, inputs: int) -> pb.EmbedResponse:
    return tr.embed_response(body, target, inputs=inputs, provider=PROVIDER)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text chunks of a list (thinking and
    other chunks left out)."""
    if isinstance(content, list):
        return "".join(c["text"] for c in content if c.get("type") == "text")
    if content is not None and not isinstance(content, str):
        raise TypeError("content is neither text nor a list of chunks")
    return content or ""


def arguments_text(arguments: Any) -> str:
    """Tool call arguments as the JSON text unigate carries (Mistral may send an object)."""
    if isinstance(arguments, dict | list):
        return orjson.dumps(arguments).decode()
    return str(arguments or "")


def _tool_call(call: Json) -> pb.ToolCall:
    function = call["function"]
    return pb.ToolCall(
        id=call.get("id") or "",
        name=function["name"],
        arguments=arguments_text(function.get("arguments")),
    )


def finish_reason(reason: str | None, target: Target) -> pb.FinishReason:
    if reason == "error":
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
            f"{target.provider} deployment {target.deployment!r}: "
            "Mistral reported an error while generating the answer",
            metadata={"provider": target.provider, "deployment": target.deployment},
        )
    return finish_reason_of(reason, _FINISH_REASONS)


# --- errors -----------------------------------------------------------------------------------


def upstream_error(
    status: int, headers: Mapping[str, str], body: bytes, target: Target
) -> GatewayError:
    """An HTTP error answer as a GatewayError, in Mistral's own (redacted) words."""
    message, kind = _vendor_error(body)
    # In OpenAI's envelope, the OpenAI translation redacts, trims and maps it.
    envelope = orjson.dumps({"error": {"message": message, "code": kind}})
    meaning = _TYPE_STATUS.get(kind or "", status)
    error = tr.upstream_error(meaning, headers, envelope, target)
    if meaning == status:
        return error
    # The code and reason follow the meaning; the message and metadata tell what was sent.
    return replace(
        error,
        message=error.message.replace(f"answered {meaning}", f"answered {status}", 1),
        metadata={**error.metadata, "http_status": str(status)},
    )


def is_stream_error(chunk: Json) -> bool:
    return chunk.get("object") == "error" or "error" in chunk


def stream_error(chunk: Json, target: Target) -> GatewayError:
    """An error payload sent as an SSE event after the 200 status line."""
    message, kind = _vendor_error(orjson.dumps(chunk))
    status = chunk.get("raw_status_code")
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = _STREAM_TYPE_STATUS.get(kind or "", 500)
    return with_vendor_code(tr.stream_error({"message": message, "code": status}, target), kind)


def _vendor_error(body: bytes) -> tuple[str, str | None]:
    """The message and type of a Mistral error body (or the raw text of any other)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace"), None
    if not isinstance(data, dict):
        return str(data), None
    if isinstance(data.get("error"), dict):
        data = data["error"]
    message = data.get("message", data.get("detail"))
    if isinstance(message, dict):
        message = message.get("detail", message)
    if isinstance(message, list):
        message = "; ".join(_violation(item) for item in message)
    kind = data.get("type")
    return str(message or ""), kind if isinstance(kind, str) and kind else None


def _violation(item: Any) -> str:
    """One 422 validation detail: where and what, without echoing the input."""
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc") or ())
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))
