"""unigate.client against a real grpc.aio server on port 0 with a fake InferenceService.

Every behaviour is checked through both Client and AsyncClient. The sync Client runs in a
worker thread so that it never blocks the event loop serving its calls.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from unigate.client import AsyncClient, Client, error_details, pb, system_message
from unigate.v1 import inference_pb2_grpc

API_KEY = "sk-test-do-not-leak"


@dataclass
class Seen:
    """One call as the fake server received it."""

    method: str
    request: Any
    metadata: dict[str, str | bytes]
    time_remaining: float | None
    peer_common_names: list[bytes] = field(default_factory=list)


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    """Echoes requests back. Special models: "missing" fails with rich details, "flaky" is
    UNAVAILABLE on its first call, "broken" fails after its first stream message, "slow"
    takes 5 s."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def _record(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        auth = context.auth_context()
        self.seen.append(
            Seen(
                method,
                request,
                dict(context.invocation_metadata() or ()),
                context.time_remaining(),
                list(auth.get("x509_common_name", [])),
            )
        )

    async def _fail_if_asked(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        if request.model == "missing":
            await context.abort_with_status(rpc_status.to_status(_model_not_found()))
        if request.model == "flaky" and [s.request.model for s in self.seen] == ["flaky"]:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if request.model == "slow":
            await asyncio.sleep(5)

    async def Chat(self, request: pb.ChatRequest, context: Any) -> pb.ChatResponse:
        self._record("Chat", request, context)
        await self._fail_if_asked(request, context)
        return pb.ChatResponse(
            model=request.model,
            message=pb.Message(role=pb.ROLE_ASSISTANT, content=[_echo_part(request)]),
            finish_reason=pb.FINISH_REASON_STOP,
        )

    async def StreamChat(
        self, request: pb.ChatRequest, context: Any
    ) -> AsyncIterator[pb.StreamChatResponse]:
        self._record("StreamChat", request, context)
        await self._fail_if_asked(request, context)
        for word in _echo_part(request).text.split():
            yield pb.StreamChatResponse(id="r1", text=word)
            if request.model == "broken":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream went away")
        yield pb.StreamChatResponse(id="r1", finish_reason=pb.FINISH_REASON_STOP)

    async def Complete(self, request: pb.CompleteRequest, context: Any) -> pb.CompleteResponse:
        self._record("Complete", request, context)
        await self._fail_if_asked(request, context)
        return pb.CompleteResponse(text=request.prompt.upper())

    async def StreamComplete(
        self, request: pb.CompleteRequest, context: Any
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        self._record("StreamComplete", request, context)
        for char in request.prompt:
            yield pb.StreamCompleteResponse(text=char)
        yield pb.StreamCompleteResponse(finish_reason=pb.FINISH_REASON_LENGTH)

    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        self._record("Embed", request, context)
        return pb.EmbedResponse(
            embeddings=[
                pb.Embedding(index=i, values=[float(len(text)), 0.5])
                for i, text in enumerate(request.inputs)
            ]
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        self._record("ListModels", request, context)
        return pb.ListModelsResponse(
            models=[pb.ModelInfo(alias="mock", capabilities=pb.Capabilities(chat=True))]
        )


def _echo_part(request: pb.ChatRequest) -> pb.ContentPart:
    texts = [p.text for m in request.messages if m.role == pb.ROLE_USER for p in m.content]
    return pb.ContentPart(text=" ".join(texts))


def _model_not_found() -> status_pb2.Status:
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no model alias 'missing'")
    info = error_details_pb2.ErrorInfo(
        reason="MODEL_NOT_FOUND", domain="unigate", metadata={"model": "missing"}
    )
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="model", description="unknown")
        ]
    )
    for detail in (info, retry, bad):
        status.details.add().Pack(detail)
    return status


