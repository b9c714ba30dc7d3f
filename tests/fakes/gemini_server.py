"""FakeGemini: an in-process aiohttp server on 127.0.0.1 that speaks the Gemini API (v1beta).

    async with FakeGemini() as fake:
        fake.base_url                       # "http://127.0.0.1:PORT" (clients add /v1beta/...)
        fake.fail_next(Fault.rate_limited(retry_delay="7s"))
        ...
        fake.requests[-1].body              # what the client sent

Answers are deterministic. generateContent echoes the last user turn ("echo: <text>"), or, when
that turn holds function responses, the last response as compact JSON. functionCallingConfig
mode ANY gets one function call instead (args {"text": <that text>}) whose part carries a
thoughtSignature, as thinking models send it; Gemini streams a call whole, in one chunk. A turn
containing "[blocked]" is blocked (promptFeedback.blockReason) and "[unsafe]" ends with
finishReason SAFETY. Embeddings are small vectors derived from the input length.

Like the real API, the fake takes field names in either proto JSON form (`maxOutputTokens` or
`max_output_tokens`; the SDK sends both kinds) and refuses fields it does not know (400 "Unknown
name ... Cannot find field"), roles other than user/model, function responses that are not
objects, and (with `require_thought_signatures`) a model turn whose first functionCall part
lost its signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.fakes.base import HttpFault, Json, RecordedRequest, VendorFake, compact_json, sse_event
from tests.fakes.gemini_answers import answer, merge, vector

__all__ = ["FakeGemini", "Fault", "RecordedRequest", "canonical_fields"]

_REQUEST_FIELDS = {
    "": "contents systemInstruction tools toolConfig generationConfig safetySettings cachedContent",
    "generation_config": "temperature topP topK maxOutputTokens stopSequences seed presencePenalty"
    " frequencyPenalty candidateCount responseMimeType responseSchema responseJsonSchema"
    " responseModalities thinkingConfig mediaResolution",
    "content": "role parts",
    "part": "text inlineData fileData functionCall functionResponse thought thoughtSignature"
    " executableCode codeExecutionResult videoMetadata",
    # `id` is left out on purpose: some Gemini models refuse it in requests.
    "function_call": "name args",
    "function_response": "name response",
    "tool": "functionDeclarations googleSearch codeExecution urlContext",
    "function_declaration": "name description parameters parametersJsonSchema response"
    " responseJsonSchema behavior",
    "embed": "model content taskType title outputDimensionality",
    "batch": "requests",
}
# Values that are free-form JSON (arguments, results, schemas): their keys are not field names.
_FREE_FORM = frozenset(
    (
        "args",
        "response",
        "parameters",
        "parametersJsonSchema",
        "responseJsonSchema",
        "responseSchema",
    )
)


class Fault(HttpFault):
    """An HTTP error answer, in Google's error envelope unless `body` says otherwise."""

    @classmethod
    def error(
        cls,
        code: int,
        status: str,
        message: str,
        details: list[Json] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        error: Json = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        return cls(code, {"error": error}, headers or {})

    @classmethod
    def rate_limited(cls, retry_delay: str = "7s", retry_after: str | None = None) -> Fault:
        metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
        details: list[Json] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": metric, "quotaValue": "10"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ]
        message = (
            "You exceeded your current quota, please check your plan and billing details.\n"
            f"* Quota exceeded for metric: {metric}, limit: 10\nPlease retry in {retry_delay}."
        )
        headers = {"Retry-After": retry_after} if retry_after else {}
        return cls.error(429, "RESOURCE_EXHAUSTED", message, details, headers)

    @classmethod
    def invalid_api_key(cls) -> Fault:
        message = "API key not valid. Please pass a valid API key."
        details: list[Json] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "message": message},
        ]
        return cls.error(400, "INVALID_ARGUMENT", message, details)

    @classmethod
    def permission_denied(cls) -> Fault:
        return cls.error(403, "PERMISSION_DENIED", "The caller does not have permission")

    @classmethod
    def model_not_found(cls, model: str) -> Fault:
        return cls.error(
            404,
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        )

    @classmethod
    def bad_request(cls, message: str, field_path: str | None = None) -> Fault:
        violations = [{"field": field_path, "description": message}] if field_path else []
        kind = "type.googleapis.com/google.rpc.BadRequest"
        details = [{"@type": kind, "fieldViolations": violations}] if violations else None
        return cls.error(400, "INVALID_ARGUMENT", message, details)

    @classmethod
    def internal(cls) -> Fault:
        return cls.error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        )

    @classmethod
    def overloaded(cls) -> Fault:
        return cls.error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


