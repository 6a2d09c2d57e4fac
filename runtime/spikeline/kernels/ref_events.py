"""Pure-numpy references for the event-camera kernels in ext/evkernels.pyx (spikeline._ext.evkernels).

Every class here has the compiled class's constructor, methods, properties, validation, error
messages and counters (the compiled class has the same name without the `Ref` suffix). Outputs are
identical: bit for bit for the filters, frames, voxel grids and the HD-SNN with integer-valued
weights; the time surface's exp() may differ from the C library's by one float64 ulp, i.e. by at
most one float32 ulp after rounding (tests/test_event_kernels.py states and checks that bound).

Common rules (every kernel):
- input: a 1-d `spikeline.chunk.EVENT_DTYPE` array (t int64 µs, x/y uint16, p int8), read-only is
  fine, never modified; a non-contiguous view is copied once;
- time order: within a chunk and across chunks (and after a flush) times never go backwards,
  otherwise ValueError; x < width, y < height and p in {0, 1}, otherwise ValueError. A chunk that
  fails validation leaves the state untouched (checked before anything is changed);
- any split of a stream into chunks gives identical outputs, state and counters.

The kernels (semantics documented in their classes):
- `RefractoryFilterRef`, `BackgroundActivityFilterRef`: tonic 1.7's `RefractoryPeriod` / `Denoise`;
- `TimeSurfaceRef`: per-pixel, per-polarity last time; surfaces exp(-(t - t_last) / tau);
- `EventFramesRef`, `VoxelGridRef`: fixed time windows, tonic's `ToFrame(time_window=)` /
  `ToVoxelGrid` per window;
- `HDSNNRef`: heterogeneous-delay spiking layer (Grimaldi & Perrinet 2023), computed densely from
  the formula (not with the compiled kernel's ring buffer).

These are the fallback when the extension is not built and the oracle the compiled kernels are
tested against; the filters and the HD-SNN loop in Python and are orders of magnitude slower.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from spikeline.chunk import EVENT_DTYPE, Events, empty_events

__all__ = [
    "MAX_OUTPUT_BYTES",
    "BackgroundActivityFilterRef",
    "EventFramesRef",
    "HDSNNRef",
    "RefractoryFilterRef",
    "TimeSurfaceRef",
    "VoxelGridRef",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

# "No event yet": the time before which nothing is refused.
T_NONE: Final = np.iinfo(np.int64).min
# A push or flush of the binning kernels that would return more than this many bytes of frames is
# refused (ValueError, state unchanged) instead of exhausting memory (a long silence between two
# events with a short window: every empty window is returned as a zero frame).
MAX_OUTPUT_BYTES: Final = 1 << 30

# First problem found in an event, in the order they are checked.
BAD_TIME, BAD_X, BAD_Y, BAD_P = 1, 2, 3, 4


# --- validation shared with the compiled kernels (same messages) -----------------------------------

def _int(name: str, value: Any, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _sensor(width: Any, height: Any) -> tuple[int, int]:
    w, h = _int("width", width, 1), _int("height", height, 1)
    if w > 65536 or h > 65536:
        raise ValueError(f"sensor size ({w}, {h}) exceeds the uint16 coordinate range")
    return w, h


def _polarities(polarities: Any) -> int:
    p = _int("polarities", polarities, 1)
    if p > 2:
        raise ValueError(f"polarities must be 1 (ignore polarity) or 2 (OFF, ON), got {p}")
    return p


def _t0(t0_us: Any) -> int | None:
    return None if t0_us is None else _int("t0_us", t0_us, -(1 << 62))


def _tau(tau_us: Any) -> float:
    try:
        tau = float(tau_us)
    except (TypeError, ValueError):
        raise ValueError(f"tau_us must be a positive number, got {tau_us!r}") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau_us must be a positive finite number, got {tau_us!r}")
    return tau


def _events(events: Any) -> Events:
    """The events as a C-contiguous 1-d EVENT_DTYPE array (never modified; copied only if strided)."""
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        dtype = getattr(events, "dtype", type(events).__name__)
        shape = getattr(events, "shape", None)
        raise ValueError("events must be a 1-d spikeline.chunk.EVENT_DTYPE array "
                         f"(t int64, x uint16, y uint16, p int8), got {dtype} with shape {shape}")
    return events if events.flags.c_contiguous else np.ascontiguousarray(events)


def _raise_bad_event(ev: Events, i: int, kind: int, t_prev: int, width: int, height: int) -> None:
    """The ValueError for the first bad event `i` (shared by both backends)."""
    e = ev[i]
    if kind == BAD_TIME:
        prev = t_prev if i == 0 else int(ev["t"][i - 1])
        raise ValueError(f"events[{i}]: time {int(e['t'])} us goes backwards (previous event or flush at {prev} us); "
                         "events must be in time order")
    if kind == BAD_X:
        raise ValueError(f"events[{i}]: x={int(e['x'])} is outside the sensor (width {width})")
    if kind == BAD_Y:
        raise ValueError(f"events[{i}]: y={int(e['y'])} is outside the sensor (height {height})")
    raise ValueError(f"events[{i}]: polarity {int(e['p'])} is not 0 (OFF) or 1 (ON)")


def _check(ev: Events, t_prev: int, width: int, height: int) -> None:
    """ValueError for the first event that goes back in time, lies outside the sensor or has p not in {0, 1}."""
    if ev.shape[0] == 0:
        return
    t = ev["t"]
    prev = np.empty_like(t)
    prev[0] = t_prev
    prev[1:] = t[:-1]
    flags = [t < prev, ev["x"] >= width, ev["y"] >= height, (ev["p"] != 0) & (ev["p"] != 1)]
    bad = flags[0] | flags[1] | flags[2] | flags[3]
    if bad.any():
        i = int(np.argmax(bad))
        kind = next(k for k, f in enumerate(flags, start=1) if f[i])
        _raise_bad_event(ev, i, kind, t_prev, width, height)


def _out_events(out: Any, n: int) -> Events:
    if out is None:
        return empty_events(n)
    if not isinstance(out, np.ndarray) or out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous \
            or not out.flags.writeable:
        raise ValueError("out must be a writable C-contiguous 1-d EVENT_DTYPE array")
    if out.shape[0] < n:
        raise ValueError(f"out has room for {out.shape[0]} events, the chunk has {n}")
    return out


# --- denoising filters --------------------------------------------------------------------------

class RefractoryFilterRef:
    """Per-pixel refractory period: tonic 1.7 `tonic.transforms.RefractoryPeriod(delta=refractory_us)`.

    An event is kept iff t - t_prev > refractory_us, where t_prev is the time of the previous event
    at the same pixel, KEPT OR NOT, of either polarity (tonic updates its memory with every event).
    tonic initialises every pixel's memory to -refractory_us; so does this kernel, so a pixel's first
    event is kept iff t > 0 (only matters on a sensor clock that starts at 0). Streaming: the state is
    the per-pixel last time (absolute sensor time), so a whole recording in one call gives exactly
    tonic's output, and any split into chunks the same.

    `filter(events, out=None)` returns the kept events, in order: `out[:kept]` when a writable
    EVENT_DTYPE `out` with room for len(events) is given, else a view of a new array.
    """

    def __init__(self, width: int, height: int, refractory_us: int) -> None:
        self._w, self._h = _sensor(width, height)
        self._r = _int("refractory_us", refractory_us, 0)
        self._last = np.empty((self._h, self._w), np.int64)
        self.reset()

    def reset(self) -> None:
        self._last.fill(-self._r)
        self._t_prev = int(T_NONE)
        self._seen = 0
        self._kept = 0

    def filter(self, events: Events, out: Events | None = None) -> Events:
        ev = _events(events)
        _check(ev, self._t_prev, self._w, self._h)
        res = _out_events(out, ev.shape[0])
        n = ev.shape[0]
        if n == 0:
            return res[:0]
        pix = ev["y"].astype(np.int64) * self._w + ev["x"]
        t = ev["t"]
        order = np.argsort(pix, kind="stable")
        ps, ts = pix[order], t[order]
        prev = np.empty(n, np.int64)
        first = np.ones(n, bool)
        first[1:] = ps[1:] != ps[:-1]
        flat = self._last.reshape(-1)
        prev[first] = flat[ps[first]]
        prev[~first] = ts[:-1][~first[1:]]
        keep_sorted = ts - prev > self._r
        keep = np.empty(n, bool)
        keep[order] = keep_sorted
        last = np.ones(n, bool)
        last[:-1] = ps[1:] != ps[:-1]
        flat[ps[last]] = ts[last]
        k = int(keep.sum())
        res[:k] = ev[keep]
        self._t_prev = int(t[-1])
        self._seen += n
        self._kept += k
        return res[:k]

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def kept(self) -> int:
        return self._kept

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def refractory_us(self) -> int:
        return self._r

    @property
    def last_times(self) -> I64:
        """Copy of the per-pixel memory (height, width) int64: time of each pixel's last event."""
        return self._last.copy()


