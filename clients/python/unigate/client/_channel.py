"""Everything both clients share: channel options, TLS credentials and call defaults."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from unigate.client._types import (
    ChannelOptions,
    Metadata,
    MetadataLike,
    Timeout,
    UseClientDefault,
)
from unigate.v1 import inference_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["InferenceService"]
# Images in requests and batches of embeddings in responses outgrow gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# gRPC retries only calls that have not received response headers yet, so a retried call
# never duplicates output the caller has seen. The gateway uses UNAVAILABLE for "try again".
RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": SERVICE.full_name}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

DEFAULT_OPTIONS: Mapping[str, str | int] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.enable_retries": 1,
    "grpc.service_config": json.dumps(RETRY_SERVICE_CONFIG),
    "grpc.primary_user_agent": "unigate-client-python",
}


def method_path(name: str) -> str:
    return f"/{SERVICE.full_name}/{SERVICE.methods_by_name[name].name}"


@dataclass(frozen=True)
class Settings:
    """A client's validated constructor arguments. The repr leaves out metadata (the key)."""

    target: str
    tls: bool
    timeout: float | None
    options: ChannelOptions
    metadata: Metadata = field(repr=False)
    credentials: grpc.ChannelCredentials | None = field(repr=False)

    def call_timeout(self, timeout: Timeout) -> float | None:
        return self.timeout if isinstance(timeout, UseClientDefault) else timeout

    def call_metadata(self, metadata: MetadataLike | None) -> Metadata:
        return merge_metadata(self.metadata, metadata)


def settings(
    target: str,
    *,
    api_key: str | None,
    tls: bool,
    root_certificates: bytes | None,
    client_certificate: bytes | None,
    client_key: bytes | None,
    server_name_override: str | None,
    timeout: float | None,
    metadata: MetadataLike | None,
    options: ChannelOptions | None,
) -> Settings:
    if not target:
        raise ValueError("target is required, e.g. 'localhost:50051'")
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key must be given together")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive or None, got {timeout}")
    tls_settings = (root_certificates, client_certificate, client_key, server_name_override)
    # Any TLS setting turns TLS on: a connection meant to be private never falls back to
    # plaintext because `tls=True` was forgotten.
    use_tls = tls or any(s is not None for s in tls_settings)
    merged = dict(DEFAULT_OPTIONS)
    if server_name_override is not None:
        merged["grpc.ssl_target_name_override"] = server_name_override
    merged.update(options or ())
    auth: Metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    credentials = (
        grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=client_key,
            certificate_chain=client_certificate,
        )
        if use_tls
        else None
    )
    return Settings(
        target=target,
        tls=use_tls,
        timeout=timeout,
        options=tuple(merged.items()),
        metadata=merge_metadata(auth, metadata),
        credentials=credentials,
    )


def merge_metadata(base: Metadata, extra: MetadataLike | None) -> Metadata:
    """`base` then `extra`; a key in `extra` replaces every `base` entry of that key."""
    if not extra:
        return base
    pairs = extra.items() if isinstance(extra, Mapping) else extra
    # gRPC refuses upper-case keys; HTTP/2 header names are lower-case anyway.
    added = tuple((key.lower(), value) for key, value in pairs)
    replaced = {key for key, _ in added}
    return tuple(pair for pair in base if pair[0] not in replaced) + added


@dataclass(frozen=True)
class Stubs:
    """The service's six methods bound to a channel.

    Any, because a sync and an aio channel bind to different multicallable types; each
    client states the response type once, where it calls.
    """

    chat: Any
    stream_chat: Any
    complete: Any
    stream_complete: Any
    embed: Any
    list_models: Any


def bind_stubs(channel: grpc.Channel | grpc.aio.Channel) -> Stubs:
    def bind(factory: Any, name: str, request: Any, response: Any) -> Any:
        return factory(
            method_path(name),
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    unary, stream = channel.unary_unary, channel.unary_stream
    return Stubs(
        chat=bind(unary, "Chat", pb.ChatRequest, pb.ChatResponse),
        stream_chat=bind(stream, "StreamChat", pb.ChatRequest, pb.StreamChatResponse),
        complete=bind(unary, "Complete", pb.CompleteRequest, pb.CompleteResponse),
        stream_complete=bind(
            stream, "StreamComplete", pb.CompleteRequest, pb.StreamCompleteResponse
        ),
        embed=bind(unary, "Embed", pb.EmbedRequest, pb.EmbedResponse),
        list_models=bind(unary, "ListModels", pb.ListModelsRequest, pb.ListModelsResponse),
    )
