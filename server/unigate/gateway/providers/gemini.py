"""The Gemini adapter: Google's Generative Language API (v1beta), authenticated by API key.

Body translation lives in gemini_translate, the HTTP calls in http_adapter; here are the
settings, Google's error bodies, the URLs and the stateful reading of SSE streams. Gemini has no
plain-text completion method, so Complete and StreamComplete are UNIMPLEMENTED.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, Literal

import grpc
from pydantic import Field

from unigate.gateway.errors import GatewayError, Reason, parse_retry_after
from unigate.gateway.providers import gemini_translate as tr
from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    failed_stream,
)
from unigate.gateway.providers.common import (
    header_value,
    http_error,
    json_object,
    json_or_none,
    protocol_errors,
    vendor_message,
)
from unigate.gateway.providers.http_adapter import HttpAdapter, with_call_defaults
from unigate.gateway.providers.sse import SseEvent
from unigate.gateway.providers.streaming import SseTranslator
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

# google.rpc.Code names, for in-stream errors that carry no HTTP status.
_STATUS_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# ErrorInfo reasons that mean the gateway's own key is bad: Google sends those as 400.
_KEY_REASONS = frozenset({"API_KEY_INVALID"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiSettings(HttpProviderSettings):
    """A provider block of kind "gemini"; its api_key is sent as x-goog-api-key."""

    base_url_example = "https://host"

    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: str = Field(default="v1beta", pattern=r"^v\d+(alpha|beta)?\d*$")


# --- errors -----------------------------------------------------------------------------------


def upstream_error(
    status: int, headers: Mapping[str, str], body: bytes, target: Target
) -> GatewayError:
    """An HTTP error answer as a GatewayError, in Google's own (redacted) words.

    The retry delay comes from Retry-After, else from the body's google.rpc.RetryInfo.
    """
    retry_after = parse_retry_after(header_value(headers, "retry-after"))
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _google_error(status, error, target, retry_after=retry_after)
    text = vendor_message(body.decode("utf-8", "replace"), target)
    return http_error(status, text, target, retry_after=retry_after)


def stream_error(payload: Any, target: Target) -> GatewayError:
    """An {"error": ...} payload sent as an SSE event after the 200 status line."""
    error = payload if isinstance(payload, dict) else {"message": str(payload)}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else None
    status = status or _STATUS_HTTP.get(str(error.get("status")), 500)
    return _google_error(status, error, target, mid_stream=True)


def _google_error(
    status: int,
    error: dict[str, Any],
    target: Target,
    *,
    retry_after: float | None = None,
    mid_stream: bool = False,
) -> GatewayError:
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = [str(d["reason"]) for d in details if d.get("reason")]
    mapped = 401 if _KEY_REASONS.intersection(reasons) else status
    if retry_after is None:
        delays = (_duration(d.get("retryDelay")) for d in details if "retryDelay" in d)
        retry_after = next(delays, None)
    message = vendor_message(str(error.get("message") or ""), target)
    gateway_error = http_error(mapped, message, target, retry_after=retry_after)
    metadata = dict(gateway_error.metadata)
    if error.get("status"):
        metadata["vendor_code"] = str(error["status"])
    if reasons:
        metadata["vendor_reason"] = reasons[0]
    # Say what the upstream really did: the status used for mapping may not be the one it sent.
    if mid_stream:
        metadata.pop("http_status", None)
        verb = "failed mid-stream:"
    else:
        metadata["http_status"] = str(status)
        verb = f"answered {status}:"
    text = gateway_error.message.replace(f"answered {mapped}:", verb, 1)
    return replace(gateway_error, message=text, metadata=metadata)


def _duration(value: Any) -> float | None:
    """A google.protobuf.Duration in its JSON form, e.g. "7s" or "1.5s"."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    return float(match.group(1)) if match else None


# --- streams ----------------------------------------------------------------------------------


