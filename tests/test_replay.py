"""The replay source through real pipelines, its pacing and backpressure, and `spikeline replay` (pipeline and
LSL outlet modes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, ROOT, need
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.cli import main
from spikeline.config import parse
from spikeline.metrics import PipelineMetrics
from spikeline.params import ConfigError
from spikeline.pipeline import Pipeline, State
from spikeline.queue import SampleQueue
from spikeline.recordings import load
from spikeline.sources import SourceContext
from spikeline.sources.replay import ReplaySource

SPAR = DATA / "spar_applewatch" / "spar_watch.npz"
EDF = DATA / "eegmmidb_S001" / "S001R04.edf"


def _need(p: Path) -> None:
    need(p.exists(), f"{p} not found (set SPIKELINE_DATA or provide ../shared/data)")


def _csv(path: Path, n: int, rate: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, channels)).astype(np.float32)
    with path.open("w") as f:
        f.write(",".join(f"c{i}" for i in range(channels)) + "\n")
        for row in x:
            f.write(",".join(f"{float(v)!r}" for v in row) + "\n")
    return x


def _pipeline(source: dict[str, Any], out: Path, stages: list[dict[str, Any]] | None = None,
              **pipe: Any) -> Pipeline:
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 50, "policy": "mark_late", **pipe, "source": {"type": "replay", **source},
                               "stages": stages or [], "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    return Pipeline(cfg.pipelines[0], node="n")


def _rows(out: Path) -> tuple[list[int], np.ndarray]:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [r["seq"] for r in rows], np.array([r["values"] for r in rows], dtype=np.float32)


@pytest.mark.data
async def test_fast_replay_delivers_every_sample_once_in_order_with_a_tiny_queue(tmp_path: Path) -> None:
    _need(SPAR)
    recs = load(SPAR)[:3]
    expect = np.concatenate([r.data for r in recs])
    out = tmp_path / "r.jsonl"
    p = _pipeline({"file": str(SPAR), "series": "0:3", "speed": 0, "chunk": 50}, out, queue_samples=16)
    await asyncio.wait_for(p.run(), 60)  # ends by itself at the end of the file
    assert p.state == State.STOPPED, p.error
    seqs, values = _rows(out)
    assert seqs == list(range(len(expect)))
    np.testing.assert_array_equal(values, expect)
    assert p.metrics.dropped_queue == 0 and p.queue is not None and p.queue.dropped == 0
    assert p.queue.high_water <= 16
    src = p.source
    assert isinstance(src, ReplaySource)
    assert [(s.seq_start, s.seq_stop, s.label) for s in src.segments] == [
        (0, 1333, "PEN"), (1333, 3791, "FEL"), (3791, 5988, "FEL")]
    assert p.meta_in is not None and p.meta_in.channels == ("ax", "ay", "az", "wx", "wy", "wz")
    assert p.meta_in.units[0] == "g" and p.meta_in.nominal_rate == 50.0


@pytest.mark.data
async def test_chunk_boundaries_do_not_matter_through_a_stateful_stage(tmp_path: Path) -> None:
    _need(EDF)
    outs = []
    for chunk, queue in ((7, 16), (500, 4096), (1, 3)):
        out = tmp_path / f"r{chunk}.jsonl"
        p = _pipeline({"file": str(EDF), "channels": ["C3", "Cz", "C4"], "speed": 0, "chunk": chunk}, out,
                      stages=[{"type": "bandpass", "low_hz": 8, "high_hz": 30}], queue_samples=queue)
        await asyncio.wait_for(p.run(), 60)
        assert p.state == State.STOPPED, p.error
        assert p.metrics.dropped_queue == 0
        outs.append(_rows(out))
    for seqs, values in outs:
        assert seqs == list(range(20000))
        np.testing.assert_array_equal(values, outs[0][1])


async def test_real_time_pacing_and_speed(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    x = _csv(f, 100, 100.0)
    for speed, nominal in ((1.0, 1.0), (4.0, 0.25)):
        chunks: list[SampleChunk] = []
        src = ReplaySource({**_defaults(), "file": str(f), "rate_hz": 100.0, "speed": speed, "chunk": 10},
                           ctx=_ctx())
        meta = await src.open()
        assert meta.nominal_rate == 100.0 and meta.channels == ("c0", "c1")
        t0 = time.monotonic()
        await asyncio.wait_for(src.run(chunks.append), 10)
        wall = time.monotonic() - t0
        # loose sanity only: the last chunk is due at 0.99 s / speed; never early, not grossly late
        assert 0.99 * nominal - 0.02 <= wall < nominal + 0.5, (speed, wall)
        np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), x)
        assert [c.seq for c in chunks] == list(range(0, 100, 10))
        t = np.concatenate([c.t for c in chunks])
        np.testing.assert_allclose(np.diff(t), 0.01 / speed, rtol=1e-6)
        for c in chunks:  # handed over when the newest sample is due, not before
            assert c.t_recv[0] >= c.t[-1] - 1e-3 and np.all(c.t_recv == c.t_recv[0])


def _ctx() -> SourceContext:
    return SourceContext("p", 0.05, 0.3, 1.0, PipelineMetrics("p", 0.05, None))


def _defaults() -> dict[str, Any]:
    return {k: v.default for k, v in ReplaySource.params.items() if not v.required}


async def test_loop_keeps_counting_and_stop_ends_it(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    x = _csv(f, 30, 10.0)
    src = ReplaySource({**_defaults(), "file": str(f), "rate_hz": 10.0, "speed": 0, "loop": True, "chunk": 8},
                       ctx=_ctx())
    await src.open()
    chunks: list[SampleChunk] = []

    def put(c: SampleChunk) -> None:
        chunks.append(c)
        if sum(len(k) for k in chunks) >= 95:
            src.stop()

    await asyncio.wait_for(src.run(put), 10)
    data = np.concatenate([c.data for c in chunks])
    assert len(data) in range(95, 103)
    np.testing.assert_array_equal(data[:90], np.tile(x, (3, 1)))
    assert [c.seq for c in chunks] == np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist()
    assert [len(c) for c in chunks[:5]] == [8, 8, 8, 6, 8]  # a pass ends with a short chunk
    assert src.passes == 3
    t = np.concatenate([c.t for c in chunks])
    assert np.all(np.diff(t) > -1e-9)


async def test_queue_wait_room_is_backpressure_and_put_still_drops() -> None:
    meta = StreamMeta("s", "t", ("a",), 10.0)

    def chunk(n: int, seq: int) -> SampleChunk:
        return SampleChunk(np.zeros((n, 1), np.float32), np.zeros(n), np.zeros(n), seq, meta)

    q = SampleQueue(16)
    q.put(chunk(10, 0))
    waiter = asyncio.create_task(q.wait_room(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # 10 + 10 > 16: must wait
    got = await q.get()
    assert got is not None and len(got) == 10
    await asyncio.wait_for(waiter, 1)
    q.put(chunk(10, 10))
    q.put(chunk(10, 20))  # a live source's put: the oldest 4 are dropped, as before
    assert q.dropped == 4 and len(q) == 16
    w2 = asyncio.create_task(q.wait_room(100))  # more than the capacity: waits for an empty queue
    await asyncio.sleep(0.01)
    assert not w2.done()
    q.close()
    await asyncio.wait_for(w2, 1)  # closing releases waiters


@pytest.mark.data
async def test_markers_are_mapped_to_sample_indices() -> None:
    _need(EDF)
    src = ReplaySource({**_defaults(), "file": str(EDF), "channels": ["Cz"]}, ctx=_ctx())
    await src.open()
    (rec,) = load(EDF)
    assert len(src.markers) == len(rec.markers) == 30
    for (seq, t, m), ref in zip(src.markers, rec.markers, strict=True):
        assert m == ref and t == ref.t_s and seq == int(np.ceil(round(ref.t_s * 160, 6)))


@pytest.mark.parametrize(("source", "message"), [
    ({"series": "7"}, "series 7 does not exist (the file has 1: 0..0)"),
    ({"series": "nope"}, "no series named 'nope'"),
    ({"channels": ["c0", "zz"]}, "no channel 'zz'; the recording has c0, c1"),
    ({"rate_hz": 0.0}, "no time column (t/time/timestamp) and no rate_hz"),
])
async def test_replay_errors_fail_the_pipeline_with_the_reason(tmp_path: Path, source: dict[str, Any],
                                                               message: str) -> None:
    f = tmp_path / "x.csv"
    _csv(f, 10, 10.0)
    p = _pipeline({"file": str(f), "rate_hz": 10.0, **source}, tmp_path / "o.jsonl")
    await asyncio.wait_for(p.run(), 10)
    assert p.state == State.FAILED and message in p.error and str(f) in p.error, p.error


async def test_unknown_rate_needs_rate_hz_or_fast(tmp_path: Path) -> None:
    f = tmp_path / "Toy_TRAIN.ts"
    f.write_text("@problemName Toy\n@univariate true\n@classLabel true a\n@data\n1,2,3:a\n4,5:a\n")
    p = _pipeline({"file": str(f)}, tmp_path / "o.jsonl")
    await asyncio.wait_for(p.run(), 10)
    assert p.state == State.FAILED and "has no sampling rate: set rate_hz, or speed = 0" in p.error
    out = tmp_path / "fast.jsonl"
    p = _pipeline({"file": str(f), "speed": 0}, out)
    await asyncio.wait_for(p.run(), 10)
    assert p.state == State.STOPPED
    assert _rows(out)[1].ravel().tolist() == [1, 2, 3, 4, 5]


def test_config_validation() -> None:
    with pytest.raises(ConfigError) as e:
        parse({"pipeline": [{"name": "p", "budget_ms": 5, "sinks": [{"type": "stdout"}],
                             "source": {"type": "replay", "file": "", "speed": -1, "kind": "wav"}}]})
    text = str(e.value)
    assert "pipeline[0].source.file: a recording file is required" in text
    assert "pipeline[0].source.speed: must be >= 0" in text
    assert 'pipeline[0].source.kind: must be one of' in text


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.csv"
    _csv(f, 25, 50.0, channels=3)
    assert main(["replay", str(f), "--rate-hz", "50", "--channels", "c2,c0"]) == 0
    out = capsys.readouterr().out
    assert "1 series, 25 samples, 0.500 s, 2 channels at 50 Hz, 0 markers" in out
    assert "channels: c2, c0" in out
    assert main(["replay", str(tmp_path / "missing.edf")]) == 2
    assert "missing.edf: no such file" in capsys.readouterr().err


def test_cli_replays_through_a_config_pipeline(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    x = _csv(f, 400, 100.0, channels=2)
    out = tmp_path / "r.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[node]
name = "t"
drain_s = 5
[[pipeline]]
name = "other"
budget_ms = 20
source = {{ type = "lsl", name = "never-there" }}
sinks = [{{ type = "stdout" }}]
[[pipeline]]
name = "p"
budget_ms = 20
queue_samples = 8
source = {{ type = "lsl", name = "live-eeg" }}
sinks = [{{ type = "jsonl", path = "{out}" }}]
""")
    assert main(["replay", str(f), "--config", str(cfg), "--rate-hz", "100"]) == 2  # two pipelines: which?
    t0 = time.monotonic()
    assert main(["replay", str(f), "--config", str(cfg), "--pipeline", "p", "--rate-hz", "100", "--fast"]) == 0
    assert time.monotonic() - t0 < 30
    seqs, values = _rows(out)
    assert seqs == list(range(400))
    np.testing.assert_array_equal(values, x)


