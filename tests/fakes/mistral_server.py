"""FakeMistral: an in-process aiohttp server on 127.0.0.1 that speaks Mistral's REST wire format.

    async with FakeMistral() as fake:
        fake.base_url                       # "http://127.0.0.1:PORT" (clients add /v1/...)
        fake.fail_next(MistralFault.rate_limited(retry_after=3))
        fake.requests[-1].body              # what the adapter sent

The plumbing (recording, faults, delays, stream knobs) is VendorFake's and the chat completions
dialect FakeOpenAI's; the answers are Mistral's: usage on the last stream chunk without being
asked, tool calls sent whole in one delta with nine-character ids, FIM completions for codestral
models only, and Mistral's strictness: unknown fields are a 422 {"detail": [...]}, tool call ids
that are not nine letters or digits a 400, as the real API answers.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    HttpFault,
    Json,
    VendorFake,
    body_digest,
    echo_arguments,
    fake_vector,
    sse_event,
    streamed_words,
    text_digest,
)
from tests.fakes.openai_server import last_user_text, limit_words, message_text, openai_events

_CHAT_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "metadata", "response_format", "tools", "tool_choice", "presence_penalty",
    "frequency_penalty", "n", "prediction", "parallel_tool_calls", "prompt_mode", "safe_prompt",
}  # fmt: skip
_FIM_FIELDS = {
    "model", "prompt", "suffix", "temperature", "top_p", "max_tokens", "min_tokens", "stream",
    "stop", "random_seed", "metadata",
}  # fmt: skip
_EMBED_FIELDS = {
    "model",
    "input",
    "metadata",
    "output_dimension",
    "output_dtype",
    "encoding_format",
}
_MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
_TOOL_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")


class MistralFault:
    """Mistral's error answers, as its API sends them."""

    @staticmethod
    def error(status: int, message: Any, *, type: str, code: str | None = None) -> Json:
        return {
            "object": "error",
            "message": message,
            "type": type,
            "param": None,
            "code": code,
            "raw_status_code": status,
        }

    @classmethod
    def rate_limited(cls, retry_after: int = 3) -> HttpFault:
        body = cls.error(429, "Rate limit exceeded", type="rate_limited", code="1300")
        return HttpFault(429, body, {"Retry-After": str(retry_after)})

    @staticmethod
    def unauthorized() -> HttpFault:
        # The API gateway's own shape, before any Mistral service sees the request.
        return HttpFault(401, {"message": "Unauthorized", "request_id": "5f1e0c9a2b7d4e31"})

    @classmethod
    def invalid_model(cls, model: str) -> HttpFault:
        body = cls.error(400, f"Invalid model: {model}", type="invalid_model", code="1500")
        return HttpFault(400, body)

    @classmethod
    def bad_request(cls, message: str) -> HttpFault:
        return HttpFault(400, cls.error(400, message, type="invalid_request_error"))

    @classmethod
    def server_error(cls) -> HttpFault:
        body = cls.error(500, "Internal server error", type="internal_server_error")
        return HttpFault(500, body)

    @staticmethod
    def unprocessable(*locations: str) -> HttpFault:
        return HttpFault(422, {"detail": [_extra_forbidden(where) for where in locations]})


