"""Pure translation between unigate.v1 messages and Anthropic's Messages API (/v1/messages).

No I/O here. Request bodies are built from protos; response bodies and SSE event payloads are
read into protos; upstream failures become GatewayErrors. A body that does not have the shape
Anthropic documents is an UPSTREAM_PROTOCOL_ERROR, raised once, by `protocol_errors`.

What has no Anthropic equivalent is refused rather than dropped when it would change the
answer (presence and frequency penalties, JSON output without a schema); `seed` (best-effort
everywhere), `Message.name` and `Image.detail` (hints) are left out. temperature and top_p go
as given: a model that no longer takes them says so in a 400 the caller sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import orjson

from unigate.gateway.errors import (
    FieldViolation,
    GatewayError,
    Reason,
    invalid_argument,
    parse_retry_after,
)
from unigate.gateway.providers.common import (
    Json,
    assistant_message,
    base64_text,
    data_url,
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

PROVIDER = "anthropic"
WIRE = "Anthropic"

_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "any",
}
_FINISH_REASONS = {
    "end_turn": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "max_tokens": pb.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": pb.FINISH_REASON_LENGTH,
    "tool_use": pb.FINISH_REASON_TOOL_CALLS,
    "refusal": pb.FINISH_REASON_CONTENT_FILTER,
    # A server tool's long turn was paused: the answer is incomplete, as after max_tokens.
    "pause_turn": pb.FINISH_REASON_LENGTH,
}
# The HTTP status Anthropic documents for each error type; an in-stream error has only its type.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --- requests ---------------------------------------------------------------------------------


def chat_request_body(
    request: pb.ChatRequest, model: str, *, default_max_tokens: int, stream: bool = False
) -> Json:
    """The /v1/messages body. Anthropic requires max_tokens: the caller's, else the default."""
    _refuse_what_anthropic_lacks(request)
    system, turns = _conversation(request.messages)
    sampling = request.sampling
    max_tokens = sampling.max_tokens if sampling.HasField("max_tokens") else default_max_tokens
    body: Json = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        body["system"] = system
    if sampling.HasField("temperature"):
        body["temperature"] = sampling.temperature
    if sampling.HasField("top_p"):
        body["top_p"] = sampling.top_p
    if sampling.stop_sequences:
        body["stop_sequences"] = list(sampling.stop_sequences)
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        # Anthropic refuses tool_choice without tools, so it goes only with them.
        if (choice := _tool_choice(request)) is not None:
            body["tool_choice"] = choice
    if request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = struct_to_dict(request.response_format.json_schema.schema)
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def _refuse_what_anthropic_lacks(request: pb.ChatRequest) -> None:
    violations = [
        FieldViolation(f"sampling.{name}", "Anthropic has no such control: leave it unset or 0")
        for name in ("presence_penalty", "frequency_penalty")
        if request.sampling.HasField(name) and getattr(request.sampling, name) != 0
    ]
    if request.sampling.HasField("temperature") and request.sampling.HasField("top_p"):
        # Claude models from the 4.5 generation on refuse the two together.
        violations.append(
            FieldViolation("sampling.top_p", "Anthropic takes temperature or top_p, not both")
        )
    if request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        violations.append(
            FieldViolation(
                "response_format.type",
                "Anthropic constrains output to a schema: use RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
            )
        )
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.CAPABILITY_UNSUPPORTED,
            f"not supported by the Anthropic Messages API: {summary}",
            metadata={"capability": ",".join(v.field for v in violations)},
            field_violations=violations,
        )


def _conversation(messages: Sequence[pb.Message]) -> tuple[str | list[Json] | None, list[Json]]:
    """System text hoisted out; the rest as alternating user/assistant turns."""
    system: list[Json] = []
    turns: list[Json] = []
    for index, message in enumerate(messages):
        if message.role == pb.ROLE_SYSTEM:
            system.extend(_system_blocks(message, index))
            continue
        role, blocks = _turn(message, index)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Anthropic wants a user turn's tool_result blocks before anything else in it.
        blocks = sorted(turn["content"], key=lambda block: block["type"] != "tool_result")
        turn["content"] = _collapse(blocks)
    if not system:
        return None, turns
    return (system[0]["text"] if len(system) == 1 else system), turns


def _collapse(blocks: list[Json]) -> str | list[Json]:
    """One text block is sent as the plain string Anthropic's own examples use."""
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _system_blocks(message: pb.Message, index: int) -> list[Json]:
    if any(part.HasField("image") for part in message.content):
        field = f"messages[{index}].content"
        raise invalid_argument([FieldViolation(field, "Anthropic's system prompt is text only")])
    return [{"type": "text", "text": part.text} for part in message.content if part.text]


