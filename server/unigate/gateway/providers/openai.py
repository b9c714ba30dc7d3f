"""The OpenAI adapter: OpenAI itself, and the base of the kinds that speak its wire format
elsewhere (azure_openai, openai_compatible for Ollama, vLLM, llama.cpp..., and mistral).

Stateless translation lives in openai_translate; here are the settings, the stateful reading of
SSE streams, and the thin calls into the shared HttpTransport.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from functools import partial
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import grpc
from pydantic import Field, field_validator

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import openai_translate as tr
from unigate.gateway.providers.base import (
    ProviderKind,
    ProviderSettings,
    UpstreamCall,
    every_capability,
)
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

# Header names whose values are credentials, kept out of every error message.
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})


class OpenAIStyleSettings(ProviderSettings):
    """Fields and checks shared by every kind built on this adapter."""

    base_url: str
    # None sends no credentials (local servers such as Ollama need none).
    api_key: str | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"must be an absolute http(s) URL such as https://host/v1 (got {value!r})"
            )
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _clean_key(cls, value: str | None) -> str | None:
        return clean_secret(value)

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name + text):
                raise ValueError(f"header {name!r} contains control characters")
        return value


def clean_secret(value: str | None) -> str | None:
    """A credential from the config, trimmed; refused, never echoed, if it has inner blanks."""
    # Secrets mounted from files often end in a newline; anything else is a typo.
    if value is None:
        return None
    value = value.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError("contains whitespace or control characters (the key is not shown)")
    return value


class OpenAISettings(OpenAIStyleSettings):
    """A provider block of kind "openai"."""

    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    embedding_encoding: Literal["float", "base64"] = "float"
    # OpenAI's reasoning models (o1, o3, gpt-5...) refuse `max_tokens` and want
    # `max_completion_tokens`, which most OpenAI-compatible servers do not know yet.
    # So the portable name is the default and an operator opts in per provider block.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"


StreamMessage = TypeVar("StreamMessage", pb.StreamChatResponse, pb.StreamCompleteResponse)
Translator = TypeVar("Translator", bound="StreamTranslator[Any]")


class StreamTranslator(Generic[StreamMessage]):
    """Reads the data payloads of one OpenAI SSE stream, in order, into unigate messages.

    The finish_reason is held back until [DONE] (after the usage chunk that include_usage
    adds), so the last message carries both. A stream that ends any other way is an error,
    unless `usage_optional` (for servers that send no usage): then a body that ends after a
    finish_reason is complete too, and a missing usage is reported as zeros.
    """

    message_type: ClassVar[type[Any]]
    wire: ClassVar[str] = "OpenAI"

    def __init__(
        self,
        target: Target,
        *,
        fallback_id: str = "",
        provider: str = tr.PROVIDER,
        usage_optional: bool = False,
    ) -> None:
        self._target = target
        self._id = fallback_id
        self._model = ""
        self._provider = provider
        self._usage_optional = usage_optional
        self._started = False
        self._finish: pb.FinishReason | None = None
        self._usage: pb.Usage | None = None
        self.done = False

    def feed(self, data: str) -> list[StreamMessage]:
        """Translate one SSE data payload."""
        if self.done:
            return []
        if data.strip() == "[DONE]":
            self.done = True
            return [self._final()]
        with tr.protocol_errors(self._target, "a stream chunk", wire=self.wire):
            chunk = tr.json_object(data)
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

    def end(self) -> list[StreamMessage]:
        """The body ended. Complete after [DONE], or once both finish_reason and usage came."""
        if self.done:
            return []
        if self._finish is None or (self._usage is None and not self._usage_optional):
            raise self._unfinished()
        self.done = True
        return [self._final()]

    def _final(self) -> StreamMessage:
        if self._finish is None:
            raise self._unfinished()
        usage = self._usage
        if usage is None and self._usage_optional:
            usage = pb.Usage()
        return self._message(finish_reason=self._finish, usage=usage)

    def _error(self, chunk: tr.Json) -> GatewayError | None:
        """The error an in-stream payload reports, if it is one."""
        return tr.stream_error(chunk["error"], self._target) if "error" in chunk else None

    def _finish_reason(self, reason: str) -> pb.FinishReason:
        return tr.finish_reason(reason)

    def _unfinished(self) -> GatewayError:
        target = self._target
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
            f"{target.provider} deployment {target.deployment!r}: "
            "stream ended before the answer finished",
            metadata={"provider": target.provider, "deployment": target.deployment},
        )

    def _message(self, **fields: Any) -> StreamMessage:
        message: StreamMessage = self.message_type(
            id=self._id, model=self._model, provider=self._provider, **fields
        )
        return message

    def _deltas(self, choice: tr.Json) -> list[StreamMessage]:
        raise NotImplementedError


class ChatStreamTranslator(StreamTranslator[pb.StreamChatResponse]):
    message_type = pb.StreamChatResponse

    def _deltas(self, choice: tr.Json) -> list[pb.StreamChatResponse]:
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

    def _deltas(self, choice: tr.Json) -> list[pb.StreamCompleteResponse]:
        text = choice.get("text") or ""
        return [self._message(text=text)] if text else []


class OpenAIProvider:
    """One configured OpenAI upstream.

    Vendors that speak this wire format at other URLs, with other credentials or quirks
    (Azure OpenAI, OpenAI-compatible servers, Mistral) subclass it and override the hooks:
    `_url`, `_upstream_error`, and the stream flags set in `__init__`.
    """

    kind: ClassVar[str] = "openai"

    def __init__(self, name: str, settings: OpenAISettings, transport: HttpTransport) -> None:
        self.name = name
        self._settings = settings
        self._transport = transport
        self._base_url = settings.base_url.rstrip("/")
        headers: dict[str, str] = {}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        headers.update(settings.headers)
        self._headers = headers
        secrets = {value for key, value in headers.items() if key.lower() in _SECRET_HEADERS}
        if settings.api_key:
            secrets.add(settings.api_key)
        self._secrets = tuple(secrets)
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
        answer = await self._post("/chat/completions", body, call)
        response = tr.chat_response(answer, self._target(call), provider=self.kind)
        response.id = response.id or call.request_id
        response.model = response.model or call.model
        return response

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
        return self._stream("/chat/completions", body, call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        body = tr.complete_request_body(request, call.model)
        answer = await self._post("/completions", body, call)
        response = tr.complete_response(answer, self._target(call), provider=self.kind)
        response.id = response.id or call.request_id
        response.model = response.model or call.model
        return response

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
        return self._stream("/completions", body, call, translator)

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        body = tr.embed_request_body(
            request, call.model, encoding=self._settings.embedding_encoding
        )
        answer = await self._post("/embeddings", body, call)
        response = tr.embed_response(
            answer, self._target(call), inputs=len(request.inputs), provider=self.kind
        )
        response.model = response.model or call.model
        return response

    async def close(self) -> None:
        """Nothing to release: the transport owns the sessions."""

    def _target(self, call: UpstreamCall) -> Target:
        return Target(provider=self.name, deployment=call.deployment, secrets=self._secrets)

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

    def _request_headers(self, call: UpstreamCall, *, stream: bool = False) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": call.request_id, **call.extra_headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    async def _post(self, path: str, body: tr.Json, call: UpstreamCall) -> bytes:
        target = self._target(call)
        result = await self._transport.request(
            "POST",
            self._url(path, call),
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call),
            json=body,
        )
        if result.status >= 300:
            raise self._upstream_error(result.status, result.headers, result.body, target)
        return result.body

    async def _stream(
        self,
        path: str,
        body: Callable[[], tr.Json],
        call: UpstreamCall,
        translator: StreamTranslator[StreamMessage],
    ) -> AsyncGenerator[StreamMessage, None]:
        # One generator from request to last message, so that closing it (the caller went
        # away) leaves transport.stream at once and the upstream connection is dropped.
        # The body is built here, so that every error, a bad request too, comes from iterating.
        target = self._target(call)
        async with self._transport.stream(
            self._url(path, call),
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call, stream=True),
            json=body(),
        ) as response:
            if response.status >= 300:
                answer = await response.read()
                raise self._upstream_error(response.status, response.headers, answer, target)
            async for event in iter_sse(response.content):
                for message in translator.feed(event.data):
                    yield message
                if translator.done:
                    # [DONE] is the end, whether or not the server closes the body after it.
                    break
        for message in translator.end():
            yield message


def capability_unsupported(name: str, kind: str, capability: str) -> GatewayError:
    """An RPC this upstream's API lacks (the router normally refuses it first)."""
    return GatewayError(
        grpc.StatusCode.UNIMPLEMENTED,
        Reason.CAPABILITY_UNSUPPORTED,
        f"provider {name!r} ({kind}) does not support {capability}",
        metadata={"provider": name, "capability": capability},
    )


async def failed_stream(error: GatewayError) -> AsyncGenerator[Any, None]:
    """A stream whose first step raises `error`: stream RPCs fail when iterated."""
    raise error
    yield  # pragma: no cover - makes this an async generator


KIND = ProviderKind(settings=OpenAISettings, factory=OpenAIProvider)
