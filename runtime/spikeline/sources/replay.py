"""File replay: a recording streamed as if it were live, at real time, N times faster or as fast as possible.

The file is read once, in a thread, at `open()` (see `spikeline.recordings.load` for the formats). The selected
series play back to back as one stream: `seq` runs on across series and loops, and each series starts one
sample period after the previous one ended. Chunks of many samples are emitted (`chunk` samples, or
`chunk_ms` of signal); pacing is one asyncio sleep per chunk, never per sample.

Timestamps: in paced mode (speed > 0) a chunk is handed over when its newest sample is due; `t` is the
recording time mapped onto the local monotonic clock (`t = start + recording_time / speed`), `t_recv` the
hand-over time. As fast as possible (speed = 0) there is no recording clock to follow: each chunk's newest
sample is stamped with its hand-over time and the others are spread evenly since the previous chunk's (the
first chunk keeps the recording's spacing), so `t` never decreases and `t_recv - t` stays small.

No sample is lost: in paced mode the pipeline keeps up or its queue policy counts what it drops, exactly as
for a live stream; as fast as possible the source waits for room in the pipeline's queue before each chunk
(`SampleQueue.wait_room`) and never hands over more than the queue holds, so `drop_oldest` never fires.

Labels and markers are not put into the chunks: `SampleChunk.label` means "this row is a decision" downstream.
The whole-series labels are in `segments` (seq ranges, for evaluation), the recording's markers (EDF+
annotations, XDF marker streams) in `markers` with the seq of the first sample at or after each onset; both
are logged at open. `spikeline replay --lsl` plays markers as an LSL string outlet (`LslPlayer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..chunk import SampleChunk, StreamMeta
from ..params import Param
from ..recordings import KINDS, Marker, Recording, RecordingError, load
from .base import Source, SourceError, sleep_until

log = logging.getLogger("spikeline.replay")


@dataclass(frozen=True)
class Segment:
    """One series of the replay: rows seq_start <= seq < seq_stop of the stream (first pass)."""

    seq_start: int
    seq_stop: int
    t_start: float  # seconds of stream time (first pass) of its first sample
    name: str
    label: str | None


@dataclass(frozen=True)
class Program:
    """What to play: the selected series cut to the selected channels, on one stream timeline."""

    meta: StreamMeta
    parts: tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]], ...]  # (data, stream time) per series
    segments: tuple[Segment, ...]
    markers: tuple[tuple[int, float, Marker], ...]  # (seq, stream time, marker), sorted by time
    duration_s: float  # one pass, stream time
    n_samples: int  # one pass

    @property
    def timed(self) -> bool:
        return all(t.size == 0 or np.isfinite(t[-1]) for _, t in self.parts)


def select_series(recs: Sequence[Recording], spec: str, where: str) -> list[Recording]:
    """`spec`: "" (all), or comma-separated indices ("3"), half-open ranges ("0:10", ":5", "130:") and names."""
    if not spec.strip():
        return list(recs)
    by_name = {r.name: i for i, r in enumerate(recs)}
    out: list[int] = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        if tok in by_name:
            out.append(by_name[tok])
        elif re.fullmatch(r"-?\d+", tok):
            i = int(tok)
            if not -len(recs) <= i < len(recs):
                raise SourceError(f"{where}: series {i} does not exist (the file has {len(recs)}: 0..{len(recs) - 1})")
            out.append(i % len(recs))
        elif m := re.fullmatch(r"(-?\d*):(-?\d*)", tok):
            rng = range(len(recs))[slice(int(m[1]) if m[1] else None, int(m[2]) if m[2] else None)]
            if not rng:
                raise SourceError(f"{where}: series range {tok!r} selects nothing (the file has {len(recs)})")
            out.extend(rng)
        else:
            names = ", ".join(r.name for r in recs[:5]) + (", ..." if len(recs) > 5 else "")
            raise SourceError(f"{where}: no series named {tok!r} (series are {names}; or use indices like 3 or 0:10)")
    return [recs[i] for i in out]


def build_program(recs: Sequence[Recording], *, channels: Sequence[str] = (), name: str = "",
                  stream_type: str = "", where: str = "replay") -> Program:
    """Check that the series can be one stream (same channels and rate) and lay them on one timeline."""
    if not recs:
        raise SourceError(f"{where}: no series selected")
    first = recs[0]
    for r in recs[1:]:
        if r.channels != first.channels or r.rate_hz != first.rate_hz:
            raise SourceError(f"{where}: series {r.name!r} ({len(r.channels)} ch, {r.rate_hz:g} Hz) cannot follow "
                              f"{first.name!r} ({len(first.channels)} ch, {first.rate_hz:g} Hz) in one stream")
    if channels:
        missing = [c for c in channels if c not in first.channels]
        if missing:
            raise SourceError(f"{where}: no channel {', '.join(map(repr, missing))}; the recording has "
                              f"{', '.join(first.channels)}")
        cols = [first.channels.index(c) for c in channels]
    else:
        cols = list(range(len(first.channels)))
    rate = first.rate_hz
    parts = []
    segments = []
    markers: list[tuple[int, float, Marker]] = []
    offset = 0.0
    seq = 0
    for r in recs:
        data = np.ascontiguousarray(r.data[:, cols]) if channels else r.data
        if r.timed:
            t = r.times()
            t = t - t[0] if t.size else t
            step = 1.0 / rate if rate > 0 else (float(np.median(np.diff(t))) if t.size > 1 else 0.0)
            span = float(t[-1]) + step if t.size else 0.0
        else:
            t = np.full(r.n_samples, math.nan)
            span = math.nan
        parts.append((data, offset + t))
        segments.append(Segment(seq, seq + r.n_samples, offset, r.name, r.label))
        for m in r.markers:
            k = int(np.searchsorted(t, m.t_s, side="left")) if r.timed else 0
            markers.append((seq + k, offset + m.t_s, m))
        seq += r.n_samples
        offset += span
    markers.sort(key=lambda x: (x[1], x[0]))
    units = first.units
    meta = StreamMeta(name=name or f"replay-{Path(str(first.info.get('file', first.name))).stem}",
                      type=stream_type or str(first.info.get("type", "")) or "replay",
                      channels=tuple(first.channels[c] for c in cols), nominal_rate=rate,
                      units=tuple(units[c] for c in cols), source_id=f"replay:{first.info.get('file', first.name)}")
    return Program(meta=meta, parts=tuple(parts), segments=tuple(segments), markers=tuple(markers),
                   duration_s=offset, n_samples=seq)


FAST_CHUNK = 256  # default chunk as fast as possible (at most the pipeline queue's capacity)


def chunk_rows(p: dict[str, Any], rate: float) -> int:
    if p["chunk"] > 0:
        return int(p["chunk"])
    return max(1, round(p["chunk_ms"] * 1e-3 * rate)) if rate > 0 else 32


def _check_file(v: str) -> str | None:
    return None if v.strip() else "a recording file is required"


REPLAY_PARAMS = {
    "file": Param("str", check=_check_file, help="recording: .edf, .xdf, .ts, SPAR .npz, .csv"),
    "kind": Param("str", "", choices=("", *KINDS), help="reader (default: from the file's suffix)"),
    "series": Param("str", "", help='series to play back to back: "" = all, indices "3", ranges "0:10", names'),
    "channels": Param("str_list", [], help="subset of channels, in this order (default: all)"),
    "speed": Param("number", 1.0, min=0, help="1 = real time, N = N times faster, 0 = as fast as possible"),
    "loop": Param("bool", False, help="start again at the end (seq keeps counting)"),
    "chunk": Param("int", 0, min=0, help=f"samples per chunk (0: chunk_ms of signal; >= {FAST_CHUNK} at speed 0)"),
    "chunk_ms": Param("number", 20.0, min=0, min_exclusive=True, help="chunk length when chunk = 0"),
    "rate_hz": Param("number", 0.0, min=0, help="sampling rate for files that have none (.ts, CSV without time)"),
    "stream_name": Param("str", "", help="stream name (default replay-<file>)"),
    "stream_type": Param("str", "", help="stream type (default: the file's, else replay)"),
}


def load_program(p: dict[str, Any], where: str = "replay") -> tuple[list[Recording], Program]:
    """Read the file (blocking: call it in a thread) and build what to play."""
    path = Path(p["file"]).expanduser()
    try:
        recs = load(path, kind=p["kind"] or None, rate_hz=p["rate_hz"] or None)
    except RecordingError as e:
        raise SourceError(str(e)) from e
    chosen = select_series(recs, p["series"], f"{where} {path}")
    prog = build_program(chosen, channels=p["channels"], name=p["stream_name"], stream_type=p["stream_type"],
                         where=f"{where} {path}")
    if p["speed"] > 0 and not prog.timed:
        raise SourceError(f"{where} {path}: the recording has no sampling rate: set rate_hz, or speed = 0 "
                          "(as fast as possible)")
    return chosen, prog


class ReplaySource(Source):
    kind = "replay"
    summary = "a recording file (EDF+, XDF, UEA .ts, SPAR .npz, CSV) at real time, N x, or as fast as possible"
    params = REPLAY_PARAMS

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        self._stopping = asyncio.Event()
        self.program: Program | None = None
        self.position = 0  # samples handed over, all passes
        self.passes = 0  # completed passes

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.program.segments if self.program else ()

    @property
    def markers(self) -> tuple[tuple[int, float, Marker], ...]:
        return self.program.markers if self.program else ()

    async def open(self) -> StreamMeta:
        _, prog = await asyncio.to_thread(load_program, self.p, f"pipeline {self.ctx.pipeline}: replay")
        self.program = prog
        m = prog.meta
        log.info("replay %s: %d series, %d samples (%.1f s), %d ch at %g Hz, %d markers, speed %s%s",
                 self.p["file"], len(prog.segments), prog.n_samples, prog.duration_s, m.n_channels,
                 m.nominal_rate, len(prog.markers), f"{self.p['speed']:g}x" if self.p["speed"] else "max",
                 ", looping" if self.p["loop"] else "")
        return m

    def stop(self) -> None:
        self._stopping.set()

    @property
    def lossless(self) -> bool:
        return float(self.p["speed"]) == 0  # as fast as possible: waits for room in the queue

    async def run(self, put: Callable[[SampleChunk], None]) -> None:
        prog = self.program
        if prog is None:
            raise SourceError("replay: run() before open()")
        speed = float(self.p["speed"])
        queue = self.ctx.queue if speed == 0 else None
        rows = chunk_rows(self.p, prog.meta.nominal_rate)
        if speed == 0 and self.p["chunk"] == 0:
            rows = max(rows, FAST_CHUNK)  # no pace to keep: fewer, larger chunks
        if queue is not None:
            rows = min(rows, queue.capacity)
        meta = prog.meta
        start = time.monotonic()
        seq = 0
        last_t: float | None = None
        while True:
            base = self.passes * prog.duration_s
            for data, t_rec in prog.parts:
                for s in range(0, len(data), rows):
                    e = min(len(data), s + rows)
                    tr = t_rec[s:e] + base
                    if speed > 0:
                        if not await sleep_until(start + tr[-1] / speed, self._stopping):
                            return
                        t = start + tr / speed
                        now = time.monotonic()
                    else:
                        if queue is not None:
                            await queue.wait_room(e - s)
                        else:
                            await asyncio.sleep(0)  # let the consumer run
                        if self._stopping.is_set():
                            return
                        now = time.monotonic()
                        if last_t is None:  # first chunk: the recording's spacing, newest sample now
                            t = now - (tr[-1] - tr) if np.isfinite(tr[-1]) else np.full(e - s, now)
                        else:  # spread over the time since the previous chunk: non-decreasing, newest now
                            t = last_t + (now - last_t) * (np.arange(1, e - s + 1) / (e - s))
                        last_t = now
                    put(SampleChunk(data=np.array(data[s:e]), t=t, t_recv=np.full(e - s, now), seq=seq, meta=meta))
                    seq += e - s
                    self.position = seq
            self.passes += 1
            if not self.p["loop"] or prog.n_samples == 0:
                return


# ------------------------------------------------------------------------------------- LSL playback

class LslPlayer:
    """Plays a Program on an LSL outlet (and its markers on a string outlet), timestamps on the LSL clock.

    Data go out in chunks at the recording's pace (speed > 0) or as fast as possible (speed = 0; a consumer's
    inlet buffer must hold the whole recording then, or it drops the oldest). Each marker is pushed with its own
    timestamp when the data reach its onset.
    """

    def __init__(self, prog: Program, *, speed: float = 1.0, chunk: int = 0, chunk_ms: float = 20.0,
                 loop: bool = False) -> None:
        from ..lslcfg import import_pylsl

        self.pylsl = pylsl = import_pylsl()
        self.prog, self.speed, self.loop = prog, speed, loop
        self.rows = chunk_rows({"chunk": chunk, "chunk_ms": chunk_ms}, prog.meta.nominal_rate)
        if speed == 0 and chunk == 0:
            self.rows = max(self.rows, FAST_CHUNK)
        m = prog.meta
        info = pylsl.StreamInfo(m.name, m.type, m.n_channels, m.nominal_rate, pylsl.cf_float32,
                                m.source_id or m.name)
        chans = info.desc().append_child("channels")
        for label, unit in zip(m.channels, m.units, strict=True):
            c = chans.append_child("channel")
            c.append_child_value("label", label)
            c.append_child_value("unit", unit)
            c.append_child_value("type", m.type)
        seg = info.desc().append_child("segments")
        for sg in prog.segments:
            e = seg.append_child("segment")
            e.append_child_value("name", sg.name)
            e.append_child_value("label", sg.label or "")
            e.append_child_value("first_sample", str(sg.seq_start))
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=max(360, math.ceil(prog.duration_s) + 10))
        self.marker_outlet: Any = None
        if prog.markers:
            minfo = pylsl.StreamInfo(f"{m.name}-markers", "Markers", 1, 0.0, pylsl.cf_string,
                                     f"{m.source_id or m.name}-markers")
            self.marker_outlet = pylsl.StreamOutlet(minfo)
        self.position = 0
        self.markers_sent = 0
        self._stop = threading.Event()

    def wait_for_consumers(self, timeout: float) -> bool:
        ok = bool(self.outlet.wait_for_consumers(timeout))
        if self.marker_outlet is not None:
            ok = bool(self.marker_outlet.wait_for_consumers(timeout)) and ok
        return ok

    def stop(self) -> None:
        self._stop.set()

    def play(self, progress: Callable[[int], None] | None = None) -> int:
        """Blocking (run it in a thread or a CLI): returns the samples pushed."""
        prog, speed, clock = self.prog, self.speed, self.pylsl.local_clock
        regular = prog.meta.nominal_rate > 0
        start = clock()
        passes = 0
        while not self._stop.is_set():
            base = passes * prog.duration_s
            mk = 0
            for data, t_rec in prog.parts:
                for s in range(0, len(data), self.rows):
                    e = min(len(data), s + self.rows)
                    tr = t_rec[s:e] + base
                    if speed > 0:
                        delay = start + tr[-1] / speed - clock()
                        if delay > 0 and self._stop.wait(delay):
                            return self.position
                        ts = start + tr / speed
                    else:
                        if self._stop.is_set():
                            return self.position
                        ts = start + tr if np.isfinite(tr[-1]) else np.full(e - s, clock())
                    if regular:
                        self.outlet.push_chunk(data[s:e], float(ts[-1]))
                    else:
                        self.outlet.push_chunk(data[s:e], ts.tolist())
                    self.position += e - s
                    while mk < len(prog.markers) and prog.markers[mk][0] < self.position - passes * prog.n_samples:
                        _, tm, marker = prog.markers[mk]
                        mts = start + (base + tm) / speed if speed > 0 else start + base + tm
                        self.marker_outlet.push_sample([marker.label], mts)
                        self.markers_sent += 1
                        mk += 1
                    if progress is not None:
                        progress(self.position)
            for _, tm, marker in prog.markers[mk:]:  # markers after the last sample
                mts = start + (base + tm) / speed if speed > 0 else start + base + tm
                self.marker_outlet.push_sample([marker.label], mts)
                self.markers_sent += 1
            passes += 1
            if not self.loop:
                break
        return self.position

    def close(self) -> None:
        self._stop.set()
        del self.outlet
        self.marker_outlet = None


# ------------------------------------------------------------------------------------------ the CLI

class Progress:
    """A one-line progress display on stderr, only when it is a terminal (no tqdm at run time)."""

    def __init__(self, total: int, label: str, stream: Any = None) -> None:
        import sys

        self.out = stream or sys.stderr
        self.on = bool(getattr(self.out, "isatty", lambda: False)()) and total > 0
        self.total, self.label = total, label
        self._next = 0.0

    def __call__(self, pos: int) -> None:
        now = time.monotonic()
        if not self.on or now < self._next:
            return
        self._next = now + 0.2
        pos_in = pos % self.total if pos != self.total else pos
        frac = pos_in / self.total
        bar = "#" * int(frac * 30)
        self.out.write(f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}% ({pos} samples)")
        self.out.flush()

    def done(self) -> None:
        if self.on:
            self._next = 0.0
            self(self.total)
            self.out.write("\n")
            self.out.flush()


def replay_params(args: Any) -> dict[str, Any]:
    """The replay source's params from `spikeline replay` arguments, validated like a config table."""
    from ..params import ConfigError, check_table

    table: dict[str, Any] = {"file": str(args.file), "series": args.series or "", "loop": bool(args.loop),
                             "speed": 0.0 if args.fast else float(args.speed), "chunk_ms": float(args.chunk_ms),
                             "stream_name": args.name, "stream_type": args.type}
    if args.channels:
        table["channels"] = [c.strip() for c in args.channels.split(",") if c.strip()]
    if args.rate_hz:
        table["rate_hz"] = float(args.rate_hz)
    if args.kind:
        table["kind"] = args.kind
    problems: list[str] = []
    p = check_table(table, REPLAY_PARAMS, "replay", problems)
    if problems:
        raise ConfigError(problems)
    return p


