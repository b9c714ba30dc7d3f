"""A small typed client for the unigate gateway's unigate.v1.InferenceService.

    from unigate.client import Client

    with Client("localhost:50051", api_key="...") as client:
        reply = client.chat(model="mock", messages=["Hello"])
        print(reply.message.content[0].text)

`AsyncClient` has the same methods for asyncio. `pb` is the generated module
(unigate.v1.inference_pb2) with every request and response type.

Errors are gRPC's own:

    grpc.RpcError               raised by Client; also a grpc.Call: code(), details()
      grpc.aio.AioRpcError      raised by AsyncClient, same methods

`error_details(err)` reads the gateway's ErrorInfo reason, RetryInfo delay and BadRequest
field violations from the `grpc-status-details-bin` trailer.
"""

from unigate.client._async import AsyncClient
from unigate.client._errors import ErrorDetails, FieldViolation, error_details
from unigate.client._requests import (
    assistant_message,
    system_message,
    tool_message,
    user_message,
)
from unigate.client._sync import Client
from unigate.client._types import (
    USE_CLIENT_DEFAULT,
    AsyncResponseStream,
    MessageLike,
    MetadataLike,
    ResponseStream,
    Timeout,
    UseClientDefault,
)
from unigate.v1 import inference_pb2 as pb

__all__ = [
    "USE_CLIENT_DEFAULT",
    "AsyncClient",
    "AsyncResponseStream",
    "Client",
    "ErrorDetails",
    "FieldViolation",
    "MessageLike",
    "MetadataLike",
    "ResponseStream",
    "Timeout",
    "UseClientDefault",
    "assistant_message",
    "error_details",
    "pb",
    "system_message",
    "tool_message",
    "user_message",
]
