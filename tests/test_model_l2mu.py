"""The shipped L2MU activity models (models/har-*-l2mu*) and the tools that train them.

Shipped models, against the real recordings in ../shared/data (skip on a fresh clone, fail in CI):
- every L2MU entry in models/manifest.json resolves by id, verifies, loads into the kernel and declares the
  input the stage checks (channels, rate) and the classes of its dataset;
- streaming equals offline: every test series of the model's split, streamed through the `l2mu` and
  `decide` stages in random chunk sizes, gives exactly the rows (spike counts, decisions) that the training
  tool's offline evaluation (tools/train_l2mu.py offline_predictions: the kernel over the whole series, counts
  from a cumulative sum) wrote to eval.json, and so exactly the accuracy its card and manifest entry state;
- the card's sha256 is the registered file's;
- the kernel runs each model spike for spike like its PyTorch twin (tools/l2mu_torch.py) on real input;
- the pruned models are smaller and cheaper than the full ones they come from.

Training tools (tools/har_data.py, tools/l2mu_torch.py's training helpers; torch for the latter): subject-
disjoint splits and the protocol's windows; the fast float32 forward, input-norm folding, structured
pruning and the exact-sum cleanup keep the twin what the kernel runs; a `--quick` run of
tools/train_l2mu.py writes every file of both models into a temporary models directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, REQUIRE_ALL, ROOT, need
from spikeline import registry
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.kernels.l2mu import load_l2mu
from spikeline.modelfile import load
from spikeline.stages.base import build_stage

pytestmark = pytest.mark.data

TOOLS = str(ROOT / "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

MODELS = ROOT / "models"
DATASETS = {"har-spar-l2mu": "spar", "har-basicmotions-l2mu": "basicmotions", "har-epilepsy-l2mu": "epilepsy"}
GOALS = {"spar": 0.95, "basicmotions": 1.0, "epilepsy": 0.97}  # issue 4; the cards report where they stand


def _shipped() -> dict[str, registry.Entry]:
    return {mid: e for mid, e in registry.read_manifest(MODELS).items()
            if e.kind == "l2mu" and mid.startswith("har-")}


SHIPPED = sorted(_shipped())


def _dataset_of(mid: str) -> str:
    return DATASETS[mid.removesuffix("-pruned")]


@pytest.fixture(scope="module")
def har() -> Any:
    need(DATA.is_dir(), f"recordings not found at {DATA} (set SPIKELINE_DATA or provide ../shared/data)",
         required=REQUIRE_ALL and os.environ.get("SPIKELINE_REQUIRE_DATA") != "0")
    import har_data

    return har_data


@pytest.fixture(scope="module")
def datasets(har: Any) -> dict[str, Any]:
    return {name: har.load(name) for name in set(DATASETS.values())}


def test_every_dataset_has_its_models() -> None:
    for mid in DATASETS:
        assert mid in SHIPPED and f"{mid}-pruned" in SHIPPED, f"{mid} (and its pruned sibling) not in the manifest"


@pytest.mark.parametrize("mid", SHIPPED)
def test_model_resolves_loads_and_declares_its_input(mid: str, datasets: dict[str, Any]) -> None:
    entry = _shipped()[mid]
    assert registry.resolve(mid, kind="l2mu") == entry.file  # sha256 verified
    model = load(mid, kind="l2mu")
    cell = load_l2mu(model)
    ds = datasets[_dataset_of(mid)]
    meta = model.meta
    assert meta["input"]["channels"] == list(ds.channels) and meta["input"]["rate_hz"] == ds.rate_hz
    assert meta["classes"] == list(ds.classes) == entry.meta["classes"]
    assert (cell.n_inputs, cell.n_outputs) == (ds.n_channels, ds.n_classes)
    assert entry.card is not None and entry.card.is_file()
    for name in ("eval.json", "learning_curve.png"):
        assert (entry.file.parent / name).is_file(), name


def _stream(stages: list[Any], meta: StreamMeta, series: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample index, scores, decided class) of every row the stages emit for one series fed from a reset
    state in random chunk sizes (1 sample to 3 s)."""
    for st in stages:
        st.reset()
    rate = meta.nominal_rate
    seqs, rows, labels = [], [], []
    a = 0
    while a < len(series):
        b = min(len(series), a + int(rng.integers(1, int(3 * rate) + 1)))
        t = np.arange(a, b, dtype=np.float64) / rate
        chunk: SampleChunk | None = SampleChunk(np.ascontiguousarray(series[a:b]), t, t.copy(), a, meta)
        for st in stages:
            if chunk is None or not len(chunk):
                break
            chunk = st.process(chunk)
        if chunk is not None and len(chunk):
            assert chunk.label is not None
            seqs.append(chunk.seqs())
            rows.append(chunk.data)
            labels.append(chunk.label)
        a = b
    return np.concatenate(seqs), np.concatenate(rows), np.concatenate(labels)


