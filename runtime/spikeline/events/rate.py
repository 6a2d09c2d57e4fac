"""What an event source lets through: events in time order, at most `max_rate` events per second.

A flood (a camera pointed at flicker, a hostile UDP sender) must not break the pipeline's latency budget, so
every event source passes its events through an `EventGate` before the pipeline's queue:

- order: an event earlier than one already let through is dropped and counted (`out_of_order`); kernels
  need time order, and a stream that jumps back (a clock reset) is visible in the count instead of crashing
  a stage. A jump back of more than `reset_us` is taken as a restarted sensor clock: the gate starts over.
- rate: a token bucket on this host's clock (the events' mapped local times) with `max_rate` events/s and
  bursts of up to `max_rate * burst_s`. When a chunk brings more events than there are tokens, the gate keeps
  an evenly spread subset of the chunk (every k-th event, so the scene stays covered in space and time
  instead of losing its newest part) and counts the rest (`dropped_rate`).

Everything is vectorised: no Python per event.
"""

from __future__ import annotations

import numpy as np

from ..chunk import Events


class EventGate:
    def __init__(self, max_rate: float, burst_s: float = 0.02, reset_us: int = 1_000_000) -> None:
        if not max_rate >= 0:
            raise ValueError(f"max_rate must be >= 0 events/s (0 = no cap), got {max_rate}")
        if not burst_s > 0:
            raise ValueError(f"burst_s must be > 0, got {burst_s}")
        self.max_rate = float(max_rate)
        self.capacity = max(1.0, self.max_rate * burst_s)
        self.reset_us = int(reset_us)
        self.tokens = self.capacity
        self._t_tokens: float | None = None
        self.last_t: int | None = None  # newest sensor time let through
        self.dropped_rate = 0
        self.out_of_order = 0
        self.clock_resets = 0

    def admit(self, ev: Events, now: float) -> Events:
        """The events of `ev` that pass (a view or a new array); `now` = local time of the chunk's newest event."""
        if len(ev) == 0:
            return ev
        ev = self._order(ev)
        if self.max_rate > 0 and len(ev):
            ev = self._rate(ev, now)
        return ev

    def _order(self, ev: Events) -> Events:
        t = ev["t"]
        if self.last_t is not None and int(t[0]) < self.last_t - self.reset_us:
            self.clock_resets += 1  # the sensor clock started over: a new time line, not stale events
            self.last_t = None
        floor = np.maximum.accumulate(t)
        if self.last_t is not None:
            np.maximum(floor, self.last_t, out=floor)
        ok = t >= floor
        n_bad = len(ev) - int(np.count_nonzero(ok))
        if n_bad:
            self.out_of_order += n_bad
            ev = ev[ok]
        if len(ev):
            self.last_t = int(ev["t"][-1])
        return ev

    def _rate(self, ev: Events, now: float) -> Events:
        if self._t_tokens is not None:
            self.tokens = min(self.capacity, self.tokens + max(0.0, now - self._t_tokens) * self.max_rate)
        self._t_tokens = now
        n = len(ev)
        if n <= self.tokens:
            self.tokens -= n
            return ev
        keep = int(self.tokens)
        self.tokens -= keep
        self.dropped_rate += n - keep
        if keep == 0:
            return ev[:0]
        # every k-th event (k = n / keep, not an integer in general): indices floor(i * n / keep)
        idx = (np.arange(keep, dtype=np.int64) * n) // keep
        return ev[idx]

    def reset(self) -> None:
        self.tokens = self.capacity
        self._t_tokens = None
        self.last_t = None