class Driver:
    """Calls one client from async tests: streams come back as lists of their messages."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    async def call(self, method: str, **kwargs: Any) -> Any:
        outcome, error = await self.outcome(method, **kwargs)
        if error is not None:
            raise error
        return outcome

    async def outcome(self, method: str, **kwargs: Any) -> tuple[Any, grpc.RpcError | None]:
        """The result (for streams: the messages received) and the error, if any."""
        bound = getattr(self.client, method)
        if isinstance(self.client, Client):
            return await asyncio.to_thread(_sync_outcome, bound, kwargs)
        received: list[Any] = []
        try:
            if not method.startswith("stream_"):
                return await bound(**kwargs), None
            async for message in bound(**kwargs):
                received.append(message)
        except grpc.RpcError as error:
            return received, error
        return received, None

    async def close(self) -> None:
        if isinstance(self.client, AsyncClient):
            await self.client.close()
        else:
            self.client.close()


def _sync_outcome(bound: Any, kwargs: dict[str, Any]) -> tuple[Any, grpc.RpcError | None]:
    received: list[Any] = []
    try:
        result = bound(**kwargs)
        if not isinstance(result, Iterator):
            return result, None
        received.extend(result)
    except grpc.RpcError as error:
        return received, error
    return received, None


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, FakeInference]]:
    server = grpc.aio.server()
    fake = FakeInference()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", fake
    await server.stop(None)


@pytest.fixture(params=[Client, AsyncClient], ids=["sync", "async"])
async def client(
    request: pytest.FixtureRequest, gateway: tuple[str, FakeInference]
) -> AsyncIterator[Driver]:
    driver = Driver(request.param(gateway[0], api_key=API_KEY, metadata={"X-Team": "search"}))
    yield driver
    await driver.close()


async def test_each_method_round_trips(client: Driver) -> None:
    reply = await client.call("chat", model="mock", messages=["hello there"])
    assert reply.message.content[0].text == "hello there"
    assert reply.finish_reason == pb.FINISH_REASON_STOP

    chunks = await client.call("stream_chat", model="mock", messages=["hello there"])
    assert [c.text for c in chunks] == ["hello", "there", ""]
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP

    assert (await client.call("complete", model="mock", prompt="abc")).text == "ABC"
    pieces = await client.call("stream_complete", model="mock", prompt="abc")
    assert [p.text for p in pieces] == ["a", "b", "c", ""]
    assert pieces[-1].finish_reason == pb.FINISH_REASON_LENGTH

    vectors = await client.call("embed", model="mock", inputs=["a", "bcd"])
    assert [list(e.values) for e in vectors.embeddings] == [[1.0, 0.5], [3.0, 0.5]]

    models = await client.call("list_models")
    assert [m.alias for m in models.models] == ["mock"]


async def test_a_whole_request_is_sent_as_is(
    client: Driver, gateway: tuple[str, FakeInference]
) -> None:
    request = pb.ChatRequest(model="mock", messages=[system_message("be brief")], user="u1")
    await client.call("chat", request=request)
    assert gateway[1].seen[-1].request == request


async def test_api_key_and_metadata_are_sent_on_every_call(
    client: Driver, gateway: tuple[str, FakeInference]
) -> None:
    await client.call("list_models")
    await client.call("stream_complete", model="mock", prompt="x", metadata={"x-trace": "t1"})
    for seen in gateway[1].seen:
        assert seen.metadata["authorization"] == f"Bearer {API_KEY}"
        assert seen.metadata["x-team"] == "search"
    assert gateway[1].seen[-1].metadata["x-trace"] == "t1"

    await client.call("list_models", metadata=[("authorization", "Bearer other")])
    assert gateway[1].seen[-1].metadata["authorization"] == "Bearer other"


async def test_timeout_becomes_the_deadline_the_server_sees(
    client: Driver, gateway: tuple[str, FakeInference]
) -> None:
    await client.call("chat", model="mock", messages=["hi"])
    await client.call("chat", model="mock", messages=["hi"], timeout=5)
    await client.call("stream_chat", model="mock", messages=["hi"], timeout=None)
    default, short, unbounded = (s.time_remaining for s in gateway[1].seen)
    # The grpc-timeout header is rounded to its unit, so the server may see a hair more.
    assert default == pytest.approx(300, abs=1)
    assert short == pytest.approx(5, abs=0.5)
    assert unbounded is None


async def test_a_string_is_a_user_message_with_one_text_part(
    client: Driver, gateway: tuple[str, FakeInference]
) -> None:
    await client.call("chat", model="mock", messages=[system_message("be brief"), "hi"])
    messages = list(gateway[1].seen[-1].request.messages)
    assert messages[1] == pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])
    assert messages[0].role == pb.ROLE_SYSTEM

    await client.call("embed", model="mock", inputs="one input")
    assert list(gateway[1].seen[-1].request.inputs) == ["one input"]


async def test_an_error_status_surfaces_with_its_code_and_details(client: Driver) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        await client.call("chat", model="missing", messages=["hi"])
    error = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no model alias 'missing'"
    details = error_details(error)
    assert details is not None
    assert (details.reason, details.domain) == ("MODEL_NOT_FOUND", "unigate")
    assert details.metadata == {"model": "missing"}
    assert details.retry_delay == 2.5
    assert [(v.field, v.description) for v in details.field_violations] == [("model", "unknown")]

    _, stream_error = await client.outcome("stream_chat", model="missing", messages=["hi"])
    assert stream_error is not None and stream_error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_error_without_details_has_none(client: Driver) -> None:
    _, error = await client.outcome("chat", model="slow", messages=["hi"], timeout=0.2)
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_details(error) is None


async def test_unavailable_is_retried_only_before_the_first_response(
    client: Driver, gateway: tuple[str, FakeInference]
) -> None:
    reply = await client.call("chat", model="flaky", messages=["again"])
    assert reply.message.content[0].text == "again"
    assert len(gateway[1].seen) == 2

    received, error = await client.outcome("stream_chat", model="broken", messages=["a b"])
    assert [c.text for c in received] == ["a"]
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(gateway[1].seen) == 3


@pytest.mark.parametrize("kind", [Client, AsyncClient], ids=["sync", "async"])
async def test_options_replace_the_channel_defaults(
    gateway: tuple[str, FakeInference], kind: type[Any]
) -> None:
    no_retries = Driver(kind(gateway[0], options=[("grpc.enable_retries", 0)]))
    _, error = await no_retries.outcome("chat", model="flaky", messages=["once"])
    await no_retries.close()
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(gateway[1].seen) == 1


async def test_request_and_fields_together_are_refused(client: Driver) -> None:
    with pytest.raises(TypeError, match="not both"):
        await client.call("chat", request=pb.ChatRequest(model="mock"), model="mock")
    with pytest.raises(TypeError, match="model="):
        await client.call("complete", prompt="x")


async def test_the_api_key_stays_out_of_repr() -> None:
    for kind in (Client, AsyncClient):
        client = kind("127.0.0.1:1", api_key=API_KEY, timeout=5)
        assert API_KEY not in repr(client) and API_KEY not in str(client)
        assert "127.0.0.1:1" in repr(client)
        await Driver(client).close()


def test_half_a_client_certificate_is_refused() -> None:
    with pytest.raises(ValueError, match="together"):
        Client("127.0.0.1:1", client_certificate=b"cert")


# A CA, a server certificate for "gateway.test" and a client certificate, by openssl.
PKI_COMMANDS = """
req -x509 {key} -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca
req {key} -keyout server.key -out server.csr -subj /CN=gateway.test
x509 -req -in server.csr {sign} -out server.pem
req {key} -keyout client.key -out client.csr -subj /CN=billing-service
x509 -req -in client.csr {sign} -out client.pem
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The PEM files by name: ca.pem, server.pem, server.key, client.pem, client.key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("pki")
    (directory / "san.cnf").write_text("subjectAltName=DNS:gateway.test\n")
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    sign = "-CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.cnf"
    for command in PKI_COMMANDS.format(key=key, sign=sign).strip().splitlines():
        subprocess.run(
            ["openssl", *command.split()], cwd=directory, check=True, capture_output=True
        )
    return {path.name: path.read_bytes() for path in directory.glob("*.*")}


@pytest.mark.parametrize("kind", [Client, AsyncClient], ids=["sync", "async"])
async def test_mutual_tls_with_a_server_name_override(
    pki: dict[str, bytes], kind: type[Any]
) -> None:
    server = grpc.aio.server()
    fake = FakeInference()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(fake, server)
    credentials = grpc.ssl_server_credentials(
        [(pki["server.key"], pki["server.pem"])],
        root_certificates=pki["ca.pem"],
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    target = f"127.0.0.1:{port}"
    tls = {"root_certificates": pki["ca.pem"], "server_name_override": "gateway.test"}
    client_identity = {"client_certificate": pki["client.pem"], "client_key": pki["client.key"]}
    mutual = Driver(kind(target, timeout=5, **tls, **client_identity))
    anonymous = Driver(kind(target, timeout=5, **tls))
    try:
        models = await mutual.call("list_models")
        assert [m.alias for m in models.models] == ["mock"]
        assert fake.seen[-1].peer_common_names == [b"billing-service"]

        _, refused = await anonymous.outcome("list_models")
        assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await mutual.close()
        await anonymous.close()
        await server.stop(None)
