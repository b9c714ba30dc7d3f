"""The OpenAI adapter: OpenAI itself and every server that speaks its REST API (Ollama, vLLM,
llama.cpp, LM Studio...).

Stateless translation lives in openai_translate; here are the settings, the stateful reading of
SSE streams, and the thin calls into the shared HttpTransport.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
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


class OpenAISettings(ProviderSettings):
    """A provider block of kind "openai"."""

    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    # None sends no Authorization header (local servers such as Ollama need none).
    api_key: str | None = Field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    embedding_encoding: Literal["float", "base64"] = "float"
    # OpenAI's reasoning models (o1, o3, gpt-5...) refuse `max_tokens` and want
    # `max_completion_tokens`, which most OpenAI-compatible servers do not know yet.
    # So the portable name is the default and an operator opts in per provider block.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"

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
        # Secrets mounted from files often end in a newline; anything else is a typo.
        if value is None:
            return None
        value = value.strip()
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise ValueError("contains whitespace or control characters (the key is not shown)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name + text):
                raise ValueError(f"header {name!r} contains control characters")
        return value


StreamMessage = TypeVar("StreamMessage", pb.StreamChatResponse, pb.StreamCompleteResponse)


class StreamTranslator(Generic[StreamMessage]):
    """Reads the data payloads of one OpenAI SSE stream, in order, into unigate messages.

    The finish_reason is held back until [DONE] (after the usage chunk that include_usage
    adds), so the last message carries both. A stream that ends any other way is an error.
    """

    message_type: ClassVar[type[Any]]

    def __init__(self, target: Target, *, fallback_id: str = "") -> None:
        self._target = target
        self._id = fallback_id
        self._model = ""
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
        with tr.protocol_errors(self._target, "a stream chunk"):
            chunk = tr.json_object(data)
            if "error" in chunk:
                raise tr.stream_error(chunk["error"], self._target)
            if not self._started:
                self._started = True
                self._id = chunk.get("id") or self._id
                self._model = chunk.get("model") or ""
            if chunk.get("usage"):
                self._usage = tr.usage(chunk["usage"])
            choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
            if choice is None:
                return []
            if choice.get("finish_reason"):
                self._finish = tr.finish_reason(choice["finish_reason"])
            return self._deltas(choice)

    def end(self) -> list[StreamMessage]:
        """The body ended. Complete after [DONE], or once both finish_reason and usage came."""
        if self.done:
            return []
        if self._finish is None or self._usage is None:
            raise self._unfinished()
        self.done = True
        return [self._final()]

    def _final(self) -> StreamMessage:
        if self._finish is None:
            raise self._unfinished()
        return self._message(finish_reason=self._finish, usage=self._usage)

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
            id=self._id, model=self._model, provider=tr.PROVIDER, **fields
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
    """One configured OpenAI-compatible upstream."""

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

    def capabilities(self) -> pb.Capabilities:
        return every_capability()

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(
            request, call.model, max_tokens_field=self._settings.max_tokens_field
        )
        target = self._target(call)
        response = tr.chat_response(await self._post("/chat/completions", body, call), target)
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
        )
        translator = ChatStreamTranslator(self._target(call), fallback_id=call.request_id)
        return self._stream("/chat/completions", body, call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        body = tr.complete_request_body(request, call.model)
        target = self._target(call)
        response = tr.complete_response(await self._post("/completions", body, call), target)
        response.id = response.id or call.request_id
        response.model = response.model or call.model
        return response

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        body = partial(tr.complete_request_body, request, call.model, stream=True)
        translator = CompleteStreamTranslator(self._target(call), fallback_id=call.request_id)
        return self._stream("/completions", body, call, translator)

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        body = tr.embed_request_body(
            request, call.model, encoding=self._settings.embedding_encoding
        )
        answer = await self._post("/embeddings", body, call)
        response = tr.embed_response(answer, self._target(call), inputs=len(request.inputs))
        response.model = response.model or call.model
        return response

    async def close(self) -> None:
        """Nothing to release: the transport owns the sessions."""

    def _target(self, call: UpstreamCall) -> Target:
        return Target(provider=self.name, deployment=call.deployment, secrets=self._secrets)

    def _request_headers(self, call: UpstreamCall, *, stream: bool = False) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": call.request_id, **call.extra_headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    async def _post(self, path: str, body: tr.Json, call: UpstreamCall) -> bytes:
        target = self._target(call)
        result = await self._transport.request(
            "POST",
            self._base_url + path,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call),
            json=body,
        )
        if result.status >= 300:
            raise tr.upstream_error(result.status, result.headers, result.body, target)
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
            self._base_url + path,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call, stream=True),
            json=body(),
        ) as response:
            if response.status >= 300:
                answer = await response.read()
                raise tr.upstream_error(response.status, response.headers, answer, target)
            async for event in iter_sse(response.content):
                for message in translator.feed(event.data):
                    yield message
                if translator.done:
                    # [DONE] is the end, whether or not the server closes the body after it.
                    break
        for message in translator.end():
            yield message


KIND = ProviderKind(settings=OpenAISettings, factory=OpenAIProvider)
