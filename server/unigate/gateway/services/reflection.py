"""Server reflection that also serves the .proto comments.

Generated Python modules carry descriptors without their source info, so plain
reflection shows grpcurl the contract but not its documentation. `make protos`
writes a descriptor set with source info next to this module; the pool below
hands reflection those richer descriptors for our own files and the ordinary
ones for everything else (google/protobuf/*, health, reflection).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

DESCRIPTOR_SET = Path(__file__).with_name("unigate_v1.binpb")


class _DocumentedFile:
    """A FileDescriptor whose CopyToProto includes the comments, where we have them."""

    def __init__(self, wrapped: Any, documented: Mapping[str, descriptor_pb2.FileDescriptorProto]):
        self._wrapped = wrapped
        self._documented = documented
        self.name: str = wrapped.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [_DocumentedFile(dep, self._documented) for dep in self._wrapped.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        documented = self._documented.get(self.name)
        if documented is not None:
            proto.CopyFrom(documented)
        else:
            self._wrapped.CopyToProto(proto)


class _DocumentedPool:
    """The default pool, but file lookups return _DocumentedFile wrappers."""

    def __init__(self, documented: Mapping[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._pool = descriptor_pool.Default()
        self._documented = documented

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    if not DESCRIPTOR_SET.exists():
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return {f.name: f for f in files.file}


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """Serve grpc.reflection.v1alpha (what grpcurl 1.8 speaks) with documentation."""
    pool: Any = _DocumentedPool(_documented_files())
    reflection.enable_server_reflection((*service_names, reflection.SERVICE_NAME), server, pool)
