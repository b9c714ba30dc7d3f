"""`unigate logs` against a real AdminService over a real SQLite store
(tests/admin_harness.py): the lines `tail` prints, `tail --follow` seeing a call
that arrives after it started and stopping cleanly on Ctrl-C, the `stats` table
and sparklines, and failures as one message with an exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.admin_harness import World, admin_server, world
from unigate.gateway import admin_cli, logs_cli
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.logs_cli_output import sparkline
from unigate.gateway.store.models import CallLog

__all__ = ["admin_server", "world"]  # fixtures, imported for pytest

BASE = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    world: World
    capsys: pytest.CaptureFixture[str]

    async def run(self, *argv: str, connect: bool = True) -> Result:
        """`unigate logs <argv>` in a thread (it blocks), as the global admin's key."""
        args = ["logs", *argv]
        if connect:
            args += ["--target", self.world.server.target, "--plaintext"]
        self.capsys.readouterr()
        code = await asyncio.to_thread(logs_cli.main, args)
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.out, captured.err)

    async def insert(self, *records: CallLog) -> None:
        await self.world.server.store.insert_call_logs(list(records))


async def admin_key(world: World, tenant_id: str | None) -> str:
    store = world.server.store
    admin = await store.create_admin(f"cli-{tenant_id or 'root'}", tenant_id)
    new = generate_key()
    await store.create_key(
        key_id=new.key_id,
        secret_hash=new.secret_hash,
        name="cli",
        tenant_id=tenant_id,
        admin_id=admin.id,
    )
    return new.key


