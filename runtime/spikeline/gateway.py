"""Gateway mode: one pipeline serving many devices (smartwatches) that stream the same kind of signal.

Each device gets a *slot*: a row in every stateful kernel's stream dimension. A `DeviceTable` admits the
samples a transport received for a device: it maps the device's sample indices and clock onto the pipeline's
(gaps and duplicates found from the index, an online offset/drift estimate from the timestamps), retires a
device that has gone quiet for `idle_timeout_s` (its slot's state is reset and freed, listeners are told) and
re-admits it when it returns. Everything is per frame (one device's batch of samples), never per sample.

Clock mapping: a device's timestamp d (µs, its own clock) becomes local monotonic time
    local = a + b · d
with the line fitted through the lower envelope of (d, arrival) pairs: arrival = true time + transport delay,
and the least-delayed sample of each `window_s` window is the best witness of the clock offset. Until
`MIN_DRIFT_WINDOWS` windows are seen, b = 1 (offset only: over a few seconds a crystal's drift is below the
transport's jitter); then b is the least-squares slope through the last `windows` minima (drift), clamped to
±1000 ppm. A sample is never mapped later than its arrival.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

log = logging.getLogger("spikeline.gateway")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_DRIFT = 1e-3  # |b - 1| above 1000 ppm is not a watch's crystal: clamp
MIN_DRIFT_WINDOWS = 4  # minima needed before the slope (drift) is estimated


class ClockMap:
    """Device clock (µs) -> local monotonic seconds, from (device time, arrival) pairs."""

    __slots__ = ("_cur", "_win", "a", "b", "n_windows", "window_s", "windows")

    def __init__(self, window_s: float = 2.0, windows: int = 8) -> None:
        self.window_s = window_s
        self.windows = windows
        self._win: deque[tuple[float, float]] = deque(maxlen=windows)  # (device s, arrival) minima
        self._cur: tuple[float, float, float] | None = None  # (window start arrival, device s, offset) best so far
        self.a = math.nan
        self.b = 1.0
        self.n_windows = 0

    def observe(self, d_us: int, arrival: float) -> None:
        """One pair: the newest sample of a frame and the frame's arrival time. The line is refitted only when
        a window closes or the current window's minimum falls (nothing else can move it)."""
        d = d_us * 1e-6
        off = arrival - d
        cur = self._cur
        if cur is None or arrival - cur[0] >= self.window_s:
            if cur is not None:
                self._win.append((cur[1], cur[1] + cur[2]))
                self.n_windows += 1
            self._cur = (arrival, d, off)
        elif off < cur[2]:
            self._cur = (cur[0], d, off)
        else:
            return
        self._fit()

    def _fit(self) -> None:
        assert self._cur is not None
        pts = [*self._win, (self._cur[1], self._cur[1] + self._cur[2])]
        if len(pts) < MIN_DRIFT_WINDOWS:
            self.b = 1.0
            self.a = min(y - x for x, y in pts)
            return
        # least squares through at most `windows` + 1 points (plain floats beat numpy at this size), centred on
        # the first point so that epoch-sized device times keep their precision
        k = len(pts)
        x0, y0 = pts[0]
        xs = [x - x0 for x, _ in pts]
        ys = [y - y0 for _, y in pts]
        xm = sum(xs) / k
        ym = sum(ys) / k
        den = sum((x - xm) * (x - xm) for x in xs)
        b = sum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True)) / den if den > 0 else 1.0
        b = min(max(b, 1.0 - MAX_DRIFT), 1.0 + MAX_DRIFT)
        # the line through the lowest point at that slope: no witness lies below it
        self.b = b
        self.a = min(y - b * x for x, y in pts)

    def map(self, d_us: npt.ArrayLike, arrival: float) -> F64:
        t = self.a + self.b * (np.asarray(d_us, dtype=np.float64) * 1e-6)
        return np.minimum(t, arrival)

    def reset(self) -> None:
        self._win.clear()
        self._cur = None
        self.a = math.nan
        self.b = 1.0
        self.n_windows = 0


