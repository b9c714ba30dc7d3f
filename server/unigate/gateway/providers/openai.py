"""The OpenAI adapter: OpenAI itself, and the base of the kinds that speak its wire format
elsewhere (azure_openai, openai_compatible for Ollama, vLLM, llama.cpp..., and mistral).

Stateless translation lives in openai_translate, the HTTP calls in http_adapter; here are the
settings, the headers and URLs, and the stateful reading of SSE streams.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

from unigate.gateway.errors import GatewayError
from unigate.gateway.providers import openai_translate as tr
from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    every_capability,
)
from unigate.gateway.providers.common import Json, json_object, protocol_errors
from unigate.gateway.providers.http_adapter import HttpAdapter, with_call_defaults
from unigate.gateway.providers.sse import SseEvent
from unigate.gateway.providers.streaming import SseTranslator, StreamMessage
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

EmbeddingEncoding = Literal["float", "base64"]
# OpenAI's reasoning models (o1, o3, gpt-5...) refuse `max_tokens` and want
# `max_completion_tokens`, which most OpenAI-compatible servers do not know yet.
# So the portable name is the default and an operator opts in per provider block.
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAISettings(HttpProviderSettings):
    """A provider block of kind "openai"."""

    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    embedding_encoding: EmbeddingEncoding = "float"
    max_tokens_field: MaxTokensField = "max_tokens"


Translator = TypeVar("Translator", bound="StreamTranslator[Any]")


class StreamTranslator(SseTranslator[StreamMessage]):
    """Reads the data payloads of one OpenAI SSE stream, in order, into unigate messages.

    The finish_reason is held back until [DONE] (after the usage chunk that include_usage
    adds), so the last message carries both. A stream that ends any other way is an error,
    unless `usage_optional` (for servers that send no usage): then a body that ends after a
    finish_reason is complete too, and a missing usage is reported as zeros.
    """

    wire: ClassVar[str] = tr.WIRE

    def __init__(
        self,
        target: Target,
        *,
        fallback_id: str = "",
        provider: str = tr.PROVIDER,
        usage_optional: bool = False,
    ) -> None:
        super().__init__(target, fallback_id=fallback_id, provider=provider)
        self._usage_optional = usage_optional
        self._started = False

    def read(self, event: SseEvent) -> list[StreamMessage]:
        return self.feed(event.data)

    def feed(self, data: str) -> list[StreamMessage]:
        """Translate one SSE data payload."""
        if self.done:
            return []
        if data.strip() == "[DONE]":
            return self._stop()
        with protocol_errors(self._target, "a stream chunk", wire=self.wire):
            chunk = json_object(data)
            if (error := self._error(chunk)) is not None:
                raise error
            if not self._started:
                # Azure's first chunk (prompt filter results) has an empty id and model.
                self._id = chunk.get("id") or self._id
                self._model = chunk.get("model") or self._model
            if chunk.get("usage"):
                self._usage = tr.usage(chunk["usage"])
            choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
            if choice is None:
                return []
            if choice.get("finish_reason"):
                self._finish = self._finish_reason(choice["finish_reason"])
            messages = self._deltas(choice)
            self._started = self._started or bool(messages)
            return messages

    def _complete(self) -> bool:
        """Without [DONE], the answer is whole once both finish_reason and usage came."""
        return self._finish is not None and (self._usage is not None or self._usage_optional)

    def _final_usage(self) -> pb.Usage | None:
        if self._usage is None and self._usage_optional:
            return pb.Usage()
        return self._usage

    def _error(self, chunk: Json) -> GatewayError | None:
        """The error an in-stream payload reports, if it is one."""
        return tr.stream_error(chunk["error"], self._target) if "error" in chunk else None

    def _finish_reason(self, reason: str) -> pb.FinishReason:
        return tr.finish_reason(reason)

    def _deltas(self, choice: Json) -> list[StreamMessage]:
        raise NotImplementedError


class ChatStreamTranslator(StreamTranslator[pb.StreamChatResponse]):
    message_type = pb.StreamChatResponse

    def _deltas(self, choice: Json) -> list[pb.StreamChatResponse]:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("refusal") or ""
        calls = [
            pb.ToolCallDelta(
                index=int(call.get("index", position)),
                id=call.get("id") or "",
                name=(call.get("function") or {}).get("name") or "",
                arguments=(call.get("function") or {}).get("arguments") or "",
            )
            for position, call in enumerate(delta.get("tool_calls") or [])
        ]
        return [self._message(text=text, tool_calls=calls)] if text or calls else []


class CompleteStreamTranslator(StreamTranslator[pb.StreamCompleteResponse]):
    message_type = pb.StreamCompleteResponse

    def _deltas(self, choice: Json) -> list[pb.StreamCompleteResponse]:
        text = choice.get("text") or ""
        return [self._message(text=text)] if text else []


class OpenAIProvider(HttpAdapter):
    """One configured OpenAI upstream.

    Vendors that speak this wire format at other URLs, with other credentials or quirks
    (Azure OpenAI, OpenAI-compatible servers, Mistral) subclass it and override the hooks:
    `_url`, `_upstream_error`, and the stream flags set in `__init__`.
    """

    kind: ClassVar[str] = "openai"

    def __init__(self, name: str, settings: OpenAISettings, transport: HttpTransport) -> None:
        headers: dict[str, str] = {}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        super().__init__(name, transport, {**headers, **settings.headers}, api_key=settings.api_key)
        self._settings = settings
        self._base_url = settings.base_url
        # Ask for usage in streams (stream_options.include_usage); whether a stream may end
        # without it (its usage then reported as zeros).
        self._stream_usage = True
        self._usage_optional = False

    def capabilities(self) -> pb.Capabilities:
        return every_capability()

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(
            request, call.model, max_tokens_field=self._settings.max_tokens_field
        )
        answer = await self._post(self._url("/chat/completions", call), body, call)
        response = tr.chat_response(answer, self._target(call), provider=self.kind)
        return with_call_defaults(response, call)

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        body = partial(
            tr.chat_request_body,
            request,
            call.model,
            stream=True,
            max_tokens_field=self._settings.max_tokens_field,
            stream_usage=self._stream_usage,
        )
        translator = self._translator(ChatStreamTranslator, call)
        return self._stream(self._url("/chat/completions", call), body, call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        body = tr.complete_request_body(request, call.model)
        answer = await self._post(self._url("/completions", call), body, call)
        response = tr.complete_response(answer, self._target(call), provider=self.kind)
        return with_call_defaults(response, call)

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        body = partial(
            tr.complete_request_body,
            request,
            call.model,
            stream=True,
            stream_usage=self._stream_usage,
        )
        translator = self._translator(CompleteStreamTranslator, call)
        return self._stream(self._url("/completions", call), body, call, translator)

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        body = tr.embed_request_body(
            request, call.model, encoding=self._settings.embedding_encoding
        )
        answer = await self._post(self._url("/embeddings", call), body, call)
        response = tr.embed_response(
            answer, self._target(call), inputs=len(request.inputs), provider=self.kind
        )
        response.model = response.model or call.model
        return response

    def _url(self, path: str, call: UpstreamCall) -> str:
        """Where an endpoint (`/chat/completions`...) of this upstream is, for this call."""
        return self._base_url + path

    def _upstream_error(
        self, status: int, headers: Mapping[str, str], body: bytes, target: Target
    ) -> GatewayError:
        return tr.upstream_error(status, headers, body, target)

    def _translator(self, kind: type[Translator], call: UpstreamCall) -> Translator:
        return kind(
            self._target(call),
            fallback_id=call.request_id,
            provider=self.kind,
            usage_optional=self._usage_optional,
        )


KIND = ProviderKind(settings=OpenAISettings, factory=OpenAIProvider)
