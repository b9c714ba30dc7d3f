"""The Anthropic adapter: the Messages API (POST {base_url}/v1/messages), unary and streamed.

Stateless translation lives in anthropic_translate; here are the settings, the stateful reading
of Anthropic's SSE event sequence, and the thin calls into the shared HttpTransport. Anthropic
has no completion or embedding API: those RPCs are refused with UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import grpc
from pydantic import Field, field_validator

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers import anthropic_translate as tr
from unigate.gateway.providers.base import ProviderKind, ProviderSettings, UpstreamCall
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

# Header names whose values are credentials, kept out of every error message.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key"})


class AnthropicSettings(ProviderSettings):
    """A provider block of kind "anthropic"."""

    kind: Literal["anthropic"]
    # Without /v1: the adapter appends /v1/messages, as Anthropic's own SDKs do.
    base_url: str = "https://api.anthropic.com"
    # None sends no x-api-key (a proxy in front of Anthropic may add its own credentials).
    api_key: str | None = Field(default=None, repr=False)
    anthropic_version: str = Field("2023-06-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    # Anthropic requires max_tokens on every request; these apply when the caller set none.
    default_max_tokens: int = Field(4096, gt=0)
    max_tokens_by_model: dict[str, int] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"must be an absolute http(s) URL such as https://api.anthropic.com (got {value!r})"
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

    @field_validator("max_tokens_by_model")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for model, limit in value.items():
            if limit <= 0:
                raise ValueError(f"the limit for {model!r} must be more than 0")
        return value


class ChatStreamTranslator:
    """Reads the events of one Anthropic message stream, in order, into unigate messages.

    Text and tool-call argument deltas go out as they come. A tool call's ToolCallDelta index
    is its ordinal among the reply's tool_use blocks (not Anthropic's block index, which counts
    text blocks too). message_delta's stop_reason and usage are held back until message_stop,
    so the last message carries both; a stream that ends before any stop_reason is an error.
    """

    def __init__(self, target: Target, *, fallback_id: str = "") -> None:
        self._target = target
        self._id = fallback_id
        self._model = ""
        self._usage: tr.Json = {}
        self._finish: pb.FinishReason | None = None
        self._tool_ordinals: dict[int, int] = {}  # Anthropic block index -> ToolCallDelta index
        self._tools_with_arguments: set[int] = set()
        self.done = False

    def feed(self, event: str, data: str) -> list[pb.StreamChatResponse]:
        """Translate one SSE event (its name and data payload)."""
        if self.done:
            return []
        with tr.protocol_errors(self._target, "a stream event"):
            payload = tr.json_object(data)
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
                self.done = True
                return [self._final()]
            # ping, and event types newer than this adapter, carry nothing for unigate.
            return []

    def end(self) -> list[pb.StreamChatResponse]:
        """The body ended. Complete after message_stop, or once message_delta said why."""
        if self.done:
            return []
        self.done = True
        return [self._final()]

    def _start(self, message: tr.Json) -> None:
        self._id = message.get("id") or self._id
        self._model = message.get("model") or ""
        self._add_usage(message.get("usage"))

    def _block_start(self, index: int, block: tr.Json) -> list[pb.StreamChatResponse]:
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

    def _block_delta(self, index: int, delta: tr.Json) -> list[pb.StreamChatResponse]:
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

    def _message_delta(self, payload: tr.Json) -> None:
        reason = (payload.get("delta") or {}).get("stop_reason")
        if reason:
            self._finish = tr.finish_reason(reason)
        self._add_usage(payload.get("usage"))

    def _add_usage(self, raw: tr.Json | None) -> None:
        # message_delta's counts are cumulative and may repeat message_start's: the last wins.
        self._usage.update({key: value for key, value in (raw or {}).items() if value is not None})

    def _text(self, text: str) -> list[pb.StreamChatResponse]:
        return [self._message(text=text)] if text else []

    def _final(self) -> pb.StreamChatResponse:
        if self._finish is None:
            target = self._target
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.UPSTREAM_UNAVAILABLE,
                f"{target.provider} deployment {target.deployment!r}: "
                "stream ended before the answer finished",
                metadata={"provider": target.provider, "deployment": target.deployment},
            )
        return self._message(finish_reason=self._finish, usage=tr.usage(self._usage))

    def _message(
        self,
        *,
        text: str = "",
        tool_calls: list[pb.ToolCallDelta] | None = None,
        finish_reason: pb.FinishReason = pb.FINISH_REASON_UNSPECIFIED,
        usage: pb.Usage | None = None,
    ) -> pb.StreamChatResponse:
        return pb.StreamChatResponse(
            id=self._id,
            model=self._model,
            provider=tr.PROVIDER,
            text=text,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
        )


class AnthropicProvider:
    """One configured Anthropic Messages API upstream."""

    kind: ClassVar[str] = "anthropic"

    def __init__(self, name: str, settings: AnthropicSettings, transport: HttpTransport) -> None:
        self.name = name
        self._settings = settings
        self._transport = transport
        self._url = settings.base_url.rstrip("/") + "/v1/messages"
        headers = {"anthropic-version": settings.anthropic_version}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        headers.update(settings.headers)
        self._headers = headers
        secrets = {value for key, value in headers.items() if key.lower() in _SECRET_HEADERS}
        # "Bearer <token>": a vendor message may quote the token alone.
        secrets |= {value.partition(" ")[2].strip() for value in secrets} - {""}
        if settings.api_key:
            secrets.add(settings.api_key)
        self._secrets = tuple(secrets)

    def capabilities(self) -> pb.Capabilities:
        # json_output means a JSON schema (output_config.format); JSON without one is refused.
        return pb.Capabilities(chat=True, streaming=True, tools=True, images=True, json_output=True)

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(
            request, call.model, default_max_tokens=self._default_max_tokens(call)
        )
        target = self._target(call)
        result = await self._transport.request(
            "POST",
            self._url,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call),
            json=body,
        )
        if result.status >= 300:
            raise tr.upstream_error(result.status, result.headers, result.body, target)
        response = tr.chat_response(result.body, target)
        response.id = response.id or call.request_id
        response.model = response.model or call.model
        return response

    async def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        # One generator from request to last message, so that closing it (the caller went
        # away) leaves transport.stream at once and the upstream connection is dropped.
        # The body is built here, so that every error, a bad request too, comes from iterating.
        body = tr.chat_request_body(
            request, call.model, default_max_tokens=self._default_max_tokens(call), stream=True
        )
        target = self._target(call)
        translator = ChatStreamTranslator(target, fallback_id=call.request_id)
        async with self._transport.stream(
            self._url,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call, stream=True),
            json=body,
        ) as response:
            if response.status >= 300:
                answer = await response.read()
                raise tr.upstream_error(response.status, response.headers, answer, target)
            async for event in iter_sse(response.content):
                for message in translator.feed(event.event, event.data):
                    yield message
                if translator.done:
                    break
        for message in translator.end():
            yield message

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        raise self._unsupported("completion", call)

    async def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        raise self._unsupported("completion", call)
        yield  # never reached: it makes this an async generator, as the protocol wants

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        raise self._unsupported("embeddings", call)

    async def close(self) -> None:
        """Nothing to release: the transport owns the sessions."""

    def _default_max_tokens(self, call: UpstreamCall) -> int:
        settings = self._settings
        return settings.max_tokens_by_model.get(call.model, settings.default_max_tokens)

    def _target(self, call: UpstreamCall) -> Target:
        return Target(provider=self.name, deployment=call.deployment, secrets=self._secrets)

    def _request_headers(self, call: UpstreamCall, *, stream: bool = False) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": call.request_id, **call.extra_headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

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
