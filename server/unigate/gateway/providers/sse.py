"""Server-sent events, parsed as the WHATWG spec says, from an aiohttp body.

The body is read in network chunks, not lines, so one very long line (a whole
tool call's arguments in one event) is fine. Lines end in CRLF, LF or CR; bytes
that are not UTF-8 become U+FFFD rather than an exception; an event the body
ends in the middle of is dropped, as the spec says.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import StreamReader

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


async def iter_sse(content: StreamReader) -> AsyncIterator[SseEvent]:
    """Yield each event of an SSE stream; comments and retry/id fields are skipped."""
    parser = _Parser()
    async for chunk in content.iter_any():
        for event in parser.feed(chunk, final=False):
            yield event
    for event in parser.feed(b"", final=True):
        yield event


class _Parser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes, *, final: bool) -> list[SseEvent]:
        buffer = self._buffer + self._decoder.decode(chunk, final)
        # A CR at the very end may be the first half of a CRLF: wait for more, unless done.
        limit = len(buffer) - 1 if buffer.endswith("\r") and not final else len(buffer)
        events: list[SseEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer, 0, limit):
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