def replay_main(args: Any) -> int:
    """`spikeline replay FILE ...`: describe the file, play it on LSL (--lsl) or through a pipeline (--config)."""
    import sys

    from ..params import ConfigError

    try:
        p = replay_params(args)
        if args.config:
            return _replay_pipeline(args, p)
        recs, prog = load_program(p)
    except (ConfigError, SourceError) as e:
        print(f"spikeline replay: {e}", file=sys.stderr)
        return 2
    if not args.lsl:
        m = prog.meta
        print(f"{args.file}: {len(recs)} series, {prog.n_samples} samples, {prog.duration_s:.3f} s, "
              f"{m.n_channels} channels at {m.nominal_rate:g} Hz, {len(prog.markers)} markers")
        print(f"  channels: {', '.join(f'{c} [{u}]' if u else c for c, u in zip(m.channels, m.units, strict=True))}")
        for sg in prog.segments[:10]:
            print(f"  {sg.name}: samples {sg.seq_start}..{sg.seq_stop - 1}" + (f", label {sg.label}" if sg.label else ""))
        if len(prog.segments) > 10:
            print(f"  ... {len(prog.segments) - 10} more series")
        return 0
    player = LslPlayer(prog, speed=p["speed"], chunk_ms=p["chunk_ms"], loop=p["loop"])
    try:
        m = prog.meta
        print(f"LSL outlet {m.name!r} ({m.type}, {m.n_channels} ch, {m.nominal_rate:g} Hz)"
              + (f" + marker outlet {m.name + '-markers'!r}" if player.marker_outlet is not None else ""),
              file=sys.stderr)
        if args.wait > 0 and not player.wait_for_consumers(args.wait):
            print(f"no consumer within {args.wait:g} s; playing anyway", file=sys.stderr)
        bar = Progress(prog.n_samples, Path(args.file).name)
        try:
            n = player.play(bar)
        except KeyboardInterrupt:
            n = player.position
        bar.done()
        print(f"pushed {n} samples and {player.markers_sent} markers", file=sys.stderr)
        if args.linger > 0:
            time.sleep(args.linger)  # let consumers pull what is in flight before the outlet goes
        return 0
    finally:
        player.close()