@pytest.fixture
async def cli(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    monkeypatch.setenv(admin_cli.KEY_ENV, await admin_key(world, None))
    return Cli(world, capsys)


def record(request_id: str, ts: float, **fields: Any) -> CallLog:
    defaults: dict[str, Any] = {
        "method": "Chat",
        "code": "OK",
        "alias": "gpt",
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "latency_ms": 120.0,
    }
    return CallLog(request_id=request_id, ts=ts, **{**defaults, **fields})


def sample(world: World) -> list[CallLog]:
    return [
        record("req-1", BASE + 1.5, tenant_id=world.a, consumer_id=world.a1, input_tokens=12,
               output_tokens=34, cost=0.0021),
        record("req-2", BASE + 65, tenant_id=world.b, consumer_id=world.b1, method="StreamChat",
               alias="claude", provider="anthropic", deployment="eu-west", latency_ms=2400.0,
               ttft_ms=310.0, input_tokens=5, output_tokens=50, cost=0.01),
        record("req-3", BASE + HOUR + 5, tenant_id=world.a, consumer_id=world.a2,
               code="UNAVAILABLE", reason="UPSTREAM_UNAVAILABLE", latency_ms=15_250.0),
    ]  # fmt: skip


def lines_of(world: World) -> list[str]:
    a, b = world.a, world.b
    return [
        f"2026-03-02T10:00:01.500Z  req-1  {a}/{world.a1}  gpt → openai/gpt-4o  Chat  OK  120ms"
        "  ttft -  tokens 12/34  cost 0.0021",
        f"2026-03-02T10:01:05.000Z  req-2  {b}/{world.b1}  claude → anthropic/eu-west  StreamChat"
        "  OK  2400ms  ttft 310ms  tokens 5/50  cost 0.01",
        f"2026-03-02T11:00:05.000Z  req-3  {a}/{world.a2}  gpt → openai/gpt-4o  Chat"
        "  UNAVAILABLE/UPSTREAM_UNAVAILABLE  15.2s  ttft -  tokens 0/0  cost 0",
    ]


async def test_tail_prints_the_latest_calls_oldest_first(cli: Cli) -> None:
    await cli.insert(*sample(cli.world))
    expected = lines_of(cli.world)
    everything = await cli.run("tail")
    assert (everything.code, everything.out.splitlines()) == (0, expected)
    latest = await cli.run("tail", "-n", "2")
    assert latest.out.splitlines() == expected[1:]


async def test_tail_filters(cli: Cli) -> None:
    await cli.insert(*sample(cli.world))
    expected = lines_of(cli.world)

    async def lines(*argv: str) -> list[str]:
        result = await cli.run("tail", *argv)
        assert result.code == 0, result.err
        return result.out.splitlines()

    assert await lines("--errors") == [expected[2]]
    assert await lines("--code", "unavailable", "--code", "INTERNAL") == [expected[2]]
    assert await lines("--tenant", cli.world.a) == [expected[0], expected[2]]
    assert await lines("--consumer", cli.world.b1) == [expected[1]]
    assert await lines("--alias", "claude") == [expected[1]]
    assert await lines("--min-latency", "2s") == expected[1:]
    assert await lines("--since", "2026-03-02T10:01:00Z", "--until", "2026-03-02T11:00:00Z") == [
        expected[1]
    ]
    nothing = await cli.run("tail", "--since", "1h")
    assert (nothing.code, nothing.out, nothing.err) == (0, "", "unigate logs: no calls match\n")


async def test_tail_json_is_one_object_per_line(cli: Cli) -> None:
    await cli.insert(*sample(cli.world))
    result = await cli.run("tail", "--json")
    calls = [json.loads(line) for line in result.out.splitlines()]
    assert [c["request_id"] for c in calls] == ["req-1", "req-2", "req-3"]
    assert calls[1]["time_to_first_token"] == "0.310s"
    assert calls[2]["reason"] == "UPSTREAM_UNAVAILABLE"
    assert calls[0]["retries"] == 0  # plain fields are always there, for scripts
    assert "request_body" not in calls[0]  # bodies only when stored
    same = await cli.run("tail", "--output", "json")
    assert same.out == result.out


async def test_a_tenant_admin_sees_its_own_tenant(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cli.insert(*sample(cli.world))
    monkeypatch.setenv(admin_cli.KEY_ENV, await admin_key(cli.world, cli.world.a))
    expected = lines_of(cli.world)
    mine = await cli.run("tail")
    assert mine.out.splitlines() == [expected[0], expected[2]]
    other = await cli.run("tail", "--tenant", cli.world.b)
    assert (other.code, other.out) == (1, "")
    assert other.err.startswith(f"unigate logs: NOT_FOUND: tenant '{cli.world.b}' not found")
    stats = await cli.run("stats", "--by", "tenant", "--json", "--since", "2026-03-01T00:00:00Z",
                          "--until", "2026-03-03T00:00:00Z")  # fmt: skip
    assert {row["group"] for row in json.loads(stats.out)["rows"]} == {cli.world.a}


async def test_stats_table_and_sparklines(cli: Cli) -> None:
    await cli.insert(*sample(cli.world))
    window = ("--since", "2026-03-02T10:00:00Z", "--until", "2026-03-02T13:00:00Z")
    as_json = await cli.run("stats", *window, "--json")
    reply = json.loads(as_json.out)
    assert reply["bucket"] == "USAGE_BUCKET_HOUR"
    assert [(r["calls"], r["errors"]) for r in reply["rows"]] == [("2", "0"), ("1", "1")]
    result = await cli.run("stats", *window)
    assert result.code == 0, result.err
    # Percentiles are the store's estimates: take them from the JSON answer.
    ms = [
        f"{float(row[name].rstrip('s')) * 1000:.0f}"
        for row in reply["rows"]
        for name in ("latency_p50", "latency_p95", "latency_p99")
    ]
    p95 = [float(ms[1]), float(ms[4])]
    table = result.out.splitlines()
    assert table[0] == (
        "bucket (UTC)      calls  error %  p50 ms  p95 ms  p99 ms  tokens in  tokens out    cost"
        "  cache hit %"
    )
    assert [line.split()[:4] for line in table[1:3]] == [
        ["2026-03-02", "10:00", "2", "0.0"],
        ["2026-03-02", "11:00", "1", "100.0"],
    ]
    assert [line.split()[4:7] for line in table[1:3]] == [ms[0:3], ms[3:6]]
    assert [line.split()[7:] for line in table[1:3]] == [
        ["17", "84", "0.0121", "0.0"],
        ["0", "0", "0", "0.0"],
    ]
    assert table[3:7] == [
        "",
        "calls (one mark per hour; max 2)",
        "  █▅▁",
        f"p95 latency, ms (one mark per hour; max {max(p95):.0f})",
    ]
    assert table[7] == "  " + sparkline([*p95, None], max(p95))


async def test_stats_by_group_shows_one_sparkline_per_group(cli: Cli) -> None:
    await cli.insert(*sample(cli.world))
    result = await cli.run("stats", "--since", "2026-03-02T10:00:00Z", "--until",
                           "2026-03-02T12:00:00Z", "--by", "alias")  # fmt: skip
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["bucket", "(UTC)", "group", "calls"]
    assert [line.split()[2:4] for line in lines[1:4]] == [
        ["claude", "1"],
        ["gpt", "1"],
        ["gpt", "1"],
    ]
    calls = lines.index("calls (one mark per hour; max 1)")
    assert lines[calls + 1 : calls + 3] == ["  gpt     ██", "  claude  █▁"]


async def test_stats_without_calls_says_so(cli: Cli) -> None:
    result = await cli.run("stats", "--since", "2h")
    assert result.code == 0
    assert result.out.startswith("(no calls from ")


async def test_failures_exit_1_or_2_without_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    invalid = await cli.run("tail", "--code", "NOPE")
    assert invalid.code == 1 and invalid.out == ""
    assert invalid.err.startswith("unigate logs: INVALID_ARGUMENT: ")
    assert "codes[0]" in invalid.err
    too_long = await cli.run("stats", "--since", "30d", "--bucket", "minute")
    assert too_long.code == 1 and "more than 1500" in too_long.err
    down = await cli.run(
        "tail", "--target", "127.0.0.1:1", "--timeout", "2", "--plaintext", connect=False
    )
    assert down.code == 1
    assert "UNAVAILABLE" in down.err or "DEADLINE_EXCEEDED" in down.err
    monkeypatch.delenv(admin_cli.KEY_ENV)
    no_key = await cli.run("stats")
    assert no_key.code == 2 and "no admin key" in no_key.err


@pytest.mark.parametrize(
    "argv",
    [
        ["tail", "--min-latency", "soon"],
        ["tail", "--since", "yesterday"],
        ["stats", "--bucket", "week"],
        ["stats", "--by", "model"],
    ],
)
async def test_bad_arguments_are_usage_errors(cli: Cli, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await cli.run(*argv)
    assert exited.value.code == 2


def test_sparkline_scales_from_zero_and_leaves_gaps() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, None, 10]) == "▅ █"
    assert sparkline([1, 1], top=4) == "▃▃"
    assert sparkline([0, 0]) == "▁▁"


async def _read_line(stream: asyncio.StreamReader) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout=15)
    assert line, "the command ended early"
    return line.decode().rstrip("\n")


@pytest.mark.e2e
async def test_follow_prints_new_calls_until_ctrl_c(world: World) -> None:
    await world.server.store.insert_call_logs(sample(world)[:2])
    env = {**os.environ, admin_cli.KEY_ENV: await admin_key(world, None), "PYTHONUNBUFFERED": "1"}
    command: Sequence[str] = [sys.executable, "-m", "unigate.gateway", "logs", "tail", "-f"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--interval",
        "0.2",
        "--target",
        world.server.target,
        "--plaintext",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        expected = lines_of(world)
        assert [await _read_line(process.stdout) for _ in range(2)] == expected[:2]
        late = record("req-late", BASE - HOUR, tenant_id=world.a)  # recorded late, arrived early
        await world.server.store.insert_call_logs([sample(world)[2], late])
        assert await _read_line(process.stdout) == expected[2]
        assert "req-late" in await _read_line(process.stdout)
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err = (await process.stderr.read()).decode()
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
