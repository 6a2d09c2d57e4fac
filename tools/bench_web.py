#!/usr/bin/env python3
"""Benchmark the operator page's cost in the event loop: building one /api/state snapshot (spikeline.web.Snapshots)
and serialising it, for 1, 4 and 16 pipelines.

Not a test. Each pipeline replays the EEG recording ../shared/data/eegmmidb_S001/S001R04.edf once, as fast as
possible, through band-pass → C3/C4 → band power → laterality into a JSON-lines file, so its latency histogram,
counters and recent decisions are filled as in a live session. Once they have all ended, the snapshot is built
`--calls` times per count, the event stream's way (one document, shared by every client of the tick). The page
refreshes once per second, so a snapshot of cost c takes c per second of the loop whatever the client count.

    python tools/bench_web.py [--counts 1,4,16] [--calls 500] [--data ../shared/data]

Prints JSON, then a table (median and p99 per snapshot, ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import cpu_name, format_table

ROOT = Path(__file__).resolve().parents[1]

STAGES = [{"type": "bandpass", "low_hz": 8, "high_hz": 30}, {"type": "select", "channels": ["C3", "C4"]},
          {"type": "bandpower", "window_s": 0.5, "every": 16}, {"type": "laterality", "threshold": 0.2}]


async def measure(n: int, edf: Path, out: Path, calls: int) -> dict[str, Any]:
    from spikeline import web
    from spikeline.config import parse
    from spikeline.daemon import Daemon

    cfg = parse({"node": {"name": "bench"}, "pipeline": [
        {"name": f"eeg-{i}", "budget_ms": 20, "policy": "mark_late",
         "source": {"type": "replay", "file": str(edf), "speed": 0},
         "stages": STAGES, "sinks": [{"type": "jsonl", "path": str(out / f"{n}-{i}.jsonl")}]} for i in range(n)]})
    d = Daemon(cfg)
    assert await d.run() == 0, "a pipeline failed"
    snaps = web.Snapshots(d)
    snaps.build()
    build = np.empty(calls)
    full = np.empty(calls)
    size = 0
    for k in range(calls):
        t0 = time.perf_counter()
        doc = snaps.build()
        t1 = time.perf_counter()
        body = json.dumps(doc, separators=(",", ":"), allow_nan=False)
        t2 = time.perf_counter()
        build[k], full[k], size = t1 - t0, t2 - t0, len(body)
    results = sum(p.metrics.results for p in d.pipelines)
    return {"pipelines": n, "results_per_pipeline": results // n, "calls": calls, "bytes": size,
            "build_ms": {"p50": float(np.median(build) * 1e3), "p99": float(np.percentile(build, 99) * 1e3)},
            "with_json_ms": {"p50": float(np.median(full) * 1e3), "p99": float(np.percentile(full, 99) * 1e3)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1,4,16", help="pipeline counts (default 1,4,16)")
    ap.add_argument("--calls", type=int, default=500, help="snapshots per count (default 500)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    edf = args.data / "eegmmidb_S001" / "S001R04.edf"
    if not edf.is_file():
        print(f"bench_web: recording not found: {edf} (--data or SPIKELINE_DATA)", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [asyncio.run(measure(n, edf, Path(tmp), args.calls)) for n in counts]
    print(json.dumps({"benchmark": "web_snapshot", "cpu": cpu_name(), "results": rows}, indent=2))
    table = [["pipelines", "JSON bytes", "build p50 ms", "build p99 ms", "+JSON p50 ms", "+JSON p99 ms"]]
    for r in rows:
        table.append([str(r["pipelines"]), str(r["bytes"]), f"{r['build_ms']['p50']:.3f}", f"{r['build_ms']['p99']:.3f}",
                      f"{r['with_json_ms']['p50']:.3f}", f"{r['with_json_ms']['p99']:.3f}"])
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