def _turn(message: pb.Message, index: int) -> tuple[str, list[Json]]:
    where = f"messages[{index}]"
    if message.role == pb.ROLE_USER:
        return "user", _content_blocks(message.content, where)
    if message.role == pb.ROLE_ASSISTANT:
        blocks = _content_blocks(message.content, where)
        blocks.extend(
            _tool_use(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(message.tool_calls)
        )
        return "assistant", blocks
    if message.role == pb.ROLE_TOOL:
        result: Json = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if content := _content_blocks(message.content, where):
            result["content"] = _collapse(content)
        return "user", [result]
    raise invalid_argument([FieldViolation(f"{where}.role", "must be set")])


def _content_blocks(parts: Sequence[pb.ContentPart], where: str) -> list[Json]:
    # Anthropic refuses empty text blocks; an empty part carries nothing, so it is left out.
    blocks: list[Json] = []
    for index, part in enumerate(parts):
        if part.HasField("image"):
            blocks.append(_image(part.image, f"{where}.content[{index}].image"))
        elif part.text:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def _image(image: pb.Image, where: str) -> Json:
    if image.WhichOneof("source") == "data":
        media_type, data = image.mime_type, base64_text(image.data)
    elif image.url.startswith("data:"):
        # Anthropic's url source fetches http(s) only: a data: URL goes as a base64 source.
        media_type, data = data_url(image.url, where, require_data=True)
    else:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _tool_use(call: pb.ToolCall, where: str) -> Json:
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise invalid_argument(
            [FieldViolation(f"{where}.arguments", "must be a JSON object for Anthropic's tool_use")]
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool(tool: pb.Tool) -> Json:
    schema = (
        struct_to_dict(tool.parameters)
        if tool.HasField("parameters")
        else {"type": "object", "properties": {}}
    )
    out: Json = {"name": tool.name, "input_schema": schema}
    if tool.description:
        out["description"] = tool.description
    if tool.strict:
        out["strict"] = True
    return out


def _tool_choice(request: pb.ChatRequest) -> Json | None:
    choice: Json | None = None
    if request.HasField("tool_choice"):
        wanted = request.tool_choice
        if wanted.WhichOneof("choice") == "function_name":
            choice = {"type": "tool", "name": wanted.function_name}
        elif wanted.mode in _TOOL_CHOICE_MODES:
            choice = {"type": _TOOL_CHOICE_MODES[wanted.mode]}
    # Parallel calls are Anthropic's default; turning them off rides on tool_choice.
    if (
        request.HasField("parallel_tool_calls")
        and not request.parallel_tool_calls
        and request.tools
    ):
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


# --- responses --------------------------------------------------------------------------------


def chat_response(body: bytes, target: Target) -> pb.ChatResponse:
    with protocol_errors(target, "a chat answer", wire=WIRE):
        data = json_object(body)
        blocks = data["content"]
        text = "".join(block["text"] for block in blocks if block["type"] == "text")
        calls = [tool_call(block) for block in blocks if block["type"] == "tool_use"]
        return pb.ChatResponse(
            id=data.get("id") or "",
            model=data.get("model") or "",
            provider=PROVIDER,
            message=assistant_message(text, calls),
            finish_reason=finish_reason(data.get("stop_reason")),
            usage=usage(data.get("usage")),
        )


def tool_call(block: Json) -> pb.ToolCall:
    """A tool_use block; its input object becomes the arguments string unigate carries."""
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        raise TypeError("tool_use input must be an object")
    return pb.ToolCall(
        id=block["id"], name=block["name"], arguments=orjson.dumps(arguments).decode()
    )


def finish_reason(reason: str | None) -> pb.FinishReason:
    return finish_reason_of(reason, _FINISH_REASONS)


def usage(raw: Any) -> pb.Usage | None:
    """Anthropic's input_tokens leave out cached tokens; unigate's input_tokens include them."""
    if not raw:
        return None
    read = int(raw.get("cache_read_input_tokens") or 0)
    created = int(raw.get("cache_creation_input_tokens") or 0)
    prompt = int(raw.get("input_tokens") or 0) + read + created
    completion = int(raw.get("output_tokens") or 0)
    return pb.Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=read,
        cache_creation_input_tokens=created,
        total_tokens=prompt + completion,
    )


# --- errors -----------------------------------------------------------------------------------


def upstream_error(
    status: int, headers: Mapping[str, str], body: bytes, target: Target
) -> GatewayError:
    """An HTTP error answer as a GatewayError, in the vendor's own (redacted) words."""
    message, kind = _vendor_error(body, target)
    retry_after = parse_retry_after(header_value(headers, "retry-after"))
    return with_vendor_code(http_error(status, message, target, retry_after=retry_after), kind)


def stream_error(payload: Json, target: Target) -> GatewayError:
    """An `event: error` payload sent after the 200 status line."""
    message, kind = _vendor_error(orjson.dumps(payload), target)
    status = _ERROR_STATUS.get(kind or "", 500)
    return with_vendor_code(mid_stream_error(status, message, target), kind)


def _vendor_error(body: bytes, target: Target) -> tuple[str, str | None]:
    """The message and type of {"type":"error","error":{"type","message"}} (or raw text)."""
    data = json_or_none(body)
    message, kind = "", None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        message = str(error.get("message") or "")
        kind = error.get("type") if isinstance(error.get("type"), str) else None
    elif data is not None:
        message = orjson.dumps(data).decode()
    else:
        message = body.decode("utf-8", "replace")
    return vendor_message(message, target), kind
