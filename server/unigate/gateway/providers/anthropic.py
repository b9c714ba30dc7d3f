"""The Anthropic adapter: the Messages API (POST {base_url}/v1/messages), unary and streamed.

Stateless translation lives in anthropic_translate, the HTTP calls in http_adapter; here are
the settings, the headers and the stateful reading of Anthropic's SSE event sequence. Anthropic
has no completion or embedding API: those RPCs are refused with UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from functools import partial
from typing import ClassVar, Literal

import grpc
from pydantic import Field, field_validator

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import anthropic_translate as tr
from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    failed_stream,
)
from unigate.gateway.providers.common import Json, json_object, protocol_errors
from unigate.gateway.providers.http_adapter import HttpAdapter, with_call_defaults
from unigate.gateway.providers.sse import SseEvent
from unigate.gateway.providers.streaming import SseTranslator
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb


class AnthropicSettings(HttpProviderSettings):
    """A provider block of kind "anthropic"; its api_key is sent as x-api-key."""

    base_url_example = "https://api.anthropic.com"

    kind: Literal["anthropic"]
    # Without /v1: the adapter appends /v1/messages, as Anthropic's own SDKs do.
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = Field("2023-06-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    # Anthropic requires max_tokens on every request; these apply when the caller set none.
    default_max_tokens: int = Field(4096, gt=0)
    max_tokens_by_model: dict[str, int] = Field(default_factory=dict)

    @field_validator("max_tokens_by_model")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for model, limit in value.items():
            if limit <= 0:
                raise ValueError(f"the limit for {model!r} must be more than 0")
        return value


class ChatStreamTranslator(SseTranslator[pb.StreamChatResponse]):
    """Reads the events of one Anthropic message stream, in order, into unigate messages.

    Text and tool-call argument deltas go out as they come. A tool call's ToolCallDelta index
    is its ordinal among the reply's tool_use blocks (not Anthropic's block index, which counts
    text blocks too). message_delta's stop_reason and usage are held back until message_stop,
    so the last message carries both; a stream that ends before any stop_reason is an error.
    """

    message_type = pb.StreamChatResponse

    def __init__(self, target: Target, *, fallback_id: str = "") -> None:
        super().__init__(target, fallback_id=fallback_id, provider=tr.PROVIDER)
        self._counts: Json = {}  # the usage counts so far, in Anthropic's names
        self._tool_ordinals: dict[int, int] = {}  # Anthropic block index -> ToolCallDelta index
        self._tools_with_arguments: set[int] = set()

    def read(self, event: SseEvent) -> list[pb.StreamChatResponse]:
        return self.feed(event.event, event.data)

    def feed(self, event: str, data: str) -> list[pb.StreamChatResponse]:
        """Translate one SSE event (its name and data payload)."""
        if self.done:
            return []
        with protocol_errors(self._target, "a stream event", wire=tr.WIRE):
            payload = json_object(data)
            kind = payload.get("type") or event
            if kind == "error" or event == "error":
                raise tr.stream_error(payload, self._target)
            if kind == "message_start":
                self._start(payload["message"])
            elif kind == "content_block_start":
                return self._block_start(int(payload["index"]), payload["content_block"])
            elif kind == "content_block_delta":
                return self._block_delta(int(payload["index"]), payload["delta"])
            elif kind == "content_block_stop":
                return self._block_stop(int(payload["index"]))
            elif kind == "message_delta":
                self._message_delta(payload)
            elif kind == "message_stop":
                return self._stop()
            # ping, and event types newer than this adapter, carry nothing for unigate.
            return []

    def _start(self, message: Json) -> None:
        self._id = message.get("id") or self._id
        self._model = message.get("model") or ""
        self._add_usage(message.get("usage"))

    def _block_start(self, index: int, block: Json) -> list[pb.StreamChatResponse]:
        if block["type"] == "text":
            return self._text(block.get("text") or "")
        if block["type"] != "tool_use":
            return []  # thinking and server-tool blocks have no unigate counterpart
        ordinal = self._tool_ordinals[index] = len(self._tool_ordinals)
        start = pb.ToolCallDelta(index=ordinal, id=block["id"], name=block["name"])
        if block.get("input"):
            start.arguments = tr.tool_call(block).arguments
            self._tools_with_arguments.add(index)
        return [self._message(tool_calls=[start])]

    def _block_delta(self, index: int, delta: Json) -> list[pb.StreamChatResponse]:
        if delta["type"] == "text_delta":
            return self._text(delta["text"])
        if delta["type"] != "input_json_delta" or not delta["partial_json"]:
            return []
        self._tools_with_arguments.add(index)
        piece = pb.ToolCallDelta(index=self._tool_ordinals[index], arguments=delta["partial_json"])
        return [self._message(tool_calls=[piece])]

    def _block_stop(self, index: int) -> list[pb.StreamChatResponse]:
        if index not in self._tool_ordinals or index in self._tools_with_arguments:
            return []
        # A call without arguments streams none; unary answers carry "{}", and so does this.
        piece = pb.ToolCallDelta(index=self._tool_ordinals[index], arguments="{}")
        return [self._message(tool_calls=[piece])]

    def _message_delta(self, payload: Json) -> None:
        reason = (payload.get("delta") or {}).get("stop_reason")
        if reason:
            self._finish = tr.finish_reason(reason)
        self._add_usage(payload.get("usage"))

    def _add_usage(self, raw: Json | None) -> None:
        # message_delta's counts are cumulative and may repeat message_start's: the last wins.
        self._counts.update({key: value for key, value in (raw or {}).items() if value is not None})

    def _text(self, text: str) -> list[pb.StreamChatResponse]:
        return [self._message(text=text)] if text else []

    def _final_usage(self) -> pb.Usage | None:
        return tr.usage(self._counts)


class AnthropicProvider(HttpAdapter):
    """One configured Anthropic Messages API upstream."""

    kind: ClassVar[str] = "anthropic"

    def __init__(self, name: str, settings: AnthropicSettings, transport: HttpTransport) -> None:
        headers = {"anthropic-version": settings.anthropic_version}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        super().__init__(name, transport, {**headers, **settings.headers}, api_key=settings.api_key)
        self._settings = settings
        self._messages_url = settings.base_url + "/v1/messages"

    def capabilities(self) -> pb.Capabilities:
        # json_output means a JSON schema (output_config.format); JSON without one is refused.
        return pb.Capabilities(chat=True, streaming=True, tools=True, images=True, json_output=True)

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(
            request, call.model, default_max_tokens=self._default_max_tokens(call)
        )
        answer = await self._post(self._messages_url, body, call)
        return with_call_defaults(tr.chat_response(answer, self._target(call)), call)

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        body = partial(
            tr.chat_request_body,
            request,
            call.model,
            default_max_tokens=self._default_max_tokens(call),
            stream=True,
        )
        translator = ChatStreamTranslator(self._target(call), fallback_id=call.request_id)
        return self._stream(self._messages_url, body, call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        raise self._unsupported("completion", call)

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        return failed_stream(self._unsupported("completion", call))

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        raise self._unsupported("embeddings", call)

    def _default_max_tokens(self, call: UpstreamCall) -> int:
        settings = self._settings
        return settings.max_tokens_by_model.get(call.model, settings.default_max_tokens)

    def _upstream_error(
        self, status: int, headers: Mapping[str, str], body: bytes, target: Target
    ) -> GatewayError:
        return tr.upstream_error(status, headers, body, target)

    def _unsupported(self, capability: str, call: UpstreamCall) -> GatewayError:
        return GatewayError(
            grpc.StatusCode.UNIMPLEMENTED,
            Reason.CAPABILITY_UNSUPPORTED,
            f"{self.name} deployment {call.deployment!r}: the Anthropic Messages API has no "
            f"{capability}; use an alias served by another provider",
            metadata={
                "provider": self.name,
                "deployment": call.deployment,
                "capability": capability,
            },
        )


KIND = ProviderKind(settings=AnthropicSettings, factory=AnthropicProvider)