class ChatStreamTranslator(SseTranslator[pb.StreamChatResponse]):
    """Reads the data payloads of one streamGenerateContent?alt=sse body into unigate messages.

    Each payload is a whole GenerateContentResponse; there is no [DONE]. The answer is finished
    once a candidate carried a finishReason (or the prompt was blocked); the finish reason and
    the last usageMetadata are held back for one final message when the body ends. A body that
    ends before that is UNAVAILABLE. Gemini sends each function call whole, in one part.
    """

    message_type = pb.StreamChatResponse

    def __init__(self, target: Target, *, fallback_id: str = "") -> None:
        super().__init__(target, fallback_id=fallback_id, provider=tr.PROVIDER)
        self._started = False
        self._calls = 0

    def read(self, event: SseEvent) -> list[pb.StreamChatResponse]:
        return self.feed(event.data)

    def feed(self, data: str) -> list[pb.StreamChatResponse]:
        """Translate one SSE data payload."""
        with protocol_errors(self._target, "a stream chunk", wire=tr.WIRE):
            chunk = json_object(data)
            if "error" in chunk:
                raise stream_error(chunk["error"], self._target)
            if not self._started:
                self._started = True
                self._id = chunk.get("responseId") or self._id
            self._model = chunk.get("modelVersion") or self._model
            if chunk.get("usageMetadata"):
                self._usage = tr.usage(chunk["usageMetadata"])
            candidate = tr.first_candidate(chunk)
            if candidate is None:
                if tr.prompt_blocked(chunk):
                    self._finish = pb.FINISH_REASON_CONTENT_FILTER
                return []
            text, calls = tr.answer_parts(candidate, first_call=self._calls)
            first, self._calls = self._calls, self._calls + len(calls)
            reason = candidate.get("finishReason")
            finish = tr.finish_reason(reason, tool_calls=self._calls > 0, target=self._target)
            if finish != pb.FINISH_REASON_UNSPECIFIED:
                self._finish = finish
            deltas = [
                pb.ToolCallDelta(index=first + i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(calls)
            ]
            return [self._message(text=text, tool_calls=deltas)] if text or deltas else []


# --- the provider -----------------------------------------------------------------------------


class GeminiProvider(HttpAdapter):
    """One configured Gemini API upstream."""

    kind: ClassVar[str] = "gemini"

    def __init__(self, name: str, settings: GeminiSettings, transport: HttpTransport) -> None:
        headers: dict[str, str] = {}
        if settings.api_key:
            headers["x-goog-api-key"] = settings.api_key
        super().__init__(name, transport, {**headers, **settings.headers}, api_key=settings.api_key)
        self._settings = settings

    def capabilities(self) -> pb.Capabilities:
        return pb.Capabilities(
            chat=True, streaming=True, tools=True, images=True, json_output=True, embeddings=True
        )

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(request)
        answer = await self._post(self._url(call.model, "generateContent"), body, call)
        return with_call_defaults(tr.chat_response(answer, self._target(call)), call)

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        url = self._url(call.model, "streamGenerateContent")
        translator = ChatStreamTranslator(self._target(call), fallback_id=call.request_id)
        return self._stream(url, partial(tr.chat_request_body, request), call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        raise self._no_completion(call)

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        return failed_stream(self._no_completion(call))

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        method, body = tr.embed_request(request, call.model)
        answer = await self._post(self._url(call.model, method), body, call)
        response = tr.embed_response(answer, self._target(call), inputs=len(request.inputs))
        response.model = call.model
        return response

    def _no_completion(self, call: UpstreamCall) -> GatewayError:
        return GatewayError(
            grpc.StatusCode.UNIMPLEMENTED,
            Reason.CAPABILITY_UNSUPPORTED,
            f"{self.name} deployment {call.deployment!r}: the Gemini API has no plain-text"
            " completion method; use Chat",
            metadata={"provider": self.name, "deployment": call.deployment},
        )

    def _url(self, model: str, method: str) -> str:
        return self._settings.base_url + tr.request_path(model, method, self._settings.api_version)

    def _upstream_error(
        self, status: int, headers: Mapping[str, str], body: bytes, target: Target
    ) -> GatewayError:
        return upstream_error(status, headers, body, target)


KIND = ProviderKind(settings=GeminiSettings, factory=GeminiProvider)
