"""Pure translation between unigate.v1 messages and Google's Generative Language API (v1beta).

No I/O here. Request bodies are built from protos; response bodies and SSE chunk payloads are
read into protos (error bodies are read in gemini.py). Decisions a caller can see:

- System messages, wherever they stand, become `systemInstruction`; consecutive turns of one
  role are merged, so a run of tool results is one user turn of `functionResponse` parts.
- A tool message whose text is a JSON object is the functionResponse `response` as is; any other
  text is wrapped as {"output": text} (Gemini's documented key for a function's output).
- Tool call ids: Gemini's own functionCall.id when it sends one, else "call_<n>" by position in
  the answer. A part's thoughtSignature (which Gemini 3 requires back with its functionCall) rides
  in the id after "__thought__", so a caller that echoes ids verbatim round-trips it. No id is
  sent back to Gemini: some of its models reject `id` there and it pairs responses by name.
- Schemas go as JSON Schema (`parametersJsonSchema`, `responseJsonSchema`), not converted to
  Gemini's OpenAPI subset; keywords Gemini does not support are its to refuse (INVALID_ARGUMENT).
- Images: bytes and data: URLs become inlineData; http(s) URLs become fileData, which Gemini
  fetches itself (it needs a MIME type: the image's, else one read from the URL's extension).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import orjson

from unigate.gateway.errors import FieldViolation, GatewayError, Reason, invalid_argument
from unigate.gateway.providers.common import (
    Json,
    assistant_message,
    base64_text,
    data_url,
    json_object,
    json_or_none,
    protocol_errors,
    struct_to_dict,
)
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

PROVIDER = "gemini"
WIRE = "Gemini"
THOUGHT_SEPARATOR = "__thought__"
_INT32 = range(-(2**31), 2**31)

_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: "AUTO",
    pb.TOOL_CHOICE_MODE_NONE: "NONE",
    pb.TOOL_CHOICE_MODE_REQUIRED: "ANY",
}
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_FILTERED = """SAFETY RECITATION LANGUAGE BLOCKLIST PROHIBITED_CONTENT SPII IMAGE_SAFETY
    IMAGE_PROHIBITED_CONTENT IMAGE_RECITATION ESCALATION PUP_LIMITED_DISABLED MODEL_ARMOR"""
_FINISH_REASONS = {
    "STOP": pb.FINISH_REASON_STOP,
    "MAX_TOKENS": pb.FINISH_REASON_LENGTH,
    "CONTINUATION": pb.FINISH_REASON_LENGTH,
    **dict.fromkeys(_FILTERED.split(), pb.FINISH_REASON_CONTENT_FILTER),
}
# Answers Gemini itself marks unusable: an empty STOP would hide that, so they are errors.
# A malformed call is the model's slip (a retry usually succeeds); a missing signature is ours.
_RETRY = (grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_UNAVAILABLE)
_FAILED_FINISH: Mapping[str, tuple[grpc.StatusCode, str, str]] = {
    "MALFORMED_FUNCTION_CALL": (*_RETRY, "the model wrote a malformed function call; retry"),
    "UNEXPECTED_TOOL_CALL": (*_RETRY, "the model called a function it was not offered; retry"),
    "MALFORMED_RESPONSE": (*_RETRY, "the model wrote a malformed answer; retry"),
    "TOO_MANY_TOOL_CALLS": (*_RETRY, "the model made more function calls than allowed; retry"),
    "MISSING_THOUGHT_SIGNATURE": (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.UPSTREAM_BAD_REQUEST,
        "a function call of the conversation lacks its thought signature;"
        " send tool call ids back exactly as they were received",
    ),
}


# --- requests ---------------------------------------------------------------------------------


def model_name(model: str) -> str:
    """The resource name Gemini wants: "models/<model>" unless the config already gave one."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def request_path(model: str, method: str, api_version: str = "v1beta") -> str:
    path = f"/{api_version}/{quote(model_name(model), safe='/')}:{method}"
    return path + "?alt=sse" if method == "streamGenerateContent" else path


def chat_request_body(request: pb.ChatRequest) -> Json:
    """The generateContent / streamGenerateContent body (the model is in the URL).

    `parallel_tool_calls: false` is refused (Gemini cannot honour it); `user`, `metadata`,
    message names, image detail, `strict` and a JSON
    schema's name and description have no Gemini field and stay in the gateway (a response
    schema is always enforced; function arguments have no per-function strict switch).
    """
    if (
        request.tools
        and request.HasField("parallel_tool_calls")
        and not request.parallel_tool_calls
    ):
        why = "Gemini cannot limit a turn to one function call: leave it unset or true"
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.CAPABILITY_UNSUPPORTED,
            f"not supported by the Gemini API: parallel_tool_calls: {why}",
            metadata={"capability": "parallel_tool_calls"},
            field_violations=[FieldViolation("parallel_tool_calls", why)],
        )
    system, contents = _contents(request.messages)
    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_function(tool) for tool in request.tools]}]
        if request.HasField("tool_choice") and (config := _calling_config(request.tool_choice)):
            body["toolConfig"] = {"functionCallingConfig": config}
    body["generationConfig"] = _generation_config(request)
    return body


