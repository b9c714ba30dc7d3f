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

import asyncio
import base64
import hashlib
import json
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Json = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """An HTTP error answer, in OpenAI's error envelope unless `body` says otherwise."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

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


class FakeOpenAI:
    """A real HTTP server with knobs that tests turn to make it misbehave."""

    def __init__(self) -> None:
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
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The endpoint of a fake Azure OpenAI resource (its routes under /openai/)."""
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/embeddings", self._embed)
        app.router.add_get("/v1/models", self._models)
        for base in ("/openai/deployments/{deployment}", "/openai/v1"):
            app.router.add_post(base + "/chat/completions", self._azure(self._chat))
            app.router.add_post(base + "/completions", self._azure(self._complete))
            app.router.add_post(base + "/embeddings", self._azure(self._embed))

    # --- handlers ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._receive(request)
        if early is not None:
            return early
        ident = _ident("chatcmpl-", body)
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in body["messages"])
        call = _forced_tool_call(body)
        if call is not None:
            answer: Json = {"role": "assistant", "content": None, "tool_calls": [call]}
            pieces = _tool_call_pieces(call)
            finish, completion_tokens = (
                "tool_calls",
                max(len(call["function"]["arguments"]) // 4, 1),
            )
        else:
            words, finish = _limit(("echo: " + _last_user_text(body)).split(" "), body)
            answer = {"role": "assistant", "content": " ".join(words), "refusal": None}
            pieces = [{"role": "assistant", "content": "", "refusal": None}] + [
                {"content": word if i == 0 else " " + word} for i, word in enumerate(words)
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
        return await self._stream(request, body, chunks, {**chunk_head, "choices": []}, usage)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._receive(request)
        if early is not None:
            return early
        words, finish = _limit(("echo: " + body["prompt"]).split(" "), body)
        usage = _usage(len(body["prompt"].split()), len(words))
        head = {
            "id": _ident("cmpl-", body),
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
        return await self._stream(request, body, chunks, {**head, "choices": []}, usage)

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._receive(request)
        if early is not None:
            return early
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

    def _azure(self, handler: Handler) -> Handler:
        """An Azure route: the same answers, after Azure's checks of version and credentials."""

        async def azure(request: web.Request) -> web.StreamResponse:
            request[AZURE] = True
            deployments = "deployment" in request.match_info
            if deployments and "api-version" not in request.query:
                self._record(request, await request.json() if request.can_read_body else None)
                body = {"error": {"code": "404", "message": "Resource not found"}}
                return web.json_response(body, status=404)
            if not {"api-key", "authorization"} & {h.lower() for h in request.headers}:
                self._record(request, await request.json() if request.can_read_body else None)
                return web.json_response({"error": AZURE_ACCESS_DENIED}, status=401)
            return await handler(request)

        return azure

    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._receive(request)
        if early is not None:
            return early
        names = ["gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
        models = [{"id": n, "object": "model", "created": 0, "owned_by": "openai"} for n in names]
        return web.json_response({"object": "list", "data": models})

    # --- plumbing ------------------------------------------------------------------------------

    def _record(self, request: web.Request, body: Any) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        query = dict(request.query)
        self.requests.append(RecordedRequest(request.method, request.path, headers, body, query))

    async def _receive(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = await request.json() if request.can_read_body else None
        self._record(request, body)
        if self.delay and await self._client_left_within(request, self.delay):
            self.client_disconnected.set()
            return body, web.Response(status=499)
        if self._faults:
            fault = self._faults.popleft()
            return body, web.json_response(fault.body, status=fault.status, headers=fault.headers)
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

    async def _stream(
        self, request: web.Request, body: Json, chunks: list[Json], last: Json, usage: Json
    ) -> web.StreamResponse:
        if (body.get("stream_options") or {}).get("include_usage"):
            # With include_usage every chunk has "usage": null, then one usage-only chunk.
            chunks = [{**chunk, "usage": None} for chunk in chunks] + [{**last, "usage": usage}]
        if request.get(AZURE):
            # Azure first reports how its filters judged the prompt, in a chunk of its own.
            chunks = [AZURE_FIRST_CHUNK, *chunks]
        events = [json.dumps(chunk, separators=(",", ":")) for chunk in chunks] + ["[DONE]"]
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
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
                    event = json.dumps(self._stream_error_event())
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(f"data: {event}\n\n".encode())
                if sent == self.error_after:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_disconnected.set()
            raise
        await response.write_eof()
        self.streams_finished += 1
        return response

    def _stream_error_event(self) -> Json:
        """What `error_after` sends in place of the next event."""
        body: Json = Fault.server_error().body
        return body


class FakeAzureOpenAI(FakeOpenAI):
    """The same fake, with `base_url` the endpoint an azure_openai provider block takes."""

    @property
    def base_url(self) -> str:
        return self.azure_endpoint


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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


def fake_vector(text: str, index: int, dimensions: int) -> list[float]:
    """Multiples of 1/8 in [-1, 1]: exact in float32, so tests can compare with ==."""
    return [((len(text) * (j + 1) + index) % 17 - 8) / 8 for j in range(dimensions)]


def _model(body: Json, request: web.Request) -> str:
    """The model a request names: in its body, or (Azure) its deployment in the path."""
    return str(body.get("model") or request.match_info.get("deployment", ""))


def _ident(prefix: str, body: Any) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return prefix + digest[:24]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "[image]") for p in content if isinstance(p, dict))
    return content or ""


def _last_user_text(body: Json) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def _limit(words: list[str], body: Json) -> tuple[list[str], str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit and len(words) > limit:
        return words[:limit], "length"
    return words, "stop"


def _forced_tool_call(body: Json) -> Json | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or not (choice == "required" or isinstance(choice, dict)):
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    arguments = json.dumps({"text": _last_user_text(body)})
    call_id = "call_" + hashlib.sha256(arguments.encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_call_pieces(call: Json) -> list[Json]:
    """The deltas OpenAI streams for one call: id and name first, then arguments in slices."""
    first = {
        "index": 0,
        "id": call["id"],
        "type": "function",
        "function": {"name": call["function"]["name"], "arguments": ""},
    }
    arguments = call["function"]["arguments"]
    pieces = [{"role": "assistant", "content": None, "tool_calls": [first]}]
    for start in range(0, len(arguments), 8):
        piece = {"index": 0, "function": {"arguments": arguments[start : start + 8]}}
        pieces.append({"tool_calls": [piece]})
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
