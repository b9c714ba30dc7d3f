"""Call logs through the real server: every call recorded with what happened to it,
written off the call's path, dropped and counted when the store cannot keep up,
flushed at shutdown, bodies only where an alias opts in, and redacted.

The store is a real SQLite file; the tenant-facing queries (ListCallLogs,
GetUsageStats) on both stores are in test_call_log_queries.py.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import StartGateway, call_logs
from tests.fakes.openai_server import FakeOpenAI, Fault
from unigate.gateway.observability.redact import MARK
from unigate.gateway.store.factory import open_store
from unigate.gateway.store.models import CallLog, CallLogFilter
from unigate.v1 import inference_pb2 as pb

KEY = "sk-test-0123456789abcdefSECRET"


def chat(text: str = "hello there", model: str = "mock", user: str = "") -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model,
        user=user,
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
    )


def config(db: Path, **call_log: Any) -> dict[str, Any]:
    return {
        "logging": {"access_log": False},
        "auth": {"enabled": False},
        "store": {"url": f"sqlite:///{db}"},
        "call_log": {"flush_interval": "20ms", **call_log},
        "providers": {"local-mock": {"kind": "mock"}},
        "models": {
            "mock": {"deployments": [{"provider": "local-mock", "model": "echo"}]},
            "private": {
                "deployments": [{"provider": "local-mock", "model": "echo"}],
                "log_bodies": True,
            },
        },
    }


async def test_every_call_is_recorded_with_what_happened(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path / "g.db"))
    stub = running.stub
    answer = await stub.Chat(chat(user="end-user-7"), metadata=(("x-request-id", "r-ok"),))
    chunks = [c async for c in stub.StreamChat(chat("one two three"))]
    await stub.Embed(pb.EmbedRequest(model="mock", inputs=["a b"]))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Chat(chat(model="nope"), metadata=(("x-request-id", "r-404"),))

    ok, streamed, embedded, missing = await call_logs(running, 4)
    assert (ok.request_id, ok.method, ok.code, ok.reason) == ("r-ok", "Chat", "OK", "")
    assert (ok.alias, ok.provider, ok.deployment, ok.vendor_model) == (
        "mock",
        "local-mock",
        "local-mock/echo",
        "echo",
    )
    assert (ok.input_tokens, ok.output_tokens) == (
        answer.usage.input_tokens,
        answer.usage.output_tokens,
    )
    assert ok.end_user == "end-user-7"
    assert ok.client_address == "127.0.0.1"
    assert ok.tenant_id is None and ok.key_id is None  # auth is off here
    assert ok.latency_ms > 0 and ok.upstream_latency_ms is not None
    assert ok.upstream_latency_ms <= ok.latency_ms
    assert ok.ttft_ms is None and ok.request_body is None and ok.response_body is None

    last = chunks[-1]
    assert streamed.method == "StreamChat" and streamed.code == "OK"
    assert streamed.output_tokens == last.usage.output_tokens > 0
    assert streamed.ttft_ms is not None and 0 < streamed.ttft_ms <= streamed.latency_ms
    assert embedded.method == "Embed" and embedded.input_tokens == 2
    assert (missing.request_id, missing.code, missing.reason) == (
        "r-404",
        "NOT_FOUND",
        "MODEL_NOT_FOUND",
    )
    assert missing.alias == "nope" and missing.provider == ""
    assert time.time() - 60 < ok.ts <= streamed.ts <= missing.ts <= time.time()


async def test_upstream_failures_are_recorded_with_the_provider(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    async with FakeOpenAI() as fake:
        body = config(tmp_path / "g.db")
        body["providers"]["openai"] = {
            "kind": "openai",
            "base_url": fake.base_url,
            "api_key": "${TEST_KEY}",
        }
        body["models"]["gpt"] = {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}
        running = await start_gateway(body, env={"TEST_KEY": KEY})
        fake.fail_next(Fault.server_error(), times=3)  # every attempt of the call
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.Chat(chat(model="gpt"))
        [failed] = await call_logs(running, 1)
    assert failed.code == caught.value.code().name
    assert failed.reason.startswith("UPSTREAM")
    assert (failed.alias, failed.provider, failed.vendor_model) == ("gpt", "openai", "gpt-4o-mini")
    assert failed.upstream_latency_ms is not None
    assert KEY not in repr(failed)


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, as a busy writer would."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_stuck_store_drops_and_counts_but_never_blocks_a_call(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    db = tmp_path / "g.db"
    running = await start_gateway(config(db, queue_size=5, batch_size=2))
    writer = running.gateway.observability.call_log
    assert writer is not None
    await running.stub.Chat(chat())
    await call_logs(running, 1)
    with write_locked(db):
        # The writer is now stuck behind the lock (SQLite's busy wait, then retries),
        # so the queue fills: the calls still answer, and what does not fit is counted.
        answers = [await running.stub.Chat(chat(f"call {n}")) for n in range(20)]
        assert len(answers) == 20
        assert writer.dropped == 15
        assert writer.depth == 5
    written = await call_logs(running, 6, timeout=30)
    assert len(written) == 6, "the 5 queued calls reach the store once it is free"
    assert [r.code for r in written] == ["OK"] * 6


async def test_shutdown_flushes_what_is_queued(start_gateway: StartGateway, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    running = await start_gateway(config(db, flush_interval="1h"))
    for n in range(7):
        await running.stub.Chat(chat(f"call {n}"), metadata=(("x-request-id", f"q-{n}"),))
    store = running.gateway.observability.call_log_store
    assert store is not None
    assert (await store.list_call_logs(CallLogFilter())).items == []  # still queued
    await running.gateway.stop(grace=0)

    reopened = await open_store(f"sqlite:///{db}")
    try:
        page = await reopened.list_call_logs(CallLogFilter())
    finally:
        await reopened.close()
    assert sorted(r.request_id for r in page.items) == [f"q-{n}" for n in range(7)]


PLANTED = {
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "openai key": "sk-proj-AbCdEfGhIjKlMnOpQrStUv",
    "unigate key": "ug_abcdefghijkl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    "bearer": "Bearer abcdefghijklmnop.qrstu",
    "custom": "ACCT-99-1234",
}


async def test_bodies_are_kept_only_where_asked_and_redacted(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path / "g.db", redact=[r"ACCT-\d+-\d+"]))
    # Newlines and tabs before secrets: in JSON they become \n and \t, which a
    # pattern anchored at a word boundary would not see past.
    text = "please remember:\n" + "\n\t".join(PLANTED.values()) + " thanks"
    await running.stub.Chat(chat(text, model="private"))
    _ = [c async for c in running.stub.StreamChat(chat(text, model="private"))]
    await running.stub.Chat(chat(text, model="mock"))

    unary, stream, plain = await call_logs(running, 3)
    for record in (unary, stream):
        assert record.request_body is not None and record.response_body is not None
        assert "please remember" in record.request_body
        assert "thanks" in record.response_body  # the mock echoes the prompt
        for what, secret in PLANTED.items():
            for body in (record.request_body, record.response_body):
                assert secret not in body, f"{what} leaked"
        assert record.request_body.count(MARK) == len(PLANTED)
    assert stream.response_body is not None and stream.response_body.startswith("[")
    assert plain.request_body is None and plain.response_body is None


async def test_retention_deletes_old_records_in_batches(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path / "g.db", retention="1d"))
    writer = running.gateway.observability.call_log
    store = running.gateway.observability.call_log_store
    assert writer is not None and store is not None
    old = time.time() - 2 * 86400
    await store.insert_call_logs(
        [CallLog(request_id=f"old-{n}", ts=old + n, method="Chat", code="OK") for n in range(12)]
    )
    await running.stub.Chat(chat(), metadata=(("x-request-id", "new"),))
    await call_logs(running, 13)
    deleted, _ = await writer.apply_retention()
    assert deleted == 12
    assert [r.request_id for r in await call_logs(running, 1)] == ["new"]
