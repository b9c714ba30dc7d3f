"""`unigate logs` against a real `unigate serve` (auth on, SQLite and PostgreSQL):
calls made through the gateway reach the store through the call-log writer, and
`tail --follow` (started before them, stopped with Ctrl-C), `tail` and `stats`
show them."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence

import pytest

from tests.store.conftest import postgres_dsn

from .conftest import gateway_env
from .test_access import CHAT, UNIGATE, Deployment, chat_body, deployment, store_url

pytestmark = pytest.mark.e2e
__all__ = ["deployment", "postgres_dsn", "store_url"]  # fixtures, imported for pytest

LINE_TIMEOUT = 20.0  # the writer flushes every second; the follower polls every 0.2 s


class Follower:
    """`unigate logs tail -f` in a subprocess, its stdout read line by line."""

    def __init__(self, d: Deployment) -> None:
        self.process = subprocess.Popen(
            [*UNIGATE, "logs", "tail", "-f", "--interval", "0.2", *_connect(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=gateway_env(UNIGATE_ADMIN_KEY=d.admin_key),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no new call line within {LINE_TIMEOUT}s")

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=15)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _connect(d: Deployment) -> list[str]:
    return ["--target", d.gateway.address, "--plaintext"]


def logs(d: Deployment, *words: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*UNIGATE, "logs", *words, *_connect(d)],
        capture_output=True,
        text=True,
        timeout=30,
        env=gateway_env(UNIGATE_ADMIN_KEY=d.admin_key),
    )
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def consumer_key(deployment: Deployment) -> Iterator[tuple[str, str, str]]:
    """(tenant id, consumer id, key) of a consumer that may call `mock`."""
    d = deployment
    tenant = d.admin("tenants", "create", "acme")["tenant"]["id"]
    d.admin("services", "upsert", "mock", "--tenant", tenant, "--no-requires-approval")
    consumer = d.admin("consumers", "create", "app", "--tenant", tenant)["consumer"]["id"]
    key = d.admin("keys", "create", "--consumer", consumer)["secret"]
    code, out = d.grpcurl_call(
        "unigate.v1.AdminService/RequestSubscription", {"alias": "mock"}, key
    )
    assert code == 0, out
    yield tenant, consumer, key


def _fields(line: str) -> Sequence[str]:
    return line.split("  ")


def test_tail_follow_and_stats_see_calls_through_the_gateway(
    deployment: Deployment, consumer_key: tuple[str, str, str]
) -> None:
    d = deployment
    tenant, consumer, key = consumer_key
    follower = Follower(d)
    try:
        code, out = d.grpcurl_call(CHAT, chat_body("hello"), key)
        assert code == 0, out
        first = _fields(follower.next_line())
        code, out = d.grpcurl_call(CHAT, {"model": "mock", "messages": []}, key)
        assert code != 0 and "InvalidArgument" in out
        second = _fields(follower.next_line())
        stopped, err = follower.interrupt()
    finally:
        follower.kill()
    assert stopped == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

    assert first[2:6] == [f"{tenant}/{consumer}", "mock → local-mock/echo", "Chat", "OK"]
    assert first[0].endswith("Z") and first[6].endswith("ms") and first[7] == "ttft -"
    invalid = "INVALID_ARGUMENT/INVALID_REQUEST"
    assert second[2:6] == [f"{tenant}/{consumer}", "mock → -", "Chat", invalid]

    tail = logs(d, "tail")
    assert tail.returncode == 0, tail.stderr
    assert [_fields(line)[1:6] for line in tail.stdout.splitlines()] == [first[1:6], second[1:6]]
    errors = logs(d, "tail", "--errors", "--json")
    [failed] = [json.loads(line) for line in errors.stdout.splitlines()]
    assert (failed["code"], failed["tenant_id"], failed["alias"]) == (
        "INVALID_ARGUMENT",
        tenant,
        "mock",
    )

    stats = logs(d, "stats", "--by", "alias", "--json")
    assert stats.returncode == 0, stats.stderr
    [row] = json.loads(stats.stdout)["rows"]
    assert (row["group"], row["calls"], row["errors"], row["error_rate"]) == ("mock", "2", "1", 0.5)
    table = logs(d, "stats", "--by", "alias").stdout.splitlines()
    assert table[0].split()[:4] == ["bucket", "(UTC)", "group", "calls"]
    assert table[1].split()[2:5] == ["mock", "2", "50.0"]
    assert "calls (one mark per hour; max 2)" in table
