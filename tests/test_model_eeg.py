"""The shipped EEG motor-imagery models (models/eeg-mi-lr, models/eeg-mi-ff; tools/train_eeg.py).

- Every shipped file, loaded by id through the `onnx` / `litert` stages behind spikeline's own `select` and
  `filterbank` stages and fed a real run in uneven chunks, emits exactly the windows (seq of the newest sample)
  and the probabilities that the training tool's offline evaluation computes for that run.
- The int8 files agree with the float model on at least the fraction of windows their card states.
- The cards' sha256 and the manifest entries match the files.
- The training tool runs end to end on a reduced setting and writes every file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, ROOT, need
from spikeline import registry
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.stages import build_stage

pytestmark = pytest.mark.data

EEG = DATA / "eegmmidb_S001"
TASK_RUN = {"lr": "S001R04.edf", "ff": "S001R06.edf"}
SUFFIX = {"onnx": "", "onnx-int8": "-int8", "tflite": "-tflite", "tflite-int8": "-tflite-int8"}


def _tools() -> Any:
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import train_eeg

    return train_eeg


def _need_backends() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("sklearn")


def _stream(model_id: str, kind: str, rec: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The recording through select -> filterbank -> onnx/litert, in uneven chunks (seq of rows, probs, classes)."""
    entry = registry.entries()[model_id]
    spec = entry.meta["input"]
    stages = [build_stage("select", {"channels": spec["source_channels"]}),
              build_stage("filterbank", {"bands_hz": [v for b in spec["bands_hz"] for v in b],
                                         "order": spec["filterbank"]["order"], "prime": spec["filterbank"]["prime"]}),
              build_stage(kind, {"model": model_id})]
    meta = StreamMeta(name=rec.name, type="EEG", channels=rec.channels, nominal_rate=rec.rate_hz, units=rec.units)
    m = meta
    for st in stages:
        m = st.start(m)
    t = rec.times()
    rng = np.random.default_rng(4)
    seqs, rows = [], []
    i = 0
    while i < rec.n_samples:
        n = int(rng.integers(1, 97))
        chunk: SampleChunk | None = SampleChunk(data=np.ascontiguousarray(rec.data[i:i + n]), t=t[i:i + n],
                                                t_recv=t[i:i + n], seq=i, meta=meta)
        for st in stages:
            chunk = st.process(chunk) if chunk is not None and len(chunk) else None
        if chunk is not None and len(chunk):
            seqs.append(chunk.seqs())
            rows.append(chunk.data)
        i += n
    return np.concatenate(seqs), np.concatenate(rows), m.classes


@pytest.mark.parametrize("task", ["lr", "ff"])
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_stage_reproduces_the_offline_evaluation(task: str, fmt: str) -> None:
    need(EEG.is_dir(), f"{EEG} not found")
    _need_backends()
    te = _tools()
    from spikeline.recordings import load

    model_id = f"eeg-mi-{task}{SUFFIX[fmt]}"
    entry = registry.entries()[model_id]
    rec = load(EEG / TASK_RUN[task])[0]
    ends, probs = te.offline_predictions(entry.file, rec)
    seqs, live, classes = _stream(model_id, "litert" if fmt.startswith("tflite") else "onnx", rec)
    assert classes == tuple(entry.meta["classes"]) == te.TASKS[task].classes
    np.testing.assert_array_equal(seqs, ends)
    np.testing.assert_allclose(live, probs, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(live.argmax(axis=1), probs.argmax(axis=1))


@pytest.mark.parametrize("task", ["lr", "ff"])
def test_int8_agrees_with_float_as_the_card_says(task: str) -> None:
    need(EEG.is_dir(), f"{EEG} not found")
    _need_backends()
    te = _tools()
    from spikeline.recordings import load

    out = ROOT / "models" / f"eeg-mi-{task}"
    report = json.loads((out / "report.json").read_text())
    floor = report["agreement_floor"]
    assert f"at least **{floor:.2f}** of the windows" in (out / "CARD.md").read_text()
    rec = load(EEG / TASK_RUN[task])[0]
    fb = te.filter_bank(rec, te.Model(out / "model.onnx").spec)
    ref = te.offline_predictions(out / "model.onnx", rec, fb)[1].argmax(axis=1)
    for name in ("model-int8.onnx", "model.tflite", "model-int8.tflite"):
        got = te.offline_predictions(out / name, rec, fb)[1].argmax(axis=1)
        assert (got == ref).mean() >= floor, name
    # and the cue decisions of the shipped float model on this run are the ones the live window gives
    spec = te.Model(out / "model.onnx").spec
    cue, _ = te.cues(rec, spec)
    ends = te.window_ends(len(fb), spec)
    at = np.searchsorted(ends, te.live_end(cue, spec))
    assert np.all(ends[at] >= cue + round(spec.eval_at_s * spec.rate_hz))
    assert np.all(ends[at] - spec.hop < cue + round(spec.eval_at_s * spec.rate_hz))


@pytest.mark.parametrize("task", ["lr", "ff"])
def test_card_checksums_and_manifest_match_the_files(task: str) -> None:
    out = ROOT / "models" / f"eeg-mi-{task}"
    text = (out / "CARD.md").read_text()
    sums = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", text, re.M))
    files = ["model.onnx", "model-int8.onnx", "model.tflite", "model-int8.tflite", "model.tflite.json",
             "model-int8.tflite.json"]
    assert set(files) <= set(sums)
    for name in files:
        assert registry.sha256_file(out / name) == sums[name], name
    entries = registry.entries()
    for fmt, suffix in SUFFIX.items():
        e = entries[f"eeg-mi-{task}{suffix}"]
        assert e.file == out / te_file(fmt) and e.sha256 == sums[te_file(fmt)]
        assert e.card == out / "CARD.md"
    for plot in ("confusion.png", "timecourse.png"):
        assert (out / plot).stat().st_size > 0


def te_file(fmt: str) -> str:
    return {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx", "tflite": "model.tflite",
            "tflite-int8": "model-int8.tflite"}[fmt]


def test_training_tool_quick_run_writes_every_file(tmp_path: Path) -> None:
    need(EEG.is_dir(), f"{EEG} not found")
    _need_backends()
    te = _tools()
    assert te.main(["--task", "lr", "--quick", "--data", str(EEG), "--out", str(tmp_path), "--no-register"]) == 0
    for name in ("model.onnx", "model-int8.onnx", "model.tflite", "model-int8.tflite", "model.tflite.json",
                 "model-int8.tflite.json", "CARD.md", "confusion.png", "timecourse.png", "report.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["cv"]["y"]) == 45 and len(report["cv"]["folds"]) == 3
    md = json.loads((tmp_path / "model.tflite.json").read_text())
    assert md["input"]["window"] == 320 and md["input"]["hop"] == 16 and md["input"]["layout"] == "NTC"
    assert "python tools/train_eeg.py --task lr --quick" in (tmp_path / "CARD.md").read_text()