def embed_request(request: pb.EmbedRequest, model: str) -> tuple[str, Json]:
    """The method and body: embedContent for one input, batchEmbedContents for several."""
    name = model_name(model)

    def one(text: str) -> Json:
        item: Json = {"model": name, "content": {"parts": [{"text": text}]}}
        if request.HasField("dimensions"):
            item["outputDimensionality"] = request.dimensions
        return item

    if len(request.inputs) == 1:
        return "embedContent", one(request.inputs[0])
    return "batchEmbedContents", {"requests": [one(text) for text in request.inputs]}


def _contents(messages: Sequence[pb.Message]) -> tuple[list[Json], list[Json]]:
    system: list[Json] = []
    turns: list[Json] = []
    for index, message in enumerate(messages):
        if message.role == pb.ROLE_SYSTEM:
            system.extend({"text": part.text} for part in message.content if part.text)
            continue
        if message.role == pb.ROLE_USER:
            where = f"messages[{index}].content"
            role = "user"
            parts = [_user_part(p, f"{where}[{i}]") for i, p in enumerate(message.content)]
        elif message.role == pb.ROLE_ASSISTANT:
            role, parts = "model", _model_parts(message, index)
        elif message.role == pb.ROLE_TOOL:
            role, parts = "user", [_function_response(messages, index)]
        else:
            raise invalid_argument([FieldViolation(f"messages[{index}].role", "must be set")])
        # Gemini refuses empty text parts (an assistant turn may carry "" beside tool calls).
        parts = [part for part in parts if part.get("text") != ""]
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": role, "parts": parts})
    return system, turns


def _user_part(part: pb.ContentPart, where: str) -> Json:
    if part.WhichOneof("part") != "image":
        return {"text": part.text}
    image, at = part.image, f"{where}.image"
    if image.WhichOneof("source") == "data":
        return {"inlineData": {"mimeType": image.mime_type, "data": base64_text(image.data)}}
    url = image.url
    if url.startswith("data:"):
        mime, data = data_url(url, at)
        return {"inlineData": {"mimeType": mime, "data": data}}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        why = "Gemini takes http(s) and data: URLs; send other images as bytes in image.data"
        raise invalid_argument([FieldViolation(f"{at}.url", why)])
    mime = image.mime_type or _IMAGE_TYPES.get(_extension(parts.path), "")
    if not mime:
        why = "required for an image URL without a known image extension: Gemini needs it"
        raise invalid_argument([FieldViolation(f"{at}.mime_type", why)])
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :].lower() if "." in name else ""


def _model_parts(message: pb.Message, index: int) -> list[Json]:
    parts: list[Json] = [{"text": p.text} for p in message.content if p.text]
    for position, call in enumerate(message.tool_calls):
        _, signature = split_tool_call_id(call.id)
        where = f"messages[{index}].tool_calls[{position}].arguments"
        part: Json = {
            "functionCall": {"name": call.name, "args": _arguments(call.arguments, where)}
        }
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _arguments(text: str, where: str) -> Json:
    value = _json_object_or_none(text) if text.strip() else {}
    if value is None:
        why = "Gemini needs a tool call's arguments as a JSON object"
        raise invalid_argument([FieldViolation(where, why)])
    return value


