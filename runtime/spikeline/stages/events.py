"""Event-camera stages: denoise, time surfaces and frames for models, the HD-SNN motion layer, event classifiers.

Each wraps a compiled kernel stepping every event of a chunk inside compiled code (see
`spikeline.kernels.events` and `spikeline.kernels.evnet`); Python runs per chunk and per emitted row only.
Stages that turn events into results emit rows at points of *sensor* time (a grid of `every_ms`, window ends,
the end of an event burst), so a recording gives the same results whatever its chunking, whether it is
replayed at 1x, 10x or as fast as possible. Each row carries the local time of the newest event that
contributed (`EventChunk.local_time`) and the receive time of the chunk that completed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..chunk import EventChunk, SampleChunk, StreamMeta
from ..params import Param
from .base import Stage, StageError

F32 = npt.NDArray[np.float32]


def _us(ms: float) -> int:
    return max(1, round(ms * 1e3))


class _EventStage(Stage):
    takes_events = True
    meta_out: StreamMeta

    def start(self, meta: StreamMeta) -> StreamMeta:
        self.meta_in = meta
        self.width, self.height = meta.sensor
        self.rows = 0  # output rows so far (their seq)
        return self._start(meta)

    def _start(self, meta: StreamMeta) -> StreamMeta:
        return meta

    def _rows(self, data: F32, t_us: list[int], recv: list[float], chunk: EventChunk | None,
              label: npt.NDArray[np.int16] | None = None, t_local: list[float] | None = None) -> SampleChunk | None:
        """Output rows stamped with the local time of their newest event (sensor time `t_us`)."""
        if not t_us:
            return None
        n = len(t_us)
        if t_local is None:
            assert chunk is not None
            t = chunk.local_time(np.asarray(t_us, dtype=np.int64))
        else:
            t = np.asarray(t_local, dtype=np.float64)
        out = SampleChunk(data=np.ascontiguousarray(data, dtype=np.float32).reshape(n, -1), t=t,
                          t_recv=np.asarray(recv, dtype=np.float64), seq=self.rows, meta=self.meta_out, label=label)
        self.rows += n
        return out


# ------------------------------------------------------------------------------------------- denoise

class Denoise(_EventStage):
    kind = "denoise"
    summary = "drop isolated (background-activity) events, or events within a pixel's refractory period"
    params = {
        "method": Param("str", "background_activity", choices=("background_activity", "refractory"),
                        help="background_activity: keep an event only if a neighbouring pixel fired within "
                             "filter_ms; refractory: drop events within refractory_ms of the pixel's last one"),
        "filter_ms": Param("number", 10.0, min=0, min_exclusive=True, help="background-activity time window"),
        "refractory_ms": Param("number", 1.0, min=0, min_exclusive=True, help="refractory period"),
    }

    def _start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.events import BackgroundActivityFilter, RefractoryFilter

        if self.p["method"] == "refractory":
            self.filt: Any = RefractoryFilter(self.width, self.height, _us(self.p["refractory_ms"]))
        else:
            self.filt = BackgroundActivityFilter(self.width, self.height, _us(self.p["filter_ms"]))
        self.meta_out = meta
        self.out_seq = 0
        return meta

    def process(self, chunk: EventChunk) -> EventChunk | None:
        if chunk.is_tick:  # pass the passing of time on
            return EventChunk(ev=chunk.ev, t_base=chunk.t_base, t_recv=chunk.t_recv, seq=self.out_seq,
                              meta=self.meta_out, t_scale=chunk.t_scale, until=chunk.until)
        kept = self.filt.filter(chunk.ev)
        if len(kept) == 0:
            return None
        out = EventChunk(ev=np.array(kept), t_base=chunk.t_base, t_recv=chunk.t_recv, seq=self.out_seq,
                         meta=self.meta_out, t_scale=chunk.t_scale)
        self.out_seq += len(kept)
        return out

    def reset(self) -> None:
        self.filt.reset()

    def counters(self) -> dict[str, int | float]:
        seen, kept = int(self.filt.seen), int(self.filt.kept)
        return {"events_in": seen, "events_kept": kept, "kept_fraction": round(kept / seen, 4) if seen else 0.0}


# ------------------------------------------------------------------------------- surfaces and frames

class _Grid:
    """Points of a grid of sensor time (every `step` µs) that close an interval holding events.

    `cut(t)` gives, for a chunk's event times, the grid points passed since the previous event (as points,
    and the index of the first event after each). An interval without events gives no point, so a long
    pause (or a sensor clock that jumps ahead) costs nothing and emits nothing.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self.last: int | None = None  # interval index of the newest event seen

    def cut(self, t: npt.NDArray[np.int64]) -> tuple[list[int], list[int]]:
        g = t // self.step
        prev = np.empty_like(g)
        prev[0] = g[0] if self.last is None else self.last
        prev[1:] = g[:-1]
        idx = np.flatnonzero(g != prev)
        self.last = int(g[-1])
        return ((prev[idx] + 1) * self.step).tolist(), idx.tolist()

    def reset(self) -> None:
        self.last = None