@dataclass
class Device:
    name: str
    slot: int
    clock: ClockMap
    next_index: int | None = None  # the sample index expected next
    last_seen: float = 0.0
    admitted: float = 0.0
    samples: int = 0
    lost: int = 0  # samples missing between indices (gaps)
    duplicates: int = 0  # samples received again (index already seen)
    rejected: dict[str, int] = field(default_factory=dict)  # payloads refused, by reason
    readmissions: int = 0
    late_s: float = 0.0  # lateness of its newest sample on arrival (arrival - mapped time), smoothed
    late_max_s: float = 0.0


@dataclass
class Admitted:
    """What a frame contributes to the next chunk: rows keep[...] of its data, their indices and times."""

    slot: int
    keep: slice | npt.NDArray[np.intp]
    index: I64
    t: F64


class DeviceTable:
    """Devices by name, each with a slot in [0, capacity). Lives on the event loop thread."""

    def __init__(self, capacity: int, idle_timeout_s: float = 10.0, clock_window_s: float = 2.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 device, got {capacity}")
        self.capacity = capacity
        self.idle_timeout_s = idle_timeout_s
        self.clock_window_s = clock_window_s
        self.by_name: dict[str, Device] = {}
        self.by_slot: list[Device | None] = [None] * capacity
        self._free = list(range(capacity - 1, -1, -1))
        self._retired: dict[str, Device] = {}  # counters of devices that went quiet, kept for when they return
        self.refused = 0  # frames from new devices while every slot was taken
        self.unknown_rejected: dict[str, dict[str, int]] = {}  # refused payloads from names never admitted
        self.retirements = 0
        self._on_retire: list[Callable[[int], None]] = []
        self._events: deque[tuple[str, str]] = deque(maxlen=1000)  # (device, "admitted"/"retired"/...)

    def on_retire(self, fn: Callable[[int], None]) -> None:
        """`fn(slot)` when a device is retired: stages reset that slot's state."""
        self._on_retire.append(fn)

    def name(self, slot: int) -> str:
        d = self.by_slot[slot]
        return d.name if d is not None else f"slot{slot}"

    def __len__(self) -> int:
        return len(self.by_name)

    def device(self, name: str, now: float) -> Device | None:
        """The device's entry, admitting it (or re-admitting a retired one) if there is a free slot."""
        d = self.by_name.get(name)
        if d is not None:
            return d
        if not self._free:
            self.refused += 1
            return None
        slot = self._free.pop()
        old = self._retired.pop(name, None)
        if old is not None:  # back after going quiet: its counters continue, its stream starts afresh
            d = old
            d.slot, d.next_index, d.admitted = slot, None, now
            d.clock.reset()
            d.readmissions += 1
            self._events.append((name, "readmitted"))
        else:
            d = Device(name=name, slot=slot, clock=ClockMap(self.clock_window_s), admitted=now)
            self._events.append((name, "admitted"))
        d.last_seen = now
        self.by_name[name] = d
        self.by_slot[slot] = d
        log.info("device %s admitted (slot %d, %d active)", name, slot, len(self.by_name))
        return d

    def _advance(self, d: Device, first: int, n: int, arrival: float) -> int | None:
        """Move `d`'s expected index past a frame of n samples from index `first`, counting a gap or the
        samples seen before. Returns how many leading samples are duplicates (to skip), None if all are."""
        d.last_seen = arrival
        skip = 0
        nxt = d.next_index
        if nxt is not None:
            if first < nxt:  # some or all already seen (or the device restarted its counter)
                if first + n <= nxt and nxt - first > 10 * max(n, 50):
                    # far behind: the device restarted (reboot); start its index line again
                    d.next_index = None
                else:
                    skip = nxt - first
                    d.duplicates += min(skip, n)
                    if skip >= n:
                        return None
            elif first > nxt:
                d.lost += first - nxt
        d.next_index = first + n
        d.samples += n - skip
        return skip

    def _observe(self, d: Device, last_us: int, arrival: float) -> None:
        """The clock witness (the frame's newest kept sample) and the device's lateness."""
        c = d.clock
        c.observe(last_us, arrival)
        late = arrival - min(c.a + c.b * (last_us * 1e-6), arrival)  # arrival - the newest sample's mapped time
        d.late_s += 0.1 * (late - d.late_s)
        if late > d.late_max_s:
            d.late_max_s = late

    def admit(self, d: Device, first_index: int | None, t_us: I64, arrival: float) -> Admitted | None:
        """A frame of len(t_us) consecutive samples from `d` (first_index None: indices from the timestamps
        and the period, done by the caller). Returns the rows to keep (not duplicates) with their indices and
        local times, and counts gaps and duplicates."""
        n = len(t_us)
        d.last_seen = arrival
        if n == 0:
            return None
        assert first_index is not None
        skip = self._advance(d, first_index, n, arrival)
        if skip is None:
            return None
        tk = t_us[skip:]
        self._observe(d, int(tk[-1]), arrival)
        idx = first_index + np.arange(skip, n, dtype=np.int64)
        return Admitted(d.slot, slice(skip, None), idx, d.clock.map(tk, arrival))

    def admit_frame(self, d: Device, first: int, n: int, t0_us: int, period_us: int,
                    arrival: float) -> int | None:
        """`admit` for a frame on a regular grid (sample i at t0_us + i * period_us), without arrays: returns
        how many leading samples to skip (duplicates), None to drop the frame. The rows' local times are
        `d.clock.map` of their device times, as they stand after this call."""
        if n <= 0:
            d.last_seen = arrival
            return None
        skip = self._advance(d, first, n, arrival)
        if skip is not None:
            self._observe(d, t0_us + (n - 1) * period_us, arrival)
        return skip

    def reject(self, name: str, reason: str) -> None:
        """Count a payload refused from `name` (a device, or a would-be device that never sent a valid one)."""
        d = self.by_name.get(name) or self._retired.get(name)
        if d is not None:
            d.rejected[reason] = d.rejected.get(reason, 0) + 1
            return
        if name not in self.unknown_rejected and len(self.unknown_rejected) >= 10_000:
            name = "(others)"  # bounded: a flood of made-up names cannot grow this without end
        r = self.unknown_rejected.setdefault(name, {})
        r[reason] = r.get(reason, 0) + 1

    def sweep(self, now: float | None = None) -> list[str]:
        """Retire devices quiet for idle_timeout_s; returns their names."""
        now = time.monotonic() if now is None else now
        gone = [d for d in self.by_name.values() if now - d.last_seen >= self.idle_timeout_s]
        for d in gone:
            del self.by_name[d.name]
            self.by_slot[d.slot] = None
            for fn in self._on_retire:
                fn(d.slot)
            self._free.append(d.slot)
            d.slot = -1
            self._retired[d.name] = d
            self.retirements += 1
            self._events.append((d.name, "retired"))
            log.info("device %s retired after %.1f s without data (%d active)", d.name, now - d.last_seen,
                     len(self.by_name))
        return [d.name for d in gone]

    def events(self) -> list[tuple[str, str]]:
        """Admissions and retirements since the last call."""
        out = list(self._events)
        self._events.clear()
        return out

    def totals(self) -> dict[str, int]:
        every = [*self.by_name.values(), *self._retired.values()]
        rejected = sum(sum(d.rejected.values()) for d in every) + sum(
            sum(r.values()) for r in self.unknown_rejected.values())
        return {"active_devices": len(self.by_name), "known_devices": len(every),
                "samples": sum(d.samples for d in every), "lost": sum(d.lost for d in every),
                "duplicates": sum(d.duplicates for d in every), "rejected": rejected,
                "retirements": self.retirements, "refused_no_slot": self.refused}

    def per_device(self, limit: int = 20) -> dict[str, dict[str, int | float]]:
        """The devices with the most trouble (lost + duplicates + rejected, then lateness), for the metrics
        topic: per device its samples, lost, duplicates, refused payloads, lateness (smoothed and max, ms: how
        long after its sampling time a sample arrived, i.e. the transport's delay above its least-delayed
        sample) and estimated clock drift."""
        every = [*self.by_name.values(), *self._retired.values()]
        worst = sorted(every, key=lambda d: (-(d.lost + d.duplicates + sum(d.rejected.values())), -d.late_s))[:limit]
        return {d.name: {"samples": d.samples, "lost": d.lost, "duplicates": d.duplicates,
                         "rejected": sum(d.rejected.values()), "active": int(d.slot >= 0),
                         "late_ms": round(d.late_s * 1e3, 3), "late_max_ms": round(d.late_max_s * 1e3, 3),
                         "drift_ppm": round((d.clock.b - 1.0) * 1e6, 1)} for d in worst}
