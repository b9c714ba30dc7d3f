"""VendorFake: what every vendor fake shares, a real aiohttp server on 127.0.0.1 (port 0).

A vendor fake subclasses it and adds only its routes (`_add_routes`, each handler wrapped by
`_handler`), its wire formats and its Fault shapes (an `HttpFault` subclass). The base records
every request, answers the faults queued by `fail_next`, and turns the knobs tests use to make a
vendor misbehave:

    delay          seconds before answering anything; a client that hangs up meanwhile sets
                   `client_disconnected` and gets no answer
    chunk_delay    seconds before each SSE event
    cut_after      drop the connection after this many events
    end_after      end the body cleanly after this many events
    error_after    send the vendor's in-stream error (`_stream_error`) after this many events

`streams_finished` counts the streams written to their end. The helpers below make the answers
deterministic: ids are digests of the request, embeddings are `fake_vector`s, and a forced tool
call gets `echo_arguments`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A route's answer to a request that was recorded and survived delay and faults; body is its JSON.
Answer = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpFault:
    """An HTTP error answer. Each vendor's `Fault` subclass adds classmethods for its envelopes."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


class VendorFake(ABC):
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
        self._faults: deque[HttpFault] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0

    def fail_next(self, fault: HttpFault, times: int = 1) -> None:
        self._faults.extend([fault] * times)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        return self.origin

    async def __aenter__(self) -> Self:
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

    # --- what a vendor adds --------------------------------------------------------------------

    @abstractmethod
    def _add_routes(self, app: web.Application) -> None: ...

    @abstractmethod
    def _stream_error(self) -> bytes:
        """The SSE event that `error_after` sends in place of the next one."""

    def _refusal(self, sent: RecordedRequest) -> HttpFault | None:
        """What the vendor refuses in every request (checked when no fault is queued)."""
        return None

    def _recorded_path(self, request: web.Request) -> str:
        return request.path

    # --- plumbing ------------------------------------------------------------------------------

    def _handler(self, answer: Answer) -> Handler:
        """A route handler: record the request, honour `delay` and faults, then `answer` it."""

        async def handle(request: web.Request) -> web.StreamResponse:
            body, early = await self._receive(request)
            return early if early is not None else await answer(request, body)

        return handle

    def _record(self, request: web.Request, body: Any) -> RecordedRequest:
        headers = {name.lower(): value for name, value in request.headers.items()}
        path, query = self._recorded_path(request), dict(request.query)
        sent = RecordedRequest(request.method, path, headers, body, query)
        self.requests.append(sent)
        return sent

    async def _receive(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = await read_json(request)
        sent = self._record(request, body)
        if self.delay and await self._client_left_within(request, self.delay):
            self.client_disconnected.set()
            return body, web.Response(status=499)
        fault = self._faults.popleft() if self._faults else self._refusal(sent)
        return body, None if fault is None else fault.response()

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
        self, request: web.Request, events: list[bytes], headers: Mapping[str, str] = SSE_HEADERS
    ) -> web.StreamResponse:
        """Write SSE `events` (framed already), as the stream knobs say."""
        response = web.StreamResponse(headers=dict(headers))
        await response.prepare(request)
        try:
            for sent, event in enumerate(events):
                if sent == self.cut_after:
                    assert request.transport is not None
                    request.transport.abort()  # no final event: the body is incomplete
                    return response
                if sent == self.end_after:
                    break
                if sent == self.error_after:
                    event = self._stream_error()
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(event)
                if sent == self.error_after:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_disconnected.set()
            raise
        await response.write_eof()
        self.streams_finished += 1
        return response


async def read_json(request: web.Request) -> Any:
    return await request.json() if request.can_read_body else None


def sse_event(data: str, *, event: str | None = None, eol: str = "\n") -> bytes:
    """One SSE event: `data` on one line, after an `event:` line if named."""
    name = f"event: {event}{eol}" if event is not None else ""
    return f"{name}data: {data}{eol}{eol}".encode()


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def body_digest(body: Any) -> str:
    """A hex digest of a request body, for ids that are the same for the same request."""
    return text_digest(json.dumps(body, sort_keys=True))


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fake_vector(text: str, index: int, dimensions: int) -> list[float]:
    """Multiples of 1/8 in [-1, 1]: exact in float32, so tests can compare with ==."""
    return [((len(text) * (j + 1) + index) % 17 - 8) / 8 for j in range(dimensions)]


def echo_arguments(text: str) -> str:
    """The arguments of every fake's forced tool call, as JSON: {"text": <the user's text>}."""
    return json.dumps({"text": text})


def streamed_words(words: list[str]) -> list[str]:
    """Words as a stream sends them: each after the first with its leading space."""
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def slices(text: str, size: int = 8) -> list[str]:
    """Tool arguments as vendors stream them, in short slices."""
    return [text[start : start + size] for start in range(0, len(text), size)]
