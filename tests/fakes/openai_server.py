"""FakeOpenAI: an in-process aiohttp server on 127.0.0.1 that speaks OpenAI's REST wire format.

    async with FakeOpenAI() as fake:
        fake.base_url                       # "http://127.0.0.1:PORT/v1"
        fake.fail_next(Fault.rate_limited(retry_after=7))
        ...
        fake.requests[-1].body              # what the adapter sent

Answers are deterministic: chat echoes the last user text ("echo: <text>"), a request whose
tool_choice is "required" or names a function gets a tool call instead, completions echo the
prompt, embeddings are small vectors derived from the input length (exact in float32).

Azure OpenAI's routes are served too, at `fake.azure_endpoint`:
/openai/deployments/{deployment}/... (which require `api-version`) and /openai/v1/...; both
require an `api-key` or `Authorization` header, and streams begin with Azure's prompt filter
chunk (empty id and model).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    Handler,
    HttpFault,
    Json,
    RecordedRequest,
    VendorFake,
    body_digest,
    compact_json,
    echo_arguments,
    fake_vector,
    read_json,
    slices,
    sse_event,
    streamed_words,
    text_digest,
)

__all__ = [
    "FakeAzureOpenAI",
    "FakeOpenAI",
    "Fault",
    "RecordedRequest",
    "fake_vector",
    "last_user_text",
    "limit_words",
    "message_text",
    "openai_events",
]


class Fault(HttpFault):
    """An HTTP error answer, in OpenAI's error envelope unless `body` says otherwise."""

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        envelope = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return cls(status, envelope, headers or {})

    @classmethod
    def rate_limited(cls, retry_after: float = 7) -> Fault:
        return cls.error(
            429,
            "Rate limit reached for gpt-4o-mini in organization org-fake on tokens per min "
            f"(TPM): Limit 30000, Used 30000, Requested 12. Please try again in {retry_after}s.",
            type="tokens",
            code="rate_limit_exceeded",
            headers={"Retry-After": f"{retry_after:g}"},
        )

    @classmethod
    def insufficient_quota(cls) -> Fault:
        return cls.error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
        )

    @classmethod
    def invalid_api_key(cls, key: str) -> Fault:
        # OpenAI echoes the first and last characters of the key it refused.
        masked = f"{key[:6]}{'*' * max(len(key) - 10, 3)}{key[-4:]}"
        return cls.error(
            401,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            type="invalid_request_error",
            code="invalid_api_key",
        )

    @classmethod
    def model_not_found(cls, model: str) -> Fault:
        return cls.error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            type="invalid_request_error",
            code="model_not_found",
        )

    @classmethod
    def server_error(cls) -> Fault:
        return cls.error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> Fault:
        return cls.error(400, message, type="invalid_request_error", param=param)

    @classmethod
    def azure_content_filter(cls) -> Fault:
        """Azure refusing a prompt: a 400 whose code is "content_filter"."""
        body = {
            "error": {
                "message": AZURE_FILTER_MESSAGE,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        **_SAFE_FILTERS,
                        "violence": {"filtered": True, "severity": "high"},
                    },
                },
            }
        }
        return cls(400, body)

    @classmethod
    def azure_rate_limited(cls, retry_after: int = 6) -> Fault:
        message = (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
            f"Please retry after {retry_after} seconds."
        )
        headers = {"Retry-After": str(retry_after), "retry-after-ms": str(retry_after * 1000)}
        return cls(429, {"error": {"code": "429", "message": message}}, headers)