class BackgroundActivityFilterRef:
    """Background-activity ("denoise") filter: tonic 1.7 `tonic.transforms.Denoise(filter_time=filter_us)`.

    Per event at (x, y): first the pixel's memory is set to t (every event, kept or not, either
    polarity); then the event is kept iff one of its 4-neighbours (x±1, y), (x, y±1) inside the
    sensor has memory m with t - m < filter_us (strict; tonic stores m + filter_time and tests
    > t). The pixel's own past events do not count; diagonals do not count; an earlier event at the
    same time does count. tonic initialises the memory as if every pixel fired at t = 0; so does
    this kernel: on a sensor clock starting at 0 every event before filter_us that has a neighbour
    inside the sensor is kept (tonic's warm-up); on a clock far from 0 this has no effect.
    tonic takes the grid size from the recording's largest x and y; for t >= 0 that gives the
    same result as the true sensor size (an extra, never-fired neighbour column/row only matters
    when t < filter_us, when any existing neighbour already keeps the event).

    `filter(events, out=None)`: as `RefractoryFilterRef.filter`.
    """

    def __init__(self, width: int, height: int, filter_us: int) -> None:
        self._w, self._h = _sensor(width, height)
        self._f = _int("filter_us", filter_us, 0)
        self._last = np.empty((self._h, self._w), np.int64)
        self.reset()

    def reset(self) -> None:
        self._last.fill(0)
        self._t_prev = int(T_NONE)
        self._seen = 0
        self._kept = 0

    def filter(self, events: Events, out: Events | None = None) -> Events:
        ev = _events(events)
        _check(ev, self._t_prev, self._w, self._h)
        res = _out_events(out, ev.shape[0])
        n = ev.shape[0]
        if n == 0:
            return res[:0]
        w, h, f = self._w, self._h, self._f
        x = ev["x"].astype(np.int64)
        y = ev["y"].astype(np.int64)
        t = ev["t"]
        pix = y * w + x
        idx = np.arange(n, dtype=np.int64)
        # Sorted (pixel, index) keys: the latest event at pixel q before event k is a searchsorted away.
        keys = np.sort(pix * n + idx)
        flat = self._last.reshape(-1)
        keep = np.zeros(n, bool)
        for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nx, ny = x + dx, y + dy
            inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
            q = np.where(inside, ny * w + nx, 0)
            pos = np.searchsorted(keys, q * n + idx) - 1  # last key < (q, k): an event at q before k?
            cand = keys[np.maximum(pos, 0)]
            has = (pos >= 0) & (cand // n == q)
            tq = np.where(has, t[np.where(has, cand % n, 0)], flat[q])
            keep |= inside & (t - tq < f)
        last = np.ones(n, bool)
        ps = keys // n
        last[:-1] = ps[1:] != ps[:-1]
        flat[ps[last]] = t[keys[last] % n]
        k = int(keep.sum())
        res[:k] = ev[keep]
        self._t_prev = int(t[-1])
        self._seen += n
        self._kept += k
        return res[:k]

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def kept(self) -> int:
        return self._kept

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def filter_us(self) -> int:
        return self._f

    @property
    def last_times(self) -> I64:
        """Copy of the per-pixel memory (height, width) int64: time of each pixel's last event."""
        return self._last.copy()


# --- time surface -------------------------------------------------------------------------------

class TimeSurfaceRef:
    """Per-pixel, per-polarity time of the last event, sampled as exp(-(t - t_last) / tau_us).

    `update(events)` records the events (polarities=1: polarity ignored, one surface);
    `sample(t_us, out=None)` returns float32 (polarities, height, width): exp(-(t_us - t_last) / tau)
    computed in float64 and rounded once to float32, 0 where the pixel never fired. t_us must not be
    before the last event recorded (ValueError). tonic 1.7's `ToTimesurface(sensor_size, dt, tau)`
    on a whole recording equals: update with the events of [t_first + i·dt, t_first + (i+1)·dt),
    then sample at t_first + (i+1)·dt, for every complete window i (tests/test_event_kernels.py).
    """

    def __init__(self, width: int, height: int, tau_us: float, polarities: int = 2) -> None:
        self._w, self._h = _sensor(width, height)
        self._tau = _tau(tau_us)
        self._p = _polarities(polarities)
        self._last = np.empty((self._p, self._h, self._w), np.int64)
        self.reset()

    def reset(self) -> None:
        self._last.fill(T_NONE)
        self._t_prev = int(T_NONE)
        self._seen = 0

    def update(self, events: Events) -> None:
        ev = _events(events)
        _check(ev, self._t_prev, self._w, self._h)
        if ev.shape[0] == 0:
            return
        p = ev["p"].astype(np.intp) if self._p == 2 else np.zeros(ev.shape[0], np.intp)
        np.maximum.at(self._last, (p, ev["y"].astype(np.intp), ev["x"].astype(np.intp)), ev["t"])
        self._t_prev = int(ev["t"][-1])
        self._seen += ev.shape[0]

    def sample(self, t_us: int, out: F32 | None = None) -> F32:
        t = _int("t_us", t_us, -(1 << 62))
        if self._t_prev != T_NONE and t < self._t_prev:
            raise ValueError(f"sample time {t} us is before the last event recorded ({self._t_prev} us)")
        shape = (self._p, self._h, self._w)
        if out is None:
            out = np.empty(shape, np.float32)
        elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous float32 array of shape {shape}")
        fired = self._last != T_NONE
        d = np.where(fired, t - np.where(fired, self._last, 0), 0).astype(np.float64)
        v = np.exp(-d / self._tau)
        out[...] = np.where(fired, v, 0.0)
        return out

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def polarities(self) -> int:
        return self._p

    @property
    def tau_us(self) -> float:
        return self._tau

    @property
    def last_times(self) -> I64:
        """Copy of (polarities, height, width) int64 last times; never fired = int64 min."""
        return self._last.copy()


# --- fixed time windows -------------------------------------------------------------------------

def _floordiv(a: int, b: int) -> int:
    return a // b


class _WindowsRef:
    """Window bookkeeping shared by EventFramesRef and VoxelGridRef.

    Window k is [t0 + k·window_us, t0 + (k+1)·window_us): t0 sets the ALIGNMENT of the windows
    (t0_us=None: t0 = the first event's time, tonic's default). The first window returned is the
    one that contains the first event: windows before it are not returned, so a sensor clock that
    does not start near t0 costs nothing (tonic's ToFrame(start_time=t0) would also return the
    empty windows between t0 and the first event). An event before t0 is a ValueError. A window
    completes when an event at or after its end arrives, or by flush_until(t) with t >= its end;
    completed windows are returned in order, EMPTY WINDOWS INCLUDED (zero frames), each with its
    end time t_end. A call that would return more than MAX_OUTPUT_BYTES is refused (ValueError,
    state unchanged): a silence of many windows between two events is the usual cause.
    """

    _w: int
    _h: int
    _window: int
    _t0_arg: int | None
    _frame_shape: tuple[int, ...]

    def _reset_windows(self) -> None:
        self._t0: int | None = self._t0_arg
        self._k: int | None = None
        self._t_prev = int(T_NONE)
        self._seen = 0
        self._windows = 0

    def _check_count(self, n: int) -> None:
        size = n * int(np.prod(self._frame_shape)) * 4
        if size > MAX_OUTPUT_BYTES:
            raise ValueError(f"this call would complete {n} windows ({size} bytes of output, more than "
                             f"MAX_OUTPUT_BYTES = {MAX_OUTPUT_BYTES}); push smaller chunks or flush_until() "
                             "in steps")

    def _prepare(self, events: Events) -> tuple[Events, I64, int]:
        """Validated events, their window indices, and the number of windows this push completes."""
        ev = _events(events)
        _check(ev, self._t_prev, self._w, self._h)
        if ev.shape[0] == 0:
            return ev, np.zeros(0, np.int64), 0
        t0 = int(ev["t"][0]) if self._t0 is None else self._t0
        if int(ev["t"][0]) < t0:
            raise ValueError(f"events[0]: time {int(ev['t'][0])} us is before the windows' start t0_us = {t0}")
        k = (ev["t"] - t0) // self._window
        k_cur = int(k[0]) if self._k is None else self._k
        n = int(k[-1]) - k_cur
        self._check_count(n)
        self._t0, self._k = t0, k_cur
        return ev, k, n

    def _flush_count(self, t_us: int) -> int:
        if self._t0 is None or self._k is None:
            return 0
        return max(0, _floordiv(t_us - self._t0, self._window) - self._k)

    def _t_ends(self, n: int) -> I64:
        assert self._t0 is not None and self._k is not None
        return self._t0 + (self._k + 1 + np.arange(n, dtype=np.int64)) * self._window

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def windows(self) -> int:
        """Windows completed (returned) since the last reset."""
        return self._windows

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def window_us(self) -> int:
        return self._window

    @property
    def t0_us(self) -> int | None:
        """Start of window 0 (None until the first event when constructed with t0_us=None)."""
        return self._t0


class EventFramesRef(_WindowsRef):
    """Event counts per polarity and pixel over fixed time windows (float32 frames for ONNX models).

    `push(events) -> (frames float32 (n, polarities, height, width), t_end int64 (n,))`: the windows
    completed by this push (see _WindowsRef); `flush_until(t_us)` completes the windows that end at
    or before t_us and returns them the same way (later events must not be before t_us).
    polarities=1 counts both polarities in one frame. Equal to tonic 1.7's
    `ToFrame(sensor_size, time_window=window_us)` on a whole recording with t0_us=None, when the
    recording spans at least one window: tonic returns the floor((t_last - t_first) / window)
    complete windows, the ones whose end is at or before the last event, i.e. exactly what a push
    of the recording returns (tonic counts in int16, which wraps above 32767 events per pixel).
    """

    def __init__(self, width: int, height: int, window_us: int, polarities: int = 2,
                 t0_us: int | None = 0) -> None:
        self._w, self._h = _sensor(width, height)
        self._window = _int("window_us", window_us, 1)
        self._p = _polarities(polarities)
        self._t0_arg = _t0(t0_us)
        self._frame_shape = (self._p, self._h, self._w)
        self._acc = np.zeros(self._frame_shape, np.float32)
        self.reset()

    def reset(self) -> None:
        self._acc.fill(0)
        self._reset_windows()

    def push(self, events: Events) -> tuple[F32, I64]:
        ev, k, n = self._prepare(events)
        frames = np.zeros((n, *self._frame_shape), np.float32)
        if ev.shape[0] == 0:
            return frames, np.zeros(0, np.int64)
        assert self._k is not None
        t_end = self._t_ends(n)
        rel = k - self._k
        p = ev["p"].astype(np.intp) if self._p == 2 else np.zeros(ev.shape[0], np.intp)
        y, x = ev["y"].astype(np.intp), ev["x"].astype(np.intp)
        done = rel < n
        if n > 0:
            frames[0] += self._acc
            np.add.at(frames, (rel[done], p[done], y[done], x[done]), np.float32(1))
            self._acc.fill(0)
        np.add.at(self._acc, (p[~done], y[~done], x[~done]), np.float32(1))
        self._k += n
        self._t_prev = int(ev["t"][-1])
        self._seen += ev.shape[0]
        self._windows += n
        return frames, t_end

    def flush_until(self, t_us: int) -> tuple[F32, I64]:
        t = _int("t_us", t_us, -(1 << 62))
        n = self._flush_count(t)
        self._check_count(n)
        frames = np.zeros((n, *self._frame_shape), np.float32)
        if n == 0:
            self._t_prev = max(self._t_prev, t)
            return frames, np.zeros(0, np.int64)
        assert self._k is not None
        t_end = self._t_ends(n)
        frames[0] = self._acc
        self._acc.fill(0)
        self._k += n
        self._t_prev = max(self._t_prev, t)
        self._windows += n
        return frames, t_end

    @property
    def polarities(self) -> int:
        return self._p


def _voxel_window(ev: Events, n_bins: int, width: int, height: int) -> F64:
    """tonic 1.7's to_voxel_grid_numpy on one window's events, float64 (n_bins, height, width).

    Same operations in the same order (left contributions of every event, then right ones, in
    event order). Times are normalised to [0, n_bins] between the window's FIRST and LAST EVENT
    (tonic's rule), so events at the last event's time add nothing. Deviations, where tonic's
    arithmetic is undefined: no events -> zeros; all events at one time (0/0 in tonic) -> every
    event is at normalised time 0 (its whole ±1 in bin 0).
    """
    grid = np.zeros(n_bins * height * width, np.float64)
    if ev.shape[0] == 0:
        return grid.reshape(n_bins, height, width)
    t = ev["t"]
    span = int(t[-1]) - int(t[0])
    ts = np.zeros(ev.shape[0], np.float64) if span == 0 else n_bins * (t.astype(np.float64) - t[0]) / span
    xs = ev["x"].astype(np.int64)
    ys = ev["y"].astype(np.int64)
    pols = np.where(ev["p"] == 0, -1, 1).astype(np.int8)
    tis = ts.astype(np.int64)
    dts = ts - tis
    vals_left = pols * (1.0 - dts)
    vals_right = pols * dts
    ok = tis < n_bins
    np.add.at(grid, xs[ok] + ys[ok] * width + tis[ok] * width * height, vals_left[ok])
    ok = (tis + 1) < n_bins
    np.add.at(grid, xs[ok] + ys[ok] * width + (tis[ok] + 1) * width * height, vals_right[ok])
    return grid.reshape(n_bins, height, width)


class VoxelGridRef(_WindowsRef):
    """Per fixed time window, tonic 1.7's `ToVoxelGrid(sensor_size, n_time_bins=n_bins)` of its events.

    `push(events) -> (grids float32 (n, n_bins, height, width), t_end int64 (n,))`, `flush_until`:
    windows as in EventFramesRef (empty windows included, as zeros). Each grid is tonic's
    bilinear-in-time voxel grid of that window's events, computed in float64 with tonic's operations
    and order and rounded once to float32; polarity ON = +1, OFF = -1; see `_voxel_window` for the
    normalisation (by the window's first and last event) and the degenerate windows.
    """

    def __init__(self, width: int, height: int, window_us: int, n_bins: int, t0_us: int | None = 0) -> None:
        self._w, self._h = _sensor(width, height)
        self._window = _int("window_us", window_us, 1)
        self._bins = _int("n_bins", n_bins, 1)
        self._t0_arg = _t0(t0_us)
        self._frame_shape = (self._bins, self._h, self._w)
        self._buf: list[Events] = []
        self.reset()

    def reset(self) -> None:
        self._buf = []
        self._reset_windows()

    def push(self, events: Events) -> tuple[F32, I64]:
        ev, k, n = self._prepare(events)
        grids = np.zeros((n, *self._frame_shape), np.float32)
        if ev.shape[0] == 0:
            return grids, np.zeros(0, np.int64)
        assert self._k is not None
        t_end = self._t_ends(n)
        rel = k - self._k
        for i in range(n):
            sel = ev[rel == i]
            window = np.concatenate([*self._buf, sel]) if i == 0 else sel
            grids[i] = _voxel_window(window, self._bins, self._w, self._h)
            if i == 0:
                self._buf = []
        self._buf.append(ev[rel == n].copy())
        self._k += n
        self._t_prev = int(ev["t"][-1])
        self._seen += ev.shape[0]
        self._windows += n
        return grids, t_end

    def flush_until(self, t_us: int) -> tuple[F32, I64]:
        t = _int("t_us", t_us, -(1 << 62))
        n = self._flush_count(t)
        self._check_count(n)
        grids = np.zeros((n, *self._frame_shape), np.float32)
        if n == 0:
            self._t_prev = max(self._t_prev, t)
            return grids, np.zeros(0, np.int64)
        assert self._k is not None
        t_end = self._t_ends(n)
        grids[0] = _voxel_window(np.concatenate([empty_events(0), *self._buf]), self._bins, self._w, self._h)
        self._buf = []
        self._k += n
        self._t_prev = max(self._t_prev, t)
        self._windows += n
        return grids, t_end

    @property
    def n_bins(self) -> int:
        return self._bins


# --- heterogeneous-delay spiking layer ------------------------------------------------------------

def _weights(weights: Any) -> F32:
    if not isinstance(weights, np.ndarray) or weights.dtype != np.float32 or weights.ndim != 5:
        raise ValueError("weights must be a float32 array (channels, polarities, K, K, delays), got "
                         f"{getattr(weights, 'dtype', type(weights).__name__)} "
                         f"with shape {getattr(weights, 'shape', None)}")
    c, p, k1, k2, d = weights.shape
    if min(c, p, k1, d) < 1 or k1 != k2:
        raise ValueError(f"weights must have shape (channels >= 1, polarities, K, K, delays >= 1), got {weights.shape}")
    if p not in (1, 2):
        raise ValueError(f"weights' polarity axis must be 1 (ignore polarity) or 2 (OFF, ON), got {p}")
    if not np.isfinite(weights).all():
        raise ValueError("weights must be finite")
    return np.ascontiguousarray(weights)


def _threshold(threshold: Any) -> float:
    try:
        th = float(np.float32(threshold))
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a positive number, got {threshold!r}") from None
    if not (math.isfinite(th) and th > 0):
        raise ValueError(f"threshold must be a positive finite float32, got {threshold!r}")
    return th


class HDSNNRef:
    """Heterogeneous-delay spiking layer (Grimaldi & Perrinet, Biol. Cybern. 2023), dense reference.

    Input: events binned in time steps n, step n = [t0 + n·dt_us, t0 + (n+1)·dt_us) (t0_us=None:
    the first event's time), and POOLED by `stride` s first: S[p, a, b, n] = number of events of
    polarity p (polarities=1: any) with x // s = b, y // s = a in step n, on a (ceil(H/s), ceil(W/s))
    grid; with binary=True, S is 1 where that number is > 0 (OR-pooling: only a cell's first event
    in a step acts, so the scale of V no longer depends on the stride or on the event density). Potential of output neuron (c, i, j) at step n, same padding (i, j on the pooled grid):
        V[c, i, j, n] = sum_{p, dy, dx, d} W[c, p, dy, dx, d] · S[p, i + dy - K//2, j + dx - K//2, n - d]
    and the neuron spikes at step n iff V >= threshold (threshold > 0, so a step without input in
    its last D steps has no spikes). With s = 1 this is the plain space-time convolution.
    A step completes when an event at or after its end arrives, or by flush_until(t) with t >= end.

    `push(events) -> (t_end int64 (n,), counts int32 (n, C))`: end time and per-channel spike counts
    of the completed steps that had at least one spike. Counters: events, synops (weight additions
    that landed inside the output grid), steps (completed steps, empty ones included), spikes.
    `spike_map` int64 (C, Ho, Wo): spikes per neuron since the last reset.

    This reference computes each step's V from the formula: the binned inputs of the last D steps
    are kept as dense arrays and V is a sum of shifted slices, one per nonzero weight, in float64
    (exact for integer-valued weights; the compiled kernel sums in float32, exact while |V| < 2**24).
    """

    def __init__(self, width: int, height: int, weights: F32, dt_us: int, threshold: float, stride: int = 1,
                 t0_us: int | None = 0, binary: bool = False) -> None:
        self._w, self._h = _sensor(width, height)
        self._wt = _weights(weights)
        self._dt = _int("dt_us", dt_us, 1)
        self._th = _threshold(threshold)
        self._s = _int("stride", stride, 1)
        self._t0_arg = _t0(t0_us)
        self._binary = bool(binary)
        c, p, k, _, d = self._wt.shape
        self._c, self._p, self._k, self._d = c, p, k, d
        self._ho, self._wo = -(-self._h // self._s), -(-self._w // self._s)
        self._terms: list[list[tuple[int, int, int, int, float]]] = [[] for _ in range(d)]
        for ci, pi, yi, xi, di in zip(*np.nonzero(self._wt), strict=True):
            self._terms[int(di)].append((int(ci), int(pi), int(yi), int(xi), float(self._wt[ci, pi, yi, xi, di])))
        # synops per (polarity, pooled row, pooled column): nonzero weights whose target is inside the grid
        nz = (self._wt != 0).sum(axis=(0, 4))  # (p, K, K)
        self._synops_map = np.zeros((p, self._ho, self._wo), np.int64)
        for dy in range(k):
            for dx in range(k):
                oy, ox = dy - k // 2, dx - k // 2
                # event at (a, b) reaches (a - oy, b - ox)
                a0, a1 = max(0, oy), min(self._ho, self._ho + oy)
                b0, b1 = max(0, ox), min(self._wo, self._wo + ox)
                if a0 < a1 and b0 < b1:
                    self._synops_map[:, a0:a1, b0:b1] += nz[:, dy, dx][:, None, None]
        self.reset()

    def reset(self) -> None:
        self._t0 = self._t0_arg
        self._n: int | None = None  # the step being accumulated; every step < _n is complete
        self._cur = np.zeros((self._p, self._ho, self._wo), np.float64)
        self._hist: deque[tuple[int, F64]] = deque()
        self._t_prev = int(T_NONE)
        self._spike_map = np.zeros((self._c, self._ho, self._wo), np.int64)
        self._counts = {"events": 0, "synops": 0, "steps": 0, "spikes": 0}
        self._out_t: list[int] = []
        self._out_c: list[I32] = []

    def _v(self, q: int) -> F64:
        """V of step q from the formula: a sum of shifted copies of the binned input, one per weight.

        Zero weights are skipped: their terms are exactly 0 (w · S = +0 with finite S), so the sum
        is the formula's, evaluated in float64 at every output position.
        """
        k, pad = self._k, self._k // 2
        v = np.zeros((self._c, self._ho, self._wo), np.float64)
        for h, s in self._hist:
            d = q - h
            if not 0 <= d < self._d:
                continue
            sp = np.zeros((self._p, self._ho + k - 1, self._wo + k - 1), np.float64)
            sp[:, pad:pad + self._ho, pad:pad + self._wo] = s
            # sp[p, i + dy, j + dx] = S[p, i + dy - K//2, j + dx - K//2, q - d]
            for c, p, dy, dx, w in self._terms[d]:
                v[c] += w * sp[p, dy:dy + self._ho, dx:dx + self._wo]
        return v

    def _advance(self, target: int) -> None:
        """Complete every step before `target`."""
        if self._n is None or target <= self._n:
            return
        if self._cur.any():
            self._hist.append((self._n, self._cur))
            self._cur = np.zeros_like(self._cur)
        last_h = self._hist[-1][0] if self._hist else None
        if last_h is not None:
            for q in range(self._n, min(target, last_h + self._d)):
                spikes = self._v(q) >= self._th
                counts = spikes.sum(axis=(1, 2)).astype(np.int32)
                if counts.any():
                    assert self._t0 is not None
                    self._out_t.append(self._t0 + (q + 1) * self._dt)
                    self._out_c.append(counts)
                    self._spike_map += spikes
                    self._counts["spikes"] += int(counts.sum())
        while self._hist and self._hist[0][0] <= target - self._d:
            self._hist.popleft()
        self._counts["steps"] += target - self._n
        self._n = target

    def _take(self) -> tuple[I64, I32]:
        t = np.array(self._out_t, np.int64)
        c = np.array(self._out_c, np.int32).reshape(len(self._out_t), self._c)
        self._out_t, self._out_c = [], []
        return t, c

    def push(self, events: Events) -> tuple[I64, I32]:
        ev = _events(events)
        _check(ev, self._t_prev, self._w, self._h)
        if ev.shape[0] == 0:
            return self._take()
        t0 = int(ev["t"][0]) if self._t0 is None else self._t0
        if int(ev["t"][0]) < t0:
            raise ValueError(f"events[0]: time {int(ev['t'][0])} us is before the steps' start t0_us = {t0}")
        self._t0 = t0
        steps = (ev["t"] - t0) // self._dt
        if self._n is None:
            self._n = int(steps[0])
        a = (ev["y"] // self._s).astype(np.intp)
        b = (ev["x"] // self._s).astype(np.intp)
        p = ev["p"].astype(np.intp) if self._p == 2 else np.zeros(ev.shape[0], np.intp)
        bounds = np.flatnonzero(np.diff(steps)) + 1
        synops = 0
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, ev.shape[0]], strict=True):
            self._advance(int(steps[lo]))
            pg, ag, bg = p[lo:hi], a[lo:hi], b[lo:hi]
            if self._binary:  # S = 1 for a cell with events in this step: only its first event acts
                cell = (pg * self._ho + ag) * self._wo + bg
                _, first = np.unique(cell, return_index=True)
                new = np.zeros(hi - lo, bool)
                new[first] = True
                new &= self._cur[pg, ag, bg] == 0
                self._cur[pg[new], ag[new], bg[new]] = 1.0
                synops += int(self._synops_map[pg[new], ag[new], bg[new]].sum())
            else:
                np.add.at(self._cur, (pg, ag, bg), 1.0)
                synops += int(self._synops_map[pg, ag, bg].sum())
        self._counts["events"] += ev.shape[0]
        self._counts["synops"] += synops
        self._t_prev = int(ev["t"][-1])
        return self._take()

    def flush_until(self, t_us: int) -> tuple[I64, I32]:
        t = _int("t_us", t_us, -(1 << 62))
        if self._t0 is not None and self._n is not None:
            self._advance(_floordiv(t - self._t0, self._dt))
        self._t_prev = max(self._t_prev, t)
        return self._take()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def spike_map(self) -> I64:
        return self._spike_map.copy()

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(channels, Ho, Wo) = (C, ceil(height / stride), ceil(width / stride))."""
        return (self._c, self._ho, self._wo)

    @property
    def weights(self) -> F32:
        return self._wt.copy()

    @property
    def dt_us(self) -> int:
        return self._dt

    @property
    def threshold(self) -> float:
        return self._th

    @property
    def stride(self) -> int:
        return self._s

    @property
    def binary(self) -> bool:
        return self._binary

    @property
    def t0_us(self) -> int | None:
        return self._t0

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h
