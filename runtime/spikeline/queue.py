"""The bounded queue between a source and a pipeline's stages.

Capacity is counted in samples or events (configured in seconds of signal), never in Python objects. When a
chunk would overflow it, the oldest samples are dropped and counted (`drop_oldest`): a live decoder
wants the newest signal, and the gap is visible downstream in `seq`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .chunk import Chunk, EventChunk


class SampleQueue:
    """Single-consumer bounded queue of Chunks, owned by the event loop thread.

    Sources running in threads hand chunks over with `loop.call_soon_threadsafe(queue.put, chunk)`.
    """

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples < 1:
            raise ValueError(f"queue capacity must be >= 1 sample, got {capacity_samples}")
        self.capacity = capacity_samples
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()  # set when `get` makes room (producers that must not lose samples)
        self._closed = False
        self.dropped = 0  # samples dropped by the overflow policy, ever
        self.high_water = 0

    def __len__(self) -> int:
        """Samples waiting."""
        return self._size

    def put(self, chunk: Chunk) -> None:
        n = len(chunk)
        if self._closed:
            return
        if n == 0:
            if isinstance(chunk, EventChunk) and chunk.is_tick:  # time passes on a quiet event stream
                if self._chunks and isinstance(last := self._chunks[-1], EventChunk) and last.is_tick:
                    self._chunks[-1] = chunk  # a newer tick says all an older one said
                else:
                    self._chunks.append(chunk)
                self._ready.set()
            return
        if n > self.capacity:
            self.dropped += n - self.capacity
            chunk = chunk.take(n - self.capacity)
            n = self.capacity
        excess = self._size + n - self.capacity
        while excess > 0:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped += len(head)
                excess -= len(head)
            else:
                self._chunks[0] = head.take(excess)
                self._size -= excess
                self.dropped += excess
                excess = 0
        self._chunks.append(chunk)
        self._size += n
        self.high_water = max(self.high_water, self._size)
        self._ready.set()

    async def wait_room(self, n: int) -> None:
        """Wait until `min(n, capacity)` more samples fit without dropping (or the queue is closed).

        For producers that must not lose samples (file replay as fast as possible): they wait here, then
        `put` at most `capacity` samples. Live sources never call it; `put` keeps its drop_oldest policy.
        """
        n = min(n, self.capacity)
        while self._size + n > self.capacity and not self._closed:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """No more input: `get` drains what is left, then returns None."""
        self._closed = True
        self._ready.set()
        self._room.set()

    async def get(self) -> Chunk | None:
        while not self._chunks:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._room.set()
        return chunk
