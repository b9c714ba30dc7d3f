"""The provider adapter protocol: what every vendor adapter offers the gateway.

An adapter is pure translation (unigate.v1 messages <-> the vendor's JSON) plus a
thin call into the shared HttpTransport. It never learns who the caller is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

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


ProviderFactory = Callable[[str, Any, HttpTransport], Provider]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """A registry entry: the settings model for a kind and how to build one."""

    settings: type[ProviderSettings]
    factory: ProviderFactory
