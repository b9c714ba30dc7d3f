"""FakeAnthropic: an in-process aiohttp server on 127.0.0.1 that speaks Anthropic's Messages API.

    async with FakeAnthropic() as fake:
        fake.base_url                       # "http://127.0.0.1:PORT" (clients append /v1/messages)
        fake.fail_next(Fault.overloaded())
        ...
        fake.requests[-1].body              # what the adapter sent

Answers are deterministic: a reply echoes the text of the last user turn ("echo: <text>", tool
results included), a request whose tool_choice is "any" or names a tool gets a tool_use block
instead (streamed as input_json_delta slices), a request with output_config.format gets
{"echo": <text>} as JSON. Like the real API, the fake refuses what Anthropic refuses: no
anthropic-version header, no max_tokens, roles other than user/assistant, empty text blocks,
tool_use blocks not answered by tool_result blocks in the very next turn (and the reverse).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    SSE_HEADERS,
    HttpFault,
    Json,
    RecordedRequest,
    VendorFake,
    body_digest,
    compact_json,
    echo_arguments,
    slices,
    sse_event,
    streamed_words,
    text_digest,
)

__all__ = ["FakeAnthropic", "Fault", "RecordedRequest", "sse_frame"]


class Fault(HttpFault):
    """An HTTP error answer in Anthropic's envelope: {"type":"error","error":{type,message}}."""

    @classmethod
    def error(
        cls, status: int, type: str, message: str, *, headers: dict[str, str] | None = None
    ) -> Fault:
        envelope = {
            "type": "error",
            "error": {"type": type, "message": message},
            "request_id": "req_011CfakeAnthropic" + text_digest(message)[:8],
        }
        return cls(status, envelope, headers or {})

    @classmethod
    def rate_limited(cls, retry_after: float = 7) -> Fault:
        return cls.error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50,000 input "
            "tokens per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits.",
            headers={
                "retry-after": f"{retry_after:g}",
                "anthropic-ratelimit-input-tokens-limit": "50000",
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": "2026-01-01T00:00:07Z",
            },
        )

    @classmethod
    def overloaded(cls) -> Fault:
        return cls.error(529, "overloaded_error", "Overloaded")

    @classmethod
    def api_error(cls) -> Fault:
        return cls.error(500, "api_error", "Internal server error")

    @classmethod
    def authentication(cls) -> Fault:
        return cls.error(401, "authentication_error", "invalid x-api-key")

    @classmethod
    def permission_denied(cls) -> Fault:
        return cls.error(
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        )

    @classmethod
    def model_not_found(cls, model: str) -> Fault:
        return cls.error(404, "not_found_error", f"model: {model}")

    @classmethod
    def bad_request(cls, message: str) -> Fault:
        return cls.error(400, "invalid_request_error", message)

    def response(self) -> web.Response:
        # Every Anthropic answer, an error too, names its request in a request-id header.
        headers = {"request-id": self.body["request_id"], **self.headers}
        return web.json_response(self.body, status=self.status, headers=headers)