class FakeMistral(VendorFake):
    """Mistral's API, with VendorFake's knobs."""

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handler(self._chat))
        app.router.add_post("/v1/fim/completions", self._handler(self._fim))
        app.router.add_post("/v1/embeddings", self._handler(self._embed))
        app.router.add_get("/v1/models", self._handler(self._models))

    def _stream_error(self) -> bytes:
        body = MistralFault.error(500, "Internal server error", type="internal_server_error")
        return sse_event(json.dumps(body))

    async def _chat(self, request: web.Request, body: Json) -> web.StreamResponse:
        if (refusal := _check_chat(body)) is not None:
            return refusal.response()
        call = _forced_tool_call(body)
        prompt_tokens = sum(len(message_text(m.get("content")).split()) for m in body["messages"])
        if call is not None:
            message: Json = {"role": "assistant", "content": "", "tool_calls": [call]}
            deltas: list[Json] = [{"tool_calls": [call]}]
            finish, output_tokens = "tool_calls", max(len(call["function"]["arguments"]) // 4, 1)
        else:
            words, finish = limit_words(("echo: " + last_user_text(body)).split(" "), body)
            message = {"role": "assistant", "content": " ".join(words), "tool_calls": None}
            deltas = [{"content": word} for word in streamed_words(words)]
            output_tokens = len(words)
        usage = _usage(prompt_tokens, output_tokens)
        return await self._answer(request, body, "chat.completion", message, deltas, finish, usage)

    async def _fim(self, request: web.Request, body: Json) -> web.StreamResponse:
        if (refusal := _check(body, _FIM_FIELDS)) is not None:
            return refusal.response()
        if not str(body["model"]).startswith("codestral"):
            return MistralFault.invalid_model(body["model"]).response()
        words, finish = limit_words(("echo: " + body["prompt"]).split(" "), body)
        message = {"role": "assistant", "content": " " + " ".join(words), "tool_calls": None}
        deltas = [{"content": " " + word} for word in words]
        usage = _usage(len(body["prompt"].split()), len(words))
        return await self._answer(request, body, "fim.completion", message, deltas, finish, usage)

    async def _answer(
        self,
        request: web.Request,
        body: Json,
        kind: str,
        message: Json,
        deltas: list[Json],
        finish: str,
        usage: Json,
    ) -> web.StreamResponse:
        head = {"id": body_digest(body)[:32], "object": kind, "created": int(time.time())}
        head["model"] = body["model"]
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return web.json_response({**head, "choices": [choice], "usage": usage})
        chunk_head = {**head, "object": "chat.completion.chunk"}
        first = {"role": "assistant", "content": ""}
        chunks = [{**chunk_head, "choices": [_choice(first, None)]}]
        chunks += [{**chunk_head, "choices": [_choice(d, None)]} for d in deltas[:-1]]
        # The last delta comes with the finish reason and the usage.
        last = {**chunk_head, "choices": [_choice(deltas[-1], finish)], "usage": usage}
        return await self._stream(request, openai_events([*chunks, last]))

    async def _embed(self, request: web.Request, body: Json) -> web.StreamResponse:
        if (refusal := _check(body, _EMBED_FIELDS)) is not None:
            return refusal.response()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            vector: list[Any] = fake_vector(text, index, body.get("output_dimension") or 8)
            if body.get("output_dtype") in ("int8", "uint8", "binary", "ubinary"):
                vector = [int(value * 8) for value in vector]
            data.append({"object": "embedding", "embedding": vector, "index": index})
        tokens = sum(len(text.split()) for text in inputs)
        return web.json_response(
            {
                "id": "embd-" + body_digest(body)[:32],
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )

    async def _models(self, request: web.Request, body: None) -> web.StreamResponse:
        names = ["mistral-small-latest", "codestral-latest", "mistral-embed"]
        models = [
            {"id": n, "object": "model", "created": 0, "owned_by": "mistralai"} for n in names
        ]
        return web.json_response({"object": "list", "data": models})


def _check_chat(body: Json) -> HttpFault | None:
    if (refusal := _check(body, _CHAT_FIELDS)) is not None:
        return refusal
    extra = [
        f"messages.{i}.{key}"
        for i, message in enumerate(body["messages"])
        for key in message
        if key not in _MESSAGE_FIELDS.get(message.get("role"), set())
    ]
    extra += [
        f"tools.{i}.function.parameters"
        for i, tool in enumerate(body.get("tools") or [])
        if "parameters" not in tool.get("function", {})
    ]
    if extra:
        return MistralFault.unprocessable(*extra)
    for message in body["messages"]:
        ids = [call.get("id", "") for call in message.get("tool_calls") or []]
        ids += [message["tool_call_id"]] if message.get("role") == "tool" else []
        for ident in ids:
            if not _TOOL_CALL_ID.fullmatch(ident):
                text = f"Tool call id was {ident} but must be a-z, A-Z, 0-9, with a length of 9."
                return HttpFault(400, MistralFault.error(400, text, type="invalid_function_call"))
    return None


def _check(body: Json, allowed: set[str]) -> HttpFault | None:
    extra = sorted(set(body) - allowed)
    return MistralFault.unprocessable(*extra) if extra else None


def _extra_forbidden(where: str) -> Json:
    loc: list[Any] = ["body", *(int(p) if p.isdigit() else p for p in where.split("."))]
    return {"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted"}


def _forced_tool_call(body: Json) -> Json | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or not (choice in ("any", "required") or isinstance(choice, dict)):
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    arguments = echo_arguments(last_user_text(body))
    ident = text_digest(arguments)[:9]
    return {"id": ident, "function": {"name": name, "arguments": arguments}, "index": 0}


def _usage(prompt: int, completion: int) -> Json:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


def _choice(delta: Json, finish: str | None) -> Json:
    return {"index": 0, "delta": delta, "finish_reason": finish}
