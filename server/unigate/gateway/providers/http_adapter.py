"""What every adapter over a vendor's HTTP API shares: its credentials kept out of error
messages, its request headers, and one POST and one SSE stream through the shared HttpTransport.

An adapter subclasses HttpAdapter and brings its vendor's URLs, bodies (its pure translation
module), stream translator and `_upstream_error`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import ClassVar, TypeVar

from unigate.gateway.errors import GatewayError
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.providers.common import Json
from unigate.gateway.providers.sse import iter_sse
from unigate.gateway.providers.streaming import SseTranslator, StreamMessage
from unigate.gateway.providers.transport import HttpTransport, Target
from unigate.v1 import inference_pb2 as pb

# Header names whose values are credentials, kept out of every error message.
SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
MIN_SECRET_LENGTH = 16

Answer = TypeVar("Answer", pb.ChatResponse, pb.CompleteResponse)


def credential_secrets(headers: Mapping[str, str], *credentials: str | None) -> tuple[str, ...]:
    """What to redact from vendor messages: the credentials, the values of credential headers,
    and the token of a "<scheme> <token>" value (`Bearer X`), which a vendor may quote alone.

    Longest first, so that a whole header value goes before the token inside it.
    """
    # Credential headers by name, and any other configured value long enough to be one
    # (API gateways in front of vendors use their own names: Ocp-Apim-Subscription-Key...).
    values = {
        value
        for name, value in headers.items()
        if name.lower() in SECRET_HEADERS or len(value) >= MIN_SECRET_LENGTH
    }
    tokens = {value.partition(" ")[2].strip() for value in values}
    secrets = {secret for secret in (*values, *tokens, *credentials) if secret}
    return tuple(sorted(secrets, key=lambda secret: (-len(secret), secret)))


def with_call_defaults(response: Answer, call: UpstreamCall) -> Answer:
    """The answer, with the call's request id and model where the vendor sent none."""
    response.id = response.id or call.request_id
    response.model = response.model or call.model
    return response


class HttpAdapter:
    """Subclasses set `kind`, serve the Provider RPCs with `_post` and `_stream` on their
    vendor's URLs, and read the vendor's error bodies in `_upstream_error`."""

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        transport: HttpTransport,
        headers: Mapping[str, str],
        *,
        api_key: str | None,
    ) -> None:
        """`headers` go with every request; they and the api_key are kept out of errors."""
        self.name = name
        self._transport = transport
        self._headers = dict(headers)
        self._secrets = credential_secrets(headers, api_key)

    async def close(self) -> None:
        """Nothing to release: the transport owns the sessions."""

    def _upstream_error(
        self, status: int, headers: Mapping[str, str], body: bytes, target: Target
    ) -> GatewayError:
        """An HTTP error answer in the vendor's format as a GatewayError."""
        raise NotImplementedError

    def _target(self, call: UpstreamCall) -> Target:
        return Target(provider=self.name, deployment=call.deployment, secrets=self._secrets)

    def _request_headers(self, call: UpstreamCall, *, stream: bool = False) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": call.request_id, **call.extra_headers}
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    async def _post(self, url: str, body: Json, call: UpstreamCall) -> bytes:
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
            raise self._upstream_error(result.status, result.headers, result.body, target)
        return result.body

    async def _stream(
        self,
        url: str,
        body: Callable[[], Json],
        call: UpstreamCall,
        translator: SseTranslator[StreamMessage],
    ) -> AsyncGenerator[StreamMessage, None]:
        # One generator from request to last message, so that closing it (the caller went
        # away) leaves transport.stream at once and the upstream connection is dropped.
        # The body is built here, so that every error, a bad request too, comes from iterating.
        target = self._target(call)
        async with self._transport.stream(
            url,
            target=target,
            timeout=call.timeout,
            headers=self._request_headers(call, stream=True),
            json=body(),
        ) as response:
            if response.status >= 300:
                answer = await response.read()
                raise self._upstream_error(response.status, response.headers, answer, target)
            async for event in iter_sse(response.content):
                for message in translator.read(event):
                    yield message
                if translator.done:
                    # The end marker is the end, whether or not the server closes the body after.
                    break
        for message in translator.end():
            yield message