class FakeAnthropic(VendorFake):
    """Anthropic's Messages API, with VendorFake's knobs; `error_after` sends `event: error`."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key  # when set, any other x-api-key is a 401
        self.cache_read_tokens = 0  # reported as cache_read_input_tokens
        self.cache_creation_tokens = 0  # reported as cache_creation_input_tokens

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._handler(self._messages))

    def _refusal(self, sent: RecordedRequest) -> Fault | None:
        return _refusal_of(sent.headers, sent.body, self.api_key)

    def _stream_error(self) -> bytes:
        return sse_frame("error", Fault.overloaded().body)

    async def _messages(self, request: web.Request, body: Json) -> web.StreamResponse:
        text = _last_user_text(body)
        call = _forced_tool_use(body, text)
        stop_sequence = None
        if call is not None:
            content: list[Json] = [call]
            stop_reason, output_tokens = "tool_use", max(len(json.dumps(call["input"])) // 4, 1)
        else:
            answer = "echo: " + text
            if (body.get("output_config") or {}).get("format"):
                answer = json.dumps({"echo": text})
            words, stop_reason, stop_sequence = _limit(answer, body)
            content = [{"type": "text", "text": " ".join(words)}]
            output_tokens = len(words)
        usage = {
            "input_tokens": _prompt_tokens(body),
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "output_tokens": output_tokens,
        }
        message = {
            "id": "msg_01" + body_digest(body)[:22],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        request_id = "req_011C" + message["id"][6:24]
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": request_id})
        events = [sse_frame(name, payload) for name, payload in _events(message)]
        return await self._stream(request, events, {**SSE_HEADERS, "request-id": request_id})


def sse_frame(name: str, payload: Json) -> bytes:
    return sse_event(compact_json(payload), event=name)


def _events(message: Json) -> list[tuple[str, Json]]:
    """The event sequence Anthropic streams for a finished message."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[tuple[str, Json]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening: Json = {"type": "text", "text": ""}
            words = streamed_words(block["text"].split(" "))
            deltas = [{"type": "text_delta", "text": word} for word in words]
        else:
            opening = {**block, "input": {}}
            # Anthropic opens a tool's input with an empty partial_json, then sends slices.
            pieces = ["", *slices(json.dumps(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# --- what the real API refuses -----------------------------------------------------------------


def _refusal_of(headers: dict[str, str], body: Any, api_key: str | None) -> Fault | None:
    # Keys go in x-api-key; newer official SDKs send them as a Bearer token, also accepted.
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    if api_key is not None and api_key not in (headers.get("x-api-key"), bearer):
        return Fault.authentication()
    if "anthropic-version" not in headers:
        return Fault.bad_request("anthropic-version: header is required")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return Fault.bad_request("messages: Field required")
    if not isinstance(body.get("max_tokens"), int):
        return Fault.bad_request("max_tokens: Field required")
    if "temperature" in body and "top_p" in body:
        return Fault.bad_request(
            "`temperature` and `top_p` cannot both be specified for this model."
            " Please use only one."
        )
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return Fault.bad_request("temperature: range: 0..1")
    problem = _conversation_problem(body["messages"])
    return Fault.bad_request(problem) if problem else None


def _conversation_problem(messages: list[Json]) -> str | None:
    pending: set[str] = set()  # tool_use ids the next turn must answer
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        blocks = _blocks(message.get("content"))
        if not blocks:
            return f"messages.{i}: all messages must have non-empty content"
        if any(b["type"] == "text" and not b.get("text") for b in blocks):
            return "messages: text content blocks must be non-empty"
        answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if answered and any(b["type"] != "tool_result" for b in blocks[: len(answered)]):
            return f"messages.{i}: tool_result blocks must come first in the content"
        if unknown := [a for a in answered if a not in pending]:
            return (
                f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{unknown[0]}. Each `tool_result` block must have a corresponding `tool_use` "
                "block in the previous message."
            )
        if missing := sorted(pending - set(answered)):
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {missing[0]}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
    return None


# --- deterministic answers ---------------------------------------------------------------------


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _block_text(block: Json) -> str:
    if block["type"] == "text":
        return str(block["text"])
    if block["type"] == "tool_result":
        return " ".join(_block_text(b) for b in _blocks(block.get("content")))
    return ""


def _last_user_text(body: Json) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    if not users:
        return ""
    texts = (_block_text(b) for b in _blocks(users[-1].get("content")))
    return " ".join(t for t in texts if t)


def _prompt_tokens(body: Json) -> int:
    system = body.get("system") or ""
    texts = [system] if isinstance(system, str) else [b.get("text", "") for b in system]
    for message in body["messages"]:
        texts.extend(_block_text(b) for b in _blocks(message.get("content")))
    return sum(len(text.split()) for text in texts)


def _limit(answer: str, body: Json) -> tuple[list[str], str, str | None]:
    for stop in body.get("stop_sequences") or []:
        if stop in answer:
            return answer.split(stop)[0].rstrip().split(" "), "stop_sequence", stop
    words = answer.split(" ")
    if len(words) > body["max_tokens"]:
        return words[: body["max_tokens"]], "max_tokens", None
    return words, "end_turn", None


def _forced_tool_use(body: Json, text: str) -> Json | None:
    tools, choice = body.get("tools"), body.get("tool_choice") or {}
    if not tools or choice.get("type") not in ("any", "tool"):
        return None
    name = choice["name"] if choice["type"] == "tool" else tools[0]["name"]
    ident = "toolu_01" + text_digest(echo_arguments(text))[:22]
    return {"type": "tool_use", "id": ident, "name": name, "input": {"text": text}}
