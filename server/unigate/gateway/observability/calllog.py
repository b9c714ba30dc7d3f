"""The call-log writer: every inference call's record reaches the store in batches,
off the call's path.

A call appends its record to a bounded in-memory queue and returns; it never
waits for the store. A background task writes a batch when `batch_size` records
are waiting or `flush_interval` after the oldest one arrived, whichever comes
first. A full queue drops new records and counts them (`dropped`); a store that
fails keeps its batch at the head of the queue and is retried with backoff, so
an outage costs only what the queue cannot hold. `close()` writes out what is
left. Bodies (aliases with `log_bodies`) are turned into JSON and redacted by the
writer, not by the call.

A second task applies retention: call records older than `retention`, hourly and
daily usage rollups older than `usage_retention`, per-minute ones older than
`minute_usage_retention`, deleted in small batches with pauses, so
the cleanup never holds the database for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from unigate.gateway.observability.redact import Redactor
from unigate.gateway.store.base import Store
from unigate.gateway.store.models import CallLog

log = logging.getLogger("unigate.calllog")

MAX_BODY_CHARS = 64 * 1024
_CLEANUP_BATCH = 5000
_CLEANUP_PAUSE = 0.05
_MAX_BACKOFF = 5.0


@dataclass(slots=True)
class Bodies:
    """A call's messages, kept as they are until the writer turns them into text."""

    request: Message
    responses: list[Message]


def _redacted(value: Any, redact: Redactor) -> Any:
    """Every string in a message's JSON form redacted as the text it is (not as JSON
    text, where a newline is `\\n` and would hide what follows it from `\\b`)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, redact) for item in value]
    return value


def _json(message: Message, redact: Redactor) -> str:
    body = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return orjson.dumps(_redacted(body, redact)).decode()


def _render(entries: list[tuple[CallLog, Bodies | None]], redact: Redactor) -> None:
    """Turn kept messages into redacted JSON bodies (in a worker thread: it is CPU)."""
    for entry, bodies in entries:
        if bodies is None or entry.request_body is not None:
            continue
        try:
            entry.request_body = _truncated(_json(bodies.request, redact))
            parts = [_json(message, redact) for message in bodies.responses]
            text = parts[0] if len(parts) == 1 else "[" + ",".join(parts) + "]"
            entry.response_body = _truncated(text)
        except Exception as exc:  # a body is not worth a record: keep the record
            entry.request_body = entry.response_body = None
            log.warning("cannot render a logged body: %s: %s", type(exc).__name__, exc)


def _truncated(text: str) -> str:
    if len(text) <= MAX_BODY_CHARS:
        return text
    return text[:MAX_BODY_CHARS] + f"…[truncated {len(text) - MAX_BODY_CHARS} chars]"


class CallLogWriter:
    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        redactor: Redactor | None = None,
        retention: float = 0.0,
        usage_retention: float = 0.0,
        minute_usage_retention: float = 0.0,
        cleanup_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._capacity = queue_size
        self._batch_size = batch_size
        self._interval = flush_interval
        self._redact = redactor or Redactor()
        self._retention = retention
        self._usage_retention = usage_retention
        self._minute_usage_retention = minute_usage_retention
        self._cleanup_interval = cleanup_interval
        self._clock = clock
        self._queue: deque[tuple[CallLog, Bodies | None]] = deque()
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.dropped = 0
        self.written = 0
        self.failures = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def record(self, entry: CallLog, bodies: Bodies | None = None) -> None:
        """Queue a record; never blocks. A full queue drops it and counts the drop."""
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        self._queue.append((entry, bodies))
        if len(self._queue) in (1, self._batch_size):
            self._wake.set()  # a batch begins (its interval starts), or is full

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run(), name="call-log-writer"))
        if self._retention or self._usage_retention or self._minute_usage_retention:
            self._tasks.append(loop.create_task(self._cleanup(), name="call-log-retention"))

    async def _run(self) -> None:
        """Write batches until close(); never cancelled in the middle of a write (a
        commit the database made but the queue did not see would be written twice)."""
        backoff = 0.0
        while not self._closing:
            try:
                if len(self._queue) < self._batch_size:
                    if not self._queue:
                        self._wake.clear()
                        await self._wake.wait()  # the first record of the next batch
                    # Then give the batch until flush_interval to fill up.
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._interval)
                    if self._closing:
                        return
                if await self._write_batch():
                    backoff = 0.0
                    continue
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
            except Exception:  # the writer must outlive any one batch
                log.exception("call log writer failed; retrying")
                backoff = _MAX_BACKOFF
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)  # close() wakes it

    async def _batch(self) -> list[CallLog]:
        entries = list(itertools.islice(self._queue, self._batch_size))
        if any(bodies is not None and entry.request_body is None for entry, bodies in entries):
            await asyncio.to_thread(_render, entries, self._redact)
        return [entry for entry, _ in entries]

    async def _write_batch(self) -> bool:
        """Write the oldest batch; False (batch kept) when the store failed. One
        batch at a time: the background task and flush() never take the same one."""
        async with self._writing:
            return await self._write_oldest()

    async def _write_oldest(self) -> bool:
        batch = await self._batch()
        if not batch:
            return True
        try:
            await self._store.insert_call_logs(batch)
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning(
                    "cannot write call logs (%d waiting, retrying): %s: %s",
                    len(self._queue),
                    type(exc).__name__,
                    exc,
                    extra={"failures": self.failures},
                )
            return False
        for _ in batch:
            self._queue.popleft()
        if self.failures:
            log.info("call logs written again after %d failed attempts", self.failures)
            self.failures = 0
        self.written += len(batch)
        return True

    async def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued now; give up after `timeout` (the store is down)."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            if not await self._write_batch():
                await asyncio.sleep(0.1)
        if self._queue:
            log.error("call logs lost at shutdown: the store did not take %d", len(self._queue))

    async def close(self, timeout: float = 10.0) -> None:
        """Let the batch being written finish (never cancel a write), stop the tasks,
        then write out what is left, within `timeout` in all."""
        deadline = time.monotonic() + timeout
        self._closing = True
        self._wake.set()
        if self._tasks:
            writer, *others = self._tasks
            for task in others:
                task.cancel()  # retention: a delete cut short is simply done again later
            done, _ = await asyncio.wait([writer], timeout=timeout)
            if not done:  # the store hangs: give up on that batch
                writer.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.flush(max(deadline - time.monotonic(), 0.0))

    async def _cleanup(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except Exception as exc:
                log.warning("call log retention failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self._cleanup_interval)

    async def apply_retention(self) -> tuple[int, int]:
        """Delete what is past retention, in small batches; (records, rollup rows)."""
        now = self._clock()
        records = rollups = 0
        if self._retention:
            records = await _drain(self._store.delete_call_logs_before, now - self._retention)
        if self._usage_retention:
            before = now - self._usage_retention
            rollups += await _drain(self._store.delete_usage_before, before, periods=(60, 1440))
        if self._minute_usage_retention:
            before = now - self._minute_usage_retention
            rollups += await _drain(self._store.delete_usage_before, before, periods=(1,))
        if records or rollups:
            log.info("call log retention applied", extra={"records": records, "rollups": rollups})
        return records, rollups


async def _drain(delete: Callable[..., Awaitable[int]], before: float, **options: object) -> int:
    total = 0
    while True:
        count = await delete(before, limit=_CLEANUP_BATCH, **options)
        total += count
        if count < _CLEANUP_BATCH:
            return total
        await asyncio.sleep(_CLEANUP_PAUSE)  # let calls and other writers in
