"""DeltaGRU HAR models (tools/train_deltagru.py, models/har-*-deltagru/): the delta_gru stage's readout
and decision schedule, and the shipped models against the tool's offline evaluation on real series."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, ROOT, need
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.kernels.delta import DeltaGRU
from spikeline.modelfile import save
from spikeline.registry import entries, sha256_file
from spikeline.stages import StageError, build_stage
from spikeline.stages.neuro import gru_readout

sys.path.insert(0, str(ROOT / "tools"))

IDS = ("har-spar-deltagru", "har-basicmotions-deltagru", "har-epilepsy-deltagru")
SUFFIXES = ("", "-onnx", "-int8", "-litert", "-litert-int8")


def chunks_of(x: np.ndarray, meta: StreamMeta, sizes: list[int]) -> list[SampleChunk]:
    out, start = [], 0
    for n in sizes:
        rows = x[start:start + n]
        t = (start + np.arange(len(rows))) / meta.nominal_rate
        out.append(SampleChunk(np.ascontiguousarray(rows), t, t.copy(), start, meta))
        start += n
    assert start == len(x)
    return out


def random_sizes(rng: np.random.Generator, n: int, high: int = 97) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(1, high)), n - sum(sizes)))
    return sizes


def stream(stages: list[Any], x: np.ndarray, meta: StreamMeta, sizes: list[int]) -> list[SampleChunk]:
    m = meta
    for st in stages:
        m = st.start(m)
    out = []
    for c in chunks_of(x, meta, sizes):
        cur: SampleChunk | None = c
        for st in stages:
            if cur is None or len(cur) == 0:
                break
            cur = st.process(cur)
        if cur is not None and len(cur):
            out.append(cur)
    return out


def _gru_file(tmp_path: Path, meta: dict[str, Any], readout: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    h, c, k = 12, 3, 4
    a = {"weight_ih": rng.standard_normal((3 * h, c)) * 0.5, "weight_hh": rng.standard_normal((3 * h, h)) * 0.3,
         "bias_ih": rng.standard_normal(3 * h) * 0.1, "bias_hh": rng.standard_normal(3 * h) * 0.1}
    if readout:
        a |= {"readout_weight": rng.standard_normal((k, h)), "readout_bias": rng.standard_normal(k)}
    arrays = {n: v.astype(np.float32) for n, v in a.items()}
    return save(tmp_path / "gru", "delta_gru", arrays, meta), arrays


# --- the stage: readout, thresholds and decision schedule from the model file ---------------------------


def test_delta_gru_stage_readout_and_schedule_match_one_offline_pass(tmp_path: Path) -> None:
    meta = {"classes": ["a", "b", "c", "d"], "theta_x": 0.05, "theta_h": 0.02, "decision": {"every": 10, "first": 29},
            "input": {"rate_hz": 50.0}}
    path, a = _gru_file(tmp_path, meta)
    rng = np.random.default_rng(1)
    n = 517
    x = np.cumsum(rng.standard_normal((n, 3)) * 0.1, axis=0).astype(np.float32)
    sm = StreamMeta("imu", "IMU", ("x", "y", "z"), 50.0)
    k = DeltaGRU(3, 12, a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"], 0.05, 0.02)
    at = np.arange(29, n, 10)
    want = gru_readout(k.step(x)[at], a["readout_weight"], a["readout_bias"])
    for sizes in ([n], [1] * n, random_sizes(rng, n), random_sizes(rng, n, 7)):
        st = build_stage("delta_gru", {"model": str(path)})
        out = stream([st, build_stage("decide", {"classes": ["a", "b", "c", "d"]})], x, sm, sizes)
        assert np.array_equal(np.concatenate([o.seqs() for o in out]), at)
        assert np.array_equal(np.concatenate([o.data for o in out]), want)  # bit for bit, any chunking
        assert np.array_equal(np.concatenate([o.label for o in out if o.label is not None]), want.argmax(1))
        assert out[0].meta.channels == ("a", "b", "c", "d") and out[0].meta.nominal_rate == 5.0
    # thresholds are the model file's unless the config sets them; reset restarts the schedule
    st = build_stage("delta_gru", {"model": str(path), "theta_x": 0.0, "theta_h": 0.0, "every": 7, "first": 3})
    st.start(sm)
    assert st._kernel.theta_x == 0.0 and st._kernel.theta_h == 0.0  # type: ignore[attr-defined]
    first = st.process(chunks_of(x[:20], sm, [20])[0])
    assert first is not None and first.seqs().tolist() == [3, 10, 17]
    st.reset()
    again = st.process(chunks_of(x[:20], sm, [20])[0])
    assert again is not None and np.array_equal(again.data, first.data)
    st = build_stage("delta_gru", {"model": str(path)})
    st.start(sm)
    assert st._kernel.theta_x == pytest.approx(0.05)  # type: ignore[attr-defined]
    assert st._kernel.theta_h == pytest.approx(0.02)  # type: ignore[attr-defined]
    assert st.process(chunks_of(x[:29], sm, [29])[0]) is None  # nothing before the first decision


def test_delta_gru_stage_without_readout_or_schedule_emits_h_per_sample(tmp_path: Path) -> None:
    path, a = _gru_file(tmp_path, {}, readout=False)
    x = np.random.default_rng(2).standard_normal((40, 3)).astype(np.float32)
    sm = StreamMeta("imu", "IMU", ("x", "y", "z"), 50.0)
    out = stream([build_stage("delta_gru", {"model": str(path)})], x, sm, [13, 27])
    h = DeltaGRU(3, 12, a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"]).step(x)
    assert np.array_equal(np.concatenate([o.data for o in out]), h)
    assert out[0].meta.channels[0] == "h0" and out[0].meta.nominal_rate == 50.0


def test_delta_gru_stage_rejects_a_bad_readout_or_rate(tmp_path: Path) -> None:
    path, a = _gru_file(tmp_path, {"input": {"rate_hz": 16.0}})
    sm = StreamMeta("imu", "IMU", ("x", "y", "z"), 50.0)
    with pytest.raises(StageError, match=r"trained at 16\.0 Hz"):
        build_stage("delta_gru", {"model": str(path)}).start(sm)
    a["readout_weight"] = a["readout_weight"][:, :5].copy()
    bad = save(tmp_path / "bad", "delta_gru", a, {})
    with pytest.raises(StageError, match="readout_weight"):
        build_stage("delta_gru", {"model": str(bad)}).start(sm)


# --- shipped models on real series ----------------------------------------------------------------------


def _shipped() -> dict[str, Any]:
    """Every registered id (the DeltaGRU ones and their exports among them); the SPAR model must be there."""
    need(DATA.exists(), f"recordings not found at {DATA}")
    known = entries()
    need("har-spar-deltagru" in known, "har-spar-deltagru is not registered (python tools/train_deltagru.py "
         "--dataset spar)", required=True)
    return known


def _series(mid: str) -> list[Any]:
    """A few real series of the model's dataset: SPAR one per subject pair, UEA a few test cases."""
    import har_data

    ds = har_data.load(mid.split("-")[1])
    if ds.name == "spar":
        pick = [int(np.flatnonzero(ds.group == s)[j]) for j, s in enumerate((1, 4, 5, 8, 10))]
    else:
        pick = np.flatnonzero(ds.is_test)[[0, 7, 15, 22, 31]].tolist()
    return [(ds, i) for i in pick]


