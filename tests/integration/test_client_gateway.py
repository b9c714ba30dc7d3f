"""The client package against the real gateway, as its README uses it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.conftest import StartGateway
from unigate.client import AsyncClient, Client, error_details


async def test_readme_script_against_the_gateway(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()

    def five_lines() -> str:
        with Client(f"127.0.0.1:{gateway.gateway.port}") as client:
            reply = client.chat(model="mock", messages=["Hello, gateway!"])
            return reply.message.content[0].text

    assert await asyncio.to_thread(five_lines) == "Hello, gateway!"


async def test_async_client_streams_embeds_lists_and_reads_errors(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    async with AsyncClient(f"127.0.0.1:{gateway.gateway.port}") as client:
        chunks = [c async for c in client.stream_chat(model="mock", messages=["a b c"])]
        assert "".join(c.text for c in chunks) == "a b c"
        assert chunks[-1].usage.output_tokens == 3

        vectors = await client.embed(model="mock", inputs=["x", "y"], dimensions=4)
        assert [len(e.values) for e in vectors.embeddings] == [4, 4]

        listing = await client.list_models()
        assert [m.alias for m in listing.models] == ["mock"]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.chat(model="nope", messages=["hi"])
        details = error_details(caught.value)
        assert details is not None
        assert (details.reason, details.domain) == ("MODEL_NOT_FOUND", "unigate")
        assert [v.field for v in details.field_violations] == ["model"]
