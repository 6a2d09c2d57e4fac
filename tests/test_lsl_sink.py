"""The LSL outlet sink: decisions and values back onto LSL, stamped with their source samples' times."""

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

pytestmark = [pytest.mark.lsl, pytest.mark.slow]

STAGES = [{"type": "bandpass", "low_hz": 8, "high_hz": 30}, {"type": "select", "channels": ["C3", "C4"]},
          {"type": "bandpower", "window_s": 0.5, "every": 10}, {"type": "laterality", "threshold": 0.2}]


def _inlet(pylsl, prop: str, value: str):  # type: ignore[no-untyped-def]
    found = pylsl.resolve_byprop(prop, value, 1, 10.0)
    assert found, f"no LSL stream with {prop}={value}"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    inlet.open_stream(10.0)
    return inlet


async def test_decisions_and_values_arrive_on_lsl_as_published(tmp_path: Path) -> None:
    pylsl = import_pylsl()
    sid = uuid.uuid4().hex[:8]
    outlet = LslEEGOutlet(f"eeg-{sid}", n_channels=4, rate=250.0, source_id=f"eeg-{sid}", chunk=5).start()
    out = tmp_path / "r.jsonl"
    cfg = parse({"node": {"name": "n"}, "pipeline": [{
        "name": f"lat-{sid}", "budget_ms": 50, "policy": "mark_late",
        "source": {"type": "lsl", "source_id": f"eeg-{sid}", "resolve_timeout_s": 10},
        "stages": STAGES,
        "sinks": [{"type": "jsonl", "path": str(out)},
                  {"type": "lsl", "content": "decision", "source_id": f"dec-{sid}"},
                  {"type": "lsl", "content": "values", "source_id": f"val-{sid}"}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    task = asyncio.create_task(p.run())
    try:
        async with asyncio.timeout(15):
            while p.state != State.RUNNING:
                await asyncio.sleep(0.02)
        dec = await asyncio.to_thread(_inlet, pylsl, "source_id", f"dec-{sid}")
        val = await asyncio.to_thread(_inlet, pylsl, "source_id", f"val-{sid}")
        info = dec.info(5.0)
        assert (info.type(), info.channel_format(), info.channel_count()) == ("Markers", pylsl.cf_string, 1)
        assert val.info(5.0).channel_count() == 1
        await asyncio.sleep(3.0)
        markers, m_ts = dec.pull_chunk(timeout=1.0, max_samples=10000)
        values, v_ts = val.pull_chunk(timeout=1.0, max_samples=10000)
    finally:
        p.stop()
        await asyncio.wait_for(task, 10)
        outlet.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > 50 and len(values) > 50
    # What the inlets received is a contiguous run of the published rows (they connected after the
    # first rows were published and stopped pulling before the last), in order and exact.
    want = np.asarray([r["values"][0] for r in rows], np.float32)
    vals = np.asarray(values, np.float32)[:, 0]
    k = int(np.flatnonzero(want == vals[0])[0])
    np.testing.assert_array_equal(vals, want[k:k + len(vals)])
    # Each pushed sample carries its source sample's timestamp: a decision has exactly the time of the value
    # of the same row, and rows advance 10 source samples (40 ms at 250 Hz).
    labels = [r["label"] for r in rows]
    m_ts, v_ts = np.asarray(m_ts), np.asarray(v_ts)
    inside = (m_ts >= v_ts[0]) & (m_ts <= v_ts[-1])
    assert inside.sum() > 40
    idx = np.searchsorted(v_ts, m_ts[inside])
    np.testing.assert_array_equal(v_ts[idx], m_ts[inside])
    got = [m[0] for m, keep in zip(markers, inside, strict=True) if keep]
    assert got == [labels[k + i] for i in idx.tolist()]
    assert set(got) <= {"left", "rest", "right"}
    np.testing.assert_allclose(np.median(np.diff(v_ts)), 0.04, atol=0.005)


async def test_decision_content_without_classes_is_a_config_error() -> None:
    sid = uuid.uuid4().hex[:8]
    outlet = LslEEGOutlet(f"eeg-{sid}", n_channels=2, source_id=f"eeg-{sid}")
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 20, "policy": "mark_late",
                               "source": {"type": "lsl", "source_id": f"eeg-{sid}", "resolve_timeout_s": 5},
                               "sinks": [{"type": "lsl", "content": "decision"}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    try:
        await asyncio.wait_for(p.run(), 10)
    finally:
        outlet.close()
    assert p.state == State.FAILED
    assert "pipeline[0].sinks[0]: lsl sink content = 'decision' needs a stream with classes" in p.error
