"""Faults inside a daemon: a stage that raises, repeatedly, beside pipelines that must not notice.

- on_error = "restart": the failing chunk is dropped and counted, every stage is reset, the pipeline goes on;
  20 failures give 20 restarts, and the results show gaps exactly where the failing chunks were.
- on_error = "stop" (the default): the pipeline stops with a report naming the stage and the samples.
- A healthy pipeline in the same daemon publishes every sample, in order, throughout.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from spikeline.chunk import SampleChunk
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.params import Param
from spikeline.pipeline import State
from spikeline.stages import Stage

pytestmark = [pytest.mark.data]

REPEATS = 20


class Explode(Stage):
    """Test stage: passes rows through; raises on a chunk holding a sample index that is a positive multiple of
    `every`. Counts its resets."""

    kind = "test_explode"
    params: ClassVar[dict[str, Param]] = {"every": Param("int", 500, min=1)}
    resets = 0
    failed: ClassVar[list[np.ndarray]] = []  # the sample indices of each chunk it failed on

    def process(self, chunk: SampleChunk) -> SampleChunk:
        seqs = chunk.seqs()
        hit = seqs[(seqs % self.p["every"] == 0) & (seqs > 0)]
        if len(hit):
            self.failed.append(seqs)
            raise ValueError(f"test failure at sample {int(hit[0])}")
        return chunk

    def reset(self) -> None:
        type(self).resets += 1


@pytest.mark.timeout(120)
async def test_a_raising_stage_restarts_or_stops_its_pipeline_and_no_other(data_dir: Path, tmp_path: Path) -> None:
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    source = {"type": "replay", "file": spar, "speed": 20.0, "loop": True, "chunk": 10}
    outs = {k: tmp_path / f"{k}.jsonl" for k in ("restarts", "stops", "healthy")}
    cfg = parse({"node": {"metrics_interval_s": 0.5, "drain_s": 2}, "pipeline": [
        {"name": "restarts", "budget_ms": 200, "policy": "mark_late", "on_error": "restart", "max_restarts": 100,
         "source": source, "stages": [{"type": "test_explode", "every": 500}],
         "sinks": [{"type": "jsonl", "path": str(outs["restarts"])}]},
        {"name": "stops", "budget_ms": 200, "policy": "mark_late", "source": source,
         "stages": [{"type": "test_explode", "every": 500}], "sinks": [{"type": "jsonl", "path": str(outs["stops"])}]},
        {"name": "healthy", "budget_ms": 200, "policy": "mark_late", "source": source,
         "stages": [{"type": "bandpass", "low_hz": 0.5, "high_hz": 10}],
         "sinks": [{"type": "jsonl", "path": str(outs["healthy"])}]},
    ]})
    Explode.resets = 0
    Explode.failed.clear()
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    restarts, stops, healthy = d.pipelines
    try:
        async with asyncio.timeout(90):
            while restarts.metrics.restarts < REPEATS:
                await asyncio.sleep(0.05)
        assert restarts.state == State.RUNNING and healthy.state == State.RUNNING
        assert stops.state == State.FAILED
    finally:
        d.request_stop()
        code = await asyncio.wait_for(task, 20)
    assert code == 1  # one pipeline failed, and the daemon says so

    m = restarts.metrics
    n = m.restarts
    assert n >= REPEATS and m.stage_errors == n and m.dropped_error == 10 * n
    assert Explode.resets == n  # one stage in that pipeline: reset once per restart
    assert m.samples_in == m.computed + m.dropped_error + m.skipped_late + m.dropped_queue
    seqs = np.array([json.loads(line)["seq"] for line in outs["restarts"].read_text().splitlines()])
    missing = np.setdiff1d(np.arange(seqs[0], seqs[-1] + 1), seqs)
    # exactly the samples of the failing chunks are missing from the results (the stopped pipeline failed on the
    # same chunk as this one's first failure: both replay the same recording in the same chunks)
    lost = np.unique(np.concatenate([f for f in Explode.failed if f.max() <= seqs[-1]]))
    assert np.array_equal(missing, lost)

    assert stops.error.startswith("stage 'test_explode' (test_explode) failed on samples ") and \
        stops.error.endswith("ValueError: test failure at sample 500")
    assert stops.metrics.stage_errors == 1 and stops.metrics.restarts == 0

    hs = [json.loads(line)["seq"] for line in outs["healthy"].read_text().splitlines()]
    assert hs == list(range(hs[0], hs[0] + len(hs))) and healthy.metrics.stage_errors == 0
    reports = {r["pipeline"]: r for r in d.last_reports}
    assert reports["stops"]["state"] == "failed" and "test failure at sample 500" in reports["stops"]["error"]
    assert reports["restarts"]["counters"]["restarts"] == n and reports["healthy"]["state"] == "stopped"
    print(f"\nstage faults: {n} restarts (dropped {m.dropped_error} samples in the failing chunks), the stopping "
          f"pipeline failed once with a report, the healthy one published {len(hs)} samples in order")


@pytest.mark.lsl
@pytest.mark.timeout(240)
async def test_lsl_outlet_that_goes_away_and_returns_20_times(tmp_path: Path) -> None:
    """A real liblsl outlet (same source_id) closed and re-created 20 times: the pipeline resumes each time, every
    outage is counted, the missing samples are counted (source_gaps, from the timestamps) and show as jumps in
    the results' sample indices; an outlet that never returns stops the pipeline with a report after
    lost_timeout_s instead of being waited on forever."""
    import uuid

    from spikeline.synth import LslEEGOutlet

    name = f"flaky-{uuid.uuid4().hex[:6]}"
    sid = f"{name}-sid"
    out = tmp_path / "r.jsonl"
    rate = 100.0
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 200, "policy": "mark_late",
                               "source": {"type": "lsl", "source_id": sid, "silent_after_s": 0.3,
                                          "lost_timeout_s": 8.0},
                               "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    from spikeline.pipeline import Pipeline

    outlet = LslEEGOutlet(name, n_channels=2, rate=rate, chunk=5, source_id=sid).start()
    p = Pipeline(cfg.pipelines[0], node="t")
    task = asyncio.create_task(p.run())
    m = p.metrics
    down_s = 0.6
    back_s: list[float] = []  # how long liblsl took to find the re-created outlet each time
    try:
        async with asyncio.timeout(30):
            while m.results < 50:
                assert p.state != State.FAILED, p.error
                await asyncio.sleep(0.02)
        for k in range(REPEATS):
            await asyncio.to_thread(outlet.close)
            await asyncio.sleep(down_s)
            outlet = LslEEGOutlet(name, n_channels=2, rate=rate, chunk=5, source_id=sid, seed=k + 1).start()
            before = m.results
            t_new = time.monotonic()
            async with asyncio.timeout(30):  # liblsl finds the outlet again (same source_id)
                while m.results < before + 20:
                    assert p.state == State.RUNNING, p.error
                    await asyncio.sleep(0.02)
            back_s.append(time.monotonic() - t_new)
        outages, gaps, lost = m.source_counters["outages"], m.source_gaps, m.source_counters["outage_samples"]
        # now it never comes back: reported and stopped after lost_timeout_s
        await asyncio.to_thread(outlet.close)
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, 20)
        waited = asyncio.get_running_loop().time() - t0
    finally:
        p.stop()
        if not task.done():
            await asyncio.wait_for(task, 10)
        outlet.close()
    assert outages == REPEATS
    assert gaps >= lost >= REPEATS * down_s * rate * 0.9  # each outage's samples counted as missing
    assert p.state == State.FAILED and "no sample for" in p.error and "giving up" in p.error
    assert 7.5 <= waited < 15.0  # lost_timeout_s counts from the last sample, just before the close
    seqs = np.array([json.loads(line)["seq"] for line in out.read_text().splitlines()])
    jumps = np.diff(seqs)
    assert np.all(jumps >= 1)
    # the outages show in the results' sample indices (and the stale guard's skips, if any)
    assert int(np.count_nonzero(jumps > 1)) >= REPEATS and int((jumps - 1).sum()) == lost + m.dropped_stale
    print(f"\nLSL outlet closed and re-created {REPEATS} times: {outages} outages, {lost} samples missing "
          f"(reported in seq), {len(seqs)} results; back after {np.median(back_s):.2f} s median, "
          f"{max(back_s):.2f} s max; never-returning outlet reported after {waited:.1f} s")
