"""Per-call state that travels with the call's task, for every layer to read."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("unigate_request_id", default="")
