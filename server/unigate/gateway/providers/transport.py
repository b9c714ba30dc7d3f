"""The one HTTP transport every adapter calls: pooled aiohttp sessions, timeouts
from the caller's deadline, and aiohttp's exceptions translated once.

One ClientSession per upstream origin per process, created lazily on the running
loop, closed by `close()` at shutdown. The timeout of every request is the time
left on the caller's gRPC deadline, so an abandoned call never holds a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.http_exceptions
import grpc
import orjson

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError, Reason

if TYPE_CHECKING:
    from unigate.gateway.observability.tracing import Tracing


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Pool and timeout settings shared by every upstream session."""

    connections_per_upstream: int = 100
    connect_timeout: float = 10.0
    keepalive_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Who a request is for, so that errors can name it (and never its key)."""

    provider: str
    deployment: str
    secrets: Sequence[str] = ()


class HttpTransport:
    """`tracing`, when on, names the current span in each request's traceparent and
    describes the request on it; when off, a caller's traceparent is forwarded as is."""

    def __init__(
        self, limits: TransportLimits | None = None, *, tracing: Tracing | None = None
    ) -> None:
        self._limits = limits or TransportLimits()
        self._tracing = tracing
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._limits.connections_per_upstream,
                keepalive_timeout=self._limits.keepalive_timeout,
                enable_cleanup_closed=True,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                auto_decompress=True,
                trust_env=False,
            )
            self._sessions[origin] = session
        return session

    def _outgoing(
        self, method: str, url: str, headers: Mapping[str, str] | None
    ) -> Mapping[str, str] | None:
        """The headers plus a traceparent, when there is one to send upstream."""
        if self._tracing is not None:
            self._tracing.note_request(method, url)
            carrier: dict[str, str] = {}
            self._tracing.inject(carrier)
            if carrier:
                return {**headers, **carrier} if headers else carrier
        parent = callstate.traceparent.get()
        if not parent:
            return headers
        return {**headers, "traceparent": parent} if headers else {"traceparent": parent}

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        seconds = max(seconds, 0.001)
        return aiohttp.ClientTimeout(
            total=seconds, connect=min(self._limits.connect_timeout, seconds)
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        target: Target,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> HttpResult:
        """Send one request and read the whole answer, whatever its status."""
        headers = self._outgoing(method, url, headers)
        with map_transport_errors(target):
            async with self._session(url).request(
                method,
                url,
                headers=_json_headers(headers) if json is not None else headers,
                data=orjson.dumps(json) if json is not None else None,
                timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as response:
                if self._tracing is not None:
                    self._tracing.note_response(response.status)
                body = await response.read()
                return HttpResult(response.status, response.headers, body)

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        *,
        target: Target,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST and hand back the open response, to be read as it arrives.

        Errors while reading the body inside the `async with` are translated too.
        Leaving the block early (the caller cancelled) closes the upstream connection.
        """
        headers = self._outgoing("POST", url, headers)
        with map_transport_errors(target):
            async with self._session(url).post(
                url,
                headers=_json_headers(headers),
                data=orjson.dumps(json),
                timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as response:
                if self._tracing is not None:
                    self._tracing.note_response(response.status)
                yield response

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def _json_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = {"Content-Type": "application/json", "Accept": "application/json"}
    if headers:
        merged.update(headers)
    return merged


@contextmanager
def map_transport_errors(target: Target) -> Iterator[None]:
    """Translate aiohttp and timeout exceptions into GatewayErrors, once, here."""
    meta = {"provider": target.provider, "deployment": target.deployment}
    where = f"{target.provider} deployment {target.deployment!r}"
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        # A connect timeout says the upstream is unreachable, not slow: retryable.
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
            f"{where} could not be reached: connecting timed out",
            metadata=meta,
        ) from exc
    except TimeoutError as exc:
        raise GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            Reason.UPSTREAM_TIMEOUT,
            f"{where} did not answer within the call's deadline",
            metadata=meta,
        ) from exc
    except (aiohttp.ClientPayloadError, aiohttp.http_exceptions.HttpProcessingError) as exc:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
            f"{where} broke off its answer mid-way",
            metadata=meta,
        ) from exc
    except aiohttp.ClientError as exc:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
            f"{where} could not be reached: {type(exc).__name__}",
            metadata=meta,
        ) from exc