def _replay_pipeline(args: Any, p: dict[str, Any]) -> int:
    import dataclasses
    import sys

    from .. import config
    from ..cli import serve
    from ..config import ComponentConfig
    from ..daemon import Daemon
    from ..params import ConfigError

    cfg = config.load(args.config)
    chosen = [pc for pc in cfg.pipelines if not args.pipeline or pc.name == args.pipeline]
    if not chosen:
        raise ConfigError([f"{args.config}: no pipeline named {args.pipeline!r}; "
                           f"pipelines: {', '.join(pc.name for pc in cfg.pipelines)}"])
    if len(chosen) > 1:
        raise ConfigError([f"{args.config}: {len(chosen)} pipelines; choose one with --pipeline "
                           f"({', '.join(pc.name for pc in chosen)})"])
    pc = dataclasses.replace(chosen[0], source=ComponentConfig("replay", "replay", p, f"{chosen[0].path}.source"))
    daemon = Daemon(dataclasses.replace(cfg, pipelines=[pc]))

    async def run() -> int:
        pipe = daemon.pipelines[0]
        src = pipe.source
        assert isinstance(src, ReplaySource)

        async def show() -> None:
            bar: Progress | None = None
            while True:
                await asyncio.sleep(0.2)
                if src.program is not None:
                    bar = bar or Progress(src.program.n_samples, Path(args.file).name)
                    bar(src.position)

        task = asyncio.create_task(show())
        try:
            return await daemon.run()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if src.program is not None:
                Progress(src.program.n_samples, Path(args.file).name).done()
            print(f"replayed {src.position} samples into pipeline {pipe.name!r}: {pipe.state.value}"
                  + (f" ({pipe.error})" if pipe.error else ""), file=sys.stderr)

    return asyncio.run(serve(run, daemon.request_stop))