@pytest.mark.data
@pytest.mark.parametrize("mid", IDS)
def test_shipped_model_streams_exactly_its_offline_decisions(mid: str) -> None:
    known = _shipped()
    if mid not in known:
        pytest.skip(f"{mid} is not shipped")
    from train_deltagru import offline_predictions

    rng = np.random.default_rng(7)
    for ds, i in _series(mid):
        x = ds.series[i]
        at, scores, pred = offline_predictions(mid, x)
        sm = StreamMeta("watch", "IMU", ds.channels, ds.rate_hz)
        out = stream([build_stage("delta_gru", {"model": mid}), build_stage("decide", {"classes": list(ds.classes)})],
                     x, sm, random_sizes(rng, len(x)))
        assert np.array_equal(np.concatenate([o.seqs() for o in out]), at)
        assert np.array_equal(np.concatenate([o.data for o in out]), scores)
        assert np.array_equal(np.concatenate([o.label for o in out if o.label is not None]), pred)
        # the one-step ONNX export on the onnx stage (scores every sample) gives its own offline decisions
        at2, s2, p2 = offline_predictions(f"{mid}-onnx", x)
        onnx = build_stage("onnx", {"model": f"{mid}-onnx", "mode": "step", "state": {"h": "h_out"},
                                    "output": "scores"})
        rows = stream([onnx], x, sm, random_sizes(rng, len(x)))
        allrows = np.concatenate([o.data for o in rows])
        assert np.array_equal(at2, at)
        np.testing.assert_allclose(allrows[at], s2, rtol=0, atol=1e-5)
        assert np.array_equal(allrows[at].argmax(1), p2)


