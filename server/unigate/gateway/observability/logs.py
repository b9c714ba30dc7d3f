"""Process logs as JSON lines (or plain text for a terminal), request id included.

Records are formatted and written by a background thread: the event loop only
puts them on a bounded queue, so a slow or blocked stderr (a full pipe to a log
shipper) never stalls calls. When the queue is full, records are dropped and
counted rather than waited for; `stop()` flushes what is queued at exit.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from unigate.gateway import callstate

# Attributes every LogRecord has; anything else was passed in `extra` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        return f"{line} {' '.join(extras)}" if extras else line


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Queue records without ever blocking; count those a full queue turns away."""

    def __init__(self, capacity: int) -> None:
        self.records: queue.Queue[Any] = queue.Queue(capacity)
        super().__init__(self.records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Resolve what may not survive the trip (arguments, the live traceback),
        # but leave the JSON formatting to the writer thread.
        record = copy.copy(record)
        # The call a record was logged in, read here in the caller's context.
        if not hasattr(record, "request_id") and (rid := callstate.request_id.get()):
            record.request_id = rid
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _Listener(logging.handlers.QueueListener):
    def __init__(self, records: queue.Queue[Any], writer: logging.Handler) -> None:
        super().__init__(records, writer)
        self._records = records

    def enqueue_sentinel(self) -> None:
        # The queue may be full: wait for the writer to make room, but not forever.
        self._records.put(None, timeout=5)


class LogPipeline:
    """The running log writer: `stop()` flushes it."""

    def __init__(self, handler: _DroppingQueueHandler, listener: logging.handlers.QueueListener):
        self._handler = handler
        self._listener = listener

    @property
    def dropped(self) -> int:
        return self._handler.dropped

    def stop(self) -> None:
        """Write out what is queued (giving up after ~5 s if the stream is stuck)."""
        with contextlib.suppress(queue.Full):
            self._listener.stop()


def configure_logging(
    level: str = "info", fmt: str = "json", *, stream: TextIO | None = None, capacity: int = 10_000
) -> LogPipeline:
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler = _DroppingQueueHandler(capacity)
    listener = _Listener(handler.records, writer)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    listener.start()
    return LogPipeline(handler, listener)
