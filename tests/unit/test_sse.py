"""The SSE parser, against the WHATWG event-stream rules and bodies cut at awkward places."""

from __future__ import annotations

import asyncio

from tests.fakes import body_reader
from unigate.gateway.providers.sse import SseEvent, iter_sse


async def parse(*chunks: bytes) -> list[SseEvent]:
    return [event async for event in iter_sse(body_reader(chunks))]


async def test_one_event_per_blank_line() -> None:
    events = await parse(b'data: {"a":1}\n\ndata: [DONE]\n\n')
    assert events == [SseEvent("message", '{"a":1}'), SseEvent("message", "[DONE]")]


async def test_multi_line_data_is_joined_with_newlines() -> None:
    events = await parse(b"data: first\ndata: second\ndata:\ndata: fourth\n\n")
    assert events == [SseEvent("message", "first\nsecond\n\nfourth")]


async def test_comments_and_unknown_fields_are_skipped() -> None:
    body = b": keep-alive\n\nid: 7\nretry: 1000\nfoo: bar\ndata: x\n: inside\n\n"
    body += b": OPENROUTER PROCESSING\n\n"
    assert await parse(body) == [SseEvent("message", "x")]


async def test_only_one_leading_space_is_dropped() -> None:
    events = await parse(b"data:no-space\n\ndata:  two spaces\n\n")
    assert [e.data for e in events] == ["no-space", " two spaces"]


async def test_crlf_line_endings() -> None:
    events = await parse(b"event: delta\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n")
    assert events == [SseEvent("delta", "a\nb"), SseEvent("message", "c")]


async def test_event_name_applies_to_one_event_only() -> None:
    events = await parse(b"event: error\ndata: {}\n\ndata: next\n\n")
    assert [e.event for e in events] == ["error", "message"]


async def test_event_without_data_is_not_dispatched() -> None:
    assert await parse(b"event: ping\n\ndata: x\n\n") == [SseEvent("message", "x")]


async def test_events_split_across_network_chunks() -> None:
    body = 'data: {"text":"héllo"}\n\ndata: [DONE]\n\n'.encode()
    expected = [SseEvent("message", '{"text":"héllo"}'), SseEvent("message", "[DONE]")]
    for cut in range(1, len(body)):
        assert await parse(body[:cut], body[cut:]) == expected, f"cut at byte {cut}"
    assert await parse(*(bytes([b]) for b in body)) == expected


async def test_events_arrive_as_the_body_arrives() -> None:
    reader = body_reader([b"data: one\n\nda"], eof=False)
    events = iter_sse(reader)
    assert await anext(events) == SseEvent("message", "one")
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.01)
    assert not pending.done()  # "da" is not an event yet
    reader.feed_data(b"ta: two\n\n")
    assert await asyncio.wait_for(pending, 1) == SseEvent("message", "two")
    reader.feed_eof()
    assert [e async for e in events] == []


async def test_an_event_cut_off_by_the_end_of_the_body_is_dropped() -> None:
    assert await parse(b"data: whole\n\ndata: half") == [SseEvent("message", "whole")]
    assert await parse(b"data: whole\n\ndata: half\n") == [SseEvent("message", "whole")]


async def test_bare_cr_line_endings_and_a_crlf_split_across_chunks() -> None:
    assert await parse(b"data: a\r\rdata: b\r\r") == [
        SseEvent("message", "a"),
        SseEvent("message", "b"),
    ]
    assert await parse(b"data: a\r", b"\n\r", b"\n") == [SseEvent("message", "a")]


async def test_a_line_longer_than_aiohttps_line_limit() -> None:
    long = "x" * 300_000
    assert await parse(f"data: {long}\n\n".encode()) == [SseEvent("message", long)]


async def test_bytes_that_are_not_utf8_do_not_raise() -> None:
    assert await parse(b"data: caf\xe9\n\n") == [SseEvent("message", "caf\ufffd")]