@pytest.mark.data
def test_int8_onnx_agrees_with_float_as_the_card_says() -> None:
    known = _shipped()
    from train_deltagru import offline_predictions

    mid = "har-spar-deltagru"
    stated = float(known[f"{mid}-int8"].meta["int8_agreement_with_float"])
    card = known[mid].card
    assert card is not None
    pct = re.search(r"int8 ONNX agrees with float ONNX on ([0-9.]+)% of decisions\*\* \((\d+)/(\d+)",
                    card.read_text(encoding="utf-8"))
    assert pct is not None and abs(float(pct.group(1)) / 100 - stated) < 6e-4
    import har_data

    ds = har_data.load("spar")
    agree = total = 0
    for x in ds.series:  # all 140 series, as the card
        _, _, p_float = offline_predictions(f"{mid}-onnx", x)
        _, _, p_int8 = offline_predictions(f"{mid}-int8", x)
        agree += int((p_float == p_int8).sum())
        total += p_float.size
    assert total == int(pct.group(3))
    # the same machine reproduces the count; another CPU's int8 kernels may round a rare near-tie differently
    assert agree / total >= stated - 0.005, (agree, total, stated)


@pytest.mark.data
def test_cards_list_the_files_they_ship_with_their_sha256() -> None:
    known = _shipped()
    for mid in (m for m in IDS if m in known):
        entry = known[mid]
        assert entry.card is not None and entry.card.is_file()
        text = entry.card.read_text(encoding="utf-8")
        listed = dict(re.findall(r"^\| `([^`]+)` \| \d+ \| `([0-9a-f]{64})` \|$", text, re.M))
        mdir = entry.card.parent
        present = {p.name for p in mdir.iterdir() if p.is_file() and p.name != "CARD.md"}
        assert set(listed) == present, mid
        for name, digest in listed.items():
            assert sha256_file(mdir / name) == digest, f"{mid}: {name}"
        assert "--quick smoke run" not in text
        assert f"python tools/train_deltagru.py --dataset {mid.split('-')[1]}" in text
        for s in SUFFIXES:
            assert f"{mid}{s}" in known, f"{mid}{s} not registered"
            assert sha256_file(known[f"{mid}{s}"].file) == known[f"{mid}{s}"].sha256


@pytest.mark.data
def test_quick_run_writes_every_file(tmp_path: Path) -> None:
    need(DATA.exists(), f"recordings not found at {DATA}")
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "tools" / "train_deltagru.py"), "--dataset", "spar", "--quick",
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=120)
    elapsed = time.monotonic() - t0
    mdir = tmp_path / "har-spar-deltagru"
    for name in ("model.json", "model.npz", "model.onnx", "model-int8.onnx", "model.tflite", "model-int8.tflite",
                 "CARD.md", "confusion.png", "curves.png"):
        assert (mdir / name).is_file() and (mdir / name).stat().st_size > 0, name
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["models"]) == {f"har-spar-deltagru{s}" for s in SUFFIXES}
    assert "--quick smoke run" in (mdir / "CARD.md").read_text(encoding="utf-8")
    assert elapsed < 60, f"--quick took {elapsed:.0f} s"  # ~20 s on an idle 2-core machine
