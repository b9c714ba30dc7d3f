"""The shapes the client passes around, named once."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol, TypeAlias, TypeVar

from unigate.v1 import inference_pb2 as pb

T_co = TypeVar("T_co", covariant=True)

MetadataValue: TypeAlias = str | bytes
Metadata: TypeAlias = tuple[tuple[str, MetadataValue], ...]
# Call metadata as a mapping or as pairs; pairs allow a key to repeat.
MetadataLike: TypeAlias = Mapping[str, MetadataValue] | Iterable[tuple[str, MetadataValue]]
# A plain string is a user message with one text part.
MessageLike: TypeAlias = pb.Message | str
ChannelOptions: TypeAlias = Sequence[tuple[str, str | int]]


class UseClientDefault(enum.Enum):
    """Marks an argument left to the client's default (`timeout=None` means no deadline)."""

    USE_CLIENT_DEFAULT = enum.auto()


USE_CLIENT_DEFAULT = UseClientDefault.USE_CLIENT_DEFAULT
Timeout: TypeAlias = float | UseClientDefault | None


class ResponseStream(Iterator[T_co], Protocol[T_co]):
    """A server stream: iterate it for the messages; `cancel()` stops it early.

    Iterating raises grpc.RpcError when the stream ends with an error status.
    """

    def cancel(self) -> bool: ...

    def initial_metadata(self) -> Sequence[tuple[str, MetadataValue]] | None: ...

    def trailing_metadata(self) -> Sequence[tuple[str, MetadataValue]] | None: ...


class AsyncResponseStream(AsyncIterable[T_co], Protocol[T_co]):
    """A server stream: `async for` over it; `cancel()` stops it early.

    Iterating raises grpc.aio.AioRpcError when the stream ends with an error status.
    """

    def cancel(self) -> bool: ...

    async def initial_metadata(self) -> Sequence[tuple[str, MetadataValue]] | None: ...

    async def trailing_metadata(self) -> Sequence[tuple[str, MetadataValue]] | None: ...
