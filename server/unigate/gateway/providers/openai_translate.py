"""Pure translation between unigate.v1 messages and OpenAI's REST wire format.

No I/O here. Request bodies are built from protos; response bodies and SSE chunk payloads are
read into protos; upstream failures become GatewayErrors. A body that does not have the shape
OpenAI documents is an UPSTREAM_PROTOCOL_ERROR, raised once, by `protocol_errors`.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from unigate.gateway.errors import (
    FieldViolation,
    GatewayError,
    invalid_argument,
    parse_retry_after,
)
from unigate.gateway.providers.common import (
    Json,
    assistant_message,
    base64_text,
    finish_reason_of,
    header_value,
    http_error,
    json_object,
    json_or_none,
    mid_stream_error,
    protocol_errors,
    struct_to_dict,
    vendor_message,
    with_vendor_code,
)
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

PROVIDER = "openai"
WIRE = "OpenAI"

_ROLES = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_DETAILS = {pb.IMAGE_DETAIL_AUTO: "auto", pb.IMAGE_DETAIL_LOW: "low", pb.IMAGE_DETAIL_HIGH: "high"}
_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}
_FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "function_call": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
}
_STATUS_BY_CODE = {"model_not_found": 404, "insufficient_quota": 402}
# In-stream errors carry no HTTP status; their type or code says what the status would have been.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 402,
    "server_error": 500,
}


# --- requests ---------------------------------------------------------------------------------


def chat_request_body(
    request: pb.ChatRequest,
    model: str,
    *,
    stream: bool = False,
    max_tokens_field: str = "max_tokens",
    stream_usage: bool = True,
) -> Json:
    """The /chat/completions body. `metadata` stays in the gateway."""
    body: Json = {
        "model": model,
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
    }
    body.update(_sampling(request.sampling, max_tokens_field))
    # OpenAI refuses tool_choice and parallel_tool_calls without tools (400): only with them.
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        if request.HasField("tool_choice") and (choice := _tool_choice(request.tool_choice)):
            body["tool_choice"] = choice
        if request.HasField("parallel_tool_calls"):
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.HasField("response_format") and (fmt := _response_format(request.response_format)):
        body["response_format"] = fmt
    if request.user:
        body["user"] = request.user
    return body | _stream_flags(stream_usage) if stream else body


def complete_request_body(
    request: pb.CompleteRequest, model: str, *, stream: bool = False, stream_usage: bool = True
) -> Json:
    """The legacy /completions body (it has always taken `max_tokens`)."""
    body: Json = {"model": model, "prompt": request.prompt}
    body.update(_sampling(request.sampling, "max_tokens"))
    if request.user:
        body["user"] = request.user
    return body | _stream_flags(stream_usage) if stream else body


def embed_request_body(request: pb.EmbedRequest, model: str, *, encoding: str = "float") -> Json:
    body: Json = {"model": model, "input": list(request.inputs), "encoding_format": encoding}
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    return body


def _stream_flags(stream_usage: bool) -> Json:
    # Without include_usage OpenAI streams no token counts at all; some compatible
    # servers refuse the option, so it can be left out.
    if not stream_usage:
        return {"stream": True}
    return {"stream": True, "stream_options": {"include_usage": True}}


def _message(message: pb.Message, index: int) -> Json:
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid_argument([FieldViolation(f"messages[{index}].role", "must be set")])
    content = _content(message.content)
    out: Json = {"role": role, "content": content}
    if role == "tool":
        out["tool_call_id"] = message.tool_call_id
        return out
    if role == "assistant" and message.tool_calls:
        out["content"] = content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.name:
        out["name"] = message.name
    return out


def _tool_choice(choice: pb.ToolChoice) -> str | Json | None:
    if choice.WhichOneof("choice") == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return _TOOL_CHOICE_MODES.get(choice.mode)


def _content(parts: Sequence[pb.ContentPart]) -> str | list[Json]:
    if len(parts) <= 1 and all(part.WhichOneof("part") != "image" for part in parts):
        return parts[0].text if parts else ""
    return [_part(part) for part in parts]


def _part(part: pb.ContentPart) -> Json:
    if part.WhichOneof("part") != "image":
        return {"type": "text", "text": part.text}
    image = part.image
    if image.WhichOneof("source") == "data":
        mime = image.mime_type or "application/octet-stream"
        url = f"data:{mime};base64,{base64_text(image.data)}"
    else:
        url = image.url
    image_url: Json = {"url": url}
    if image.detail in _DETAILS:
        image_url["detail"] = _DETAILS[image.detail]
    return {"type": "image_url", "image_url": image_url}


def _sampling(sampling: pb.SamplingParams, max_tokens_field: str) -> Json:
    out: Json = {}
    if sampling.HasField("temperature"):
        out["temperature"] = sampling.temperature
    if sampling.HasField("top_p"):
        out["top_p"] = sampling.top_p
    if sampling.HasField("max_tokens"):
        out[max_tokens_field] = sampling.max_tokens
    if sampling.stop_sequences:
        out["stop"] = list(sampling.stop_sequences)
    if sampling.HasField("seed"):
        out["seed"] = sampling.seed
    if sampling.HasField("presence_penalty"):
        out["presence_penalty"] = sampling.presence_penalty
    if sampling.HasField("frequency_penalty"):
        out["frequency_penalty"] = sampling.frequency_penalty
    return out


def _tool(tool: pb.Tool) -> Json:
    function: Json = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.HasField("parameters"):
        function["parameters"] = struct_to_dict(tool.parameters)
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _response_format(fmt: pb.ResponseFormat) -> Json | None:
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_TEXT:
        return {"type": "text"}
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if fmt.type != pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        return None
    schema = fmt.json_schema
    spec: Json = {"name": schema.name or "response", "schema": struct_to_dict(schema.schema)}
    if schema.description:
        spec["description"] = schema.description
    if schema.strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


# --- responses --------------------------------------------------------------------------------


def chat_response(body: bytes, target: Target, *, provider: str = PROVIDER) -> pb.ChatResponse:
    with protocol_errors(target, "a chat answer", wire=WIRE):
        data = json_object(body)
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or message.get("refusal") or ""
        calls = [_tool_call(call) for call in message.get("tool_calls") or []]
        return pb.ChatResponse(
            id=data.get("id") or "",
            model=data.get("model") or "",
            provider=provider,
            message=assistant_message(text, calls),
            finish_reason=finish_reason(choice.get("finish_reason")),
            usage=usage(data.get("usage")),
        )


def _tool_call(call: Json) -> pb.ToolCall:
    function = call["function"]
    return pb.ToolCall(
        id=call.get("id") or "", name=function["name"], arguments=function.get("arguments") or ""
    )


def complete_response(
    body: bytes, target: Target, *, provider: str = PROVIDER
) -> pb.CompleteResponse:
    with protocol_errors(target, "a completion", wire=WIRE):
        data = json_object(body)
        choice = data["choices"][0]
        return pb.CompleteResponse(
            id=data.get("id") or "",
            model=data.get("model") or "",
            provider=provider,
            text=choice.get("text") or "",
            finish_reason=finish_reason(choice.get("finish_reason")),
            usage=usage(data.get("usage")),
        )


def embed_response(
    body: bytes, target: Target, *, inputs: int, provider: str = PROVIDER
) -> pb.EmbedResponse:
    """Vectors in input order; exactly one per input, or the answer is refused."""
    with protocol_errors(target, "embeddings", wire=WIRE):
        data = json_object(body)
        items = sorted(data["data"], key=lambda item: int(item["index"]))
        if [int(item["index"]) for item in items] != list(range(inputs)):
            raise ValueError(f"expected one embedding for each of {inputs} inputs")
        return pb.EmbedResponse(
            model=data.get("model") or "",
            provider=provider,
            embeddings=[
                pb.Embedding(index=int(item["index"]), values=_vector(item["embedding"]))
                for item in items
            ],
            usage=usage(data.get("usage")),
        )


def _vector(raw: Any) -> Sequence[float]:
    if not isinstance(raw, str):
        return [float(value) for value in raw]
    # encoding_format=base64: little-endian float32s.
    values = array("f")
    values.frombytes(base64.b64decode(raw, validate=True))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def finish_reason(reason: str | None) -> pb.FinishReason:
    # OpenAI-compatible servers invent reasons of their own ("eos", "abort"...): a natural end.
    return finish_reason_of(reason, _FINISH_REASONS)


def usage(raw: Any) -> pb.Usage | None:
    if not raw:
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    details = raw.get("prompt_tokens_details") or {}
    return pb.Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=int(details.get("cached_tokens") or 0),
        total_tokens=int(raw.get("total_tokens") or prompt + completion),
    )


# --- errors -----------------------------------------------------------------------------------


def upstream_error(
    status: int, headers: Mapping[str, str], body: bytes, target: Target
) -> GatewayError:
    """An HTTP error answer as a GatewayError, in the vendor's own (redacted) words."""
    message, code = _vendor_error(body, target)
    # The vendor's code says more than its status: an unknown model is NOT_FOUND
    # whatever the status, and an account out of credit is billing (402), not a
    # rate limit to wait out, although OpenAI sends it as a 429.
    status = _STATUS_BY_CODE.get(code or "", status)
    retry_after = parse_retry_after(header_value(headers, "retry-after"))
    if (millis := parse_retry_after(header_value(headers, "retry-after-ms"))) is not None:
        retry_after = millis / 1000
    error = http_error(status, message, target, retry_after=retry_after)
    return with_vendor_code(error, code)


def stream_error(payload: Any, target: Target) -> GatewayError:
    """An {"error": ...} payload sent as an SSE event after the 200 status line."""
    raw = orjson.dumps({"error": payload})
    message, code = _vendor_error(raw, target)
    kind = payload.get("type") if isinstance(payload, dict) else None
    status = _stream_error_status(code, kind)
    return with_vendor_code(mid_stream_error(status, message, target), code)


def _stream_error_status(*values: Any) -> int:
    for value in values:
        if isinstance(value, int) and 400 <= value <= 599:
            return value
        if isinstance(value, str) and value in _STREAM_ERROR_STATUS:
            return _STREAM_ERROR_STATUS[value]
    return 500


def _vendor_error(body: bytes, target: Target) -> tuple[str, Any]:
    """The message and code of an OpenAI error body (or of vLLM's flat one, or raw text)."""
    data = json_or_none(body)
    message, code = "", None
    if isinstance(data, dict):
        error = data.get("error") or data
        if isinstance(error, dict):
            message, code = str(error.get("message") or ""), error.get("code")
        else:
            message = str(error)
    else:
        message = body.decode("utf-8", "replace")
    return vendor_message(message, target), code
