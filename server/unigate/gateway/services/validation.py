"""Checks of incoming requests: each fault becomes a BadRequest field violation
that says what to fix, and the capabilities a request needs are derived here."""

from __future__ import annotations

from unigate.gateway.errors import FieldViolation, invalid_argument
from unigate.v1 import inference_pb2 as pb

_ROLES = {pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL}
_ROLE_NAMES = "ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"


def _model(model: str, out: list[FieldViolation]) -> None:
    if not model:
        out.append(FieldViolation("model", "required: name a model alias (see ListModels)"))


def _sampling(sampling: pb.SamplingParams, out: list[FieldViolation]) -> None:
    if sampling.HasField("temperature") and sampling.temperature < 0:
        out.append(FieldViolation("sampling.temperature", "must be 0 or more"))
    if sampling.HasField("top_p") and not 0 <= sampling.top_p <= 1:
        out.append(FieldViolation("sampling.top_p", "must be between 0 and 1"))
    if sampling.HasField("max_tokens") and sampling.max_tokens <= 0:
        out.append(FieldViolation("sampling.max_tokens", "must be more than 0 when set"))


def _message(index: int, message: pb.Message, out: list[FieldViolation]) -> None:
    where = f"messages[{index}]"
    if message.role not in _ROLES:
        out.append(FieldViolation(f"{where}.role", f"must be {_ROLE_NAMES}"))
    if message.role == pb.ROLE_TOOL and not message.tool_call_id:
        out.append(
            FieldViolation(
                f"{where}.tool_call_id", "required on a tool message: the call it answers"
            )
        )
    if message.tool_calls and message.role != pb.ROLE_ASSISTANT:
        out.append(FieldViolation(f"{where}.tool_calls", "only assistant messages make tool calls"))
    if not message.content and not message.tool_calls:
        out.append(FieldViolation(f"{where}.content", "a message needs content or tool calls"))
    for part_index, part in enumerate(message.content):
        if part.HasField("image"):
            image = part.image
            at = f"{where}.content[{part_index}].image"
            if message.role != pb.ROLE_USER:
                out.append(FieldViolation(at, "images may only be sent in user messages"))
            if not image.HasField("url") and not image.HasField("data"):
                out.append(FieldViolation(at, "set url or data"))
            if image.HasField("data") and not image.mime_type:
                out.append(FieldViolation(f"{at}.mime_type", "required with inline data"))
        elif not part.HasField("text"):
            out.append(FieldViolation(f"{where}.content[{part_index}]", "set text or image"))
        elif not part.text and not message.tool_calls:
            # Vendors refuse empty text blocks (Gemini, Anthropic): say so here, once.
            out.append(FieldViolation(f"{where}.content[{part_index}].text", "must not be empty"))


def check_chat(request: pb.ChatRequest) -> tuple[str, ...]:
    """Raise INVALID_ARGUMENT for a bad chat request; return the capabilities it needs."""
    out: list[FieldViolation] = []
    _model(request.model, out)
    if not request.messages:
        out.append(FieldViolation("messages", "at least one message is required"))
    for index, message in enumerate(request.messages):
        _message(index, message, out)
    _sampling(request.sampling, out)
    for index, tool in enumerate(request.tools):
        if not tool.name:
            out.append(FieldViolation(f"tools[{index}].name", "required"))
    if request.tool_choice.HasField("function_name") and request.tool_choice.function_name not in {
        tool.name for tool in request.tools
    }:
        out.append(
            FieldViolation("tool_choice.function_name", "must name one of the request's tools")
        )
    fmt = request.response_format
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA and not fmt.json_schema.HasField("schema"):
        out.append(FieldViolation("response_format.json_schema.schema", "required for JSON_SCHEMA"))
    if out:
        raise invalid_argument(out)

    needs = ["chat"]
    if request.tools:
        needs.append("tools")
    if fmt.type in (pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA):
        needs.append("json_output")
    if any(part.HasField("image") for m in request.messages for part in m.content):
        needs.append("images")
    return tuple(needs)


def check_complete(request: pb.CompleteRequest) -> tuple[str, ...]:
    out: list[FieldViolation] = []
    _model(request.model, out)
    if not request.prompt:
        out.append(FieldViolation("prompt", "required: the text to continue"))
    _sampling(request.sampling, out)
    if out:
        raise invalid_argument(out)
    return ("completion",)


def check_embed(request: pb.EmbedRequest) -> tuple[str, ...]:
    out: list[FieldViolation] = []
    _model(request.model, out)
    if not request.inputs:
        out.append(FieldViolation("inputs", "at least one input text is required"))
    if request.HasField("dimensions") and request.dimensions <= 0:
        out.append(FieldViolation("dimensions", "must be more than 0 when set"))
    if out:
        raise invalid_argument(out)
    return ("embeddings",)