class FakeGemini(VendorFake):
    """The Gemini API (v1beta), with VendorFake's knobs."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key  # when set, any other x-goog-api-key is refused
        self.require_thought_signatures = False

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._handler(self._dispatch))

    def _recorded_path(self, request: web.Request) -> str:
        return request.path_qs  # Gemini's method is in the query: ?alt=sse streams

    def _refusal(self, sent: RecordedRequest) -> Fault | None:
        key = sent.headers.get("x-goog-api-key")
        if self.api_key is not None and key is None:
            message = (
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API."
            )
            return Fault.error(403, "PERMISSION_DENIED", message)
        if self.api_key is not None and key != self.api_key:
            return Fault.invalid_api_key()
        return None

    def _stream_error(self) -> bytes:
        return sse_event(json.dumps(Fault.overloaded().body), eol="\r\n")

    async def _dispatch(self, request: web.Request, raw: Any) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        body = canonical_fields(raw)
        if method in ("generateContent", "streamGenerateContent"):
            problem = _check_generate(body, self.require_thought_signatures)
        elif method in ("embedContent", "batchEmbedContents"):
            problem = _check_embed(body, method, model)
        else:
            problem = Fault.error(404, "NOT_FOUND", f"Method {method} not found.")
        streaming = method == "streamGenerateContent"
        if problem is None and streaming and request.query.get("alt") != "sse":
            problem = Fault.bad_request("this fake streams only with alt=sse")
        if problem is not None:
            return problem.response()
        if method == "generateContent":
            return web.json_response(merge(answer(body, model)))
        if method == "streamGenerateContent":
            events = [sse_event(compact_json(chunk), eol="\r\n") for chunk in answer(body, model)]
            return await self._stream(request, events, {"Content-Type": "text/event-stream"})
        requests = [body] if method == "embedContent" else body["requests"]
        vectors = [{"values": vector(item, i)} for i, item in enumerate(requests)]
        reply = {"embedding": vectors[0]} if method == "embedContent" else {"embeddings": vectors}
        return web.json_response(reply)


# --- checks, as the real API makes them ---------------------------------------------------------


def canonical_fields(value: Any, *, free: bool = False) -> Any:
    """Field names in lowerCamelCase, as proto JSON parsing reads either spelling."""
    if isinstance(value, list):
        return [canonical_fields(item, free=free) for item in value]
    if not isinstance(value, dict) or free:
        return value
    out = {}
    for name, item in value.items():
        head, *rest = name.split("_")
        key = head + "".join(word.capitalize() for word in rest)
        out[key] = canonical_fields(item, free=key in _FREE_FORM)
    return out


def _unknown(value: Any, kind: str, where: str) -> Fault | None:
    if not isinstance(value, dict):
        return Fault.bad_request(f"Invalid value at '{where}': expected an object", where)
    for name in value:
        if name not in _REQUEST_FIELDS[kind].split():
            return Fault.bad_request(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}':"
                " Cannot find field.",
                where,
            )
    return None


def _check_generate(body: Any, require_signatures: bool) -> Fault | None:
    """The first problem Gemini would find, if any (later checks assume earlier ones passed)."""
    return next((p for p in _generate_problems(body, require_signatures) if p is not None), None)


def _generate_problems(body: Any, require_signatures: bool) -> Iterator[Fault | None]:
    yield _unknown(body, "", "")
    if not body.get("contents"):
        yield Fault.bad_request("* GenerateContentRequest.contents: contents is not specified")
    yield _unknown(body.get("generationConfig") or {}, "generation_config", "generation_config")
    for t, tool in enumerate(body.get("tools") or []):
        yield _unknown(tool, "tool", f"tools[{t}]")
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            where = f"tools[{t}].function_declarations[{d}]"
            yield _unknown(declaration, "function_declaration", where)
    if "systemInstruction" in body:
        yield _check_content(body["systemInstruction"], "system_instruction")
    for c, content in enumerate(body["contents"]):
        yield _check_content(content, f"contents[{c}]")
        if require_signatures and content.get("role") == "model":
            yield _check_signature(content)


def _check_content(content: Any, where: str) -> Fault | None:
    problem = _unknown(content, "content", where)
    if problem is not None:
        return problem
    if content.get("role", "user") not in ("user", "model"):
        return Fault.bad_request("Please use a valid role: user, model.")
    if not content.get("parts"):
        message = f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
        return Fault.bad_request(message)
    for p, part in enumerate(content["parts"]):
        problem = _check_part(part, f"{where}.parts[{p}]")
        if problem is not None:
            return problem
    return None


def _check_part(part: Any, at: str) -> Fault | None:
    problem = _unknown(part, "part", at)
    if problem is None and part.get("text") == "":
        # As the real API: an empty text is an unset oneof.
        message = f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have"
        return Fault.bad_request(message + " one initialized field", f"{at}.data")
    if problem is None and "functionCall" in part:
        problem = _unknown(part["functionCall"], "function_call", f"{at}.function_call")
    if problem is None and "functionResponse" in part:
        response = part["functionResponse"]
        problem = _unknown(response, "function_response", f"{at}.function_response")
        if problem is None and not isinstance(response.get("response"), dict):
            where = f"{at}.function_response.response"
            return Fault.bad_request(f"Invalid value at '{where}' (google.protobuf.Struct)", where)
    if problem is None and "inlineData" in part:
        try:
            base64.b64decode(part["inlineData"]["data"], validate=True)
        except (binascii.Error, KeyError, TypeError):
            where = f"{at}.inline_data.data"
            message = f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed"
            return Fault.bad_request(message, where)
    return problem


def _check_signature(content: Json) -> Fault | None:
    calls = [(i, p) for i, p in enumerate(content["parts"]) if "functionCall" in p]
    if calls and "thoughtSignature" not in calls[0][1]:
        position, part = calls[0]
        return Fault.bad_request(
            "Function call is missing a thought_signature in functionCall parts. This is "
            "required for tools to work correctly, and missing thought_signature may lead to "
            f"degraded model performance. Additional data, function call "
            f"`{part['functionCall']['name']}` , position {position + 1}. Please refer to "
            "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
        )
    return None


def _check_embed(body: Any, method: str, model: str) -> Fault | None:
    name = f"models/{model}"
    if method == "batchEmbedContents":
        problem = _unknown(body, "batch", "")
        if problem is not None or not body.get("requests"):
            return problem or Fault.bad_request("* BatchEmbedContentsRequest.requests: required")
        items = [(f"requests[{i}]", item) for i, item in enumerate(body["requests"])]
    else:
        items = [("", body)]
    for where, item in items:
        problem = _unknown(item, "embed", where)
        if problem is not None:
            return problem
        if not (item.get("content") or {}).get("parts"):
            return Fault.bad_request(f"* {where or 'EmbedContentRequest'}.content: required")
        # A batch names the model in each request, and it must be the one in the URL.
        if item.get("model", None if where else name) != name:
            return Fault.bad_request(f"* {where}.model: must be {name}, the model of the URL")
    return None
