"""The Mistral adapter: chat, streaming, tools, images, JSON output and embeddings on Mistral's
own REST API (https://api.mistral.ai/v1/...), `Authorization: Bearer <key>`.

Completion is Mistral's FIM endpoint (/v1/fim/completions), which only Codestral models serve:
it is off unless a provider block sets `fim_completion: true` (Codestral also has its own
endpoint, https://codestral.mistral.ai, with its own key: one provider block for it).

Stateless translation lives in mistral_translate; the HTTP calls and the reading of streams are
the OpenAI adapter's, whose SSE framing ("data: {...}" chunks, then "data: [DONE]") Mistral
shares. Mistral sends usage on its last chunk, without being asked.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from functools import partial
from typing import ClassVar, Literal

from unigate.gateway.errors import GatewayError
from unigate.gateway.providers import mistral_translate as mt
from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    capability_unsupported,
    every_capability,
    failed_stream,
)
from unigate.gateway.providers.common import Json
from unigate.gateway.providers.http_adapter import with_call_defaults
from unigate.gateway.providers.openai import OpenAIProvider, OpenAISettings, StreamTranslator
from unigate.gateway.providers.streaming import StreamMessage
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb


class MistralSettings(HttpProviderSettings):
    """A provider block of kind "mistral"."""

    base_url_example = "https://api.mistral.ai"

    kind: Literal["mistral"]
    # Without /v1: the adapter adds it (https://codestral.mistral.ai for Codestral's endpoint).
    base_url: str = "https://api.mistral.ai"
    # Ask Mistral to prepend its safety prompt to every conversation.
    safe_prompt: bool = False
    # Serve Complete/StreamComplete with FIM; only Codestral models support it.
    fim_completion: bool = False
    # The type of the embedding values (codestral-embed); int8 and the binary types come back
    # as whole numbers, the binary ones packed eight dimensions to a value.
    embedding_dtype: Literal["float", "int8", "uint8", "binary", "ubinary"] | None = None


class MistralStreamTranslator(StreamTranslator[StreamMessage]):
    """Mistral's stream chunks: OpenAI's framing, Mistral's errors and finish reasons."""

    wire = mt.WIRE

    def _error(self, chunk: Json) -> GatewayError | None:
        return mt.stream_error(chunk, self._target) if mt.is_stream_error(chunk) else None

    def _finish_reason(self, reason: str) -> pb.FinishReason:
        return mt.finish_reason(reason, self._target)


class MistralChatStreamTranslator(MistralStreamTranslator[pb.StreamChatResponse]):
    message_type = pb.StreamChatResponse
    _calls = 0  # tool calls begun so far

    def _deltas(self, choice: Json) -> list[pb.StreamChatResponse]:
        delta = choice.get("delta") or {}
        pieces = []
        # Mistral sends each call whole (id, name, all its arguments) in one delta; a piece
        # with an id begins the next call, whatever its `index` says.
        for call in delta.get("tool_calls") or ():
            if call.get("id") or not self._calls:
                self._calls += 1
            function = call.get("function") or {}
            pieces.append(
                pb.ToolCallDelta(
                    index=self._calls - 1,
                    id=call.get("id") or "",
                    name=function.get("name") or "",
                    arguments=mt.arguments_text(function.get("arguments")),
                )
            )
        text = mt.content_text(delta.get("content"))
        return [self._message(text=text, tool_calls=pieces)] if text or pieces else []


class MistralCompleteStreamTranslator(MistralStreamTranslator[pb.StreamCompleteResponse]):
    message_type = pb.StreamCompleteResponse

    def _deltas(self, choice: Json) -> list[pb.StreamCompleteResponse]:
        text = mt.content_text((choice.get("delta") or {}).get("content"))
        return [self._message(text=text)] if text else []


class MistralProvider(OpenAIProvider):
    """One configured Mistral endpoint."""

    kind: ClassVar[str] = "mistral"

    def __init__(self, name: str, settings: MistralSettings, transport: HttpTransport) -> None:
        # The OpenAI adapter's plumbing (headers, secrets, posts, streams) with Mistral's bodies.
        wire = OpenAISettings(
            kind="openai",
            base_url=settings.base_url,
            api_key=settings.api_key,
            headers=settings.headers,
        )
        super().__init__(name, wire, transport)
        self._mistral = settings

    def capabilities(self) -> pb.Capabilities:
        capabilities = every_capability()
        capabilities.completion = self._mistral.fim_completion
        return capabilities

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = mt.chat_request_body(request, call.model, safe_prompt=self._mistral.safe_prompt)
        answer = await self._post(self._url("/v1/chat/completions", call), body, call)
        return with_call_defaults(mt.chat_response(answer, self._target(call)), call)

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        body = partial(
            mt.chat_request_body,
            request,
            call.model,
            stream=True,
            safe_prompt=self._mistral.safe_prompt,
        )
        translator = self._translator(MistralChatStreamTranslator, call)
        return self._stream(self._url("/v1/chat/completions", call), body, call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        if not self._mistral.fim_completion:
            raise capability_unsupported(self.name, self.kind, "completion")
        body = mt.fim_request_body(request, call.model)
        answer = await self._post(self._url("/v1/fim/completions", call), body, call)
        return with_call_defaults(mt.fim_response(answer, self._target(call)), call)

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        if not self._mistral.fim_completion:
            return failed_stream(capability_unsupported(self.name, self.kind, "completion"))
        body = partial(mt.fim_request_body, request, call.model, stream=True)
        translator = self._translator(MistralCompleteStreamTranslator, call)
        return self._stream(self._url("/v1/fim/completions", call), body, call, translator)

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        body = mt.embed_request_body(request, call.model, dtype=self._mistral.embedding_dtype)
        answer = await self._post(self._url("/v1/embeddings", call), body, call)
        response = mt.embed_response(answer, self._target(call), inputs=len(request.inputs))
        response.model = response.model or call.model
        return response

    def _upstream_error(
        self, status: int, headers: Mapping[str, str], body: bytes, target: Target
    ) -> GatewayError:
        return mt.upstream_error(status, headers, body, target)


KIND = ProviderKind(settings=MistralSettings, factory=MistralProvider)
