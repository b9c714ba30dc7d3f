"""OpenAI-compatible servers: Ollama (/v1), vLLM, llama.cpp's server, LM Studio, Groq, Together,
DeepSeek... so that Llama-family and other open models work through whichever server hosts them.

The OpenAI adapter, unchanged in translation, with a required base URL, optional credentials and
switches for the ways these servers differ from OpenAI:

- `stream_usage`: send stream_options.include_usage (some servers refuse it). Off, a stream may
  end without usage: its last message then reports zero tokens rather than failing. A stream
  must still have finished: a finish_reason is required, and a body that ends before one is
  UNAVAILABLE.
- `allow_missing_usage`: the same leniency while still asking for usage, for servers that
  ignore the option and close the body without `[DONE]`.
- `max_tokens_field`, `embedding_encoding`: as for the openai kind.
- `supports_*`: what the server (and the models behind it) can do; ListModels reports it and the
  gateway refuses what is switched off instead of sending it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import ClassVar, Literal

from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    capability_unsupported,
    failed_stream,
)
from unigate.gateway.providers.openai import (
    EmbeddingEncoding,
    MaxTokensField,
    OpenAIProvider,
    OpenAISettings,
)
from unigate.gateway.providers.transport import HttpTransport
from unigate.v1 import inference_pb2 as pb


class OpenAICompatibleSettings(HttpProviderSettings):
    """A provider block of kind "openai_compatible"."""

    kind: Literal["openai_compatible"]
    # Where the server's OpenAI API is, e.g. http://localhost:11434/v1 (Ollama). Required.
    base_url: str
    embedding_encoding: EmbeddingEncoding = "float"
    max_tokens_field: MaxTokensField = "max_tokens"
    stream_usage: bool = True
    allow_missing_usage: bool = False
    # Tools and JSON output work on most servers and recent models; images need a vision
    # model; /v1/embeddings and /v1/completions are missing on several hosted services.
    supports_tools: bool = True
    supports_json_output: bool = True
    supports_images: bool = False
    supports_embeddings: bool = False
    supports_completion: bool = False

    @property
    def usage_optional(self) -> bool:
        """Whether a stream may end without usage (reported then as zero tokens)."""
        return self.allow_missing_usage or not self.stream_usage


class OpenAICompatibleProvider(OpenAIProvider):
    """One OpenAI-compatible server."""

    kind: ClassVar[str] = "openai_compatible"

    def __init__(
        self, name: str, settings: OpenAICompatibleSettings, transport: HttpTransport
    ) -> None:
        # The same wire format as OpenAI's: the OpenAI adapter, from the equivalent block.
        wire = OpenAISettings(
            kind="openai",
            base_url=settings.base_url,
            api_key=settings.api_key,
            headers=settings.headers,
            embedding_encoding=settings.embedding_encoding,
            max_tokens_field=settings.max_tokens_field,
        )
        super().__init__(name, wire, transport)
        self._compatible = settings
        self._stream_usage = settings.stream_usage
        self._usage_optional = settings.usage_optional

    def capabilities(self) -> pb.Capabilities:
        settings = self._compatible
        return pb.Capabilities(
            chat=True,
            streaming=True,
            tools=settings.supports_tools,
            images=settings.supports_images,
            json_output=settings.supports_json_output,
            embeddings=settings.supports_embeddings,
            completion=settings.supports_completion,
        )

    async def complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> pb.CompleteResponse:
        if not self._compatible.supports_completion:
            raise capability_unsupported(self.name, self.kind, "completion")
        return await super().complete(request, call)

    def stream_complete(
        self, request: pb.CompleteRequest, call: UpstreamCall
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        if not self._compatible.supports_completion:
            return failed_stream(capability_unsupported(self.name, self.kind, "completion"))
        return super().stream_complete(request, call)

    async def embed(self, request: pb.EmbedRequest, call: UpstreamCall) -> pb.EmbedResponse:
        if not self._compatible.supports_embeddings:
            raise capability_unsupported(self.name, self.kind, "embeddings")
        return await super().embed(request, call)


KIND = ProviderKind(settings=OpenAICompatibleSettings, factory=OpenAICompatibleProvider)
