"""Benchmark spikeline's event-camera path: file decoders, event kernels, the N-MNIST EventNet, UDP.

Not a test. Every rate is measured in this run on the real recordings in ../shared/data (read-only;
derived streams are built in memory or in a temporary directory), one process, one core. Within a
case the implementations take turns (benchlib.time_interleaved: several rounds, the order rotated
each round) so that the load of this shared machine falls on all of them alike. Each call is timed
on its own (perf_counter_ns, GC off, after a warm-up call); a row gives the median and the 99th
percentile per call, µs per event (median / events per call) and events/s (its inverse). Inputs are
prepared outside the timed region (bytes in memory, tonic's structured dtype, chunk boundaries).

- decode: EVT 2.0 and EVT 3.0 (.raw), DAT (both sample files, and a larger DAT made by tiling one
  with write_dat into a temporary directory), AEDAT4 and N-MNIST (.bs2, a few hundred files per
  call). Implementations: "compiled" (spikeline._ext.evio on the bytes in memory, one call for the
  file, output preallocated; chunking "4KiB blocks": the same decoder fed 4096-byte blocks, as a
  streamed reader would), "read()" (spikeline.events.formats.read from the file: open, header, decode),
  "numpy" (the numpy reference decoders used with SPIKELINE_NO_EXT, on the bytes in memory), and
  the outside readers from the file: expelliarmus (Wizard(encoding=...).read), aedat
  (aedat.Decoder, the event packets concatenated) and tonic (tonic.io.read_mnist_file).
- kernels: the DVXplorer recording (sample.aedat4, 320x240), a longer stream made by repeating it
  with shifted times, and an N-MNIST stream (samples back to back). BackgroundActivityFilter (10 ms),
  RefractoryFilter (1 ms), TimeSurface.update (tau 50 ms), TimeSurface.update + sample on a 10 ms
  grid, sample alone (µs per surface), denoise + time surface (BackgroundActivityFilter then
  TimeSurface.update on the kept events), EventFrames (10 ms windows), VoxelGrid (10 ms windows, 5
  bins) and HDSNN built as the `hdsnn` stage builds it with its default parameters (read from
  spikeline.stages.events.HdsnnMotion at run time: weights from motion_kernels, threshold 0 meaning
  0.75 x delays, binary pooling; the values used are in the kernels family's meta). Chunkings: "whole" (the
  recording in one call), "1ms" and "1000ev" (what a pipeline does: one call per chunk; the row's
  time covers the whole recording, so per-call overhead is included). Baselines: the numpy
  references ("*Ref", on the first events of the recording: see the events column) and tonic 1.7's
  transforms (Denoise, RefractoryPeriod, ToFrame(time_window), ToTimesurface(dt, tau),
  ToVoxelGrid per 10 ms window, the windows cut outside the timed region).
- evnet: the N-MNIST EventNet (load_evnet("nmnist-evnet"), else a model given with --evnet or
  trained by `python tools/train_nmnist.py --quick --out /tmp/evnet`): per sample reset, push,
  scores; whole samples and 1 ms chunks; the numpy reference EventNetRef on a few samples.
- udp: AEStreamDecoder.decode on 512-byte AEStream datagrams (with and without timestamps) made
  from the DVXplorer recording, one call per datagram into a preallocated out; the numpy reference.
- udp_e2e (OPTIONAL, end to end): the event_udp source on loopback fed by a sender thread (the
  DVXplorer recording repeated, AEStream datagrams with timestamps); events/s delivered to the event
  loop with zero socket drops (the sender is paced only if the OS dropped datagrams: see attempts).

Targets: decoding >= 100 M events/s per core (compiled, bytes in memory), denoise + time surface
>= 20 M events/s, HDSNN >= 1 M events/s.

    python tools/bench_events.py [--quick] [--only FAMILY[,FAMILY]] [--write-docs] [--evnet MODEL]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchlib import cpu_name, format_table, time_interleaved, timing, versions
from spikeline.chunk import EVENT_DTYPE, Events

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
DOCS = ROOT / "docs" / "events-benchmarks.md"
FAMILIES = ("decode", "kernels", "evnet", "udp", "udp_e2e")
TITLES = {"decode": "File decoders", "kernels": "Event kernels", "evnet": "N-MNIST EventNet",
          "udp": "AEStream UDP decoder", "udp_e2e": "OPTIONAL: event_udp source end to end on loopback"}
TONIC_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
Caller = Callable[[int], object]


class Budget:
    """Time budget per implementation in a case, and the call counts."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.case_s = 0.07 if quick else 0.35
        self.min_calls, self.max_calls, self.rounds = (2, 1000, 2) if quick else (5, 20000, 5)


def _row(ns: npt.NDArray[np.int64], events: int, **fields: Any) -> dict[str, Any]:
    t = timing(ns, max(events, 1))
    t["us_per_event"] = t.pop("us_per_sample")
    t["events_per_s"] = t.pop("samples_per_s")
    return {**fields, "events": events, **t}


def _measure(cases: dict[str, tuple[Caller, int]], b: Budget, **fields: Any) -> list[dict[str, Any]]:
    """Time the implementations of one case interleaved; one row each (events = events per call)."""
    times = time_interleaved({k: c for k, (c, _) in cases.items()}, b.case_s * len(cases), b.min_calls,
                             b.max_calls, b.rounds)
    return [_row(times[k], n, impl=k, **fields) for k, (_, n) in cases.items()]


