"""Client: the blocking client, over a grpc.Channel."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

import grpc

from unigate.client._channel import Settings, bind_stubs, settings
from unigate.client._requests import chat_request, complete_request, embed_request
from unigate.client._types import (
    USE_CLIENT_DEFAULT,
    ChannelOptions,
    MessageLike,
    MetadataLike,
    ResponseStream,
    Timeout,
)
from unigate.v1 import inference_pb2 as pb


class Client:
    """A blocking client of a unigate gateway.

    Every call raises grpc.RpcError on a non-OK status; see `error_details` for the reason.
    Use it as a context manager, or call `close()`, to close the channel.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        server_name_override: str | None = None,
        timeout: float | None = 300.0,
        metadata: MetadataLike | None = None,
        options: ChannelOptions | None = None,
    ) -> None:
        self._settings: Settings = settings(
            target,
            api_key=api_key,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            server_name_override=server_name_override,
            timeout=timeout,
            metadata=metadata,
            options=options,
        )
        s = self._settings
        self._channel: grpc.Channel = (
            grpc.secure_channel(s.target, s.credentials, options=s.options)
            if s.credentials is not None
            else grpc.insecure_channel(s.target, options=s.options)
        )
        self._stubs = bind_stubs(self._channel)

    def chat(
        self,
        request: pb.ChatRequest | None = None,
        *,
        model: str | None = None,
        messages: Sequence[MessageLike] | None = None,
        sampling: pb.SamplingParams | None = None,
        tools: Sequence[pb.Tool] | None = None,
        tool_choice: pb.ToolChoice | None = None,
        response_format: pb.ResponseFormat | None = None,
        user: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> pb.ChatResponse:
        """Send a conversation; return the assistant's whole reply."""
        body = chat_request(
            "chat",
            request,
            model=model,
            messages=messages,
            sampling=sampling,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
        )
        return cast(pb.ChatResponse, self._stubs.chat(body, **self._call(timeout, metadata)))

    def stream_chat(
        self,
        request: pb.ChatRequest | None = None,
        *,
        model: str | None = None,
        messages: Sequence[MessageLike] | None = None,
        sampling: pb.SamplingParams | None = None,
        tools: Sequence[pb.Tool] | None = None,
        tool_choice: pb.ToolChoice | None = None,
        response_format: pb.ResponseFormat | None = None,
        user: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> ResponseStream[pb.StreamChatResponse]:
        """Send a conversation; iterate the reply as it is produced.

        The timeout covers the whole stream, not each message.
        """
        body = chat_request(
            "stream_chat",
            request,
            model=model,
            messages=messages,
            sampling=sampling,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
        )
        return cast(
            ResponseStream[pb.StreamChatResponse],
            self._stubs.stream_chat(body, **self._call(timeout, metadata)),
        )

    def complete(
        self,
        request: pb.CompleteRequest | None = None,
        *,
        model: str | None = None,
        prompt: str | None = None,
        sampling: pb.SamplingParams | None = None,
        user: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> pb.CompleteResponse:
        """Continue a plain text prompt; return the whole continuation."""
        body = complete_request(
            "complete", request, model=model, prompt=prompt, sampling=sampling, user=user
        )
        return cast(
            pb.CompleteResponse, self._stubs.complete(body, **self._call(timeout, metadata))
        )

    def stream_complete(
        self,
        request: pb.CompleteRequest | None = None,
        *,
        model: str | None = None,
        prompt: str | None = None,
        sampling: pb.SamplingParams | None = None,
        user: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> ResponseStream[pb.StreamCompleteResponse]:
        """Continue a plain text prompt; iterate the text as it is produced."""
        body = complete_request(
            "stream_complete", request, model=model, prompt=prompt, sampling=sampling, user=user
        )
        return cast(
            ResponseStream[pb.StreamCompleteResponse],
            self._stubs.stream_complete(body, **self._call(timeout, metadata)),
        )

    def embed(
        self,
        request: pb.EmbedRequest | None = None,
        *,
        model: str | None = None,
        inputs: Sequence[str] | None = None,
        dimensions: int | None = None,
        user: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> pb.EmbedResponse:
        """Embed a batch of texts (a lone string is one input); one vector per input."""
        body = embed_request(request, model=model, inputs=inputs, dimensions=dimensions, user=user)
        return cast(pb.EmbedResponse, self._stubs.embed(body, **self._call(timeout, metadata)))

    def list_models(
        self,
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> pb.ListModelsResponse:
        """List the model aliases this caller may use."""
        return cast(
            pb.ListModelsResponse,
            self._stubs.list_models(pb.ListModelsRequest(), **self._call(timeout, metadata)),
        )

    def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._settings
        return f"Client(target={s.target!r}, tls={s.tls}, timeout={s.timeout})"

    def _call(self, timeout: Timeout, metadata: MetadataLike | None) -> dict[str, Any]:
        return {
            "timeout": self._settings.call_timeout(timeout),
            "metadata": self._settings.call_metadata(metadata),
        }