@pytest.mark.lsl
@pytest.mark.data
def test_cli_lsl_outlet_plays_exact_samples_and_markers(tmp_path: Path) -> None:
    _need(EDF)
    from spikeline.lslcfg import import_pylsl

    pylsl = import_pylsl()
    (rec,) = load(EDF)
    cols = [rec.channels.index(c) for c in ("C3", "Cz", "C4")]
    name = f"replay-{EDF.stem}-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
    proc = subprocess.Popen([sys.executable, "-m", "spikeline", "replay", str(EDF), "--lsl", "--fast",
                             "--channels", "C3,Cz,C4", "--wait", "20", "--linger", "3", "--name", name, "--type", "EEG"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = pylsl.resolve_byprop("name", name, 1, 15.0)
        mfound = pylsl.resolve_byprop("name", f"{name}-markers", 1, 15.0)
        assert found and mfound, "replay outlets not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=360)
        minlet = pylsl.StreamInlet(mfound[0])
        info = inlet.info(5.0)
        ch = info.desc().child("channels").child("channel")
        labels = []
        while not ch.empty():
            labels.append((ch.child_value("label"), ch.child_value("unit")))
            ch = ch.next_sibling("channel")
        assert labels == [("C3", "uV"), ("Cz", "uV"), ("C4", "uV")]
        assert info.nominal_srate() == 160.0 and info.channel_count() == 3 and info.type() == "EEG"
        inlet.open_stream(5.0)
        minlet.open_stream(5.0)
        data, stamps = [], []
        deadline = time.monotonic() + 30
        while sum(len(d) for d in data) < 20000 and time.monotonic() < deadline:
            d, ts = inlet.pull_chunk(timeout=0.5, max_samples=4096)
            if ts:
                data.append(np.asarray(d, dtype=np.float32))
                stamps.extend(ts)
        marks: list[tuple[str, float]] = []
        while len(marks) < 30 and time.monotonic() < deadline:
            s, t = minlet.pull_sample(timeout=0.5)
            if s is not None:
                marks.append((s[0], t))
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    rc = proc.returncode
    assert rc == 0, err
    assert "pushed 20000 samples and 30 markers" in err
    got = np.concatenate(data)
    np.testing.assert_array_equal(got, rec.data[:, cols])
    st = np.asarray(stamps)
    np.testing.assert_allclose(st - st[0], np.arange(20000) / 160.0, atol=1e-6)
    assert [m for m, _ in marks] == [m.label for m in rec.markers]
    np.testing.assert_allclose([t - st[0] for _, t in marks], [m.t_s for m in rec.markers], atol=1e-6)