@pytest.mark.parametrize("mid", SHIPPED)
def test_streaming_equals_offline_evaluation(mid: str, datasets: dict[str, Any]) -> None:
    """Every test row of eval.json, reproduced by streaming through l2mu -> decide; hence the stated accuracy."""
    entry = _shipped()[mid]
    ds = datasets[_dataset_of(mid)]
    doc = json.loads((entry.file.parent / "eval.json").read_text())
    readout = load(mid).meta["readout"]
    assert readout == doc["readout"]
    stages = [build_stage("l2mu", {"model": mid, "readout": "window", "window_s": readout["window_s"],
                                   "every": readout["every"]}),
              build_stage("decide", {"classes": list(ds.classes)})]
    meta = StreamMeta(name="replay", type="IMU", channels=ds.channels, nominal_rate=ds.rate_hz, units=ds.units)
    for st in stages:
        meta = st.start(meta)
    window = round(readout["window_s"] * ds.rate_hz)
    rng = np.random.default_rng(4)
    correct = n = 0
    for rec in doc["series"]:
        seq, counts, decided = _stream(stages, StreamMeta(name="replay", type="IMU", channels=ds.channels,
                                                           nominal_rate=ds.rate_hz), ds.series[rec["series"]], rng)
        keep = seq >= window - 1
        assert seq[keep].tolist() == rec["rows_at"]
        assert counts[keep].astype(int).tolist() == rec["counts"]
        pred = decided[keep].astype(np.int64)
        assert pred.tolist() == rec["pred"]
        assert rec["label"] == int(ds.y[rec["series"]])
        correct += int((pred == rec["label"]).sum())
        n += len(pred)
    assert (correct, n) == (doc["accuracy"]["windows"]["correct"], doc["accuracy"]["windows"]["n"])
    # ... and the card and the manifest state that accuracy
    card = entry.card.read_text() if entry.card else ""
    assert f"({correct}/{n})" in card
    assert entry.meta["accuracy"]["windows"] == pytest.approx(correct / n)


@pytest.mark.parametrize("mid", SHIPPED)
def test_offline_predictions_are_the_evaluation(mid: str, datasets: dict[str, Any]) -> None:
    """The function the end-to-end tests call gives eval.json's rows (all rows, before the window filter)."""
    import train_l2mu

    doc = json.loads((_shipped()[mid].file.parent / "eval.json").read_text())
    ds = datasets[_dataset_of(mid)]
    rec = doc["series"][0]
    at, scores, pred = train_l2mu.offline_predictions(mid, ds.series[rec["series"]])
    keep = np.isin(at, rec["rows_at"])
    assert at[keep].tolist() == rec["rows_at"] and scores[keep].astype(int).tolist() == rec["counts"]
    assert pred[keep].tolist() == rec["pred"] and np.array_equal(pred, scores.argmax(axis=1))
    assert np.all(np.diff(at) == doc["readout"]["every"])


@pytest.mark.parametrize("mid", SHIPPED)
def test_card_pins_the_registered_file(mid: str) -> None:
    entry = _shipped()[mid]
    card = entry.card.read_text() if entry.card else ""
    assert f"sha256 of `model.json`: {entry.sha256}" in card
    assert json.loads(entry.file.read_text())["sha256"] in card
    assert "python tools/train_l2mu.py" in card


@pytest.mark.parametrize("mid", SHIPPED)
def test_split_is_the_protocol(mid: str, har: Any, datasets: dict[str, Any]) -> None:
    """The evaluated series are exactly the protocol's test split (SPAR: subjects 8-10)."""
    ds = datasets[_dataset_of(mid)]
    doc = json.loads((_shipped()[mid].file.parent / "eval.json").read_text())
    _, test = har.default_split(ds)
    assert sorted(r["series"] for r in doc["series"]) == sorted(test.tolist())
    if ds.name == "spar":
        assert set(ds.group[test].tolist()) == {8, 9, 10}


