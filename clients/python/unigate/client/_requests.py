"""Messages and requests built from plain Python values.

Each RPC takes either a whole request message (`request=`) or keyword fields, never both:
a request plus fields would leave it unclear which one wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from unigate.client._types import MessageLike
from unigate.v1 import inference_pb2 as pb


def user_message(*content: str | pb.Image | pb.ContentPart, name: str = "") -> pb.Message:
    """A user turn: each string becomes a text part, each Image an image part."""
    return pb.Message(role=pb.ROLE_USER, content=[_part(c) for c in content], name=name)


def system_message(text: str) -> pb.Message:
    """Instructions that steer the model."""
    return pb.Message(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text=text)])


def assistant_message(text: str = "", *, tool_calls: Sequence[pb.ToolCall] = ()) -> pb.Message:
    """An earlier reply of the model, to replay in a conversation."""
    content = [pb.ContentPart(text=text)] if text else []
    return pb.Message(role=pb.ROLE_ASSISTANT, content=content, tool_calls=tool_calls)


def tool_message(text: str, *, tool_call_id: str) -> pb.Message:
    """The result of running the tool call named by `tool_call_id`."""
    return pb.Message(
        role=pb.ROLE_TOOL, content=[pb.ContentPart(text=text)], tool_call_id=tool_call_id
    )


def as_message(message: MessageLike) -> pb.Message:
    return user_message(message) if isinstance(message, str) else message


def _part(content: str | pb.Image | pb.ContentPart) -> pb.ContentPart:
    if isinstance(content, str):
        return pb.ContentPart(text=content)
    if isinstance(content, pb.Image):
        return pb.ContentPart(image=content)
    return content


def _request_or_fields(rpc: str, request: object, fields: Mapping[str, object]) -> None:
    given = sorted(name for name, value in fields.items() if value is not None)
    if request is not None and given:
        raise TypeError(f"{rpc}: pass request= or keyword fields, not both (got {given})")
    if request is None and fields["model"] is None:
        raise TypeError(f"{rpc}: pass request= or model=")


def chat_request(
    rpc: str,
    request: pb.ChatRequest | None,
    *,
    model: str | None,
    messages: Sequence[MessageLike] | None,
    sampling: pb.SamplingParams | None,
    tools: Sequence[pb.Tool] | None,
    tool_choice: pb.ToolChoice | None,
    response_format: pb.ResponseFormat | None,
    user: str | None,
) -> pb.ChatRequest:
    fields = {
        "model": model,
        "messages": messages,
        "sampling": sampling,
        "tools": tools,
        "tool_choice": tool_choice,
        "response_format": response_format,
        "user": user,
    }
    _request_or_fields(rpc, request, fields)
    if request is not None:
        return request
    if isinstance(messages, str):
        messages = [messages]
    return pb.ChatRequest(
        model=model,
        messages=[as_message(m) for m in messages or ()],
        sampling=sampling,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        user=user,
    )


def complete_request(
    rpc: str,
    request: pb.CompleteRequest | None,
    *,
    model: str | None,
    prompt: str | None,
    sampling: pb.SamplingParams | None,
    user: str | None,
) -> pb.CompleteRequest:
    fields = {"model": model, "prompt": prompt, "sampling": sampling, "user": user}
    _request_or_fields(rpc, request, fields)
    if request is not None:
        return request
    return pb.CompleteRequest(model=model, prompt=prompt, sampling=sampling, user=user)


def embed_request(
    request: pb.EmbedRequest | None,
    *,
    model: str | None,
    inputs: Sequence[str] | None,
    dimensions: int | None,
    user: str | None,
) -> pb.EmbedRequest:
    fields = {"model": model, "inputs": inputs, "dimensions": dimensions, "user": user}
    _request_or_fields("embed", request, fields)
    if request is not None:
        return request
    # A lone string is one input, not a sequence of one-character inputs.
    if isinstance(inputs, str):
        inputs = [inputs]
    return pb.EmbedRequest(model=model, inputs=inputs, dimensions=dimensions, user=user)
