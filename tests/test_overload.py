"""Overload: a source about 10x faster than its stages can compute, for minutes, with real recordings.

- drop_oldest: memory stays bounded (the queue never holds more than its capacity, the process's RSS does not
  grow), every published result is within the budget, and every sample is accounted for: computed, skipped as
  late, or dropped by the queue — each counted.
- mark_late: every sample that fits the queue is computed; results that miss the budget carry `late: true`, and
  exactly those are counted as deadline misses.
- An event flood (a DVS recording replayed far faster than real time): the same bounds and accounting, with the
  event-rate cap's drops counted too.

The stages are test stages that burn a fixed CPU time per row (or per event chunk) on the event loop, as a
compiled kernel that is too slow would. SPIKELINE_OVERLOAD_S sets the long run's length (default 120 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from spikeline.chunk import EventChunk, SampleChunk, StreamMeta
from spikeline.config import parse
from spikeline.params import Param
from spikeline.pipeline import Pipeline, State
from spikeline.sources import Source
from spikeline.sources.base import sleep_until
from spikeline.stages import Stage

pytestmark = [pytest.mark.data, pytest.mark.slow]

LONG_S = float(os.environ.get("SPIKELINE_OVERLOAD_S", "120"))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class BusyRows(Stage):
    """Test stage: passes rows through, burning cost_ms of CPU per row (a kernel too slow for its input)."""

    kind = "test_busy_rows"
    params: ClassVar[dict[str, Param]] = {"cost_ms": Param("number", 1.0, min=0)}

    def process(self, chunk: SampleChunk) -> SampleChunk:
        _spin(len(chunk) * self.p["cost_ms"] / 1e3)
        return chunk


class BusyEvents(Stage):
    """Test stage: one row per event chunk (its event count), burning cost_ms per chunk."""

    kind = "test_busy_events"
    takes_events = True
    params: ClassVar[dict[str, Param]] = {"cost_ms": Param("number", 1.0, min=0)}

    def start(self, meta: StreamMeta) -> StreamMeta:
        self.meta = StreamMeta(name="counts", type="counts", channels=("events",), nominal_rate=0.0)
        return self.meta

    def process(self, chunk: EventChunk) -> SampleChunk | None:
        if not len(chunk):
            return None
        _spin(self.p["cost_ms"] / 1e3)
        t = np.array([chunk.t_base + float(chunk.ev["t"][-1]) * chunk.t_scale])
        return SampleChunk(data=np.array([[len(chunk)]], np.float32), t=t, t_recv=np.array([chunk.t_recv]),
                           seq=chunk.seq, meta=self.meta)


class Schedule(Source):
    """Test source: one channel, `rate` rows/s in chunks of `chunk` rows, phase after phase
    (phases = [rate, seconds, rate, seconds, ...])."""

    kind = "test_schedule"
    params: ClassVar[dict[str, Param]] = {"phases": Param("number_list"), "chunk": Param("int", 2, min=1)}

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        self._stopping = asyncio.Event()

    async def open(self) -> StreamMeta:
        rates = self.p["phases"][0::2]
        return StreamMeta(name="sched", type="test", channels=("x",), nominal_rate=float(max(rates)))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, put: Any) -> None:
        meta = await self.open()
        ph, k, seq = self.p["phases"], self.p["chunk"], 0
        due = time.monotonic()
        for rate, seconds in zip(ph[0::2], ph[1::2], strict=True):
            end = due + seconds
            while due < end:
                if not await sleep_until(due, self._stopping):
                    return
                now = time.monotonic()
                t = np.full(k, now)
                put(SampleChunk(data=np.zeros((k, 1), np.float32), t=t, t_recv=t.copy(), seq=seq, meta=meta))
                seq += k
                due += k / rate


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _run(cfg_doc: dict[str, Any], seconds: float, out: Path) -> tuple[Pipeline, list[float], list[dict]]:
    """Run one pipeline for `seconds`, sampling RSS every second; returns it, the RSS series and the results."""
    p = Pipeline(parse(cfg_doc).pipelines[0], node="t")
    task = asyncio.create_task(p.run())
    rss: list[float] = []
    try:
        async with asyncio.timeout(30):
            while p.state != State.RUNNING:
                assert p.state != State.FAILED, p.error
                await asyncio.sleep(0.02)
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(1.0)
            rss.append(_rss_mb())
            assert p.queue is not None and len(p.queue) <= p.queue.capacity
    finally:
        p.stop()
        await asyncio.wait_for(task, 60)
    assert p.state == State.STOPPED, p.error
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # noqa: ASYNC240 (after the run)
    return p, rss, rows


def _accounted(p: Pipeline) -> None:
    """Every sample (event) the source handed over was computed, skipped as late or dropped by the queue."""
    m = p.metrics
    assert p.queue is not None and len(p.queue) == 0
    assert m.samples_in == m.computed + m.skipped_late + m.dropped_queue + m.non_finite + m.dropped_error, (
        m.samples_in, m.computed, m.skipped_late, m.dropped_queue, m.non_finite, m.dropped_error)


def _samples_doc(data_dir: Path, out: Path, policy: str, budget_ms: float) -> dict[str, Any]:
    # SPAR watch recording (6 ch, 50 Hz) looped at 20x: 1000 samples/s in chunks of 10; the stage computes
    # 100 rows/s (10 ms per row): the source is 10x faster than the stages.
    return {"pipeline": [{
        "name": f"overload-{policy}", "budget_ms": budget_ms, "queue_s": 1.0, "policy": policy,
        "source": {"type": "replay", "file": str(data_dir / "spar_applewatch" / "spar_watch.npz"), "speed": 20.0,
                   "loop": True, "chunk": 10},
        "stages": [{"type": "test_busy_rows", "cost_ms": 10.0}],
        "sinks": [{"type": "jsonl", "path": str(out)}]}]}


@pytest.mark.timeout(LONG_S + 120)
async def test_drop_oldest_under_10x_overload_for_minutes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    budget_ms = 300.0
    p, rss, rows = await _run(_samples_doc(data_dir, out, "drop_oldest", budget_ms), LONG_S, out)
    m = p.metrics
    _accounted(p)
    offered = m.samples_in
    assert m.computed < 0.2 * offered and m.skipped_late + m.dropped_queue > 0.7 * offered  # really overloaded
    # published results: all inside the budget, none marked late
    assert rows and len(rows) == m.results == m.computed
    lat = np.array([r["latency_ms"]["runtime"] for r in rows])
    assert m.deadline_misses == 0 and lat.max() <= budget_ms and not any(r.get("late") for r in rows), \
        np.sort(lat)[-5:]
    # memory: the queue stayed within its capacity (checked every second) and the process did not grow
    warm = rss[len(rss) // 6]
    assert rss[-1] - warm < 0.05 * warm + 5, rss
    print(f"\ndrop_oldest {LONG_S:g} s: offered {offered}, computed {m.computed}, skipped_late {m.skipped_late}, "
          f"dropped_queue {m.dropped_queue}, results {len(rows)}, runtime p50 {np.median(lat):.1f} ms max "
          f"{lat.max():.1f} ms (budget {budget_ms:g}), RSS {warm:.1f} -> {rss[-1]:.1f} MB")


@pytest.mark.timeout(120)
async def test_mark_late_computes_what_fits_and_marks_what_missed(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    budget_ms = 300.0
    p, _, rows = await _run(_samples_doc(data_dir, out, "mark_late", budget_ms), 20.0, out)
    m = p.metrics
    _accounted(p)
    assert m.skipped_late == 0 and m.dropped_queue > 0  # nothing skipped; the bounded queue overflowed
    late = [r for r in rows if r["latency_ms"]["runtime"] > budget_ms]
    assert late and all(r.get("late") is True for r in late)
    assert not any(r.get("late") for r in rows if r["latency_ms"]["runtime"] <= budget_ms)
    assert m.deadline_misses == len(late) and len(rows) == m.results == m.computed
    print(f"\nmark_late 20 s: offered {m.samples_in}, computed {m.computed}, dropped_queue {m.dropped_queue}, "
          f"results {len(rows)}, late {len(late)}")


@pytest.mark.timeout(180)
async def test_event_flood_drop_oldest(data_dir: Path, tmp_path: Path) -> None:
    """The DVXplorer recording looped at 20x real time in chunks of 1 ms of sensor time (a chunk every 50 us of
    wall time), through the source's event-rate cap; the stage takes 10 ms per chunk: it computes one in 200."""
    out = tmp_path / "results.jsonl"
    budget_ms = 100.0
    doc = {"pipeline": [{
        "name": "flood", "budget_ms": budget_ms, "queue_s": 1.0, "policy": "drop_oldest",
        "source": {"type": "event_file", "file": str(data_dir / "dvs_samples_tonic" / "sample.aedat4"),
                   "speed": 20.0, "loop": True, "chunk_ms": 1.0, "max_rate": 2e6},
        "stages": [{"type": "test_busy_events", "cost_ms": 10.0}],
        "sinks": [{"type": "jsonl", "path": str(out)}]}]}
    p, rss, rows = await _run(doc, 60.0, out)
    m = p.metrics
    _accounted(p)
    assert m.computed < 0.5 * m.samples_in and m.skipped_late + m.dropped_queue > 0
    lat = np.array([r["latency_ms"]["runtime"] for r in rows])
    assert rows and m.deadline_misses == 0 and lat.max() <= budget_ms, np.sort(lat)[-5:]
    assert sum(r["values"][0] for r in rows) == m.computed  # each result counts the events it computed
    warm = rss[len(rss) // 6]
    assert rss[-1] - warm < 0.05 * warm + 5, rss
    src = p.source
    print(f"\nevent flood 60 s: events in {m.samples_in}, capped by the rate limit {m.dropped_rate}, computed "
          f"{m.computed}, skipped_late {m.skipped_late}, dropped_queue {m.dropped_queue}, results {len(rows)}, "
          f"runtime max {lat.max():.1f} ms (budget {budget_ms:g}), RSS {warm:.1f} -> {rss[-1]:.1f} MB, "
          f"position {getattr(src, 'position', '?')}")


@pytest.mark.timeout(120)
async def test_degrade_switches_tiers_with_the_load_and_back_without_flapping(tmp_path: Path) -> None:
    """Tier 0 costs 10 ms per row, tier 1 (declared in the config) 1 ms. 600 rows/s for 4 s (6x what tier 0 can
    do, 60 % of what tier 1 can), 25 rows/s for 6 s, 600 rows/s again: down to tier 1, back to 0 once the load
    has fallen (and tier 0 could carry it), down again — three switches, no flapping, every sample accounted for,
    every result within the budget and saying which tier computed it."""
    out = tmp_path / "results.jsonl"
    budget_ms = 300.0
    doc = {"pipeline": [{
        "name": "tiers", "budget_ms": budget_ms, "queue_s": 1.0, "policy": "degrade", "recover_s": 2.0,
        "source": {"type": "test_schedule", "phases": [600, 4, 25, 6, 600, 4], "chunk": 2},
        "stages": [{"type": "test_busy_rows", "cost_ms": 10.0, "tiers": [{"cost_ms": 1.0}]}],
        "sinks": [{"type": "jsonl", "path": str(out)}]}]}
    p, _, rows = await _run(doc, 15.0, out)
    m = p.metrics
    _accounted(p)
    tiers = [r["tier"] for r in rows]
    runs = [t for i, t in enumerate(tiers) if i == 0 or t != tiers[i - 1]]
    assert runs == [0, 1, 0, 1], runs
    assert m.tier_switches == 3 and m.tier == 1
    assert m.deadline_misses == 0 and max(r["latency_ms"]["runtime"] for r in rows) <= budget_ms
    # tier 1 served the fast phases: most results came from it, and the slow phase went back to tier 0
    t_first0 = [r["t_recv"] for r in rows if r["tier"] == 0]
    assert len(t_first0) > 50 and tiers.count(1) > 2 * tiers.count(0)
    print(f"\ndegrade: tiers {runs}, switches {m.tier_switches}, results {len(rows)} (tier 0: {tiers.count(0)}, "
          f"tier 1: {tiers.count(1)}), skipped_late {m.skipped_late}, dropped_queue {m.dropped_queue}, "
          f"seconds per tier {m.tier_seconds}")


def test_degrade_config_errors() -> None:
    from spikeline.params import ConfigError

    def problems(pipe: dict[str, Any]) -> str:
        base = {"name": "p", "budget_ms": 50, "source": {"type": "test_schedule", "phases": [10, 1]},
                "sinks": [{"type": "stdout"}]}
        with pytest.raises(ConfigError) as e:
            parse({"pipeline": [{**base, **pipe}]})
        return str(e.value)

    assert "needs cheaper tiers" in problems({"policy": "degrade", "stages": [{"type": "test_busy_rows"}]})
    assert "policy = \"degrade\" only" in problems({"stages": [{"type": "test_busy_rows", "tiers": [{"cost_ms": 1}]}]})
    assert "tiers[0].cost_ms" in problems({"policy": "degrade",
                                           "stages": [{"type": "test_busy_rows", "tiers": [{"cost_ms": -1}]}]})
    assert "tiers[0].nope: unknown key" in problems({"policy": "degrade",
                                                     "stages": [{"type": "test_busy_rows", "tiers": [{"nope": 1}]}]})
    assert "same number of tiers" in problems({"policy": "degrade", "stages": [
        {"type": "test_busy_rows", "tiers": [{"cost_ms": 1}]},
        {"type": "test_busy_rows", "name": "b", "tiers": [{"cost_ms": 1}, {"cost_ms": 0.5}]}]})