@pytest.mark.parametrize("mid", [m for m in SHIPPED if not m.endswith("-pruned")])
def test_pruned_model_is_smaller_and_cheaper(mid: str) -> None:
    full, small = load_l2mu(load(mid)), load_l2mu(load(f"{mid}-pruned"))
    assert small.hidden < full.hidden and small.memory <= full.memory and small.enc <= full.enc
    assert small.dense_synops < full.dense_synops
    card = _shipped()[f"{mid}-pruned"].card
    assert card is not None and mid in card.read_text()  # compared against the full model


def _twin() -> Any:
    try:
        import snntorch  # noqa: F401
        import torch
    except ImportError as exc:
        need(False, f"torch and snntorch are needed for the twin checks ({exc}): pip install -e '.[test]'")
        raise AssertionError("unreachable") from exc
    torch.set_num_threads(1)
    import l2mu_torch

    return l2mu_torch


@pytest.mark.parametrize("mid", SHIPPED)
def test_kernel_matches_twin_on_real_input(mid: str, har: Any, datasets: dict[str, Any]) -> None:
    """The shipped weights keep the float64 sums exact, so kernel and twin agree spike for spike."""
    import torch

    twin = _twin()
    model = twin.from_file(_shipped()[mid].file)
    ds = datasets[_dataset_of(mid)]
    _, test = har.default_split(ds)
    x = ds.series[int(test[0])][:600]
    cell = load_l2mu(load(mid))
    hidden = np.empty((len(x), cell.hidden), np.float32)
    out = cell.step(x, hidden_out=hidden)
    with torch.no_grad():
        out_t, spikes = model(torch.from_numpy(x[None]))
    assert np.array_equal(out, out_t[0].numpy()) and np.array_equal(hidden, spikes["h"][0].numpy())
    assert 0 < hidden.mean() < 0.9 and out.sum() > 0


def test_card_states_the_goal_honestly() -> None:
    """Each full model's card gives its test accuracy beside the issue's goal and the published baselines."""
    for mid, name in DATASETS.items():
        card = (MODELS / mid / "CARD.md").read_text()
        assert re.search(r"MiniRocket|ROCKET", card), mid
        assert f"{GOALS[name]:.2f}" in card or f"{GOALS[name]:.0%}" in card, f"{mid}: goal not stated"


# --- training tools ----------------------------------------------------------------------------------


def test_har_splits_are_subject_disjoint(har: Any, datasets: dict[str, Any]) -> None:
    spar = datasets["spar"]
    train, test = har.default_split(spar)
    assert not set(spar.group[train].tolist()) & set(spar.group[test].tolist())
    assert len(train) + len(test) == spar.n_series == 140
    folds = list(har.subject_folds(spar))
    assert [f[0] for f in folds] == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
    assert sorted(np.concatenate([f[2] for f in folds]).tolist()) == list(range(140))
    fit, val = har.validation_split(spar, train)
    assert len(set(spar.group[val].tolist())) == 1 and not set(val.tolist()) & set(fit.tolist())
    for name, n_train, n_test in (("basicmotions", 40, 40), ("epilepsy", 137, 138)):
        tr, te = har.default_split(datasets[name])
        assert (len(tr), len(te)) == (n_train, n_test)


