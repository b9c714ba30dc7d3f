"""The base of every vendor's SSE stream translator: pure, one per stream, fed events in order.

Text and tool-call deltas go out as they arrive. The finish reason (and the usage, which
vendors send at or after it) is held back for one last message, sent at the vendor's end marker
([DONE], message_stop) or, for vendors without one, when the body ends. A body that ends before
the answer finished is UNAVAILABLE, never a silently truncated answer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from unigate.gateway.providers.common import unfinished_stream
from unigate.gateway.providers.sse import SseEvent
from unigate.gateway.providers.transport import Target
from unigate.v1 import inference_pb2 as pb

StreamMessage = TypeVar("StreamMessage", pb.StreamChatResponse, pb.StreamCompleteResponse)


class SseTranslator(Generic[StreamMessage]):
    """Subclasses translate events in `read`, set `_id`, `_model`, `_finish` and `_usage` as
    they learn them, and call `_stop()` at the vendor's end marker."""

    message_type: ClassVar[type[Any]]

    def __init__(self, target: Target, *, fallback_id: str, provider: str) -> None:
        self._target = target
        self._id = fallback_id
        self._model = ""
        self._provider = provider
        self._finish: pb.FinishReason | None = None
        self._usage: pb.Usage | None = None
        self.done = False

    def read(self, event: SseEvent) -> list[StreamMessage]:
        """Translate one SSE event."""
        raise NotImplementedError

    def end(self) -> list[StreamMessage]:
        """The body ended: the last message if the answer had finished, else UNAVAILABLE."""
        if self.done:
            return []
        if not self._complete():
            raise unfinished_stream(self._target)
        return self._stop()

    def _complete(self) -> bool:
        """Whether the answer is whole without the vendor's end marker."""
        return self._finish is not None

    def _stop(self) -> list[StreamMessage]:
        self.done = True
        if self._finish is None:
            raise unfinished_stream(self._target)
        return [self._message(finish_reason=self._finish, usage=self._final_usage())]

    def _final_usage(self) -> pb.Usage | None:
        return self._usage

    def _message(self, **fields: Any) -> StreamMessage:
        message: StreamMessage = self.message_type(
            id=self._id, model=self._model, provider=self._provider, **fields
        )
        return message
