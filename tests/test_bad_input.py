"""Bad input never crashes a pipeline and never corrupts it silently: property-based and fuzz tests.

- Samples with NaN or infinite values are refused at the pipeline's input and counted (`non_finite`); the finite
  rows go on at their own sample indices, so stateful stages (an IIR filter) stay finite, and the refused rows
  show as gaps in the results' `seq`. Timestamps that go backwards, jump, repeat or are absurd change latency
  figures only.
- Hostile configuration documents (random nested tables, wrong types, huge numbers, odd strings, random bytes as a
  TOML file) give a ConfigError listing the problems, nothing else.
- Corrupt model files (mutated JSON, truncated or altered weights, corrupt ONNX / LiteRT files) give a clear error,
  nothing else.

Each test prints the number of cases it tried. SPIKELINE_FUZZ_EXAMPLES scales them (default 200).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.config import load, parse
from spikeline.params import ConfigError, Param
from spikeline.pipeline import Pipeline, State
from spikeline.sources import Source

EXAMPLES = int(os.environ.get("SPIKELINE_FUZZ_EXAMPLES", "200"))
CASES: dict[str, int] = {}


def _count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_cases() -> Any:
    yield
    print("\nbad-input cases tried: " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())), file=sys.stderr)


class Given(Source):
    """Test source: hands over the chunks it is given (as a live source would), then ends."""

    kind = "test_given"
    params: ClassVar[dict[str, Param]] = {"channels": Param("int", 3, min=1)}
    chunks: ClassVar[list[tuple[np.ndarray, np.ndarray]]] = []

    async def open(self) -> StreamMeta:
        self.meta = StreamMeta(name="given", type="test", channels=tuple(f"c{i}" for i in range(self.p["channels"])),
                               nominal_rate=100.0)
        return self.meta

    async def run(self, put: Any) -> None:
        seq = 0
        for data, t in self.chunks:
            put(SampleChunk(data=data, t=t, t_recv=np.full(len(t), asyncio.get_running_loop().time()), seq=seq,
                            meta=self.meta))
            seq += len(data)
            await asyncio.sleep(0)


_value = st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from([np.nan, np.inf, -np.inf]),
                   st.floats(width=32, allow_nan=True, allow_infinity=True))
_stamp = st.one_of(st.floats(-1e12, 1e12), st.sampled_from([0.0, -1.0, np.nan, np.inf, 1e300]))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.lists(st.integers(1, 12), min_size=1, max_size=6).flatmap(
    lambda sizes: st.tuples(st.just(sizes), st.lists(_value, min_size=3 * sum(sizes), max_size=3 * sum(sizes)),
                            st.lists(_stamp, min_size=sum(sizes), max_size=sum(sizes)))))
def test_non_finite_samples_and_bad_timestamps_are_refused_and_counted(case: Any, tmp_path_factory: Any) -> None:
    sizes, values, stamps = case
    _count("samples: NaN/Inf values, bad timestamps")
    data = np.array(values, np.float32).reshape(-1, 3)
    t = np.array(stamps, np.float64)
    bounds = np.cumsum([0, *sizes])
    Given.chunks = [(data[a:b], t[a:b]) for a, b in itertools.pairwise(bounds)]
    out = tmp_path_factory.mktemp("bad") / "r.jsonl"
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 1000, "policy": "mark_late",
                               "source": {"type": "test_given", "channels": 3},
                               "stages": [{"type": "bandpass", "low_hz": 1, "high_hz": 20}],
                               "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    asyncio.run(p.run())
    assert p.state == State.STOPPED, p.error
    finite = np.isfinite(data).all(axis=1)
    m = p.metrics
    assert m.non_finite == int((~finite).sum()) and m.computed == int(finite.sum())
    assert m.samples_in == m.computed + m.non_finite
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == np.flatnonzero(finite).tolist()  # refused rows leave gaps in seq
    assert all(v is not None for r in rows for v in r["values"])  # the filter's state never went NaN


# ---------------------------------------------------------------------------------------------- configuration

_KEYS = ["node", "lsl", "mqtt", "pipeline", "name", "budget_ms", "policy", "source", "stages", "sinks", "type",
         "url", "qos", "queue_s", "tiers", "on_error", "file", "speed", "port", "model", "channels", "low_hz",
         "high_hz", "lsl", "bandpass", "replay", "mqtt", "jsonl", "path", "\x00", "ü", "a" * 300, ""]
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["mqtt://127.0.0.1:1883", "bandpass", "lsl", "replay",
                                                          "drop_oldest", "degrade", "1e999", "-0", "../../etc"]))
_doc = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=25)


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(_KEYS), _doc, max_size=5))
def test_hostile_config_documents_give_config_errors_only(doc: dict[str, Any]) -> None:
    _count("configuration documents")
    try:
        parse(doc)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


def test_hostile_config_files(tmp_path: Path) -> None:
    """Random bytes, truncations and mutations of every example configuration, read as TOML files."""
    rng = np.random.default_rng(6)
    examples = sorted((ROOT / "deploy" / "examples").glob("*.toml"))
    path = tmp_path / "c.toml"
    n = 0
    for ex in examples:
        base = ex.read_bytes()
        for k in range(EXAMPLES // 2):
            if k % 3 == 0:
                buf = base[:int(rng.integers(0, len(base) + 1))]
            elif k % 3 == 1:
                b = bytearray(base)
                for _ in range(int(rng.integers(1, 6))):
                    b[int(rng.integers(len(b)))] = int(rng.integers(256))
                buf = bytes(b)
            else:
                buf = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
            path.write_bytes(buf)
            n += 1
            try:
                load(path)
            except ConfigError as e:
                assert e.problems
    CASES["configuration files"] = n


# ------------------------------------------------------------------------------------------------- model files

def test_corrupt_model_files_give_clear_errors(tmp_path: Path) -> None:
    from spikeline.modelfile import ModelError
    from spikeline.modelfile import load as load_model

    src = ROOT / "models" / "har-spar-l2mu"
    rng = np.random.default_rng(8)
    doc_text = (src / "model.json").read_text()
    n = 0
    for k in range(EXAMPLES * 2):
        d = tmp_path / f"m{k}"
        d.mkdir()
        shutil.copy(src / "model.npz", d / "model.npz")
        kind = k % 4
        if kind == 0:  # byte mutations of the JSON
            b = bytearray(doc_text.encode())
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] = int(rng.integers(32, 127))
            (d / "model.json").write_bytes(bytes(b))
        elif kind == 1:  # structural changes: a key's value replaced by another type
            doc = json.loads(doc_text)
            key = list(doc)[int(rng.integers(len(doc)))]
            doc[key] = [None, 1, "x", [], {}, {"a": 1}][int(rng.integers(6))]
            if key == "arrays" and isinstance(doc[key], dict) and doc[key]:
                doc[key] = {name: [1, 2] for name in doc[key]}
            (d / "model.json").write_text(json.dumps(doc))
        elif kind == 2:  # array specs mangled
            doc = json.loads(doc_text)
            name = list(doc["arrays"])[int(rng.integers(len(doc["arrays"])))]
            doc["arrays"][name] = [None, 3, "float32", {"shape": "x"}, {"dtype": 5}][int(rng.integers(5))]
            (d / "model.json").write_text(json.dumps(doc))
        else:  # the weights truncated or altered
            (d / "model.json").write_text(doc_text)
            w = bytearray((d / "model.npz").read_bytes())
            if rng.random() < 0.5:
                w = w[:int(rng.integers(len(w)))]
            else:
                w[int(rng.integers(len(w)))] ^= 0xFF
            (d / "model.npz").write_bytes(bytes(w))
        n += 1
        try:
            load_model(d / "model.json")
        except ModelError as e:
            assert str(e)
        shutil.rmtree(d)
    CASES["model files"] = n


@pytest.mark.parametrize("stage", ["onnx", "litert"])
def test_corrupt_onnx_and_litert_files_are_refused_with_the_reason(stage: str, tmp_path: Path) -> None:
    from spikeline.stages.base import build_stage

    model = ROOT / "models" / "har-spar-deltagru" / ("model.onnx" if stage == "onnx" else "model.tflite")
    good = model.read_bytes()
    rng = np.random.default_rng(9)
    meta = StreamMeta(name="w", type="IMU", channels=("ax", "ay", "az", "wx", "wy", "wz"), nominal_rate=50.0)
    n = 0
    for k in range(20):
        bad = tmp_path / f"bad{k}{model.suffix}"
        buf = bytearray(good[:int(rng.integers(0, len(good)))] if k % 2 == 0 else good)
        if k % 2:
            for _ in range(50):
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        bad.write_bytes(bytes(buf))
        n += 1
        try:
            s = build_stage(stage, {"model": str(bad)})
            s.start(meta)
        except Exception as e:  # must be a clear, typed error naming the file, never a crash of the process
            assert type(e).__name__ in ("ConfigError", "StageError", "ModelError", "ValueError"), repr(e)
            assert str(e)
    CASES[f"{stage} files"] = n


@pytest.mark.lsl
@pytest.mark.timeout(60)
async def test_lsl_timestamps_that_jump_reset_repeat_or_go_backwards(tmp_path: Path) -> None:
    """A real liblsl outlet pushing samples with explicit timestamps: normal, then a clock reset 1000 s into the
    past, a jump 100 s into the future, NaN, repeated (duplicate) and slightly decreasing timestamps. Every sample
    reaches the results; the impossible ones are re-stamped on arrival and counted, the reversals counted."""
    import uuid

    from spikeline.lslcfg import import_pylsl

    pylsl = import_pylsl()
    name = f"badtime-{uuid.uuid4().hex[:6]}"
    info = pylsl.StreamInfo(name, "EEG", 2, 100.0, pylsl.cf_float32, f"{name}-sid")
    outlet = pylsl.StreamOutlet(info)
    out = tmp_path / "r.jsonl"
    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 500, "policy": "mark_late",
                               "source": {"type": "lsl", "name": name},
                               "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    p = Pipeline(cfg.pipelines[0], node="t")
    task = asyncio.create_task(p.run())
    pushed = 0
    impossible = 0
    try:
        async with asyncio.timeout(20):
            while p.state != State.RUNNING:
                assert p.state != State.FAILED, p.error
                await asyncio.sleep(0.02)
        await asyncio.to_thread(outlet.wait_for_consumers, 5.0)
        await asyncio.sleep(0.3)

        def push(stamps: list[float]) -> None:
            nonlocal pushed
            for ts in stamps:
                outlet.push_sample([1.0, 2.0], ts)
                pushed += 1
                time.sleep(0.002)

        now = pylsl.local_clock
        await asyncio.to_thread(push, [now() for _ in range(50)])  # normal
        await asyncio.to_thread(push, [now() - 1000.0 for _ in range(30)])  # clock reset into the past
        await asyncio.to_thread(push, [now() + 100.0 for _ in range(30)])  # jump into the future
        await asyncio.to_thread(push, [float("nan")] * 10)  # not a time at all
        impossible = 70
        t0 = now()
        await asyncio.to_thread(push, [t0] * 20)  # one timestamp repeated (duplicates)
        await asyncio.to_thread(push, [t0 + 0.001 - 0.0005 * k for k in range(20)])  # slowly going backwards
        await asyncio.to_thread(push, [now() for _ in range(50)])  # normal again
        async with asyncio.timeout(10):
            while p.metrics.results < pushed:
                await asyncio.sleep(0.05)
    finally:
        p.stop()
        await asyncio.wait_for(task, 10)
    c = p.metrics.source_counters
    assert p.state == State.STOPPED, p.error
    assert c["bad_timestamps"] == impossible and c["time_reversals"] >= 19
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == pushed and [r["seq"] for r in rows] == list(range(pushed))
    ages = np.array([r["latency_ms"]["age"] for r in rows])
    assert np.all(np.abs(ages) < 5000)  # every published time is plausible
    CASES["LSL timestamp anomalies (samples)"] = pushed