def test_har_windows_are_the_protocol(har: Any, datasets: dict[str, Any]) -> None:
    spar = datasets["spar"]
    _, test = har.default_split(spar)
    w = har.make_windows(spar, test, 100, 50)
    expected = sum((len(spar.series[i]) - 100) // 50 + 1 for i in test)
    assert w.x.shape == (expected, 100, 6) and w.x.dtype == np.float32
    i = 7
    assert np.array_equal(w.x[i], spar.series[w.series[i]][w.start[i]:w.start[i] + 100])
    assert np.all(w.y == spar.y[w.series])


def _small(twin: Any, seed: int = 3) -> Any:
    return twin.L2MU(twin.L2MUConfig(n_inputs=6, n_outputs=7, enc=4, memory=6, order=5, theta=40.0, hidden=24),
                     seed=seed)


def test_fold_input_norm_and_pruning_keep_the_twin_exact(har: Any, datasets: dict[str, Any],
                                                        tmp_path: Path) -> None:
    import torch

    twin = _twin()
    spar = datasets["spar"]
    train, _ = har.default_split(spar)
    norm = har.Normalizer.fit(spar, train)
    x = torch.from_numpy(np.stack([spar.series[i][:300] for i in train[:8]]))
    model = _small(twin)
    model.set_input_norm(norm.mean, norm.std)
    model.calibrate_thresholds(x, {"x": 0.2, "u": 0.1, "m": 0.1, "h": 0.1})
    with torch.no_grad():
        before = model(x)[1]
        fast = model(x, exact=False)[1]
        for p in before:  # float32 currents: the same model, rounding aside
            assert (before[p] != fast[p]).float().mean() < 0.02, p
        with pytest.raises(ValueError, match="fold_input_norm"):
            twin.export(model, tmp_path / "m.json")
        model.fold_input_norm()
        after = model(x)[1]
    for p in before:  # folding the standardisation into the encoder moves a spike only by rounding
        assert (before[p] != after[p]).float().mean() < 0.01, p
    # pruning = silencing: the pruned twin spikes like the full one whose removed neurons' outputs are zeroed
    keep_enc = np.array([[0, 2, 3]] * 6)
    keep_m, keep_h = np.array([0, 2, 3, 5]), np.arange(0, 24, 2)
    small = model.pruned(keep_enc, keep_m, keep_h)
    silenced = _small(twin)
    silenced.load_state_dict(model.state_dict())
    with torch.no_grad():
        cfg = model.cfg
        dropped_x = np.setdiff1d(np.arange(cfg.n_inputs * cfg.enc),
                                 (np.arange(6)[:, None] * cfg.enc + keep_enc).ravel())
        dropped_m = np.setdiff1d(np.arange(cfg.memory), keep_m)
        dropped_md = (dropped_m[:, None] * cfg.order + np.arange(cfg.order)).ravel()
        dropped_h = np.setdiff1d(np.arange(cfg.hidden), keep_h)
        for w in (silenced.e_x, silenced.W_x):
            w[:, dropped_x] = 0
        for w in (silenced.e_m, silenced.W_m):
            w[:, dropped_md] = 0
        for w in (silenced.e_h, silenced.W_h, silenced.W_o):
            w[:, dropped_h] = 0
        silenced.lif["u"].threshold[dropped_m] = 1e30  # a dropped memory channel never spikes
        full, pruned = silenced(x)[1], small(x)[1]
    assert torch.equal(full["o"], pruned["o"])
    assert torch.equal(full["h"][..., keep_h], pruned["h"])
    assert small.cfg.enc == 3 and small.cfg.memory == 4 and small.cfg.hidden == 12
    # exported, the pruned twin is what the kernel runs
    small.exact_sums()
    path = twin.export(small, tmp_path / "pruned.json", meta={"input": {"rate_hz": 50.0}})
    cell = load_l2mu(path)
    xs = np.ascontiguousarray(x[0].numpy())
    with torch.no_grad():
        expected = small(x[:1])[0][0].numpy()
    assert np.array_equal(cell.step(xs), expected)
    reloaded = twin.from_file(path)
    with torch.no_grad():
        assert torch.equal(reloaded(x[:1])[0], small(x[:1])[0])


def test_quick_training_run_writes_every_file(har: Any, tmp_path: Path) -> None:
    """One documented command: trains, prunes, exports, evaluates, writes cards and plots, registers."""
    _twin()
    import train_l2mu

    out = tmp_path / "models"
    out.mkdir()
    assert train_l2mu.main(["--dataset", "basicmotions", "--quick", "--out", str(out), "--threads", "1"]) == 0
    entries = registry.read_manifest(out)
    assert sorted(entries) == ["har-basicmotions-l2mu", "har-basicmotions-l2mu-pruned"]
    for mid, e in entries.items():
        d = e.file.parent
        for name in ("model.json", "model.npz", "CARD.md", "eval.json", "confusion.png", "learning_curve.png"):
            assert (d / name).is_file(), f"{mid}: {name}"
        assert load_l2mu(e.file).n_outputs == 4
        assert "## Accuracy" in (d / "CARD.md").read_text()


def test_exact_sums_zeroes_only_negligible_weights() -> None:
    import torch

    twin = _twin()
    model = _small(twin)
    with torch.no_grad():
        model.W_h[0, 1] = 1e-12
        model.W_h[0, 2] = 0.0
        model.b_o[3] = 1e-15
        kept = model.W_x.detach().clone()
    assert model.exact_sums() == 2
    assert model.W_h[0, 1].item() == 0.0 and model.b_o[3].item() == 0.0
    assert torch.equal(model.W_x, kept)
    assert model.exact_sums() == 0
