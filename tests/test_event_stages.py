"""Event stages through whole pipelines (event file -> stages -> JSON lines): the same rows whatever the chunking,
equal to the kernels run offline, and event frames feeding an ONNX model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, need
from spikeline.config import parse
from spikeline.events import read
from spikeline.kernels.events import BackgroundActivityFilter, TimeSurface
from spikeline.pipeline import Pipeline, State

pytestmark = pytest.mark.data

NMNIST = DATA / "nmnist_small_slayer"


def _files(n: int) -> list[str]:
    need(NMNIST.is_dir(), f"{NMNIST} not found (set SPIKELINE_DATA or provide ../shared/data)")
    return [str(NMNIST / f"{60001 + i}.bs2") for i in range(n)]


async def _run(source: dict[str, Any], stages: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 1000, "queue_s": 1.0,
                               "source": {"type": "event_file", "speed": 0, **source},
                               "stages": stages, "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    await asyncio.wait_for(p.run(), 120)
    assert p.state == State.STOPPED, p.error
    assert p.metrics.dropped_queue == 0 and p.metrics.dropped_rate == 0
    return _rows(out)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


async def test_time_surface_rows_are_the_kernel_sampled_on_the_grid_whatever_the_chunking(tmp_path: Path) -> None:
    files = _files(2)
    stages = [{"type": "denoise", "filter_ms": 5}, {"type": "time_surface", "tau_ms": 20, "every_ms": 25}]
    runs = []
    for i, chunk in enumerate([1, 333, 65536]):
        runs.append(await _run({"file": files[0], "files": files[1:], "gap_ms": 50, "chunk_events": chunk},
                               stages, tmp_path / f"o{i}.jsonl"))
    for other in runs[1:]:
        assert [r["seq"] for r in other] == [r["seq"] for r in runs[0]]
        assert [r["values"] for r in other] == [r["values"] for r in runs[0]]
    # offline: the same kernels on the concatenated stream, sampled at the end of every 25 ms interval of sensor
    # time that holds events (and is closed by a later event): intervals without events give no row
    evs = [read(f).events for f in files]
    second = evs[1].copy()
    second["t"] += int(evs[0]["t"][-1]) + 50_000 + 1 - int(second["t"][0])
    ev = np.concatenate([evs[0], second])
    kept = BackgroundActivityFilter(34, 34, 5000).filter(ev)
    ts = TimeSurface(34, 34, 20_000, 2)
    t = kept["t"]
    grid = (np.unique(t // 25_000)[:-1] + 1) * 25_000
    assert len(grid) < int(t[-1]) // 25_000 - int(t[0]) // 25_000  # the pause between the files has no row
    want = []
    start = 0
    for g in grid:
        i = int(np.searchsorted(t, g, side="left"))
        ts.update(kept[start:i])
        start = i
        want.append(ts.sample(int(g)).ravel())
    rows = runs[0]
    assert len(rows) == len(grid) > 10
    np.testing.assert_array_equal(np.array([r["values"] for r in rows], dtype=np.float32), np.array(want))


async def test_event_frames_feed_an_onnx_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install spikeline[onnx])")
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    from onnx import TensorProto, helper

    # a model that counts the events per polarity in a (1, 2, 34, 34) frame
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "count",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 34, 34])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "count.onnx"
    path.write_bytes(model.SerializeToString())
    (f,) = _files(1)
    rows = await _run({"file": f, "chunk_events": 500},
                      [{"type": "event_frames", "window_ms": 10},
                       {"type": "onnx", "model": str(path), "mode": "step", "outputs": ["off", "on"]}],
                      tmp_path / "o.jsonl")
    ev = read(f).events
    k = ev["t"] // 10_000 - ev["t"][0] // 10_000  # windows on the 10 ms grid of sensor time, from the first event's
    want = [[int(np.count_nonzero((k == w) & (ev["p"] == p))) for p in (0, 1)] for w in range(int(k[-1]) + 1)]
    want = [w for w in want if sum(w)]  # windows without events give no row
    assert [r["values"] for r in rows] == want
    assert sum(map(sum, want)) == len(ev)
    _ = onnx


async def test_event_frames_step_over_long_pauses_without_stepping_every_window(tmp_path: Path) -> None:
    from spikeline.chunk import as_events

    # two bursts on a 640x480 sensor, ten minutes apart: 60,000 empty 10 ms windows (73 GB of frames) between
    t = np.concatenate([np.arange(0, 30_000, 10), 600_000_000 + np.arange(0, 30_000, 10)])
    n = len(t)
    f = tmp_path / "e.npy"
    np.save(f, as_events(t, np.arange(n) % 640, np.arange(n) % 480, np.arange(n) % 2))
    for chunk in (64, 100_000):
        rows = await _run({"file": str(f), "chunk_events": chunk, "sensor": [640, 480]},
                          [{"type": "event_frames", "window_ms": 10}], tmp_path / f"o{chunk}.jsonl")
        assert len(rows) == 6  # three windows per burst, none for the pause
        assert [int(np.sum(r["values"])) for r in rows] == [1000] * 6
        assert [r["seq"] for r in rows] == list(range(6))


def _moving_dots(direction: float, speed_px_per_ms: float, size: int = 96, duration_ms: float = 200.0,
                 n_dots: int = 300, seed: int = 0) -> np.ndarray:
    """Events of a random-dot texture translating across a size x size sensor (no aperture problem, unlike a
    bar), plus 5 % noise events: a dot emits an event each time it enters a new pixel."""
    from spikeline.chunk import as_events

    rng = np.random.default_rng(seed)
    p0 = rng.uniform(0, size, (n_dots, 2))
    v = speed_px_per_ms * np.array([np.cos(direction), np.sin(direction)])
    ts, xs, ys = [], [], []
    prev = None
    for t_us in range(0, int(duration_ms * 1e3), 100):
        pix = np.floor((p0 + v * t_us / 1e3) % size).astype(np.int64)
        moved = np.ones(n_dots, bool) if prev is None else np.any(pix != prev, axis=1)
        prev = pix
        ts.append(np.full(int(moved.sum()), t_us))
        xs.append(pix[moved, 0])
        ys.append(pix[moved, 1])
    t, x, y = np.concatenate(ts), np.concatenate(xs), np.concatenate(ys)
    tn = rng.integers(0, int(duration_ms * 1e3), len(t) // 20)
    noise = rng.integers(0, size, (len(tn), 2))
    tt = np.concatenate([t, tn])
    order = np.argsort(tt, kind="stable")
    return as_events(tt[order], np.concatenate([x, noise[:, 0]])[order], np.concatenate([y, noise[:, 1]])[order],
                     rng.integers(0, 2, len(tt)))


@pytest.mark.parametrize("k", range(8))
async def test_hdsnn_stage_names_the_direction_of_moving_dots(tmp_path: Path, k: int) -> None:
    from spikeline.kernels.events import DIRECTION_NAMES

    f = tmp_path / "dots.npy"
    np.save(f, _moving_dots(2 * np.pi * k / 8, 0.6, size=192))
    runs = []
    for chunk in (50, 100_000):
        runs.append(await _run({"file": str(f), "chunk_events": chunk, "sensor": [192, 192]},
                               [{"type": "hdsnn", "window_ms": 50, "min_spikes": 5}], tmp_path / f"o{chunk}.jsonl"))
    assert runs[0] == [{**r, **{k_: runs[0][i][k_] for k_ in ("t_sample", "t_recv", "t_done", "t_pub",
                                                              "latency_ms")}} for i, r in enumerate(runs[1])]
    labels = [r["label"] for r in runs[0]]
    assert len(labels) == 4  # 200 ms in 50 ms windows
    assert labels.count(DIRECTION_NAMES[k]) >= 3, labels


def test_ticks_let_stages_decide_when_time_passes_without_events() -> None:
    """A burst's decision (event_classifier) and a window's direction (hdsnn) come with the tick that shows
    the pause, equal to what the next event or the end of input would have given."""
    from spikeline.chunk import EventChunk, StreamMeta
    from spikeline.stages import build_stage

    (f,) = _files(1)
    ev = read(f).events
    meta = StreamMeta(name="cam", type="events", channels=(), nominal_rate=1e6, sensor=(34, 34))
    chunk = EventChunk(ev=ev, t_base=100.0, t_recv=101.0, seq=0, meta=meta)
    last = int(ev["t"][-1])

    cls = build_stage("event_classifier", {"model": "nmnist-evnet", "gap_ms": 50})
    cls.start(meta)
    assert cls.process(chunk) is None  # the burst may go on
    assert cls.process(chunk.tick(last + 40_000)) is None  # 40 ms of quiet: not yet a pause of 50
    out = cls.process(chunk.tick(last + 50_000))
    assert out is not None and len(out) == 1 and out.label is not None
    ref = build_stage("event_classifier", {"model": "nmnist-evnet", "gap_ms": 50})
    ref.start(meta)
    ref.process(chunk)
    want = ref.flush()
    assert want is not None and want.label is not None
    assert out.label.tolist() == want.label.tolist()
    np.testing.assert_array_equal(out.data, want.data)
    assert out.t[0] == pytest.approx(100.0 + last * 1e-6)  # stamped with the burst's newest event
    assert cls.flush() is None  # decided once
    later = ev.copy()
    later["t"] += last + 100_000
    nxt = cls.process(EventChunk(ev=later, t_base=100.0, t_recv=102.0, seq=len(ev), meta=meta))
    assert nxt is None  # the next burst starts afresh: no second decision about the first

    hd = build_stage("hdsnn", {"window_ms": 50, "min_spikes": 1})
    hd.start(meta)
    rows = hd.process(chunk)
    n_before = 0 if rows is None else len(rows)
    end = (last // 50_000 + 1) * 50_000
    assert hd.process(chunk.tick(end - 1)) is None  # the window in progress is not over yet
    closed = hd.process(chunk.tick(end))
    assert closed is not None and len(closed) == 1
    assert hd.flush() is None
    assert n_before >= 1
