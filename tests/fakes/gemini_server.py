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

import asyncio
import base64
import binascii
import hashlib
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import RecordedRequest, fake_vector

Json = dict[str, Any]

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
_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


@dataclass(frozen=True)
class Fault:
    """An HTTP error answer, in Google's error envelope unless `body` says otherwise."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

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
        details = [
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
        details = [
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


class FakeGemini:
    """A real HTTP server with knobs that tests turn to make it misbehave."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key  # when set, any other x-goog-api-key is refused
        self.require_thought_signatures = False
        self.requests: list[RecordedRequest] = []
        self.delay = 0.0  # seconds before answering anything
        self.chunk_delay = 0.0  # seconds before each SSE event
        self.cut_after: int | None = None  # drop the connection after this many events
        self.end_after: int | None = None  # end the body cleanly after this many events
        self.error_after: int | None = None  # send an in-stream error after this many events
        self.client_disconnected = asyncio.Event()
        self.streams_finished = 0
        self._faults: deque[Fault] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        self._faults.extend([fault] * times)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> FakeGemini:
        app = web.Application()
        app.router.add_post("/v1beta/models/{target}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        raw, early = await self._receive(request)
        if early is not None:
            return early
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
            return _reply(problem)
        if method == "generateContent":
            chunks = _answer(body, model)
            return web.json_response(_merge(chunks))
        if method == "streamGenerateContent":
            return await self._stream(request, _answer(body, model))
        requests = [body] if method == "embedContent" else body["requests"]
        vectors = [{"values": _vector(item, i)} for i, item in enumerate(requests)]
        answer = {"embedding": vectors[0]} if method == "embedContent" else {"embeddings": vectors}
        return web.json_response(answer)

    async def _receive(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = await request.json() if request.can_read_body else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.path_qs, headers, body))
        if self.delay and await self._client_left_within(request, self.delay):
            self.client_disconnected.set()
            return body, web.Response(status=499)
        if self._faults:
            return body, _reply(self._faults.popleft())
        key = headers.get("x-goog-api-key")
        if self.api_key is not None and key is None:
            message = (
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API."
            )
            return body, _reply(Fault.error(403, "PERMISSION_DENIED", message))
        if self.api_key is not None and key != self.api_key:
            return body, _reply(Fault.invalid_api_key())
        return body, None

    @staticmethod
    async def _client_left_within(request: web.Request, seconds: float) -> bool:
        """Wait, watching the connection: True as soon as the client hangs up."""
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            if request.transport is None or request.transport.is_closing():
                return True
            await asyncio.sleep(0.02)
        return False

    async def _stream(self, request: web.Request, chunks: list[Json]) -> web.StreamResponse:
        events = [json.dumps(chunk, separators=(",", ":")) for chunk in chunks]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for sent, event in enumerate(events):
                if sent == self.cut_after:
                    assert request.transport is not None
                    request.transport.abort()  # no final chunk: the body is incomplete
                    return response
                if sent == self.end_after:
                    break
                if sent == self.error_after:
                    event = json.dumps(Fault.overloaded().body)
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(f"data: {event}\r\n\r\n".encode())
                if sent == self.error_after:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_disconnected.set()
            raise
        await response.write_eof()
        self.streams_finished += 1
        return response


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


# --- answers ------------------------------------------------------------------------------------


def _prompt(body: Json) -> str:
    """The text of the last user turn, or its last function response as compact JSON."""
    parts = body["contents"][-1]["parts"]
    texts = [part["text"] for part in parts if "text" in part]
    if texts:
        return " ".join(texts)
    responses = [
        part["functionResponse"]["response"] for part in parts if "functionResponse" in part
    ]
    return json.dumps(responses[-1], separators=(",", ":")) if responses else ""


def _answer(body: Json, model: str) -> list[Json]:
    """The stream of chunks that answers a generateContent request (unary merges them)."""
    prompt = _prompt(body)
    contents = [*body["contents"], body.get("systemInstruction") or {"parts": []}]
    prompt_tokens = sum(len(p.get("text", "").split()) for c in contents for p in c["parts"])
    head = {"modelVersion": model, "responseId": _ident(body)}
    if "[blocked]" in prompt:
        feedback = {"blockReason": "SAFETY", "safetyRatings": _RATINGS}
        usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        return [{"promptFeedback": feedback, "usageMetadata": usage, **head}]
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "ANY" and body.get("tools"):
        declared = body["tools"][0]["functionDeclarations"][0]["name"]
        name = (calling.get("allowedFunctionNames") or [declared])[0]
        signature = base64.b64encode(hashlib.sha256(prompt.encode()).digest()).decode()
        call = {"functionCall": {"name": name, "args": {"text": prompt}}}
        part = {**call, "thoughtSignature": signature}
        return [_chunk(head, [part], "STOP", _usage(prompt_tokens, 5, thoughts=12))]
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        text = json.dumps({"echo": prompt})
    else:
        text = "echo: " + prompt
    words, finish = text.split(" "), "STOP"
    if "maxOutputTokens" in config and len(words) > config["maxOutputTokens"]:
        words, finish = words[: config["maxOutputTokens"]], "MAX_TOKENS"
    pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
    if "[unsafe]" in prompt:
        pieces, finish = pieces[:1], "SAFETY"
    running = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    chunks = [_chunk(head, [{"text": piece}], None, running) for piece in pieces]
    last = _usage(prompt_tokens, len(pieces))
    if finish == "SAFETY":
        # The filtered candidate comes without content, with the ratings that stopped it.
        stopped = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _RATINGS}
        return [*chunks, {"candidates": [stopped], "usageMetadata": last, **head}]
    chunks[-1] = _chunk(head, [{"text": pieces[-1]}], finish, last)
    return chunks


def _chunk(head: Json, parts: list[Json], finish: str | None, usage: Json) -> Json:
    candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, **head}


def _merge(chunks: list[Json]) -> Json:
    """The unary answer: the stream's chunks as one (a filtered answer withholds its text)."""
    answer = dict(chunks[-1])
    candidate = (answer.get("candidates") or [{}])[0]
    if len(chunks) > 1 and "content" in candidate:
        text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
        content = {"parts": [{"text": text}], "role": "model"}
        answer["candidates"] = [{**candidate, "content": content}]
    return answer


def _usage(prompt: int, candidates: int, *, thoughts: int = 0) -> Json:
    usage: Json = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _vector(item: Json, index: int) -> list[float]:
    text = " ".join(part.get("text", "") for part in item["content"]["parts"])
    return fake_vector(text, index, item.get("outputDimensionality", 8))


def _ident(body: Any) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:23]


def _reply(fault: Fault) -> web.Response:
    return web.json_response(fault.body, status=fault.status, headers=fault.headers)
