"""Process logs: JSON lines written off the event loop, never blocking a call."""

from __future__ import annotations

import io
import logging
import threading

import orjson
import pytest

from unigate.gateway.observability.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_extras_and_exceptions() -> None:
    out = io.StringIO()
    logs = configure_logging("info", "json", stream=out)
    log = logging.getLogger("unigate.test")
    log.info("call %s", "done", extra={"request_id": "r-1", "latency_ms": 1.5})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"request_id": "r-2"})
    log.debug("not at info level")
    logs.stop()
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "call done"
    assert (first["level"], first["request_id"], first["latency_ms"]) == ("info", "r-1", 1.5)
    assert second["request_id"] == "r-2"
    assert "ValueError: boom" in second["exc"]


class BlockedStream(io.StringIO):
    """A stderr whose reader went away: every write waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(timeout=10)
        return super().write(text)


def test_a_blocked_stderr_drops_records_instead_of_blocking() -> None:
    stream = BlockedStream()
    logs = configure_logging("info", "json", stream=stream, capacity=5)
    log = logging.getLogger("unigate.test")
    done = threading.Event()

    def flood() -> None:
        for index in range(50):
            log.info("record %d", index)
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(timeout=2), "logging blocked on a stalled stream"
    assert logs.dropped >= 50 - 5 - 1
    stream.release.set()
    logs.stop()
    assert "record 0" in stream.getvalue()
