"""What only the shared backend promises: one count across processes, in one round trip."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast

import redis.asyncio as aredis

from tests.quota.conftest import NewRedisQuota, PrivateRedis
from unigate.gateway.quota.base import Kind, Limit
from unigate.gateway.quota.redis_backend import RedisQuota

RPM = Limit("rpm", Kind.REQUESTS, 10, 5.0, "tenant:shared")

CHILD = """
import asyncio, sys
from unigate.gateway.quota.base import Kind, Limit
from unigate.gateway.quota.redis_backend import RedisQuota

async def main(url: str, prefix: str, calls: int) -> None:
    quota = RedisQuota(url, prefix=prefix, timeout=2.0)
    limit = Limit("rpm", Kind.REQUESTS, 10, 5.0, "tenant:shared")
    await quota.usage([limit])  # connected and scripts loaded before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    decisions = await asyncio.gather(*(quota.admit([limit]) for _ in range(calls)))
    print(sum(d.allowed for d in decisions), flush=True)
    await quota.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_instances_let_through_exactly_n_together(
    new_redis_quota: NewRedisQuota,
) -> None:
    first, second = new_redis_quota(), new_redis_quota()
    allowed = 0
    for _ in range(15):
        allowed += (await first.admit([RPM])).allowed
        allowed += (await second.admit([RPM])).allowed
    assert allowed == 10


async def test_concurrent_bursts_from_two_instances_let_through_exactly_n(
    new_redis_quota: NewRedisQuota,
) -> None:
    first, second = new_redis_quota(), new_redis_quota()
    loose = Limit("tpm", Kind.REQUESTS, 25, 5.0, "tenant:shared")
    calls = [quota.admit([loose, RPM]) for quota in (first, second) for _ in range(40)]
    decisions = await asyncio.gather(*calls)
    assert sum(d.allowed for d in decisions) == 10
    assert sum(not d.allowed for d in decisions) == 70
    # All or nothing under contention: the refused calls counted nowhere.
    assert (await first.usage([loose]))[0].remaining == 15


async def test_a_burst_from_another_os_process_shares_the_count(
    new_redis_quota: NewRedisQuota, redis_url: str
) -> None:
    quota = new_redis_quota()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        redis_url,
        quota.prefix,
        "30",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
        await quota.usage([RPM])
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        mine = await asyncio.gather(*(quota.admit([RPM]) for _ in range(30)))
        theirs = int(await asyncio.wait_for(child.stdout.readline(), 30))
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    assert sum(d.allowed for d in mine) + theirs == 10


async def test_concurrency_slots_are_shared_across_instances(
    new_redis_quota: NewRedisQuota,
) -> None:
    first, second = new_redis_quota(), new_redis_quota()
    streams = Limit("streams", Kind.CONCURRENCY, 5, 0, "deployment:openai/x")
    decisions = await asyncio.gather(
        *(quota.admit([streams]) for quota in (first, second) for _ in range(20))
    )
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 5
    await asyncio.gather(*(first.settle(d.lease) for d in admitted))  # any process may settle
    assert (await second.usage([streams]))[0].remaining == 5


async def test_keys_expire_so_idle_subjects_vanish(
    new_redis_quota: NewRedisQuota, redis_url: str
) -> None:
    quota = new_redis_quota(slot_ttl=0.4)
    limits = [
        Limit("rps", Kind.REQUESTS, 5, 0.3, "key:idle"),
        Limit("rpm", Kind.REQUESTS, 5000, 0.3, "key:idle"),  # bucketed
        Limit("tpm", Kind.TOKENS, 100, 0.3, "key:idle"),
        Limit("streams", Kind.CONCURRENCY, 2, 0, "key:idle"),
    ]
    decision = await quota.admit(limits)
    await quota.settle(decision.lease, tokens=10)
    await quota.admit(limits)  # holds a slot it never gives back
    client = aredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{quota.prefix}:*")]
        assert len(keys) == 4
        ttls = [await client.pttl(key) for key in keys]
        assert all(0 < ttl <= 410 for ttl in ttls), ttls
        await asyncio.sleep(0.45)
        assert [key async for key in client.scan_iter(match=f"{quota.prefix}:*")] == []
    finally:
        await client.aclose()


class CountingRedis(aredis.Redis):
    """A client that notes every command it sends: one command, one round trip."""

    sent: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_one_round_trip_per_admit_and_per_settle(private_redis: PrivateRedis) -> None:
    client = cast(CountingRedis, CountingRedis.from_url(private_redis.url))
    client.sent = []
    quota = RedisQuota(client, prefix="rt", timeout=1.0)
    limits = [
        Limit("rpm", Kind.REQUESTS, 1000, 60, "key:k"),
        Limit("tpd", Kind.TOKENS, 10**9, 86400, "tenant:t"),
        Limit("spend", Kind.SPEND, 10**6, 86400, "tenant:t"),
        Limit("streams", Kind.CONCURRENCY, 100, 0, "tenant:t"),
        Limit("global", Kind.REQUESTS, 10**6, 60, "deployment:d"),
    ]
    try:
        await quota.settle((await quota.admit(limits)).lease, tokens=1)  # connect, load scripts
        assert client.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"] * 2
        client.sent.clear()
        private_redis.reset_stats()
        for _ in range(50):
            decision = await quota.admit(limits)
            assert decision.allowed
            await quota.settle(decision.lease, tokens=30, cost=0.01)
        calls = private_redis.command_calls()
    finally:
        await quota.close()
        await client.aclose()
    assert client.sent == ["EVALSHA"] * 100
    # The server saw the same: 100 scripts, no other command from this client (the
    # commands inside scripts are counted too, so only the top-level ones are checked).
    assert calls["evalsha"] == 100
    assert not {"eval", "script|load", "multi", "exec"} & calls.keys()


async def test_scripts_come_back_after_a_script_flush(private_redis: PrivateRedis) -> None:
    quota = RedisQuota(private_redis.url, prefix="flush", timeout=1.0)
    try:
        assert (await quota.admit([RPM])).allowed
        client = aredis.Redis.from_url(private_redis.url)
        await client.script_flush()
        await client.aclose()
        assert (await quota.admit([RPM])).states[0].remaining == 8
    finally:
        await quota.close()
