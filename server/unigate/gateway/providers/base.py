"""The provider adapter protocol: what every vendor adapter offers the gateway.

An adapter is pure translation (unigate.v1 messages <-> the vendor's JSON) plus a
thin call into the shared HttpTransport. It never learns who the caller is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import grpc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What an adapter needs to know for one attempt against one deployment."""

    deployment: str
    model: str  # the vendor's model name
    timeout: float  # seconds left for this attempt, from the caller's deadline
    request_id: str
    extra_headers: Mapping[str, str] = field(default_factory=dict)


class ProviderSettings(BaseModel):
    """Base of every provider block in the config; each adapter extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


class HttpProviderSettings(ProviderSettings):
    """The fields of every kind that calls a vendor's HTTP API.

    Each kind overrides `base_url` with its vendor's default (or leaves it required) and adds
    its own fields; `base_url_example` is what a bad base_url's error message suggests.
    """

    base_url_example: ClassVar[str] = "https://host/v1"

    base_url: str
    # None sends no credentials (a local server, or a proxy in front that adds its own).
    api_key: str | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an absolute http(s) URL such as {cls.base_url_example}")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _clean_key(cls, value: str | None) -> str | None:
        return clean_secret(value)

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name + text):
                raise ValueError(f"header {name!r} contains control characters")
        return value


def clean_secret(value: str | None) -> str | None:
    """A credential from the config, trimmed; refused, never echoed, if it has inner blanks."""
    # Secrets mounted from files often end in a newline; anything else is a typo.
    if value is None:
        return None
    value = value.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError("contains whitespace or control characters (the key is not shown)")
    return value


class Provider(Protocol):
    """A configured upstream: one provider block of the config, ready to call."""

    kind: ClassVar[str]
    name: str

    def capabilities(self) -> pb.Capabilities: ...

    async def chat(self, request: pb.ChatRequest, call: UpstreamCall) -> pb.ChatResponse: ...

    def stream_chat(
        self, request: pb.ChatRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamChatResponse, None]: ...

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse: ...

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]: ...

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse: ...

    async def close(self) -> None: ...


def every_capability() -> pb.Capabilities:
    """All capabilities set, for adapters whose vendor API has them all."""
    return pb.Capabilities(**{field.name: True for field in pb.Capabilities.DESCRIPTOR.fields})


def capability_unsupported(name: str, kind: str, capability: str) -> GatewayError:
    """An RPC this upstream's API lacks (the router normally refuses it first)."""
    return GatewayError(
        grpc.StatusCode.UNIMPLEMENTED,
        Reason.CAPABILITY_UNSUPPORTED,
        f"provider {name!r} ({kind}) does not support {capability}",
        metadata={"provider": name, "capability": capability},
    )


async def failed_stream(error: GatewayError) -> AsyncGenerator[Any, None]:
    """A stream whose first step raises `error`: stream RPCs fail when iterated."""
    raise error
    yield  # pragma: no cover - makes this an async generator


ProviderFactory = Callable[[str, Any, HttpTransport], Provider]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """A registry entry: the settings model for a kind and how to build one."""

    settings: type[ProviderSettings]
    factory: ProviderFactory
