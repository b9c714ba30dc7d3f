"""The access log: a line per call, written in batches, flushed at close."""

from __future__ import annotations

import asyncio
import io

import orjson

from unigate.gateway.observability.access import AccessLog


async def test_lines_are_batched_and_flushed_on_close() -> None:
    out = io.BytesIO()
    log = AccessLog(out, interval=60)
    log.start()
    log.record({"request_id": "a", "code": "OK"})
    log.record({"request_id": "b", "code": "NOT_FOUND"})
    await asyncio.sleep(0.05)
    assert out.getvalue() == b"", "nothing is written before the interval"
    await log.close()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["request_id"], e["code"], e["msg"]) for e in lines] == [
        ("a", "OK", "call"),
        ("b", "NOT_FOUND", "call"),
    ]
    assert all(e["logger"] == "unigate.access" and e["ts"] for e in lines)


async def test_the_background_task_writes_every_interval() -> None:
    out = io.BytesIO()
    log = AccessLog(out, interval=0.02)
    log.start()
    log.record({"request_id": "a"})
    for _ in range(100):
        if out.getvalue():
            break
        await asyncio.sleep(0.01)
    assert b'"request_id":"a"' in out.getvalue()
    await log.close()


async def test_a_full_buffer_drops_and_counts() -> None:
    out = io.BytesIO()
    log = AccessLog(out, capacity=3, interval=60)
    for index in range(10):
        log.record({"n": index})
    await log.close()
    assert log.dropped == 7
    assert len(out.getvalue().splitlines()) == 3


async def test_text_format() -> None:
    out = io.BytesIO()
    log = AccessLog(out, text=True)
    log.record({"request_id": "r", "code": "OK"})
    await log.close()
    assert (
        out.getvalue().decode().rstrip().endswith("INFO unigate.access: call request_id=r code=OK")
    )
