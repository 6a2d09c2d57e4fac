"""The LSL source on its own: resolution, stream metadata, the stale-data guard."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from spikeline.config import parse
from spikeline.lslcfg import import_pylsl
from spikeline.pipeline import Pipeline, State
from spikeline.synth import LslEEGOutlet

pytestmark = [pytest.mark.lsl]


async def test_backlog_older_than_the_guard_is_skipped_to_the_newest_and_counted(tmp_path: Path) -> None:
    pylsl = import_pylsl()
    sid = f"sid-{uuid.uuid4().hex[:8]}"
    outlet = LslEEGOutlet(f"stale-{sid}", n_channels=3, rate=100.0, source_id=sid, chunk=1)
    out = tmp_path / "r.jsonl"
    cfg = parse({"pipeline": [{
        "name": "p", "budget_ms": 20, "stale_ms": 100,
        "source": {"type": "lsl", "stream_type": "EEG", "source_id": sid, "resolve_timeout_s": 5},
        "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    task = asyncio.create_task(p.run())
    try:
        assert await asyncio.to_thread(outlet.have_consumers, 10.0)
        assert p.meta_in is not None
        assert p.meta_in.channels == ("C3", "C4", "Cz") and p.meta_in.units == ("microvolts",) * 3
        assert (p.meta_in.nominal_rate, p.meta_in.source_id) == (100.0, sid)
        # 100 samples whose timestamps end 5 s ago: a backlog. Then 10 fresh ones.
        old = np.arange(300, dtype=np.float32).reshape(100, 3)
        outlet.outlet.push_chunk(old, pylsl.local_clock() - 5.0)
        await asyncio.sleep(0.3)
        outlet.outlet.push_chunk(np.ones((10, 3), np.float32))
        async with asyncio.timeout(10):
            while p.metrics.results < 11:
                await asyncio.sleep(0.02)
        p.stop()
        await asyncio.wait_for(task, 5)
        # the pipeline's end destroyed its inlet (while the pipeline object lives on): no consumer is left
        async with asyncio.timeout(5):
            while outlet.outlet.have_consumers():
                await asyncio.sleep(0.05)
    finally:
        p.stop()
        await asyncio.wait_for(task, 5)
        outlet.close()
    assert p.state == State.STOPPED
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    seqs = [r["seq"] for r in rows]
    assert seqs[-10:] == list(range(100, 110))  # the fresh samples all pass
    old_kept = [r for r in rows if r["seq"] < 100]
    assert p.metrics.dropped_stale + len(old_kept) == 100  # every backlog sample is kept or counted
    # What is kept of the backlog is its newest sample (when nothing newer waits in the pull) — never a
    # run of stale samples. (Samples liblsl delivered with fresh timestamps would not be stale.)
    stale_kept = [r for r in old_kept if r["latency_ms"]["age"] > 100 + 50]
    assert len(stale_kept) <= 2, [r["seq"] for r in stale_kept]
    assert 99 in seqs and rows[seqs.index(99)]["values"] == [297.0, 298.0, 299.0]
    assert rows[seqs.index(99)]["latency_ms"]["age"] > 4000
    assert p.metrics.dropped_stale >= 87


async def test_nothing_found_is_reported_with_what_is_visible() -> None:
    name = f"present-{uuid.uuid4().hex[:6]}"
    outlet = LslEEGOutlet(name, n_channels=2)
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 20,
                               "source": {"type": "lsl", "name": "absent", "resolve_timeout_s": 0.3},
                               "sinks": [{"type": "stdout"}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    try:
        await asyncio.wait_for(p.run(), 10)
    finally:
        outlet.close()
    assert p.state == State.FAILED
    assert "no LSL stream matching name='absent' within 0.3 s" in p.error
    assert f"'{name}' (EEG, 2 ch)" in p.error


async def test_pipelines_share_a_daemon_and_one_failing_leaves_the_other_running(tmp_path: Path) -> None:
    from spikeline.daemon import Daemon

    name = f"multi-{uuid.uuid4().hex[:6]}"
    outlet = LslEEGOutlet(name, n_channels=4, rate=250.0).start()
    good, other = tmp_path / "good.jsonl", tmp_path / "other.jsonl"
    cfg = parse({"node": {"metrics_interval_s": 0.2, "drain_s": 1}, "pipeline": [
        {"name": "missing", "budget_ms": 20, "source": {"type": "lsl", "name": "nope", "resolve_timeout_s": 0.2},
         "sinks": [{"type": "jsonl", "path": str(other)}]},
        {"name": "good", "budget_ms": 20, "policy": "mark_late", "source": {"type": "lsl", "name": name},
         "stages": [{"type": "bandpass", "low_hz": 8, "high_hz": 30}],
         "sinks": [{"type": "jsonl", "path": str(good)}]},
        {"name": "good2", "budget_ms": 20, "policy": "mark_late", "source": {"type": "lsl", "name": name},
         "stages": [{"type": "select", "channels": ["Cz"]},
                    {"type": "encode", "method": "delta", "delta_threshold": 2.0}],
         "sinks": [{"type": "jsonl", "path": str(other)}]},
    ]})
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    try:
        async with asyncio.timeout(15):
            while d.pipelines[1].metrics.results < 250 or d.pipelines[2].metrics.results < 250:
                await asyncio.sleep(0.05)
        assert d.pipelines[0].state == State.FAILED and "no LSL stream matching name='nope'" in d.pipelines[0].error
        assert d.pipelines[1].state == State.RUNNING
    finally:
        d.request_stop()
        code = await asyncio.wait_for(task, 10)
        outlet.close()
    assert code == 1  # a pipeline failed: the daemon says so when it exits
    reports = {r["pipeline"]: r for r in d.last_reports}
    assert reports["missing"]["state"] == "failed" and reports["good"]["state"] == "stopped"
    # stages that count their work publish it with the pipeline's metrics
    enc = reports["good2"]["stage_counters"]["encode"]
    assert enc["samples"] == d.pipelines[2].metrics.samples_in and enc["spikes"] > 0
    assert "stage_counters" not in reports["good"]
    seqs = [json.loads(line)["seq"] for line in good.read_text().splitlines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