class TimeSurfaceStage(_EventStage):
    kind = "time_surface"
    summary = "per-pixel exponential time surface exp(-(t - t_last)/tau), one image row every every_ms"
    params = {
        "tau_ms": Param("number", 50.0, min=0, min_exclusive=True, help="decay time constant"),
        "every_ms": Param("number", 10.0, min=0, min_exclusive=True, help="sample the surface on this grid of "
                                                                          "sensor time"),
        "polarities": Param("int", 2, choices=(1, 2), help="2: one surface per polarity; 1: both together"),
    }

    def _start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.events import TimeSurface

        self.ts = TimeSurface(self.width, self.height, _us(self.p["tau_ms"]), self.p["polarities"])
        self.grid = _Grid(_us(self.p["every_ms"]))
        self.meta_out = meta.derive(type="time_surface", frame=(self.p["polarities"], self.height, self.width),
                                    nominal_rate=1e3 / self.p["every_ms"], sensor=(0, 0))
        return self.meta_out

    def process(self, chunk: EventChunk) -> SampleChunk | None:
        ev = chunk.ev
        if len(ev) == 0:
            return None
        t = ev["t"]
        pts, idx = self.grid.cut(t)
        frames: list[F32] = []
        stamps: list[int] = []
        start = 0
        for tp, i in zip(pts, idx, strict=True):
            self.ts.update(ev[start:i])
            start = i
            frames.append(self.ts.sample(tp).copy())
            stamps.append(int(t[i - 1]) if i > 0 else self._last_t)
        self.ts.update(ev[start:])
        self._last_t = int(t[-1])
        return self._rows(np.stack(frames) if frames else np.zeros((0,), np.float32), stamps, [chunk.t_recv] * len(stamps),
                          chunk)

    _last_t = 0

    def reset(self) -> None:
        self.ts.reset()
        self.grid.reset()


