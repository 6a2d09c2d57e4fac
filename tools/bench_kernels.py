"""Benchmark the streaming SOS filter: compiled kernel vs numpy reference vs scipy.signal.sosfilt.

Not a test. Filters a 250 Hz EEG-like float32 stream (64 and 8 channels) through an 8-30 Hz
order-4 Butterworth band-pass plus a 50 Hz notch (5 sections), chunk sizes 1, 8, 32 and 256,
one call per chunk as the runtime would: the kernels write into a preallocated out, scipy carries
zi from call to call and allocates its (float64) output. Each call is timed on its own with
perf_counter_ns (GC off), giving the median and 99th-percentile latency per call; samples/s is
chunk / median (rows of n_channels), and "x realtime" is that over the 250 Hz stream rate.
Prints one JSON document, then the same results as a table.

    python tools/bench_kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy
import scipy.signal as ss

from benchlib import cpu_name, time_calls
from spikeline.kernels import SOSFilterRef, design_bandpass, design_notch

FS = 250.0
CHANNELS = (64, 8)
CHUNKS = (1, 8, 32, 256)
POOL = 16  # distinct input chunks cycled through, so every call does not read the same cache lines


def _compiled_class() -> type[Any] | None:
    """The compiled kernel, or None when it is not built (then only the reference and scipy run)."""
    try:
        from spikeline._ext.sosfilt import SOSFilter
    except ImportError:
        return None
    return SOSFilter


COMPILED = _compiled_class()



def _callers(sos: npt.NDArray[np.float64], chunks: list[npt.NDArray[np.float32]]) -> dict[str, Callable[[int], object]]:
    """One stateful callable per implementation, each processing chunks[i % POOL] on call i."""
    n_channels = chunks[0].shape[1]
    out = np.empty_like(chunks[0])
    callers: dict[str, Callable[[int], object]] = {}
    if COMPILED is not None:
        ext = COMPILED(sos, n_channels)
        callers["compiled"] = lambda i: ext.step(chunks[i % POOL], out)
    ref = SOSFilterRef(sos, n_channels)
    callers["reference"] = lambda i: ref.step(chunks[i % POOL], out)
    zi = [np.zeros((sos.shape[0], 2, n_channels))]

    def scipy_call(i: int) -> object:
        y, zi[0] = ss.sosfilt(sos, chunks[i % POOL], axis=0, zi=zi[0])
        return y

    callers["scipy"] = scipy_call
    return callers



def run(quick: bool) -> dict[str, Any]:
    budget_s, min_calls, max_calls = (0.15, 30, 20_000) if quick else (1.0, 200, 200_000)
    sos = np.vstack([design_bandpass(8.0, 30.0, FS, order=4), design_notch(50.0, FS)])
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for n_channels in CHANNELS:
        offsets = rng.uniform(-3000.0, 3000.0, n_channels)
        for chunk in CHUNKS:
            chunks = [(20.0 * rng.standard_normal((chunk, n_channels)) + offsets).astype(np.float32)
                      for _ in range(POOL)]
            for impl, call in _callers(sos, chunks).items():
                ns = time_calls(call, budget_s, min_calls, max_calls)
                median_us = float(np.median(ns)) / 1e3
                samples_per_s = chunk / (median_us * 1e-6)
                results.append({
                    "impl": impl, "channels": n_channels, "chunk": chunk, "calls": int(ns.size),
                    "median_us": round(median_us, 3),
                    "p99_us": round(float(np.percentile(ns, 99)) / 1e3, 3),
                    "samples_per_s": round(samples_per_s),
                    "x_realtime": round(samples_per_s / FS, 1),
                })
    return {
        "meta": {
            "fs_hz": FS, "sections": int(sos.shape[0]), "dtype": "float32", "quick": quick,
            "compiled": COMPILED is not None,
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "machine": platform.machine(), "cpu": cpu_name(),
        },
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    header = ("impl", "ch", "chunk", "calls", "median µs", "p99 µs", "samples/s", "x realtime")
    rows = [header] + [
        (r["impl"], str(r["channels"]), str(r["chunk"]), str(r["calls"]), f"{r['median_us']:.2f}",
         f"{r['p99_us']:.2f}", f"{r['samples_per_s']:,}", f"{r['x_realtime']:,}")
        for r in report["results"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
