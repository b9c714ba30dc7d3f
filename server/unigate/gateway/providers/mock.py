"""A built-in deterministic provider: the gateway runs with no vendor account.

It echoes the last user message back, word by word, at a configurable pace; its
embeddings are unit vectors derived from a hash of each input, so the same text
always gets the same vector. For demos, client development and load tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import time
from collections.abc import AsyncGenerator
from typing import ClassVar, Literal

import grpc
from pydantic import Field

from unigate.gateway.config_types import Duration
from unigate.gateway.errors import FieldViolation, GatewayError, Reason, invalid_argument
from unigate.gateway.providers.base import (
    ProviderKind,
    ProviderSettings,
    UpstreamCall,
    every_capability,
)
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb

MAX_DIMENSIONS = 8192


class MockSettings(ProviderSettings):
    kind: Literal["mock"]
    latency: Duration = 0.0
    """Time before the first token."""
    tokens_per_second: float = Field(0.0, ge=0)
    """Pace of streamed tokens; 0 sends them all at once."""
    embedding_dimensions: int = Field(16, gt=0, le=MAX_DIMENSIONS)


class MockProvider:
    kind: ClassVar[str] = "mock"

    def __init__(self, name: str, settings: MockSettings, transport: HttpTransport) -> None:
        self.name = name
        self._settings = settings

    def capabilities(self) -> pb.Capabilities:
        return every_capability()

    async def _wait(self, seconds: float, call: UpstreamCall, started: float) -> None:
        if seconds <= 0:
            return
        left = call.timeout - (time.monotonic() - started)
        if seconds > left:
            await asyncio.sleep(max(left, 0))
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                Reason.UPSTREAM_TIMEOUT,
                f"mock deployment {call.deployment!r} did not answer within the call's deadline",
                metadata={"provider": self.kind, "deployment": call.deployment},
            )
        await asyncio.sleep(seconds)

    def _pace(self) -> float:
        rate = self._settings.tokens_per_second
        return 1.0 / rate if rate else 0.0

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        started = time.monotonic()
        text, tool_call = _answer(request)
        tokens = _words(text)
        await self._wait(self._settings.latency + self._pace() * len(tokens), call, started)
        message = pb.Message(role=pb.ROLE_ASSISTANT)
        if tool_call is not None:
            message.tool_calls.append(tool_call)
            reason = pb.FINISH_REASON_TOOL_CALLS
        else:
            message.content.add(text=text)
            reason = pb.FINISH_REASON_STOP
        return pb.ChatResponse(
            id=_response_id(call),
            model=call.model,
            provider=self.kind,
            message=message,
            finish_reason=reason,
            usage=_usage(_chat_prompt_tokens(request), len(tokens)),
        )

    async def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        started = time.monotonic()
        text, tool_call = _answer(request)
        response_id = _response_id(call)
        await self._wait(self._settings.latency, call, started)
        tokens = [] if tool_call else _words(text)
        for index, token in enumerate(tokens):
            if index:
                await self._wait(self._pace(), call, started)
            yield pb.StreamChatResponse(
                id=response_id, model=call.model, provider=self.kind, text=token
            )
        last = pb.StreamChatResponse(
            id=response_id,
            model=call.model,
            provider=self.kind,
            finish_reason=pb.FINISH_REASON_STOP,
            usage=_usage(_chat_prompt_tokens(request), len(tokens)),
        )
        if tool_call is not None:
            last.tool_calls.add(
                index=0, id=tool_call.id, name=tool_call.name, arguments=tool_call.arguments
            )
            last.finish_reason = pb.FINISH_REASON_TOOL_CALLS
        yield last

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        started = time.monotonic()
        tokens = _words(request.prompt)
        await self._wait(self._settings.latency + self._pace() * len(tokens), call, started)
        return pb.CompleteResponse(
            id=_response_id(call),
            model=call.model,
            provider=self.kind,
            text=request.prompt,
            finish_reason=pb.FINISH_REASON_STOP,
            usage=_usage(len(tokens), len(tokens)),
        )

    async def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        started = time.monotonic()
        response_id = _response_id(call)
        tokens = _words(request.prompt)
        await self._wait(self._settings.latency, call, started)
        for index, token in enumerate(tokens):
            if index:
                await self._wait(self._pace(), call, started)
            yield pb.StreamCompleteResponse(
                id=response_id, model=call.model, provider=self.kind, text=token
            )
        yield pb.StreamCompleteResponse(
            id=response_id,
            model=call.model,
            provider=self.kind,
            finish_reason=pb.FINISH_REASON_STOP,
            usage=_usage(len(tokens), len(tokens)),
        )

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        await self._wait(self._settings.latency, call, time.monotonic())
        size = request.dimensions if request.HasField("dimensions") else None
        size = size or self._settings.embedding_dimensions
        if size > MAX_DIMENSIONS:
            raise invalid_argument(
                [FieldViolation("dimensions", f"the mock provider makes at most {MAX_DIMENSIONS}")]
            )
        response = pb.EmbedResponse(model=call.model, provider=self.kind)
        for index, text in enumerate(request.inputs):
            response.embeddings.add(index=index, values=embedding_of(text, size))
        input_tokens = sum(len(_words(text)) for text in request.inputs)
        response.usage.CopyFrom(_usage(input_tokens, 0))
        return response

    async def close(self) -> None:
        return None


def embedding_of(text: str, size: int) -> list[float]:
    """A unit vector that depends only on the text and the size."""
    raw = hashlib.shake_256(text.encode()).digest(size * 4)
    ints = struct.unpack(f"<{size}i", raw)
    norm = math.sqrt(sum(float(v) * v for v in ints)) or 1.0
    return [v / norm for v in ints]


def _answer(request: pb.ChatRequest) -> tuple[str, pb.ToolCall | None]:
    """The echo of the last user message, or a tool call when one is demanded."""
    text = ""
    for message in reversed(request.messages):
        if message.role == pb.ROLE_USER:
            text = "".join(part.text for part in message.content if part.HasField("text"))
            break
    choice = request.tool_choice
    wanted = ""
    if choice.HasField("function_name"):
        wanted = choice.function_name
    elif choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED and request.tools:
        wanted = request.tools[0].name
    if wanted:
        call_id = "call_" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        return text, pb.ToolCall(id=call_id, name=wanted, arguments="{}")
    return text, None


def _words(text: str) -> list[str]:
    """Split text into word tokens that concatenate back to the text."""
    pieces: list[str] = []
    for word in text.split(" "):
        if pieces:
            pieces[-1] += " "
        pieces.append(word)
    return [p for p in pieces if p]


def _chat_prompt_tokens(request: pb.ChatRequest) -> int:
    return sum(len(_words(part.text)) for m in request.messages for part in m.content if part.text)


def _usage(prompt: int, output: int) -> pb.Usage:
    return pb.Usage(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)


def _response_id(call: UpstreamCall) -> str:
    return f"mock-{call.request_id}"


KIND = ProviderKind(settings=MockSettings, factory=MockProvider)
