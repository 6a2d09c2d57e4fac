"""The shipped N-MNIST event classifier (models/nmnist-evnet/, tools/train_nmnist.py): the model file loads
through the registry with its checksums, and its accuracy on the 100 test samples, recomputed with the
EventNet kernel (tools/train_nmnist.offline_predictions), is exactly the card's number."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from spikeline.kernels.evnet import load_evnet
from spikeline.modelfile import load
from spikeline.registry import entries, sha256_file

sys.path.insert(0, str(ROOT / "tools"))

MODEL_ID = "nmnist-evnet"
CARD = ROOT / "models" / MODEL_ID / "CARD.md"
HEADLINE = re.compile(r"\*\*Test accuracy \(EventNet kernel, shipped theta = ([0-9.e-]+)\): "
                      r"([0-9.]+) \[([0-9.]+), ([0-9.]+)\] \((\d+)/(\d+)\)\*\*")


def _test_files(data_dir: Path) -> tuple[list[Path], list[int]]:
    root = data_dir / "nmnist_small_slayer"
    rows = [ln.split() for ln in (root / "test100.txt").read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")]
    return [root / f"{name}.bs2" for name, _ in rows], [int(c) for _, c in rows]


def _headline() -> tuple[float, int, int]:
    m = HEADLINE.search(CARD.read_text(encoding="utf-8"))
    assert m is not None, f"{CARD} has no test accuracy headline"
    return float(m.group(1)), int(m.group(5)), int(m.group(6))


def test_shipped_model_loads_with_its_checksums() -> None:
    entry = entries()[MODEL_ID]
    assert entry.kind == "evnet" and entry.card == CARD
    assert sha256_file(entry.file) == entry.sha256  # the manifest pins the JSON ...
    model = load(entry.file, kind="evnet")  # ... which pins the weights (checked by load)
    doc = json.loads(entry.file.read_text(encoding="utf-8"))
    assert doc["sha256"] == sha256_file(entry.file.parent / doc["weights"])
    net = load_evnet(MODEL_ID)
    assert net.sensor == (34, 34) and net.classes == tuple(str(d) for d in range(10))
    theta, _, _ = _headline()
    assert net.theta == tuple(float(np.float32(t)) for t in model.meta["theta"])  # kept as float32
    assert net.theta == (float(np.float32(theta)),) * 2
    # every file of the family is listed in the card with its sha256
    card = CARD.read_text(encoding="utf-8")
    for f in (entry.file, entry.file.with_suffix(".npz")):
        assert sha256_file(f) in card


@pytest.mark.data
def test_test_accuracy_equals_the_card(data_dir: Path) -> None:
    from train_nmnist import offline_predictions

    files, labels = _test_files(data_dir)
    theta, k, n = _headline()
    assert n == len(files) == 100
    out = offline_predictions(MODEL_ID, files)
    pred = np.array([p for p, _ in out])
    assert int((pred == np.array(labels)).sum()) == k
    # the same decisions as at training time, and scores consistent with them
    ev = json.loads((CARD.parent / "eval.json").read_text(encoding="utf-8"))
    assert ev["test_predictions"] == pred.tolist() and ev["test_correct"] == k and ev["theta"] == theta
    assert all(p == int(np.argmax(s)) and s.dtype == np.float32 and s.shape == (10,) for p, s in out)
    assert entries()[MODEL_ID].meta["accuracy"]["test"] == k / n
