"""Fakes that speak real wire formats, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from unittest import mock

from aiohttp import StreamReader


def body_reader(chunks: Iterable[bytes], *, eof: bool = True) -> StreamReader:
    """An aiohttp response body that has already received `chunks`, as the network cut them."""
    reader = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader
