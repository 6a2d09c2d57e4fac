"""tools/bench_events.py runs and reports well-formed numbers (no timing thresholds: the timing claims
live in the benchmark and docs/events-benchmarks.md, not in tests)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "bench_events.py"


def _run(data_dir: Path, only: str) -> dict:
    env = {**os.environ, "SPIKELINE_DATA": str(data_dir)}
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--only", only], capture_output=True, text=True,
                          env=env, timeout=110, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The JSON document comes first, the tables after it.
    doc, end = json.JSONDecoder().raw_decode(proc.stdout)
    assert proc.stdout[end:].strip(), "the tables should follow the JSON document"
    return doc


@pytest.mark.data
@pytest.mark.timeout(120)
def test_udp_family_report(data_dir: Path) -> None:
    doc = _run(data_dir, "udp")
    assert set(doc) == {"meta", "families", "targets"}
    meta = doc["meta"]
    for key in ("cpu", "logical_cpus", "python", "versions", "quick", "started", "loadavg_before", "loadavg_after",
                "durations_s", "total_s"):
        assert key in meta, key
    assert meta["quick"] is True and meta["families"] == ["udp"]
    fam = doc["families"]["udp"]
    assert set(doc["families"]) == {"udp"}
    rows = fam["results"]
    impls = {r["impl"] for r in rows}
    assert {"compiled", "numpy ref"} <= impls
    for r in rows:
        for key in ("case", "impl", "chunking", "events", "calls", "median_us", "p99_us", "us_per_event",
                    "events_per_s"):
            assert key in r, (key, r)
        assert r["events"] > 0 and r["calls"] >= 1
        for key in ("median_us", "p99_us", "us_per_event", "events_per_s"):
            assert isinstance(r[key], int | float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["p99_us"] >= r["median_us"]
    assert doc["targets"] == []  # no target is defined on the UDP family


@pytest.mark.data
@pytest.mark.timeout(120)
def test_decode_family_targets(data_dir: Path) -> None:
    doc = _run(data_dir, "decode")
    rows = doc["families"]["decode"]["results"]
    formats = {r["format"] for r in rows}
    assert formats == {"evt2", "evt3", "dat", "aedat4", "nmnist"}
    assert {"compiled", "read()", "numpy", "expelliarmus", "aedat", "tonic"} <= {r["impl"] for r in rows}
    for r in rows:
        assert math.isfinite(r["events_per_s"]) and r["events_per_s"] > 0, r
    assert doc["targets"], "the decode targets are evaluated"
    for t in doc["targets"]:
        assert isinstance(t["met"], bool) and math.isfinite(t["value"]) and t["value"] > 0 and t["limit"] == 1e8
