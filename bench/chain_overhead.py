"""How much the gateway's policy chain costs per call, next to Python's own gRPC.

Three servers on loopback, each called N times by one grpc.aio client:
  bare     a grpc.aio servicer that returns a canned ChatResponse (gRPC alone)
  gateway  the real gateway (interceptors, validation, routing) on the mock provider,
           recording as in production: access log, call log (SQLite), metrics
  quiet    the same gateway recording nothing (no access log, call log or metrics)
  secured  the recording gateway with auth and approved access on
The difference between gateway and bare is what unigate adds to a call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import grpc
import uvloop

from unigate.gateway.app import create_server
from unigate.gateway.config import parse_config
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.observability.logs import configure_logging
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

CONFIG = """
logging: {{access_log: {record}}}
call_log: {{enabled: {record}}}
metrics: {{enabled: {record}, host: 127.0.0.1, port: 0}}
auth: {{enabled: false}}
store: {{url: 'sqlite:///{folder}/bench.db'}}
providers: {{m: {{kind: mock}}}}
models: {{mock: {{deployments: [{{provider: m, model: echo}}]}}}}
"""

REQUEST = pb.ChatRequest(
    model="mock",
    messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello gateway")])],
)


Started = tuple[Callable[[], Awaitable[None]], int, str | None]


class Bare(inference_pb2_grpc.InferenceServiceServicer):
    async def Chat(self, request: pb.ChatRequest, context: object) -> pb.ChatResponse:
        reply = pb.ChatResponse(id="x", model="echo", provider="mock")
        reply.message.role = pb.ROLE_ASSISTANT
        reply.message.content.add(text=request.messages[-1].content[0].text)
        return reply


async def measure(
    target: str, calls: int, concurrency: int, key: str | None = None
) -> tuple[float, float, float]:
    """Return (median µs per sequential call, p99 µs, calls/s at the given concurrency)."""
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(200):
            await stub.Chat(REQUEST, metadata=metadata)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.Chat(REQUEST, metadata=metadata)
            samples.append((time.perf_counter() - started) * 1e6)

        async def worker(n: int) -> None:
            for _ in range(n):
                await stub.Chat(REQUEST, metadata=metadata)

        started = time.perf_counter()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        throughput = (calls // concurrency * concurrency) / (time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], throughput


async def bare_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def main(calls: int, concurrency: int, rounds: int) -> None:
    async def start_bare() -> Started:
        server, port = await bare_server()
        return (lambda: server.stop(0)), port, None

    async def start_gateway(record: bool) -> Started:
        folder = tempfile.mkdtemp(prefix="unigate-bench-")
        config = parse_config(CONFIG.format(record=str(record).lower(), folder=folder))
        gateway = await create_server(config, host="127.0.0.1", port=0)

        async def stop() -> None:
            await gateway.stop(grace=0)
            shutil.rmtree(folder, ignore_errors=True)

        return stop, gateway.port, None

    async def start_secured() -> Started:
        # Auth on: a consumer's API key (cached after the first call) and an approved
        # subscription (cached too), as a production caller meets them.
        folder = tempfile.mkdtemp(prefix="unigate-bench-")
        text = CONFIG.format(record="true", folder=folder)
        config = parse_config(text.replace("auth: {enabled: false}", ""))
        gateway = await create_server(config, host="127.0.0.1", port=0)
        store = gateway.security.store
        assert store is not None
        tenant = await store.create_tenant("bench")
        consumer = await store.create_consumer(tenant.id, "bench")
        await store.upsert_service(tenant.id, "mock", requires_approval=False)
        await store.request_subscription(consumer.id, "mock")
        key = generate_key()
        await store.create_key(
            key_id=key.key_id,
            secret_hash=key.secret_hash,
            name="bench",
            tenant_id=tenant.id,
            consumer_id=consumer.id,
        )

        async def stop() -> None:
            await gateway.stop(grace=0)
            shutil.rmtree(folder, ignore_errors=True)

        return stop, gateway.port, key.key

    starters: list[tuple[str, Callable[[], Awaitable[Started]]]]
    starters = [
        ("bare grpc.aio", start_bare),
        ("gateway", lambda: start_gateway(True)),
        ("gateway, nothing logged", lambda: start_gateway(False)),
        ("gateway, auth + access", start_secured),
    ]
    # Rounds alternate the order so that drift in machine load hits every server alike.
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in starters}
    for round_ in range(rounds):
        for name, start in starters if round_ % 2 == 0 else starters[::-1]:
            stop, port, key = await start()
            results[name].append(await measure(f"127.0.0.1:{port}", calls, concurrency, key))
            await stop()

    print(f"{rounds} rounds x {calls} unary Chat calls per server, one process, uvloop;")
    print("medians over rounds of: median and p99 latency, throughput at the given concurrency")
    print(f"{'server':<24}{'median µs':>12}{'p99 µs':>10}{f'calls/s @{concurrency}':>16}")
    summary = {}
    for name, rows in results.items():
        median, p99, rate = (statistics.median(column) for column in zip(*rows, strict=True))
        summary[name] = median
        print(f"{name:<24}{median:>12.0f}{p99:>10.0f}{rate:>16.0f}")
    bare = summary["bare grpc.aio"]
    for name, median in list(summary.items())[1:]:
        print(f"{name}: adds {median - bare:.0f} µs per call over bare gRPC ({bare:.0f} µs)")
    auth = summary["gateway, auth + access"] - summary["gateway"]
    print(f"auth + access checks (cached key and subscription): {auth:.0f} µs per call")
    recording = summary["gateway"] - summary["gateway, nothing logged"]
    print(f"recording (access log, call log, metrics): {recording:.0f} µs per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    # Process and access logs are formatted and written as in production, to a sink
    # that is not the screen.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        logs = configure_logging("info", "json", stream=sink)
        uvloop.run(main(args.calls, args.concurrency, args.rounds))
        logs.stop()
