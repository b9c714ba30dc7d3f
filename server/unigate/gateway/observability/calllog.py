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
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


def _json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)


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
        backoff = 0.0
        while True:
            if len(self._queue) < self._batch_size:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()  # the first record of the next batch
                # Then give the batch until flush_interval to fill up.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
            if await self._write_batch():
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
                await asyncio.sleep(backoff)

    def _batch(self) -> list[CallLog]:
        batch = []
        for entry, bodies in list(self._queue)[: self._batch_size]:
            if bodies is not None and entry.request_body is None:
                entry.request_body = _truncated(self._redact(_json(bodies.request)))
                parts = [_json(message) for message in bodies.responses]
                text = parts[0] if len(parts) == 1 else "[" + ",".join(parts) + "]"
                entry.response_body = _truncated(self._redact(text))
            batch.append(entry)
        return batch

    async def _write_batch(self) -> bool:
        """Write the oldest batch; False (batch kept) when the store failed. One
        batch at a time: the background task and flush() never take the same one."""
        async with self._writing:
            return await self._write_oldest()

    async def _write_oldest(self) -> bool:
        batch = self._batch()
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.flush(timeout)

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