def _tonic_events(ev: Events) -> npt.NDArray[Any]:
    out = np.empty(ev.shape[0], TONIC_DTYPE)
    for k in "xytp":
        out[k] = ev[k]
    return out


def _split_time(ev: Events, step_us: int) -> list[Events]:
    """Consecutive chunks of step_us of sensor time (empty chunks left out)."""
    t = ev["t"]
    grid = np.arange(int(t[0]) // step_us * step_us + step_us, int(t[-1]) + step_us, step_us)
    cuts = np.unique(np.concatenate([[0], np.searchsorted(t, grid), [len(ev)]]))
    return [ev[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def _split_count(ev: Events, n: int) -> list[Events]:
    return [ev[i : i + n] for i in range(0, len(ev), n)]


def _repeat(ev: Events, times: int) -> Events:
    """`ev` played `times` times back to back, each copy shifted by the recording's span + 1 ms."""
    span = int(ev["t"][-1] - ev["t"][0]) + 1000
    out = np.concatenate([ev] * times)
    out["t"] += np.repeat(np.arange(times, dtype=np.int64) * span, len(ev))
    return out


# --- decode ----------------------------------------------------------------------------------------


def _decoder_cases(path: Path, fmt: str, b: Budget) -> list[dict[str, Any]]:
    from spikeline._ext import evio
    from spikeline.events import formats as F

    ref = F.read(path)
    n = len(ref.events)
    with F.open_reader(path) as r:  # where the words start: after the header (and DAT's type/size bytes)
        start = r._dec.position  # type: ignore[attr-defined]
    data = path.read_bytes()[start:]
    w, h = ref.sensor
    compiled_cls = {"evt2": evio.Evt2Decoder, "evt3": evio.Evt3Decoder, "dat": evio.DatDecoder}[fmt]
    ref_cls = {"evt2": F._Evt2DecoderRef, "evt3": F._Evt3DecoderRef, "dat": F._DatDecoderRef}[fmt]
    out = np.empty(n + 64, EVENT_DTYPE)

    def whole(dec: Any) -> Caller:
        def call(_: int) -> object:
            dec.reset()
            return dec.decode(data, out)
        return call

    blocks = [memoryview(data)[i : i + 4096] for i in range(0, len(data), 4096)]
    blk_dec = compiled_cls(w, h)
    blk_out = np.empty(4096, EVENT_DTYPE)

    def by_block(_: int) -> object:
        blk_dec.reset()
        k = 0
        for blk in blocks:  # 4096 bytes is a whole number of words in every format
            k += blk_dec.decode(blk, blk_out)[0]
        return k

    cases: dict[str, tuple[Caller, int]] = {
        "compiled": (whole(compiled_cls(w, h)), n), "compiled 4KiB": (by_block, n),
        "read()": (lambda _: F.read(path), n), "numpy": (whole(ref_cls(w, h)), n)}
    if fmt in ("evt2", "evt3", "dat"):
        from expelliarmus import Wizard

        wiz = Wizard(encoding=fmt)
        cases["expelliarmus"] = (lambda _: wiz.read(str(path)), n)
    for name, (call, _) in cases.items():  # every implementation decodes the same number of events
        got = call(0)
        k = got[0] if isinstance(got, tuple) else (got if isinstance(got, int) else len(getattr(got, "events", got)))
        if k != n:
            raise RuntimeError(f"{path.name}: {name} decoded {k} events, read() {n}")
    rows = _measure(cases, b, case=f"{fmt} {path.name}", format=fmt, chunking="whole", bytes=len(data))
    for r in rows:
        if r["impl"] == "compiled 4KiB":
            r["impl"], r["chunking"], r["chunks"] = "compiled", "4KiB blocks", len(blocks)
    return rows


def _aedat_cases(path: Path, b: Budget) -> list[dict[str, Any]]:
    import aedat

    from spikeline.events import formats as F

    n = len(F.read(path).events)

    def aedat_read(_: int) -> object:
        parts = [p["events"] for p in aedat.Decoder(str(path)) if "events" in p]
        return np.concatenate(parts)

    if len(aedat_read(0)) != n:
        raise RuntimeError("aedat and spikeline decode different event counts")
    return _measure({"read()": (lambda _: F.read(path), n), "aedat": (aedat_read, n)}, b,
                    case=f"aedat4 {path.name}", format="aedat4", chunking="whole", bytes=path.stat().st_size)


def _nmnist_cases(files: list[Path], b: Budget) -> list[dict[str, Any]]:
    import tonic

    from spikeline.events import formats as F

    n = sum(len(F.read(p).events) for p in files)

    def ours(_: int) -> object:
        return [F.read(p) for p in files]

    def theirs(_: int) -> object:
        return [tonic.io.read_mnist_file(str(p), dtype=TONIC_DTYPE) for p in files]

    if sum(len(e) for e in theirs(0)) != n:
        raise RuntimeError("tonic and spikeline decode different N-MNIST event counts")
    return _measure({"read()": (ours, n), "tonic": (theirs, n)}, b,
                    case=f"nmnist {len(files)} .bs2 files", format="nmnist", chunking=f"{len(files)} files",
                    bytes=sum(p.stat().st_size for p in files))


def run_decode(b: Budget) -> dict[str, Any]:
    from spikeline.events import formats as F

    pro, dvs = DATA / "prophesee_samples_expelliarmus", DATA / "dvs_samples_tonic"
    results: list[dict[str, Any]] = []
    results += _decoder_cases(pro / "evt2_sample.raw", "evt2", b)
    results += _decoder_cases(pro / "evt3_sample.raw", "evt3", b)
    results += _decoder_cases(pro / "NCARS_obj_004397_td.dat", "dat", b)
    results += _decoder_cases(dvs / "sample_ncars.dat", "dat", b)
    tiles = 100 if b.quick else 400
    with tempfile.TemporaryDirectory(prefix="spikeline-bench-") as tmp:
        small = F.read(pro / "NCARS_obj_004397_td.dat")
        big = Path(tmp) / "ncars_tiled.dat"
        F.write_dat(big, _repeat(small.events, tiles), small.sensor)
        results += _decoder_cases(big, "dat", b)
        results[-1]["note"] = f"NCARS_obj_004397_td.dat tiled {tiles}x (times shifted), written with write_dat"
        for r in results[-5:]:
            r["case"] = f"dat NCARS tiled x{tiles}"
    results += _aedat_cases(dvs / "sample.aedat4", b)
    files = sorted((DATA / "nmnist_small_slayer").glob("*.bs2"))[: 100 if b.quick else 300]
    results += _nmnist_cases(files, b)
    return {"meta": {"decoder_backend": F.DECODER_BACKEND, "tiles": tiles}, "results": results}


# --- kernels ---------------------------------------------------------------------------------------


def _chunkings(ev: Events) -> dict[str, list[Events]]:
    return {"whole": [ev], "1ms": _split_time(ev, 1000), "1000ev": _split_count(ev, 1000)}


def hdsnn_stage_defaults() -> dict[str, Any]:
    """The `hdsnn` stage's parameter defaults, read from the stage class (so the benchmark follows them)."""
    from spikeline.stages.events import HdsnnMotion

    return {k: v.default for k, v in HdsnnMotion.params.items() if not v.required}


def _hdsnn_make(w: int, h: int) -> tuple[Callable[[type[Any]], Any], dict[str, Any]]:
    """A factory of HDSNN-like kernels (compiled or reference class) built as the hdsnn stage's _start
    builds its layer with the default parameters, and the parameters used."""
    from spikeline.kernels.events import motion_kernels

    p = hdsnn_stage_defaults()
    dt = round(p["dt_ms"] * 1000)
    kw: dict[str, Any] = {"n_directions": p["directions"], "speeds_px_per_ms": tuple(p["speeds_px_per_ms"]),
                          "K": p["kernel"], "D": p["delays"], "dt_us": dt, "stride": p["stride"]}
    if "interpolation" in p:
        kw["interpolation"] = p["interpolation"]
    wt = motion_kernels(**kw)[0]
    thr = float(p.get("threshold") or 0.75 * p["delays"])  # the stage: threshold 0 means 0.75 x delays
    extra = {"binary": bool(p["binary"])} if "binary" in p else {}

    def make(cls: type[Any]) -> Any:
        return cls(w, h, wt, dt, thr, stride=p["stride"], **extra)

    used = {**{k: (list(v) if isinstance(v, tuple | list) else v) for k, v in p.items()}, "dt_us": dt,
            "threshold_used": thr, "weights_shape": list(wt.shape)}
    return make, used


def _kernel_family(name: str, ev: Events, sensor: tuple[int, int], sub: Events, b: Budget, data: str,
                   chunkings: tuple[str, ...], baselines: bool) -> list[dict[str, Any]]:
    """One kernel on one stream: the compiled kernel per chunking, then (whole only) the numpy
    reference and tonic on `sub` (the first events of the stream), interleaved in one measurement."""
    from spikeline.kernels import events as K

    w, h = sensor
    n = len(ev)
    cuts = {c: v for c, v in _chunkings(ev).items() if c in chunkings}
    buf = np.empty(n, EVENT_DTYPE)
    tsub = _tonic_events(sub)
    cases: dict[str, tuple[Caller, int]] = {}

    def filt(make: Callable[[], Any], chunks: list[Events]) -> Caller:
        k = make()

        def call(_: int) -> object:
            k.reset()
            for c in chunks:
                k.filter(c, buf)
            return k
        return call

    def method(make: Callable[[], Any], meth: str, chunks: list[Events]) -> Caller:
        k = make()
        f = getattr(k, meth)

        def call(_: int) -> object:
            k.reset()
            for c in chunks:
                f(c)
            return k
        return call

    def ts_sampled(make: Callable[[], Any], chunks10: list[Events]) -> Caller:
        k = make()
        out = np.empty((2, h, w), np.float32)
        ends = [(int(c["t"][0]) // 10_000 + 1) * 10_000 for c in chunks10]

        def call(_: int) -> object:
            k.reset()
            for c, t_end in zip(chunks10, ends, strict=True):
                k.update(c)
                k.sample(t_end, out)
            return out
        return call

    def denoise_ts(make_f: Callable[[], Any], make_t: Callable[[], Any], chunks: list[Events]) -> Caller:
        f, ts = make_f(), make_t()

        def call(_: int) -> object:
            f.reset()
            ts.reset()
            for c in chunks:
                ts.update(f.filter(c, buf))
            return ts
        return call

    if name == "baf":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (filt(lambda: K.BackgroundActivityFilter(w, h, 10_000), chunks), n)
        if baselines:
            cases["numpy ref"] = (filt(lambda: K.BackgroundActivityFilterRef(w, h, 10_000), [sub]), len(sub))
            import tonic.transforms as T
            den = T.Denoise(filter_time=10_000)
            cases["tonic Denoise"] = (lambda _: den(tsub), len(sub))
    elif name == "refractory":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (filt(lambda: K.RefractoryFilter(w, h, 1000), chunks), n)
        if baselines:
            cases["numpy ref"] = (filt(lambda: K.RefractoryFilterRef(w, h, 1000), [sub]), len(sub))
            import tonic.transforms as T
            rp = T.RefractoryPeriod(delta=1000)
            cases["tonic RefractoryPeriod"] = (lambda _: rp(tsub), len(sub))
    elif name == "ts update":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (method(lambda: K.TimeSurface(w, h, 50_000.0), "update", chunks), n)
        if baselines:
            cases["numpy ref"] = (method(lambda: K.TimeSurfaceRef(w, h, 50_000.0), "update", [sub]), len(sub))
    elif name == "ts update+sample 10ms":
        cases["compiled 10ms"] = (ts_sampled(lambda: K.TimeSurface(w, h, 50_000.0), _split_time(ev, 10_000)), n)
        if baselines:
            cases["numpy ref"] = (ts_sampled(lambda: K.TimeSurfaceRef(w, h, 50_000.0),
                                                  _split_time(sub, 10_000)), len(sub))
            import tonic.transforms as T
            tts = T.ToTimesurface(sensor_size=(w, h, 2), dt=10_000, tau=50_000)
            cases["tonic ToTimesurface"] = (lambda _: tts(tsub), len(sub))
    elif name == "denoise+ts":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (denoise_ts(lambda: K.BackgroundActivityFilter(w, h, 10_000),
                                                 lambda: K.TimeSurface(w, h, 50_000.0), chunks), n)
        if baselines:
            cases["numpy ref"] = (denoise_ts(lambda: K.BackgroundActivityFilterRef(w, h, 10_000),
                                             lambda: K.TimeSurfaceRef(w, h, 50_000.0), [sub]), len(sub))
            import tonic.transforms as T
            den, tts = T.Denoise(filter_time=10_000), T.ToTimesurface(sensor_size=(w, h, 2), dt=10_000,
                                                                      tau=50_000)
            cases["tonic Denoise+ToTimesurface"] = (lambda _: tts(den(tsub)), len(sub))
    elif name == "frames 10ms":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (method(lambda: K.EventFrames(w, h, 10_000, t0_us=None), "push", chunks), n)
        if baselines:
            cases["numpy ref"] = (method(lambda: K.EventFramesRef(w, h, 10_000, t0_us=None), "push", [sub]),
                                  len(sub))
            import tonic.transforms as T
            tf = T.ToFrame(sensor_size=(w, h, 2), time_window=10_000)
            cases["tonic ToFrame"] = (lambda _: tf(tsub), len(sub))
    elif name == "voxel 10ms x5":
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (method(lambda: K.VoxelGrid(w, h, 10_000, 5, t0_us=None), "push", chunks), n)
        if baselines:
            cases["numpy ref"] = (method(lambda: K.VoxelGridRef(w, h, 10_000, 5, t0_us=None), "push", [sub]),
                                  len(sub))
            import tonic.transforms as T
            tv = T.ToVoxelGrid(sensor_size=(w, h, 2), n_time_bins=5)
            wins = [_tonic_events(c) for c in _split_time(sub, 10_000)]
            cases["tonic ToVoxelGrid per window"] = (lambda _: [tv(x) for x in wins], len(sub))
    elif name == "hdsnn":
        make, used = _hdsnn_make(w, h)
        for c, chunks in cuts.items():
            cases[f"compiled {c}"] = (method(lambda: make(K.HDSNN), "push", chunks), n)
        if baselines and not b.quick:
            tiny = sub[: np.searchsorted(sub["t"], sub["t"][0] + 3 * used["dt_us"])]
            cases["numpy ref (dense)"] = (method(lambda: make(K.HDSNNRef), "push", [tiny]), len(tiny))
    else:
        raise ValueError(name)
    rows = _measure(cases, b, case=name, data=data)
    for r in rows:
        impl = r["impl"]
        r["chunking"] = impl.rsplit(" ", 1)[1] if impl.startswith("compiled ") else (
            "10ms" if name == "ts update+sample 10ms" else "whole")
        if impl.startswith("compiled "):
            r["impl"] = "compiled"
            r["chunks"] = len(cuts.get(r["chunking"], _split_time(ev, 10_000)))
    return rows


def _ts_sample_rows(sensor: tuple[int, int], ev: Events, b: Budget, data: str) -> list[dict[str, Any]]:
    """TimeSurface.sample alone: µs per (2, H, W) surface ("events" = 1 surface per call)."""
    from spikeline.kernels import events as K

    w, h = sensor
    rows = []
    cases: dict[str, tuple[Caller, int]] = {}
    for name, cls in (("compiled", K.TimeSurface), ("numpy ref", K.TimeSurfaceRef)):
        k = cls(w, h, 50_000.0)
        k.update(ev)
        out = np.empty((2, h, w), np.float32)
        t_end = int(ev["t"][-1])
        cases[name] = ((lambda _, k=k, out=out, t_end=t_end: k.sample(t_end, out)), 1)
    for r in _measure(cases, b, case="ts sample (one surface)", data=data, chunking="-"):
        r["unit"] = "surfaces"
        rows.append(r)
    return rows


KERNELS = ("baf", "refractory", "ts update", "ts update+sample 10ms", "denoise+ts", "frames 10ms", "voxel 10ms x5",
           "hdsnn")


def _nmnist_stream(files: list[Path], gap_us: int = 10_000) -> tuple[list[Events], Events]:
    from spikeline.events import formats as F

    samples = [F.read(p).events for p in files]
    stream, t = [], 0
    for s in samples:
        c = s.copy()
        c["t"] += t - int(s["t"][0])
        stream.append(c)
        t = int(c["t"][-1]) + gap_us
    return samples, np.concatenate(stream)


def run_kernels(b: Budget) -> dict[str, Any]:
    from spikeline.events import formats as F
    from spikeline.kernels import events as K

    dvs = F.read(DATA / "dvs_samples_tonic" / "sample.aedat4")
    ev, sensor = dvs.events, dvs.sensor
    reps = 2 if b.quick else 10
    long = _repeat(ev, reps)
    sub = ev[: 5000 if b.quick else 20000]
    _, nm = _nmnist_stream(sorted((DATA / "nmnist_small_slayer").glob("*.bs2"))[: 30 if b.quick else 100])
    nm_sub = nm[:5000]
    results: list[dict[str, Any]] = []
    for name in KERNELS:
        print(f"   {name}", file=sys.stderr, flush=True)
        results += _kernel_family(name, ev, sensor, sub, b, "dvxplorer", ("whole", "1ms", "1000ev"), True)
        results += _kernel_family(name, long, sensor, sub, b, f"dvxplorer x{reps}", ("whole", "1ms"), False)
        results += _kernel_family(name, nm, (34, 34), nm_sub, b, "nmnist stream", ("whole", "1ms"),
                                  name in ("baf", "denoise+ts", "hdsnn") and not b.quick)
    results += _ts_sample_rows(sensor, ev, b, "dvxplorer")
    make, used = _hdsnn_make(*sensor)
    net = make(K.HDSNN)
    net.push(ev)
    c = net.counters
    bafk = K.BackgroundActivityFilter(sensor[0], sensor[1], 10_000)
    kept = len(bafk.filter(ev))
    meta = {
        "backend": K.BACKEND,
        "dvxplorer": {"events": len(ev), "sensor": list(sensor), "duration_ms": round((int(ev["t"][-1]) - int(ev["t"][0])) / 1e3, 1),
                      "baf_kept_fraction": round(kept / len(ev), 3)},
        "dvxplorer_long": {"events": len(long), "repeats": reps},
        "nmnist_stream": {"events": len(nm), "sensor": [34, 34]},
        "baseline_events": {"dvxplorer": len(sub), "nmnist stream": len(nm_sub)},
        "hdsnn": {**used,
                  "synops_per_event": round(c["synops"] / max(c["events"], 1), 1),
                  "spikes_per_event": round(c["spikes"] / max(c["events"], 1), 3)},
    }
    return {"meta": meta, "results": results}


# --- EventNet --------------------------------------------------------------------------------------


def _evnet_model(explicit: str | None) -> tuple[str, Any]:
    from spikeline.kernels.evnet import load_evnet

    if explicit:
        return explicit, load_evnet(explicit)
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    if "nmnist-evnet" in manifest.get("models", {}):
        return "nmnist-evnet", load_evnet("nmnist-evnet")
    quick = Path("/tmp/evnet/nmnist-evnet/model.json")
    if quick.exists():
        return f"{quick} (a --quick model: nmnist-evnet is not registered yet)", load_evnet(quick)
    raise FileNotFoundError("no nmnist-evnet in models/manifest.json and no /tmp/evnet model: run "
                            "`python tools/train_nmnist.py --quick --out /tmp/evnet` or pass --evnet")


def run_evnet(b: Budget, model: str | None = None) -> dict[str, Any]:
    from spikeline.kernels.evnet import BACKEND, EventNetRef

    source, net = _evnet_model(model)
    files = sorted((DATA / "nmnist_small_slayer").glob("*.bs2"))[: 5 if b.quick else 20]
    samples, _ = _nmnist_stream(files)
    n = sum(len(s) for s in samples)
    scores = np.empty(len(net.classes), np.float32)

    def per_sample(k: Any, chunked: list[list[Events]]) -> Caller:
        def call(_: int) -> object:
            for chunks in chunked:
                k.reset()
                for c in chunks:
                    k.push(c)
                k.scores(scores)
            return scores
        return call

    few = samples[:1]
    cases: dict[str, tuple[Caller, int]] = {
        "compiled whole": (per_sample(net, [[s] for s in samples]), n),
        "compiled 1ms": (per_sample(net, [_split_time(s, 1000) for s in samples]), n),
        "numpy ref": (per_sample(EventNetRef(net.plan), [[s] for s in few]), sum(len(s) for s in few)),
    }
    rows = _measure(cases, b, case="EventNet per sample (reset, push, scores)", data=f"{len(samples)} N-MNIST samples")
    for r in rows:
        r["chunking"] = r["impl"].split(" ")[1] if r["impl"].startswith("compiled") else "whole"
        r["impl"] = r["impl"].split(" ")[0] if r["impl"].startswith("compiled") else r["impl"]
    net.reset_counters()
    for s in samples:
        net.reset()
        net.push(s)
    counters = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in net.counters().items()}
    return {"meta": {"model": source, "backend": BACKEND, "samples": len(samples), "events": n,
                     "mean_events_per_sample": round(n / len(samples), 1), "counters": counters},
            "results": rows}


# --- UDP -------------------------------------------------------------------------------------------


def run_udp(b: Budget) -> dict[str, Any]:
    from spikeline._ext.evio import AEStreamDecoder
    from spikeline.events import formats as F
    from spikeline.events.udp import UDP_BACKEND, AEStreamDecoderRef, encode_aestream

    dvs = F.read(DATA / "dvs_samples_tonic" / "sample.aedat4")
    ev, sensor = dvs.events, dvs.sensor
    out = np.empty(128, EVENT_DTYPE)
    results = []
    for ts in (True, False):
        pkts = encode_aestream(ev, timestamps=ts)
        few = pkts[:200]

        def loop(dec: Any, packets: list[bytes]) -> Caller:
            def call(i: int) -> object:
                dec.reset()
                for k, p in enumerate(packets):
                    dec.decode(p, k, out)
                return dec
            return call

        check = AEStreamDecoder(sensor)
        if sum(len(check.decode(p, 0)) for p in pkts) != len(ev):
            raise RuntimeError("AEStreamDecoder lost events")
        per = len(ev) // len(pkts)
        cases: dict[str, tuple[Caller, int]] = {
            "compiled": (loop(AEStreamDecoder(sensor), pkts), len(ev)),
            "numpy ref": (loop(AEStreamDecoderRef(sensor), few), sum(len(p) for p in few) // (8 if ts else 4))}
        for r in _measure(cases, b, case=f"decode 512-byte datagrams, {'with' if ts else 'no'} timestamps",
                          data="dvxplorer", chunking=f"1 datagram (~{per} events)"):
            r["datagrams_per_s"] = round(r["events_per_s"] / per)
            results.append(r)
    return {"meta": {"backend": UDP_BACKEND, "events": len(ev)}, "results": results,
}


# --- UDP end to end (optional) ---------------------------------------------------------------------


async def _udp_e2e_once(packets: list[bytes], sensor: tuple[int, int], pace_every: int,
                        pause_s: float) -> tuple[int, int, int, float]:
    """One run: an event_udp source on a free loopback port, a sender thread; (events received,
    datagrams received, socket drops, seconds from the first send to the last delivery)."""
    import asyncio
    import socket
    import threading

    from spikeline.metrics import PipelineMetrics
    from spikeline.queue import SampleQueue
    from spikeline.sources import SourceContext
    from spikeline.sources.events import EventUdpSource

    ctx = SourceContext("bench", 0.05, 0.3, 1.0, PipelineMetrics("bench", 0.05, None))
    ctx.queue = SampleQueue(1 << 22)
    params = {**{k: v.default for k, v in EventUdpSource.params.items() if not v.required},
              "port": 0, "width": sensor[0], "height": sensor[1], "max_rate": 0}
    src = EventUdpSource(params, ctx)
    await src.open()
    got: list[int] = [0]
    last = [0.0]

    def put(c: Any) -> None:
        got[0] += len(c.ev)
        last[0] = time.perf_counter()

    task = asyncio.create_task(src.run(put))
    await asyncio.sleep(0.05)
    port = src.address[1]
    t0 = [0.0]

    def send() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0[0] = time.perf_counter()
        for i, pkt in enumerate(packets):
            sock.sendto(pkt, ("127.0.0.1", port))
            if pace_every and i % pace_every == pace_every - 1:
                time.sleep(pause_s)
        sock.close()

    th = threading.Thread(target=send, daemon=True)
    th.start()
    async with asyncio.timeout(60):
        # poll the reader thread's counters (they are plain attributes, not awaitables)
        while src.packets + src.socket_drops < len(packets) and (th.is_alive() or src.packets == 0  # noqa: ASYNC110
                                                                 or time.perf_counter() - last[0] < 0.5):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the last batch reaches the loop
    src.stop()
    await asyncio.wait_for(task, 5)
    th.join()
    return got[0], src.packets, src.socket_drops, last[0] - t0[0]


def run_udp_e2e(b: Budget) -> dict[str, Any]:
    """OPTIONAL: the event_udp source end to end on loopback. A sender thread sends the DVXplorer
    recording (repeated, times shifted) as AEStream datagrams with timestamps; the source decodes and
    batches them (chunk_ms 1) and hands them to the event loop. Rate = events delivered / time from the
    first send to the last delivery. Unpaced first; if the OS drops datagrams (socket_drops), the
    sender pauses after every 16 datagrams, the pause doubled until a run loses nothing."""
    import asyncio

    from spikeline.events import formats as F
    from spikeline.events.udp import encode_aestream

    dvs = F.read(DATA / "dvs_samples_tonic" / "sample.aedat4")
    ev = _repeat(dvs.events, 2 if b.quick else 5)
    packets = encode_aestream(ev, timestamps=True)
    attempts = []
    pace, pause = 0, 0.0
    for _ in range(6):
        runs = [asyncio.run(_udp_e2e_once(packets, dvs.sensor, pace, pause)) for _ in range(1 if b.quick else 3)]
        ok = all(r[2] == 0 and r[0] == len(ev) for r in runs)
        attempts.append({"pace_every": pace, "pause_us": round(pause * 1e6), "lossless": ok,
                         "socket_drops": [r[2] for r in runs], "events_received": [r[0] for r in runs],
                         "seconds": [round(r[3], 4) for r in runs]})
        if ok:
            ns = np.array([round(r[3] * 1e9) for r in runs], dtype=np.int64)
            row = _row(ns, len(ev), impl="event_udp source", case="loopback end to end (optional)", data="dvxplorer",
                       chunking=f"{len(packets)} datagrams", pace_every=pace, pause_us=round(pause * 1e6))
            return {"meta": {"events": len(ev), "datagrams": len(packets), "attempts": attempts}, "results": [row]}
        pace, pause = 16, (pause * 2 if pause else 50e-6)
    return {"meta": {"events": len(ev), "datagrams": len(packets), "attempts": attempts,
                     "note": "no lossless run: every attempt had socket drops"}, "results": []}


# --- targets, tables, docs -------------------------------------------------------------------------


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def targets(families: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(tid: str, what: str, r: dict[str, Any] | None, limit: float, context: str = "") -> None:
        if r is None:
            return
        v = r["events_per_s"]
        out.append({"id": tid, "target": what, "limit": limit, "value": v, "met": bool(v >= limit),
                    "measured": f"{v / 1e6:,.1f} M events/s (median {r['median_us']:,.1f} µs, p99 "
                                f"{r['p99_us']:,.1f} µs per call of {r['events']:,} events)", "context": context})

    if "decode" in families:
        res = families["decode"]["results"]
        cases = dict.fromkeys(r["case"] for r in res if r["impl"] == "compiled")
        for case in cases:
            c = _find(res, case=case, impl="compiled")
            rd = _find(res, case=case, impl="read()")
            ex = _find(res, case=case, impl="expelliarmus")
            ctx = (f"read() from the file {rd['events_per_s'] / 1e6:,.1f} M/s"
                   + (f", expelliarmus {ex['events_per_s'] / 1e6:,.1f} M/s" if ex else "")) if rd else ""
            add(f"decode-{case}", f"decode {case} ≥ 100 M events/s per core (compiled, bytes in memory)", c, 1e8, ctx)
    if "kernels" in families:
        res = families["kernels"]["results"]
        for data in ("dvxplorer", next((r["data"] for r in res if r["data"].startswith("dvxplorer x")), "")):
            for ch in ("whole", "1ms"):
                add(f"denoise+ts-{data}-{ch}", f"denoise + time surface ≥ 20 M events/s ({data}, {ch})",
                    _find(res, case="denoise+ts", data=data, impl="compiled", chunking=ch), 2e7)
                m = families["kernels"]["meta"]["hdsnn"]
                add(f"hdsnn-{data}-{ch}", f"HDSNN (hdsnn stage defaults) ≥ 1 M events/s ({data}, {ch})",
                    _find(res, case="hdsnn", data=data, impl="compiled", chunking=ch), 1e6,
                    f"{m['synops_per_event']} synaptic updates and {m['spikes_per_event']} output spikes per event")
    return out


def _rate(v: float) -> str:
    return f"{v / 1e6:,.2f} M" if v >= 1e5 else f"{v / 1e3:,.1f} k"


def family_table(name: str, rep: dict[str, Any], markdown: bool = False) -> str:
    res = rep["results"]
    header = ["case", "data", "impl", "chunking", "events/call", "calls", "median µs", "p99 µs", "ns/event",
              "events/s", "÷ compiled"]
    if name == "decode":
        header[1] = "format"
    rows = [header]
    best: dict[tuple[str, str], float] = {}
    for r in res:
        if r["impl"] == "compiled":  # the first compiled row of a case: whole recording (or 10 ms grid)
            best.setdefault((r["case"], r.get("data", r.get("format", ""))), r["us_per_event"])
    for r in res:
        key = (r["case"], r.get("data", r.get("format", "")))
        base = best.get(key)
        slower = f"{r['us_per_event'] / base:.1f}x" if base and r["impl"] != "compiled" else "-"
        unit = r.get("unit")
        rows.append([r["case"], str(key[1]), r["impl"], str(r.get("chunking", "")), f"{r['events']:,}", str(r["calls"]),
                     f"{r['median_us']:,.1f}", f"{r['p99_us']:,.1f}",
                     f"{r['us_per_event'] * 1e3:,.1f}", _rate(r["events_per_s"]) + (f" {unit}" if unit else ""),
                     slower])
    return format_table(rows, left=4, markdown=markdown)


def targets_table(ts: list[dict[str, Any]], markdown: bool = False) -> str:
    rows = [["target", "measured", "verdict"]]
    rows += [[t["target"], t["measured"], ("**met**" if t["met"] else "**MISSED**") if markdown else
              ("met" if t["met"] else "MISSED")] for t in ts]
    return format_table(rows, left=2, markdown=markdown)


def tables(report: dict[str, Any], markdown: bool = False) -> str:
    parts = []
    if report["targets"]:
        parts += ["Targets:" if not markdown else "## Targets", targets_table(report["targets"], markdown), ""]
    for name, rep in report["families"].items():
        title = TITLES[name]
        parts += [f"## {title}" if markdown else f"{title}:", family_table(name, rep, markdown), ""]
    return "\n".join(parts)


def _dist_versions(*names: str) -> dict[str, str]:
    """Installed versions: the module's __version__, else its distribution's metadata."""
    from importlib import metadata

    out = versions(*names)
    for name in names:
        if out.get(name, "?") == "?":
            with contextlib.suppress(metadata.PackageNotFoundError):
                out[name] = metadata.version(name)
    return out


def machine(b: Budget, names: list[str]) -> dict[str, Any]:
    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {"numpy": np.__version__, **_dist_versions("spikeline", "tonic", "aedat", "expelliarmus", "lz4")},
            "quick": b.quick, "families": names, "data": str(DATA),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def run_all(names: list[str], quick: bool, evnet: str | None = None) -> dict[str, Any]:
    b = Budget(quick)
    meta = machine(b, names)
    fams: dict[str, Any] = {}
    durations: dict[str, float] = {}
    t0 = time.monotonic()
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        t = time.monotonic()
        fams[name] = run_evnet(b, evnet) if name == "evnet" else globals()[f"run_{name}"](b)
        durations[name] = round(time.monotonic() - t, 1)
    meta.update(durations_s=durations, total_s=round(time.monotonic() - t0, 1),
                loadavg_after=[round(x, 2) for x in os.getloadavg()])
    return {"meta": meta, "families": fams, "targets": targets(fams)}


def _check_finite(report: dict[str, Any]) -> None:
    for fam in report["families"].values():
        for r in fam["results"]:
            if not (math.isfinite(r["events_per_s"]) and r["events_per_s"] > 0):
                raise RuntimeError(f"bad rate in {r}")


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    v = meta["versions"]
    doc = (__doc__ or "").split("\n\n")
    method = "\n\n".join(p for p in doc[1:] if not p.strip().startswith("python tools/"))
    lines = [
        "# Event-camera benchmarks", "",
        f"Generated by `python tools/bench_events.py --write-docs` on {meta['started'][:10]}"
        + (" (**quick mode**: short budgets, rough numbers)" if meta["quick"] else "")
        + ". Every such run rewrites this file; edit tools/bench_events.py instead.", "",
        method, "",
        f"The machine is a shared {meta['logical_cpus']}-core box (load average {meta['loadavg_before'][0]} before "
        f"the run, {meta['loadavg_after'][0]} after, with other builds and training running): every number moves "
        "from run to run; the p99 column shows the within-run jitter.", "",
        "\"÷ compiled\" is a row's ns/event over the compiled kernel's whole-recording row of the same case and "
        "data: how many times faster the compiled kernel is. The numpy and tonic baselines run on the first "
        "events of the recording (events/call column), so per-event rates compare, absolute times do not.", "",
        tables(report, markdown=True), "",
        "## Details", "", "```json", json.dumps({k: f["meta"] for k, f in report["families"].items()}, indent=1),
        "```", "",
        "## Machine and versions", "",
        format_table([["", ""], ["CPU", f"{meta['cpu']} ({meta['logical_cpus']} logical CPUs, {meta['machine']})"],
                      ["OS", meta["platform"]], ["Python", meta["python"]],
                      *[[k, str(x)] for k, x in v.items()],
                      ["run time", f"{meta['total_s']:.0f} s ("
                       + ", ".join(f"{k} {s:.0f} s" for k, s in meta["durations_s"].items()) + ")"]],
                     markdown=True).lstrip("\n"), "",
        "## How to reproduce", "", "```sh", "source .venv/bin/activate",
        "python tools/bench_events.py            # JSON, then the tables",
        "python tools/bench_events.py --quick --only decode", "python tools/bench_events.py --write-docs", "```", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short budgets and smaller inputs (~40 s)")
    ap.add_argument("--only", default="", help=f"comma-separated families: {', '.join(FAMILIES)}")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.relative_to(ROOT)}")
    ap.add_argument("--evnet", default=None, help="EventNet model file or id (default: nmnist-evnet, else the "
                                                  "--quick model in /tmp/evnet)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    report = run_all(names, args.quick, args.evnet)
    _check_finite(report)
    print(json.dumps(report, indent=1))
    print()
    print(tables(report))
    if args.write_docs:
        DOCS.write_text(markdown(report), encoding="utf-8")
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
