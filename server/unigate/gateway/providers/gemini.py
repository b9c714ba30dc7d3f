"""The Gemini adapter: Google's Generative Language API (v1beta), authenticated by API key.

Body translation lives in gemini_translate; here are the settings, Google's error bodies, the
stateful reading of SSE streams, and the thin calls into the shared HttpTransport. Gemini has no
plain-text completion method, so Complete and StreamComplete are UNIMPLEMENTED.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import grpc
import orjson
from pydantic import Field, field_validator

from unigate.gateway.errors import GatewayError, Reason, from_http_status, parse_retry_after, redact
from unigate.gateway.providers import gemini_translate as tr
from unigate.gateway.providers.base import ProviderKind, ProviderSettings, UpstreamCall
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

MAX_VENDOR_MESSAGE = 500
# Header names whose values are credentials, kept out of every error message.
_SECRET_HEADERS = frozenset({"x-goog-api-key", "authorization"})
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


class GeminiSettings(ProviderSettings):
    """A provider block of kind "gemini"."""

    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: str = Field(default="v1beta", pattern=r"^v\d+(alpha|beta)?\d*$")
    # Sent as x-goog-api-key; None sends none (a proxy in front may add its own credentials).
    api_key: str | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"must be an absolute http(s) URL such as https://host (got {value!r})"
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


# --- errors -----------------------------------------------------------------------------------


def upstream_error(
    status: int, headers: Mapping[str, str], body: bytes, target: Target
) -> GatewayError:
    """An HTTP error answer as a GatewayError, in Google's own (redacted) words.

    The retry delay comes from Retry-After, else from the body's google.rpc.RetryInfo.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    retry_after = parse_retry_after(lowered.get("retry-after"))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return _google_error(status, error, target, retry_after=retry_after)
    text = _cut(" ".join(redact(body.decode("utf-8", "replace"), target.secrets).split()))
    return from_http_status(
        status,
        text,
        provider=target.provider,
        deployment=target.deployment,
        retry_after=retry_after,
        secrets=target.secrets,
    )


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
    message = _cut(" ".join(redact(str(error.get("message") or ""), target.secrets).split()))
    gateway_error = from_http_status(
        mapped,
        message,
        provider=target.provider,
        deployment=target.deployment,
        retry_after=retry_after,
        secrets=target.secrets,
    )
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


def _cut(message: str) -> str:
    # Callers redact before cutting, so no secret is cut in two and half of it kept.
    if len(message) <= MAX_VENDOR_MESSAGE:
        return message
    return message[: MAX_VENDOR_MESSAGE - 1] + "…"


# --- streams ----------------------------------------------------------------------------------


class ChatStreamTranslator:
    """Reads the data payloads of one streamGenerateContent?alt=sse body into unigate messages.

    Each payload is a whole GenerateContentResponse; there is no [DONE]. The answer is finished
    once a candidate carried a finishReason (or the prompt was blocked); the finish reason and
    the last usageMetadata are held back for one final message when the body ends. A body that
    ends before that is UNAVAILABLE. Gemini sends each function call whole, in one part.
    """

    def __init__(self, target: Target, *, fallback_id: str = "") -> None:
        self._target = target
        self._id = fallback_id
        self._model = ""
        self._started = False
        self._calls = 0
        self._finish: pb.FinishReason | None = None
        self._usage: pb.Usage | None = None

    def feed(self, data: str) -> list[pb.StreamChatResponse]:
        """Translate one SSE data payload."""
        with tr.protocol_errors(self._target, "a stream chunk"):
            chunk = tr.json_object(data)
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

    def end(self) -> list[pb.StreamChatResponse]:
        """The body ended: complete only if the answer had finished."""
        if self._finish is None:
            target = self._target
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.UPSTREAM_UNAVAILABLE,
                f"{target.provider} deployment {target.deployment!r}: "
                "stream ended before the answer finished",
                metadata={"provider": target.provider, "deployment": target.deployment},
            )
        return [self._message(finish_reason=self._finish, usage=self._usage)]

    def _message(self, **fields: Any) -> pb.StreamChatResponse:
        return pb.StreamChatResponse(id=self._id, model=self._model, provider=tr.PROVIDER, **fields)


# --- the provider -----------------------------------------------------------------------------


class GeminiProvider:
    """One configured Gemini API upstream."""

    kind: ClassVar[str] = "gemini"

    def __init__(self, name: str, settings: GeminiSettings, transport: HttpTransport) -> None:
        self.name = name
        self._settings = settings
        self._transport = transport
        headers: dict[str, str] = {}
        if settings.api_key:
            headers["x-goog-api-key"] = settings.api_key
        headers.update(settings.headers)
        self._headers = headers
        secrets = {value for key, value in headers.items() if key.lower() in _SECRET_HEADERS}
        if settings.api_key:
            secrets.add(settings.api_key)
        self._secrets = tuple(secrets)

    def capabilities(self) -> pb.Capabilities:
        return pb.Capabilities(
            chat=True, streaming=True, tools=True, images=True, json_output=True, embeddings=True
        )

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse:
        body = tr.chat_request_body(request)
        answer = await self._post(self._url(call.model, "generateContent"), body, call)
        response = tr.chat_response(answer, self._target(call))
        response.id = response.id or call.request_id
        response.model = response.model or call.model
        return response

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        translator = ChatStreamTranslator(self._target(call), fallback_id=call.request_id)
        return self._stream(lambda: tr.chat_request_body(request), call, translator)

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        raise self._no_completion(call)

    async def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        raise self._no_completion(call)
        yield  # a generator, so that the error comes from iterating, like every stream's

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        method, body = tr.embed_request(request, call.model)
        answer = await self._post(self._url(call.model, method), body, call)
        response = tr.embed_response(answer, self._target(call), inputs=len(request.inputs))
        response.model = call.model
        return response

    async def close(self) -> None:
        """Nothing to release: the transport owns the sessions."""

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

    def _target(self, call: UpstreamCall) -> Target:
        return Target(provider=self.name, deployment=call.deployment, secrets=self._secrets)

    def _request_headers(self, call: UpstreamCall, *, stream: bool = False) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": call.request_id, **call.extra_headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    async def _post(self, url: str, body: tr.Json, call: UpstreamCall) -> bytes:
        target = self._target(call)
        result = await self._transport.request(
            "POST",
            url,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call),
            json=body,
        )
        if result.status >= 300:
            raise upstream_error(result.status, result.headers, result.body, target)
        return result.body

    async def _stream(
        self,
        body: Callable[[], tr.Json],
        call: UpstreamCall,
        translator: ChatStreamTranslator,
    ) -> AsyncGenerator[pb.StreamChatResponse, None]:
        # One generator from request to last message, so that closing it (the caller went
        # away) leaves transport.stream at once and the upstream connection is dropped.
        # The body is built here, so that every error, a bad request too, comes from iterating.
        target = self._target(call)
        async with self._transport.stream(
            self._url(call.model, "streamGenerateContent"),
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call, stream=True),
            json=body(),
        ) as response:
            if response.status >= 300:
                answer = await response.read()
                raise upstream_error(response.status, response.headers, answer, target)
            async for event in iter_sse(response.content):
                for message in translator.feed(event.data):
                    yield message
        for message in translator.end():
            yield message


KIND = ProviderKind(settings=GeminiSettings, factory=GeminiProvider)
