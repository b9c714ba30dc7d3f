"""The access log: one line per call, batched off the hot path.

A call costs one dict and one orjson.dumps appended to a buffer; a background
task hands the buffer to a thread to write every `interval` seconds, so neither
formatting through the logging module nor a slow stderr touches the call. A full
buffer drops lines and counts them. `close()` writes out what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from typing import BinaryIO

import orjson


class AccessLog:
    def __init__(
        self,
        stream: BinaryIO | None = None,
        *,
        text: bool = False,
        capacity: int = 10_000,
        interval: float = 0.1,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._text = text
        self._capacity = capacity
        self._interval = interval
        self._lines: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def depth(self) -> int:
        return len(self._lines)

    def record(self, fields: dict[str, object]) -> None:
        if len(self._lines) >= self._capacity:
            self.dropped += 1
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        if self._text:
            pairs = " ".join(f"{key}={value}" for key, value in fields.items())
            self._lines.append(f"{now} INFO unigate.access: call {pairs}".encode())
        else:
            entry = {"ts": now, "level": "info", "logger": "unigate.access", "msg": "call"}
            self._lines.append(orjson.dumps(entry | fields))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="access-log")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        await asyncio.to_thread(self._write, b"\n".join(lines) + b"\n")

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
