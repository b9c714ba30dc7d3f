"""What a quota check costs per call: in memory, and on Redis over loopback.

A call is checked against five limits, as a gateway call with a key, a tenant and
a deployment would be: requests per minute (key), tokens and spend per day
(tenant), concurrent calls (tenant), requests per minute (deployment).

  memory   MemoryQuota admit + settle, and admit alone, µs per call
  redis    RedisQuota on a private redis-server started here (or --url): commands
           sent per admit and per settle (counted by a wrapping client, and the
           server's own EVALSHA count when the server is ours), µs per admit,
           per admit + settle, and a PING for the bare round trip next to it
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import redis
import redis.asyncio as aredis
import uvloop

from unigate.gateway.quota.base import Kind, Limit, QuotaBackend
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.redis_backend import RedisQuota


def limits(rps_window: float) -> list[Limit]:
    """Wide enough that no call is refused: every call does the full work. The
    per-key limit keeps an exact log of about 1000 * rps_window / (µs per call) calls."""
    return [
        Limit("requests_per_second", Kind.REQUESTS, 1000, rps_window, "key:bench"),
        Limit("tokens_per_day", Kind.TOKENS, 1e12, 86400, "tenant:bench"),
        Limit("spend_per_day", Kind.SPEND, 1e9, 86400, "tenant:bench"),
        Limit("concurrent", Kind.CONCURRENCY, 1e6, 0, "tenant:bench"),
        Limit("requests_per_minute", Kind.REQUESTS, 1e9, 60, "deployment:bench"),
    ]


Caller = Callable[[], Awaitable[bool]]


class CountingRedis(aredis.Redis):
    sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def per_call_us(call: Callable[[], Awaitable[bool]], calls: int, rounds: int) -> float:
    """Median over rounds of the mean µs per sequential call; every call must pass."""
    results = []
    for _ in range(rounds):
        refused = 0
        started = time.perf_counter()
        for _ in range(calls):
            refused += not await call()
        results.append((time.perf_counter() - started) / calls * 1e6)
        if refused:
            raise SystemExit(f"{refused} calls refused: the benchmark's limits are too tight")
    return statistics.median(results)


def callers(quota: QuotaBackend, checked: list[Limit]) -> tuple[Caller, Caller]:
    """admit + settle (slots given back), and admit alone (without the slot limit)."""
    no_slot = [limit for limit in checked if limit.kind is not Kind.CONCURRENCY]

    async def admit_settle() -> bool:
        decision = await quota.admit(checked)
        await quota.settle(decision.lease, tokens=120, cost=0.002)
        return decision.allowed

    async def admit_only() -> bool:
        return (await quota.admit(no_slot)).allowed

    return admit_settle, admit_only


async def bench_memory(calls: int, rounds: int) -> None:
    checked = limits(rps_window=0.01)
    admit_settle, admit_only = callers(MemoryQuota(), checked)
    both = await per_call_us(admit_settle, calls, rounds)
    alone = await per_call_us(admit_only, calls, rounds)
    print(f"memory  admit + settle: {both:7.1f} µs per call ({len(checked)} limits)")
    print(f"memory  admit alone:    {alone:7.1f} µs per call (no slot limit)")


async def bench_redis(url: str, ours: bool, calls: int, rounds: int) -> None:
    client = cast(CountingRedis, CountingRedis.from_url(url))
    quota = RedisQuota(client, prefix=f"unigate-bench:{time.time_ns()}", timeout=1.0)
    checked = limits(rps_window=0.05)
    admit_settle, admit_only = callers(quota, checked)
    try:
        await admit_settle()  # connect, load the scripts
        if ours:
            await client.config_resetstat()
        client.sent = 0
        await per_call_us(admit_only, calls, 1)
        per_admit = client.sent / calls
        client.sent = 0
        decision = await quota.admit(checked)
        client.sent = 0
        await quota.settle(decision.lease, tokens=120, cost=0.002)
        print(f"redis   commands sent per admit: {per_admit:.2f}, per settle: {client.sent}")
        if ours:
            stats = (await client.info("commandstats"))["cmdstat_evalsha"]
            print(
                f"redis   server: {stats['calls']} EVALSHA for {calls + 1} admits + 1 settle,"
                f" {stats['usec_per_call']:.1f} µs each inside Redis"
            )

        async def ping() -> bool:
            return bool(await client.ping())

        rtt = await per_call_us(ping, calls, rounds)
        alone = await per_call_us(admit_only, calls, rounds)
        both = await per_call_us(admit_settle, calls, rounds)
        print(f"redis   PING (a bare round trip):   {rtt:7.1f} µs")
        print(f"redis   admit:                      {alone:7.1f} µs per call")
        print(f"redis   admit + settle:             {both:7.1f} µs per call")
        for subject in ("key:bench", "tenant:bench", "deployment:bench"):
            await quota.reset(subject)
    finally:
        await quota.close()
        await client.aclose()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: pass --url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            probe = redis.Redis(port=port, socket_timeout=0.5)
            for _ in range(200):
                with contextlib.suppress(redis.RedisError, OSError):
                    probe.ping()
                    break
                time.sleep(0.025)
            probe.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.kill()
            server.wait(5)


async def main(url: str | None, calls: int, rounds: int) -> None:
    print(f"{rounds} rounds x {calls} sequential calls, one process, uvloop; medians of means")
    await bench_memory(calls * 10, rounds)
    if url is not None:
        await bench_redis(url, False, calls, rounds)
        return
    with private_redis() as private:
        await bench_redis(private, True, calls, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", help="an existing Redis (default: start a private one)")
    args = parser.parse_args()
    uvloop.run(main(args.url, args.calls, args.rounds))