class EventFramesStage(_EventStage):
    kind = "event_frames"
    summary = "event counts per polarity (or a voxel grid of n_bins) per window_ms, one image row per window"
    params = {
        "window_ms": Param("number", 10.0, min=0, min_exclusive=True, help="window length (sensor time)"),
        "n_bins": Param("int", 0, min=0, help="0: counts per polarity (2, H, W); N: voxel grid (N, H, W)"),
    }
    # A pause longer than this many windows is not stepped through window by window: the pending window is
    # completed and the kernel restarts at the next event (windows stay on the same grid of sensor time).
    MAX_SKIP = 4

    def _start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.events import EventFrames, VoxelGrid

        self.w = w = _us(self.p["window_ms"])
        nb = self.p["n_bins"]
        self.k: Any = VoxelGrid(self.width, self.height, w, nb) if nb else EventFrames(self.width, self.height, w)
        shape = (nb, self.height, self.width) if nb else (2, self.height, self.width)
        self.meta_out = meta.derive(type="voxel_grid" if nb else "event_frames", frame=shape,
                                    nominal_rate=1e3 / self.p["window_ms"], sensor=(0, 0))
        self._last: tuple[int, float, float, float] | None = None  # newest event: t, t_base, t_scale, t_recv
        return self.meta_out

    def process(self, chunk: EventChunk) -> SampleChunk | None:
        """Rows for the windows this chunk completes; windows without events give no row."""
        ev = chunk.ev
        if len(ev) == 0:
            return None
        t = ev["t"]
        prev = np.empty(len(t), dtype=np.int64)
        prev[0] = t[0] if self._last is None else self._last[0]
        prev[1:] = t[:-1]
        pauses = np.flatnonzero(t // self.w - prev // self.w > self.MAX_SKIP).tolist()
        frames: list[F32] = []
        ends: list[int] = []
        start = 0
        for i in [*pauses, len(ev)]:
            if i > start:
                f, e = self.k.push(ev[start:i])
                frames.append(f)
                ends += e.tolist()
                self._last = (int(t[i - 1]), chunk.t_base, chunk.t_scale, chunk.t_recv)
            if i < len(ev):  # a long pause before event i: finish the pending window, restart
                f, e = self._finish()
                frames.append(f)
                ends += e.tolist()
            start = i
        return self._emit(frames, ends, chunk.t_recv)

    def _finish(self) -> tuple[F32, npt.NDArray[np.int64]]:
        assert self._last is not None
        f, e = self.k.flush_until((self._last[0] // self.w + 1) * self.w)
        self.k.reset()
        return f, e

    def _emit(self, frames: list[F32], ends: list[int], t_recv: float) -> SampleChunk | None:
        if not ends or self._last is None:
            return None
        f = np.concatenate(frames).reshape(len(ends), -1)
        keep = np.flatnonzero(np.any(f != 0, axis=1))
        if len(keep) == 0:
            return None
        _, t_base, t_scale, _ = self._last
        stamps = [ends[i] - 1 for i in keep.tolist()]  # a window's newest possible event
        t_local = [t_base + x * t_scale for x in stamps]
        return self._rows(f[keep], stamps, [t_recv] * len(stamps), None, t_local=t_local)

    def flush(self) -> SampleChunk | None:
        if self._last is None:
            return None
        f, e = self._finish()
        return self._emit([f], e.tolist(), self._last[3])

    def reset(self) -> None:
        self.k.reset()
        self._last = None


# ------------------------------------------------------------------------------------- HD-SNN motion

class HdsnnMotion(_EventStage):
    kind = "hdsnn"
    summary = "heterogeneous-delay spiking layer tuned to motion directions; winner-take-all direction per window"
    params = {
        "directions": Param("int", 8, choices=(4, 8, 16), help="number of direction channels"),
        "speeds_px_per_ms": Param("number_list", [0.4, 0.8], help="speeds the kernels are tuned to (sensor px/ms)"),
        "kernel": Param("int", 9, min=3, max=31, help="spatial kernel size K (odd), on the pooled grid"),
        "delays": Param("int", 7, min=1, max=64, help="delay taps D"),
        "dt_ms": Param("number", 5.0, min=0, min_exclusive=True, help="time step of the delay line"),
        "stride": Param("int", 4, min=1, max=64, help="input pooling: one neuron per stride x stride pixels"),
        "binary": Param("bool", True, help="a pooled cell counts once per step however many events it gets"),
        "interpolation": Param("str", "bilinear", choices=("bilinear", "nearest"),
                               help="nearest: about a third of the synaptic updates per event, coarser speeds"),
        "threshold": Param("number", 0.0, min=0, help="spike threshold (0: 0.75 x delays)"),
        "window_ms": Param("number", 50.0, min=0, min_exclusive=True, help="winner-take-all readout window"),
        "min_spikes": Param("int", 1, min=1, help="fewer spikes in a window: label 'none'"),
    }

    def _start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.events import DIRECTION_NAMES, HDSNN, direction_angles, motion_kernels

        p = self.p
        if p["kernel"] % 2 == 0:
            raise StageError("kernel must be odd", "kernel")
        if not p["speeds_px_per_ms"] or min(p["speeds_px_per_ms"]) <= 0:
            raise StageError("speeds must be positive", "speeds_px_per_ms")
        dt = _us(p["dt_ms"])
        try:
            weights, _ = motion_kernels(n_directions=p["directions"], speeds_px_per_ms=tuple(p["speeds_px_per_ms"]),
                                        K=p["kernel"], D=p["delays"], dt_us=dt, stride=p["stride"],
                                        interpolation=p["interpolation"])
        except ValueError as e:
            raise StageError(str(e), "kernel") from e
        thr = p["threshold"] or 0.75 * p["delays"]
        self.net = HDSNN(self.width, self.height, weights, dt, thr, stride=p["stride"], binary=p["binary"])
        n = p["directions"]
        self.labels = (tuple(DIRECTION_NAMES) if n == 8 else
                       tuple(f"{a:g}deg" for a in np.degrees(direction_angles(n)).round(1)))
        self.n_speeds = len(p["speeds_px_per_ms"])
        self.grid = _Grid(_us(p["window_ms"]))
        self.acc = np.zeros(n, dtype=np.int64)
        self.had_events = False
        self.last_t = 0
        self._last_local = self._last_recv = 0.0
        self.meta_out = StreamMeta(name=f"{meta.name}/{self.name}", type="motion", channels=self.labels,
                                   nominal_rate=1e3 / p["window_ms"], classes=(*self.labels, "none"))
        return self.meta_out

    def _add(self, counts: npt.NDArray[np.int32]) -> None:
        """Spikes per direction (summed over the speeds a direction is tuned to)."""
        if len(counts):
            self.acc += counts.sum(axis=0).reshape(-1, self.n_speeds).sum(axis=1)

    def _close(self, end_us: int, rows: list[tuple[F32, int, float]]) -> None:
        """Complete the delay line up to `end_us` and close the window in progress: a row if it had events,
        stamped with the local time of its newest event."""
        self._add(self.net.flush_until(end_us)[1])
        if self.had_events:
            total = int(self.acc.sum())
            rows.append((self.acc.astype(np.float32),
                         int(np.argmax(self.acc)) if total >= self.p["min_spikes"] else len(self.labels),
                         self._last_local))
        self.acc[:] = 0
        self.had_events = False

    def _push(self, chunk: EventChunk, start: int, stop: int) -> None:
        if stop > start:
            self._add(self.net.push(chunk.ev[start:stop])[1])
            self.had_events = True
            self.last_t = int(chunk.ev["t"][stop - 1])
            self._last_local, self._last_recv = float(chunk.local_time(self.last_t)), chunk.t_recv

    def process(self, chunk: EventChunk) -> SampleChunk | None:
        rows: list[tuple[F32, int, float]] = []
        if chunk.is_tick:
            assert chunk.until is not None
            if self.had_events and self.grid.last is not None:
                end = (self.grid.last + 1) * self.grid.step
                if chunk.until >= end:  # the window in progress is over: no need to wait for the next event
                    self._close(end, rows)
                    self.grid.last = None
            return self._out(rows, chunk.t_recv)
        ev = chunk.ev
        if len(ev) == 0:
            return None
        pts, idx = self.grid.cut(ev["t"])
        start = 0
        for tp, i in zip(pts, idx, strict=True):
            self._push(chunk, start, i)
            start = max(start, i)
            self._close(tp, rows)
        self._push(chunk, start, len(ev))
        return self._out(rows, chunk.t_recv)

    def _out(self, rows: list[tuple[F32, int, float]], t_recv: float) -> SampleChunk | None:
        if not rows:
            return None
        return self._rows(np.stack([r[0] for r in rows]), [0] * len(rows), [t_recv] * len(rows), None,
                          label=np.asarray([r[1] for r in rows], dtype=np.int16), t_local=[r[2] for r in rows])

    def flush(self) -> SampleChunk | None:
        """The input ended: complete the delay line and emit the window in progress."""
        rows: list[tuple[F32, int, float]] = []
        if self.had_events:
            self._close(self.last_t + self.p["delays"] * _us(self.p["dt_ms"]) + 1, rows)
        return self._out(rows, self._last_recv)

    def reset(self) -> None:
        self.net.reset()
        self.grid.reset()
        self.acc[:] = 0
        self.had_events = False

    def counters(self) -> dict[str, int | float]:
        return {k: v for k, v in self.net.counters.items() if isinstance(v, int | float)}


# ---------------------------------------------------------------------------------- event classifier

class EventClassifier(_EventStage):
    kind = "event_classifier"
    summary = "an event-driven classifier model (e.g. nmnist-evnet) fed event by event; decisions per burst or grid"
    params = {
        "model": Param("str", help="model id from the registry or an event-model file"),
        "gap_ms": Param("number", 50.0, min=0,
                        help="a pause of at least this long ends a burst: decide on it, then forget it (0: never)"),
        "every_ms": Param("number", 0.0, min=0, help="also decide on this grid of sensor time (0: only at burst ends)"),
        "min_events": Param("int", 1, min=1, help="bursts with fewer events give no decision"),
    }

    def _start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.evnet import load_evnet
        from ..modelfile import ModelError

        try:
            self.net = load_evnet(self.p["model"])
        except (ModelError, FileNotFoundError, KeyError, ValueError) as e:
            raise StageError(str(e), "model") from e
        w, h = self.net.sensor
        if (w, h) != meta.sensor:
            raise StageError(f"the model takes a {w}x{h} sensor; stream {meta.name!r} is "
                             f"{meta.sensor[0]}x{meta.sensor[1]}", "model")
        self.classes = tuple(self.net.classes)
        self.gap = round(self.p["gap_ms"] * 1e3)
        self.every = round(self.p["every_ms"] * 1e3)
        self.grid = _Grid(max(1, self.every))
        self.prev_t: int | None = None
        self.n_burst = 0  # events in the current burst
        self.scores = np.zeros(len(self.classes), dtype=np.float32)
        self.last_local = 0.0  # local time and receive time of the newest event pushed
        self.last_recv = 0.0
        self.meta_out = StreamMeta(name=f"{meta.name}/{self.name}", type="decision", channels=self.classes,
                                   nominal_rate=0.0, classes=self.classes)
        return self.meta_out

    def _decide(self, out: list[tuple[F32, float, float, int]], t_recv: float) -> None:
        """A decision on everything pushed since the last reset, stamped with its newest event's local time."""
        if self.n_burst < self.p["min_events"]:
            return
        s = self.net.scores(self.scores)
        z = np.exp(s - s.max())
        out.append(((z / z.sum()).astype(np.float32), self.last_local, t_recv, int(np.argmax(s))))

    def _push(self, chunk: EventChunk, start: int, stop: int) -> None:
        if stop > start:
            self.net.push(chunk.ev[start:stop])
            self.n_burst += stop - start
            self.prev_t = int(chunk.ev["t"][stop - 1])
            self.last_local = float(chunk.local_time(self.prev_t))
            self.last_recv = chunk.t_recv

    def process(self, chunk: EventChunk) -> SampleChunk | None:
        if chunk.is_tick:
            return self._tick(chunk)
        ev = chunk.ev
        n = len(ev)
        if n == 0:
            return None
        t = ev["t"]
        # Cut points: a burst ends before an event that follows a pause >= gap; grid points every `every`.
        # A decision is known only once this chunk shows the pause (or the grid time) has passed: its t_recv is
        # this chunk's, its t the local time of its newest event (so its age includes the pause).
        cuts: list[tuple[int, bool]] = []  # (index of the first event after the cut, is a burst end)
        if self.gap > 0:
            prev = np.empty(n, dtype=np.int64)
            prev[0] = t[0] if self.prev_t is None else self.prev_t
            prev[1:] = t[:-1]
            cuts += [(int(i), True) for i in np.flatnonzero(t - prev >= self.gap)]
        if self.every > 0:
            cuts += [(i, False) for i in self.grid.cut(t)[1]]
        cuts.sort(key=lambda c: (c[0], not c[1]))
        out: list[tuple[F32, float, float, int]] = []
        start = 0
        for i, burst_end in cuts:
            self._push(chunk, start, i)
            start = max(start, i)
            self._decide(out, chunk.t_recv)
            if burst_end:
                self.net.reset()
                self.n_burst = 0
        self._push(chunk, start, n)
        return self._decisions(out)

    def _tick(self, chunk: EventChunk) -> SampleChunk | None:
        """Time passed without events: decide on a burst whose pause is already long enough, or on a grid
        interval that is over, now rather than when the next event arrives."""
        assert chunk.until is not None
        out: list[tuple[F32, float, float, int]] = []
        if self.n_burst and self.prev_t is not None:
            if self.gap > 0 and chunk.until - self.prev_t >= self.gap:
                self._decide(out, chunk.t_recv)
                self.net.reset()
                self.n_burst = 0
                self.grid.last = None
            elif self.every > 0 and self.grid.last is not None and chunk.until >= (self.grid.last + 1) * self.every:
                self._decide(out, chunk.t_recv)
                self.grid.last = None
        return self._decisions(out)

    def _decisions(self, out: list[tuple[F32, float, float, int]]) -> SampleChunk | None:
        if not out:
            return None
        return self._rows(np.stack([o[0] for o in out]), [0] * len(out), [o[2] for o in out], None,
                          label=np.asarray([o[3] for o in out], dtype=np.int16), t_local=[o[1] for o in out])

    def flush(self) -> SampleChunk | None:
        """The input ended: decide on the burst in progress."""
        out: list[tuple[F32, float, float, int]] = []
        if self.n_burst:
            self._decide(out, self.last_recv)
            self.net.reset()
            self.n_burst = 0
        return self._decisions(out)

    def reset(self) -> None:
        self.net.reset()
        self.n_burst = 0
        self.prev_t = None
        self.grid.reset()

    def counters(self) -> dict[str, int | float]:
        c = self.net.counters()
        return {k: v for k, v in c.items() if isinstance(v, int | float)}