def _function_response(messages: Sequence[pb.Message], index: int) -> Json:
    """A tool result; its function's name comes from the nearest call with its id."""
    wanted = messages[index].tool_call_id
    earlier = reversed(messages[:index])
    calls = (call for m in earlier if m.role == pb.ROLE_ASSISTANT for call in m.tool_calls)
    name = next((call.name for call in calls if call.id == wanted), None)
    if name is None:
        why = "no earlier assistant message made a tool call with this id (Gemini needs its name)"
        raise invalid_argument([FieldViolation(f"messages[{index}].tool_call_id", why)])
    text = "".join(part.text for part in messages[index].content)
    response = _json_object_or_none(text)
    if response is None:
        response = {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def _json_object_or_none(text: str) -> Json | None:
    value = json_or_none(text)
    return value if isinstance(value, dict) else None


def _function(tool: pb.Tool) -> Json:
    function: Json = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.HasField("parameters"):
        function["parametersJsonSchema"] = struct_to_dict(tool.parameters)
    return function


def _calling_config(choice: pb.ToolChoice) -> Json | None:
    if choice.WhichOneof("choice") == "function_name":
        return {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    mode = _TOOL_CHOICE_MODES.get(choice.mode)
    return {"mode": mode} if mode else None


def _generation_config(request: pb.ChatRequest) -> Json:
    sampling = request.sampling
    config: Json = {"candidateCount": 1}
    if sampling.HasField("temperature"):
        config["temperature"] = sampling.temperature
    if sampling.HasField("top_p"):
        config["topP"] = sampling.top_p
    if sampling.HasField("max_tokens"):
        config["maxOutputTokens"] = sampling.max_tokens
    if sampling.stop_sequences:
        config["stopSequences"] = list(sampling.stop_sequences)
    if sampling.HasField("seed"):
        if sampling.seed not in _INT32:
            raise invalid_argument(
                [FieldViolation("sampling.seed", "Gemini takes a 32-bit signed seed")]
            )
        config["seed"] = sampling.seed
    if sampling.HasField("presence_penalty"):
        config["presencePenalty"] = sampling.presence_penalty
    if sampling.HasField("frequency_penalty"):
        config["frequencyPenalty"] = sampling.frequency_penalty
    fmt = request.response_format
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_TEXT:
        config["responseMimeType"] = "text/plain"
    elif fmt.type in (pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA):
        config["responseMimeType"] = "application/json"
        if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            config["responseJsonSchema"] = struct_to_dict(fmt.json_schema.schema)
    return config


# --- responses --------------------------------------------------------------------------------


def tool_call_id(vendor_id: str | None, position: int, signature: str | None) -> str:
    base = vendor_id or f"call_{position}"
    return f"{base}{THOUGHT_SEPARATOR}{signature}" if signature else base


def split_tool_call_id(value: str) -> tuple[str, str | None]:
    base, _, signature = value.partition(THOUGHT_SEPARATOR)
    return base, signature or None


def first_candidate(data: Json) -> Json | None:
    return next((c for c in data.get("candidates") or [] if c.get("index", 0) == 0), None)


def prompt_blocked(data: Json) -> bool:
    return bool((data.get("promptFeedback") or {}).get("blockReason"))


def answer_parts(candidate: Json, *, first_call: int = 0) -> tuple[str, list[pb.ToolCall]]:
    """The answer's text (thoughts left out) and its function calls, numbered from first_call."""
    texts: list[str] = []
    calls: list[pb.ToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            call = part["functionCall"]
            position = first_call + len(calls)
            ident = tool_call_id(call.get("id"), position, part.get("thoughtSignature"))
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append(pb.ToolCall(id=ident, name=call["name"], arguments=arguments))
        elif part.get("text") and not part.get("thought"):
            texts.append(part["text"])
    return "".join(texts), calls


def chat_response(body: bytes, target: Target) -> pb.ChatResponse:
    with protocol_errors(target, "a chat answer", wire=WIRE):
        data = json_object(body)
        candidate = first_candidate(data)
        if candidate is None and not prompt_blocked(data):
            raise ValueError("no candidate and no promptFeedback.blockReason")
        # A blocked prompt has no candidate: an empty answer, plainly filtered.
        text, calls = answer_parts(candidate or {})
        finish = pb.FINISH_REASON_CONTENT_FILTER
        if candidate is not None:
            reason = candidate.get("finishReason")
            finish = finish_reason(reason, tool_calls=bool(calls), target=target)
        return pb.ChatResponse(
            id=data.get("responseId") or "",
            model=data.get("modelVersion") or "",
            provider=PROVIDER,
            message=assistant_message(text, calls),
            finish_reason=finish,
            usage=usage(data.get("usageMetadata")),
        )


def embed_response(body: bytes, target: Target, *, inputs: int) -> pb.EmbedResponse:
    """Vectors in input order; exactly one per input, or the answer is refused.

    Gemini's embedding methods report no token counts for most models: usage is then zero.
    """
    with protocol_errors(target, "embeddings", wire=WIRE):
        data = json_object(body)
        vectors = [data["embedding"]] if "embedding" in data else data["embeddings"]
        if len(vectors) != inputs:
            raise ValueError(f"expected one embedding for each of {inputs} inputs")
        raw = data.get("usageMetadata") or {}
        tokens = int(raw.get("promptTokenCount") or 0)
        return pb.EmbedResponse(
            provider=PROVIDER,
            embeddings=[
                pb.Embedding(index=i, values=[float(v) for v in vector["values"]])
                for i, vector in enumerate(vectors)
            ],
            usage=pb.Usage(
                input_tokens=tokens, total_tokens=int(raw.get("totalTokenCount") or tokens)
            ),
        )


def finish_reason(reason: str | None, *, tool_calls: bool, target: Target) -> pb.FinishReason:
    if not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return pb.FINISH_REASON_UNSPECIFIED
    if reason in _FAILED_FINISH:
        code, why, text = _FAILED_FINISH[reason]
        raise GatewayError(
            code,
            why,
            f"{target.provider} deployment {target.deployment!r} ended its answer with"
            f" finishReason {reason}: {text}",
            metadata={
                "provider": target.provider,
                "deployment": target.deployment,
                "vendor_code": reason,
            },
        )
    # Gemini ends a turn of function calls with STOP; OTHER and new reasons end it plainly.
    mapped = _FINISH_REASONS.get(reason, pb.FINISH_REASON_STOP)
    return pb.FINISH_REASON_TOOL_CALLS if mapped == pb.FINISH_REASON_STOP and tool_calls else mapped


def usage(raw: Any) -> pb.Usage | None:
    """Thinking tokens are billed as output; tool-use prompt tokens as input."""
    if not raw:
        return None
    prompt = int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0)
    output = int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0)
    return pb.Usage(
        input_tokens=prompt,
        output_tokens=output,
        cached_input_tokens=int(raw.get("cachedContentTokenCount") or 0),
        total_tokens=int(raw.get("totalTokenCount") or prompt + output),
    )