class FakeOpenAI(VendorFake):
    """OpenAI's REST API, and Azure OpenAI's at `azure_endpoint`, with VendorFake's knobs."""

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The endpoint of a fake Azure OpenAI resource (its routes under /openai/)."""
        return self.origin

    def _add_routes(self, app: web.Application) -> None:
        chat, complete = self._handler(self._chat), self._handler(self._complete)
        embed = self._handler(self._embed)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/completions", complete)
        app.router.add_post("/v1/embeddings", embed)
        app.router.add_get("/v1/models", self._handler(self._models))
        for base in ("/openai/deployments/{deployment}", "/openai/v1"):
            app.router.add_post(base + "/chat/completions", self._azure(chat))
            app.router.add_post(base + "/completions", self._azure(complete))
            app.router.add_post(base + "/embeddings", self._azure(embed))

    def _stream_error(self) -> bytes:
        return sse_event(json.dumps(Fault.server_error().body))

    # --- handlers ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request, body: Json) -> web.StreamResponse:
        ident = "chatcmpl-" + body_digest(body)[:24]
        prompt_tokens = sum(len(message_text(m.get("content")).split()) for m in body["messages"])
        call = _forced_tool_call(body)
        if call is not None:
            answer: Json = {"role": "assistant", "content": None, "tool_calls": [call]}
            pieces = _tool_call_pieces(call)
            finish, completion_tokens = (
                "tool_calls",
                max(len(call["function"]["arguments"]) // 4, 1),
            )
        else:
            words, finish = limit_words(("echo: " + last_user_text(body)).split(" "), body)
            answer = {"role": "assistant", "content": " ".join(words), "refusal": None}
            pieces = [{"role": "assistant", "content": "", "refusal": None}] + [
                {"content": word} for word in streamed_words(words)
            ]
            completion_tokens = len(words)
        usage = _usage(prompt_tokens, completion_tokens)
        head = {"id": ident, "created": int(time.time()), "model": _model(body, request)}
        if not body.get("stream"):
            choice = {"index": 0, "message": answer, "logprobs": None, "finish_reason": finish}
            extra = {"prompt_filter_results": _PROMPT_FILTER} if request.get(AZURE) else {}
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage} | extra
            )
        chunk_head = {**head, "object": "chat.completion.chunk"}
        chunks = [{**chunk_head, "choices": [_delta_choice(delta, None)]} for delta in pieces] + [
            {**chunk_head, "choices": [_delta_choice({}, finish)]}
        ]
        return await self._chunks(request, body, chunks, {**chunk_head, "choices": []}, usage)

    async def _complete(self, request: web.Request, body: Json) -> web.StreamResponse:
        words, finish = limit_words(("echo: " + body["prompt"]).split(" "), body)
        usage = _usage(len(body["prompt"].split()), len(words))
        head = {
            "id": "cmpl-" + body_digest(body)[:24],
            "object": "text_completion",
            "created": int(time.time()),
            "model": _model(body, request),
        }
        if not body.get("stream"):
            text = " " + " ".join(words)
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return web.json_response({**head, "choices": [choice], "usage": usage})
        chunks = [{**head, "choices": [_text_choice(" " + word, None)]} for word in words] + [
            {**head, "choices": [_text_choice("", finish)]}
        ]
        return await self._chunks(request, body, chunks, {**head, "choices": []}, usage)

    async def _embed(self, request: web.Request, body: Json) -> web.StreamResponse:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, index, body.get("dimensions", 8))
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(text.split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": _model(body, request),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: web.Request, body: None) -> web.StreamResponse:
        names = ["gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
        models = [{"id": n, "object": "model", "created": 0, "owned_by": "openai"} for n in names]
        return web.json_response({"object": "list", "data": models})

    def _azure(self, handler: Handler) -> Handler:
        """An Azure route: the same answers, after Azure's checks of version and credentials."""

        async def azure(request: web.Request) -> web.StreamResponse:
            request[AZURE] = True
            refusal = _azure_refusal(request)
            if refusal is None:
                return await handler(request)
            self._record(request, await read_json(request))
            return refusal.response()

        return azure

    async def _chunks(
        self, request: web.Request, body: Json, chunks: list[Json], last: Json, usage: Json
    ) -> web.StreamResponse:
        if (body.get("stream_options") or {}).get("include_usage"):
            # With include_usage every chunk has "usage": null, then one usage-only chunk.
            chunks = [{**chunk, "usage": None} for chunk in chunks] + [{**last, "usage": usage}]
        if request.get(AZURE):
            # Azure first reports how its filters judged the prompt, in a chunk of its own.
            chunks = [AZURE_FIRST_CHUNK, *chunks]
        return await self._stream(request, openai_events(chunks))


class FakeAzureOpenAI(FakeOpenAI):
    """The same fake, with `base_url` the endpoint an azure_openai provider block takes."""

    @property
    def base_url(self) -> str:
        return self.azure_endpoint


AZURE = web.RequestKey("azure", bool)  # set on requests that came in on an Azure route

AZURE_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
AZURE_ACCESS_DENIED = {
    "code": "401",
    "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
    "to provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource.",
}
_SAFE_FILTERS = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": _SAFE_FILTERS}]
AZURE_FIRST_CHUNK = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": _PROMPT_FILTER,
}


def _azure_refusal(request: web.Request) -> HttpFault | None:
    if "deployment" in request.match_info and "api-version" not in request.query:
        return HttpFault(404, {"error": {"code": "404", "message": "Resource not found"}})
    if not {"api-key", "authorization"} & {h.lower() for h in request.headers}:
        return HttpFault(401, {"error": AZURE_ACCESS_DENIED})
    return None


# --- the chat completions dialect, which FakeMistral speaks too ---------------------------------


def openai_events(chunks: list[Json]) -> list[bytes]:
    """A stream's chunks as SSE events, and the `[DONE]` that ends it."""
    return [sse_event(compact_json(chunk)) for chunk in chunks] + [sse_event("[DONE]")]


def message_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "[image]") for p in content if isinstance(p, dict))
    return content or ""


def last_user_text(body: Json) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return message_text(users[-1].get("content")) if users else ""


def limit_words(words: list[str], body: Json) -> tuple[list[str], str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit and len(words) > limit:
        return words[:limit], "length"
    return words, "stop"


def _model(body: Json, request: web.Request) -> str:
    """The model a request names: in its body, or (Azure) its deployment in the path."""
    return str(body.get("model") or request.match_info.get("deployment", ""))


def _forced_tool_call(body: Json) -> Json | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or not (choice == "required" or isinstance(choice, dict)):
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    arguments = echo_arguments(last_user_text(body))
    call_id = "call_" + text_digest(arguments)[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_call_pieces(call: Json) -> list[Json]:
    """The deltas OpenAI streams for one call: id and name first, then arguments in slices."""
    first = {
        "index": 0,
        "id": call["id"],
        "type": "function",
        "function": {"name": call["function"]["name"], "arguments": ""},
    }
    pieces = [{"role": "assistant", "content": None, "tool_calls": [first]}]
    for piece in slices(call["function"]["arguments"]):
        pieces.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return pieces


def _delta_choice(delta: Json, finish: str | None) -> Json:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_choice(text: str, finish: str | None) -> Json:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def _usage(prompt: int, completion: int) -> Json:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
