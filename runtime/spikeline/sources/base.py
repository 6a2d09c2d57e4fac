"""What a source is: it opens a stream (learning its metadata), then hands chunks to the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..chunk import Chunk, StreamMeta
from ..metrics import PipelineMetrics
from ..params import Component
from ..queue import SampleQueue

SOURCES: dict[str, type[Source]] = {}


# Linux: ask the kernel how many datagrams it dropped on a socket (receive buffer full), in each recvmsg
SO_RXQ_OVFL: int | None = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)


class SourceError(Exception):
    """A source cannot start or continue (nothing found, wrong format, ...). The message says why."""


@dataclass
class SourceContext:
    pipeline: str
    budget_s: float
    stale_s: float  # samples older than this when received are skipped (stale-data guard)
    queue_s: float
    metrics: PipelineMetrics
    # The pipeline's bounded queue, set once the stream is open (before `run`): a file or other replayable
    # source may wait for room in it (`wait_room`) instead of having its samples dropped.
    queue: SampleQueue | None = None
    # The node's MQTT connection settings (for sources that subscribe: watch_mqtt), when it has one.
    mqtt: Any = None


class Source(Component):
    registry = SOURCES  # type: ignore[assignment]

    def __init__(self, p: dict[str, Any], ctx: SourceContext) -> None:
        self.p = p
        self.ctx = ctx

    async def open(self) -> StreamMeta:
        """Find and connect to the stream; raise SourceError with a clear message when it cannot."""
        raise NotImplementedError

    async def run(self, put: Callable[[Chunk], None]) -> None:
        """Produce chunks with `put` (on the event loop thread) until `stop()` or end of stream."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask `run` to return soon (called on the event loop thread)."""

    async def close(self) -> None:
        """Release what `open` acquired (connections, inlets), once the pipeline has ended, whether `run` ran or
        not. Called once."""

    @property
    def lossless(self) -> bool:
        """True for a source that waits for room in the queue instead of dropping (a file replayed as fast as
        possible): its input is never late, so the pipeline's lateness policy does not skip any of it."""
        return False


async def sleep_until(due: float, stopping: asyncio.Event) -> bool:
    """Sleep until monotonic time `due` (a paced replay's next hand-over); False if `stopping` was set meanwhile."""
    delay = due - time.monotonic()
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
    return not stopping.is_set()
