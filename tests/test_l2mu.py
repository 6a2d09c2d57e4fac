"""The L2MU cell kernel (ext/l2mu.pyx, spikeline.kernels.l2mu) and its model-file loader.

Behaviour tests run on the class spikeline.kernels.l2mu selected: run the file once normally
(compiled) and once with SPIKELINE_NO_EXT=1 (numpy reference). The compiled-vs-reference tests
import spikeline._ext.l2mu directly and run in both modes (skipped only when SPIKELINE_NO_EXT is set
and the extension is not built).

The outside reference is tools/l2mu_torch.py, the PyTorch/snnTorch training twin whose forward pass
defines the L2MU: a twin trained for a few optimiser steps with the surrogate gradient is exported,
loaded with load_l2mu, and must give the same spikes in every population at every step (and, on
x86-64, the same membrane bits). Those tests need torch and snntorch (the test extra): they skip
without them on a developer's machine and fail with SPIKELINE_REQUIRE_ALL=1 (CI), via conftest.need.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, need
from spikeline.kernels.l2mu import BACKEND, L2MUCell, L2MUCellRef, load_l2mu
from spikeline.kernels.lmu_matrices import lmu_matrices
from spikeline.modelfile import ModelError, load, save

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
POPULATIONS = ("x", "u", "m", "h", "o")
CONVENTIONS = ("A", "AT")
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


@pytest.fixture(scope="module")
def compiled() -> Any:
    """The compiled module spikeline._ext.l2mu itself, whatever backend spikeline.kernels.l2mu selected."""
    try:
        import spikeline._ext.l2mu as module
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.l2mu is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.l2mu failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return module


# --- inputs and models ----------------------------------------------------------------------------


def imu(n: int, seed: int, activity: int | None = None, n_streams: int | None = None) -> F32:
    """A smartwatch IMU at 50 Hz: accelerometer (m/s², gravity on z) and gyroscope (rad/s), 6 channels.

    An activity (0..6) sets the sway frequency and amplitude; None switches activity every 100
    samples. Slow random-walk drift and sensor noise on top. n_streams: (n, n_streams, 6), one
    independent recording per stream.
    """
    rng = np.random.default_rng(seed)
    shape = (n, 6) if n_streams is None else (n, n_streams, 6)
    acts = (np.full(n, activity) if activity is not None
            else np.repeat(rng.integers(0, 7, n // 100 + 1), 100)[:n])
    t = np.arange(n) / 50.0
    freq = (0.4 + 0.35 * acts)[:, None]
    amp = (0.5 + 0.6 * acts)[:, None]
    if n_streams is not None:
        freq, amp, t = freq[..., None], amp[..., None], t[:, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, shape[1:])
    sway = np.sin(2.0 * np.pi * freq * t[..., None] + phase)
    x = np.empty(shape)
    x[..., :3] = amp * 3.0 * sway[..., :3] + np.cumsum(0.05 * rng.standard_normal((*shape[:-1], 3)), axis=0)
    x[..., 2] += 9.81
    x[..., 3:] = amp * 0.8 * sway[..., 3:] + 0.05 * rng.standard_normal((*shape[:-1], 3))
    x[..., :3] += 0.3 * rng.standard_normal((*shape[:-1], 3))
    return np.ascontiguousarray(x, dtype=np.float32)


# Small sizes for the tests that need no torch (the numpy reference steps them quickly).
SMALL = {"n_inputs": 3, "n_outputs": 4, "enc": 3, "memory": 4, "order": 5, "theta": 20.0, "hidden": 16}


def random_arrays(seed: int, n_inputs: int = 3, n_outputs: int = 4, enc: int = 3, memory: int = 4,
                  order: int = 5, theta: float = 20.0, hidden: int = 16) -> dict[str, F32]:
    """The arrays of an l2mu model with random weights, scaled so that every population is active."""
    rng = np.random.default_rng(seed)
    n_x, n_m = n_inputs * enc, memory * order

    def w(rows: int, cols: int, gain: float) -> F32:
        return (gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    a_bar, b_bar = lmu_matrices(order, theta)
    sizes = {"x": n_x, "u": memory, "m": n_m, "h": hidden, "o": n_outputs}
    arrays = {
        "enc_w": (0.5 * rng.standard_normal((n_inputs, enc))).astype(np.float32),
        "enc_b": rng.uniform(0.0, 0.5, (n_inputs, enc)).astype(np.float32),
        "e_x": w(memory, n_x, 3.0), "e_h": w(memory, hidden, 1.5), "e_m": w(memory, n_m, 1.5),
        "W_x": w(hidden, n_x, 2.0), "W_h": w(hidden, hidden, 1.0), "W_m": w(hidden, n_m, 3.0),
        "W_o": w(n_outputs, hidden, 3.0), "b_o": (0.1 * rng.standard_normal(n_outputs)).astype(np.float32),
        "A_bar": a_bar.astype(np.float32), "B_bar": b_bar.astype(np.float32),
    }
    for p, n in sizes.items():
        beta = rng.uniform(0.6, 1.0, n)
        beta[:2] = (1.2, -0.1)  # outside [0, 1]: both sides clamp
        arrays[f"beta_{p}"] = beta.astype(np.float32)
        low = 0.15 if p == "m" else 0.5  # B̄ is small: a low memory threshold keeps the memory busy
        arrays[f"threshold_{p}"] = rng.uniform(low, 2 * low + 0.5, n).astype(np.float32)
    return arrays


ARRAYS = random_arrays(1)
SMALL_X = imu(400, seed=2)[:, :3].copy()


def make(cls: type[Any], convention: str = "A", n_streams: int = 1, arrays: dict[str, F32] | None = None) -> Any:
    return cls(**(ARRAYS if arrays is None else arrays), memory_convention=convention, n_streams=n_streams)


def bits(a: Any) -> Any:
    arr = np.ascontiguousarray(a)
    return arr.view(np.uint32) if arr.dtype == np.float32 else arr


def same(a: Any, b: Any) -> bool:
    """Bit-identical float32 arrays (NaN payloads and the sign of zero included), int arrays, dicts or lists of them."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(p, q) for p, q in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(bits(a), bits(b))


def run_traced(cell: Any, x: F32, stream: int = 0) -> dict[str, F32]:
    """Step x one sample at a time; every population's spikes and membranes at every step.

    The kernel returns the output spikes and keeps the membranes in its state; a neuron spikes
    exactly when its new membrane exceeds its threshold (strict >), so the spikes of every
    population follow from the membranes. They are checked against what the kernel reports
    (out, state s_h and s_m) on the way.
    """
    thr = {p: cell.arrays[f"threshold_{p}"] for p in POPULATIONS}
    trace: dict[str, list[F32]] = {f"{kind}_{p}": [] for p in POPULATIONS for kind in ("s", "mem")}
    for i in range(x.shape[0]):
        out = cell.step(x[i : i + 1], stream=stream)[0]
        state = {k: v[stream] for k, v in cell.state.items()}
        for p in POPULATIONS:
            mem = state[f"mem_{p}"]
            trace[f"mem_{p}"].append(mem)
            trace[f"s_{p}"].append((mem > thr[p]).astype(np.float32))
        assert np.array_equal(trace["s_o"][-1], out)
        assert np.array_equal(trace["s_h"][-1], state["s_h"]) and np.array_equal(trace["s_m"][-1], state["s_m"])
    return {k: np.array(v) for k, v in trace.items()}


# --- the PyTorch twin ------------------------------------------------------------------------------

HAR = {"n_inputs": 6, "n_outputs": 7, "enc": 4, "memory": 8, "order": 6, "theta": 50.0, "hidden": 64}
TRAIN_STEPS, TRAIN_BATCH, TRAIN_T = 8, 16, 60
PARITY_T = 600


def _twin() -> tuple[Any, Any]:
    """(torch, tools/l2mu_torch.py as a module)."""
    try:
        import snntorch  # noqa: F401
        import torch
    except ImportError as exc:
        need(False, f"torch and snntorch are needed for the PyTorch parity tests ({exc}): pip install -e '.[test]'")
        raise AssertionError("unreachable") from exc
    torch.set_num_threads(1)
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import l2mu_torch

    return torch, l2mu_torch


def _train(convention: str, seed: int) -> Any:
    """The HAR-size twin after TRAIN_STEPS Adam steps on a 7-class synthetic IMU task (surrogate gradient)."""
    torch, twin = _twin()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = twin.L2MU(twin.L2MUConfig(**HAR, memory_convention=convention), seed=seed)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(TRAIN_STEPS):
        labels = rng.integers(0, 7, TRAIN_BATCH)
        x = np.stack([imu(TRAIN_T, seed=1000 * seed + 100 * step + i, activity=int(c)) for i, c in enumerate(labels)])
        out, _ = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(out.mean(dim=1) * 10.0, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # trained: every parameter moved, the learnable decays and thresholds included
    moved = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert sorted(moved) == sorted(before), f"not trained: {sorted(set(before) - set(moved))}"
    return model


@pytest.fixture(scope="module", params=CONVENTIONS)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(trained twin, its exported model file), one per memory convention."""
    _, twin = _twin()
    model = _train(request.param, seed=6)  # a seed whose memory is busy (2-6 % of memory neurons spike)
    path = twin.export(model, tmp_path_factory.mktemp("l2mu") / f"har_{request.param}.json",
                       meta={"input": {"channels": ["ax", "ay", "az", "gx", "gy", "gz"], "rate_hz": 50}})
    return model, path


def torch_traced(model: Any, x: F32) -> dict[str, F32]:
    """The twin's forward on x (steps, n_inputs) or (steps, batch, n_inputs): spikes and membranes
    of every population at every step, (steps, [batch,] neurons)."""
    torch, _ = _twin()
    batched = x.ndim == 3
    xb = np.ascontiguousarray(x.transpose(1, 0, 2) if batched else x[None])
    mems: dict[str, list[Any]] = {p: [] for p in POPULATIONS}
    hooks = [model.lif[p].register_forward_hook(lambda _m, _i, out, p=p: mems[p].append(out[1].detach().clone()))
             for p in POPULATIONS]
    try:
        with torch.no_grad():
            _, spikes = model(torch.from_numpy(xb))
    finally:
        for hook in hooks:
            hook.remove()
    trace = {}
    for p in POPULATIONS:
        s = spikes[p].numpy().transpose(1, 0, 2)  # (steps, batch, n)
        m = torch.stack(mems[p]).numpy()
        trace[f"s_{p}"], trace[f"mem_{p}"] = (s, m) if batched else (s[:, 0], m[:, 0])
    return trace


def assert_sums_exact(arrays: dict[str, F32]) -> None:
    """The condition under which float64 current sums are exact (tools/l2mu_torch.py): per neuron,
    log2(max|w| / min|w|) + log2(fan-in) <= 28 over its nonzero input weights (b_o counts as one)."""
    mt = np.concatenate([arrays["A_bar"], arrays["A_bar"].T, arrays["B_bar"][:, None]], axis=1)
    for name, rows in (("u", np.concatenate([arrays["e_x"], arrays["e_h"], arrays["e_m"]], axis=1)),
                       ("h", np.concatenate([arrays["W_x"], arrays["W_h"], arrays["W_m"]], axis=1)),
                       ("o", np.concatenate([arrays["W_o"], arrays["b_o"][:, None]], axis=1)), ("m", mt)):
        for row in np.abs(rows.astype(np.float64)):
            nz = row[row > 0]
            assert math.log2(nz.max() / nz.min()) + math.log2(row.size) <= 28, f"{name}: float64 sums may round"


def first_difference(got: dict[str, F32], expected: dict[str, F32], prefix: str) -> str | None:
    """'population p first differs at step t' for the first such step, or None."""
    worst: tuple[int, str] | None = None
    for p in POPULATIONS:
        key = f"{prefix}_{p}"
        assert got[key].shape == expected[key].shape, key
        differ = (bits(got[key]) != bits(expected[key])).reshape(got[key].shape[0], -1).any(axis=1)
        if differ.any():
            step = int(np.flatnonzero(differ)[0])
            worst = min(worst or (step, p), (step, p))
    return None if worst is None else f"{prefix}_{worst[1]} first differs at step {worst[0]}"


# --- backend selection -------------------------------------------------------------------------


def test_backend_follows_environment() -> None:
    if _no_ext_requested():
        assert (BACKEND, L2MUCell) == ("numpy", L2MUCellRef)
    else:
        assert BACKEND == "ext"
        assert L2MUCell.__module__ == "spikeline._ext.l2mu"


_IMPORT_WITHOUT_EXT = """
import json, sys, warnings
sys.modules["spikeline._ext.l2mu"] = None  # makes `import spikeline._ext.l2mu` fail
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import spikeline.kernels.l2mu as k
print(json.dumps({"backend": k.BACKEND, "is_ref": k.L2MUCell is k.L2MUCellRef,
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning
                               and "spikeline._ext.l2mu" in str(w.message)]}))
"""


@pytest.mark.parametrize(("no_ext", "warns"), [(None, True), ("1", False)])
def test_missing_extension_falls_back(no_ext: str | None, warns: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPIKELINE_NO_EXT"}
    if no_ext is not None:
        env["SPIKELINE_NO_EXT"] = no_ext
    proc = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT_EXT], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    result = json.loads(proc.stdout)
    assert result["backend"] == "numpy" and result["is_ref"]
    assert len(result["warnings"]) == (1 if warns else 0)


# --- parity with the PyTorch twin ----------------------------------------------------------------


def test_trained_model_matches_torch_spike_for_spike(trained: tuple[Any, Path]) -> None:
    """The key requirement: every population, every step, the same spikes as the twin's forward."""
    model, path = trained
    cell = load_l2mu(path)
    assert cell.memory_convention == model.cfg.memory_convention
    assert_sums_exact(cell.arrays)
    x = imu(PARITY_T, seed=5)
    expected = torch_traced(model, x)
    got = run_traced(cell, x)
    for p in POPULATIONS:  # a meaningful comparison: every population spikes, none saturates
        assert 0.0 < got[f"s_{p}"].mean() < 0.9, p
    assert got["s_m"].mean() > 0.01
    spikes_differ = first_difference(got, expected, "s")
    assert spikes_differ is None, spikes_differ
    # The membranes too: the same float32 operations on the same currents. Bit-identical on
    # x86-64; elsewhere torch's elementwise kernels may differ in the last bit. This is the check
    # with teeth: a kernel summing its currents in float32 still gives the same spikes over these
    # 600 steps (a last-bit difference flips a spike only when a membrane sits within it of the
    # threshold), but its membranes differ from the first step.
    if X86:
        membranes_differ = first_difference(got, expected, "mem")
        assert membranes_differ is None, membranes_differ
    else:
        for p in POPULATIONS:
            np.testing.assert_allclose(got[f"mem_{p}"], expected[f"mem_{p}"], rtol=0, atol=1e-6)


def test_trained_model_matches_torch_in_chunks(trained: tuple[Any, Path]) -> None:
    """The runtime's way: chunks of any size, output and hidden spikes straight from step()."""
    model, path = trained
    x = imu(PARITY_T, seed=6)
    expected = torch_traced(model, x)
    cell = load_l2mu(path)
    cuts = [0, 1, 2, 9, 64, 65, 300, 599, PARITY_T]
    hidden = np.empty((PARITY_T, HAR["hidden"]), np.float32)
    out = np.empty((PARITY_T, HAR["n_outputs"]), np.float32)
    for a, b in itertools.pairwise(cuts):
        cell.step(x[a:b], out=out[a:b], hidden_out=hidden[a:b])
    assert np.array_equal(out, expected["s_o"])
    assert np.array_equal(hidden, expected["s_h"])
    assert cell.counters["active_o"][0] == out.sum() and cell.counters["active_h"][0] == hidden.sum()


def test_step_streams_matches_torch_batch(trained: tuple[Any, Path]) -> None:
    """The twin's batch dimension is the kernel's stream dimension."""
    model, path = trained
    x = imu(300, seed=7, n_streams=3)
    expected = torch_traced(model, x)
    cell = load_l2mu(path, n_streams=3)
    out = np.empty((3, HAR["n_outputs"]), np.float32)
    hidden = np.empty((3, HAR["hidden"]), np.float32)
    for t in range(x.shape[0]):
        cell.step_streams(x[t], out=out, hidden_out=hidden)
        assert np.array_equal(out, expected["s_o"][t]), f"step {t}"
        assert np.array_equal(hidden, expected["s_h"][t]), f"step {t}"
        assert np.array_equal(cell.state["s_m"], expected["s_m"][t]), f"step {t}"


def test_memory_conventions_differ_and_each_matches_torch(trained: tuple[Any, Path]) -> None:
    """The same weights run as Ā and as Āᵀ: different memories, and each is what the twin computes."""
    _, twin = _twin()
    model, path = trained
    convention = model.cfg.memory_convention
    other = "AT" if convention == "A" else "A"
    swapped = twin.L2MU(twin.L2MUConfig(**HAR, memory_convention=other))
    swapped.load_state_dict(model.state_dict())
    x = imu(PARITY_T, seed=8)
    runs = {}
    for conv, twin_model in ((convention, model), (other, swapped)):
        expected = torch_traced(twin_model, x)
        cell = L2MUCell(**load_l2mu(path).arrays, memory_convention=conv)
        got = run_traced(cell, x)
        spikes_differ = first_difference(got, expected, "s")
        assert spikes_differ is None, f"{conv}: {spikes_differ}"
        runs[conv] = got
    assert not np.array_equal(runs["A"]["s_m"], runs["AT"]["s_m"])
    assert not np.array_equal(runs["A"]["mem_m"], runs["AT"]["mem_m"])


# --- compiled == reference, bit for bit ------------------------------------------------------------


def _drive(cell: Any, x: F32, stream: int, chunks: int) -> list[Any]:
    """Step x through `stream` in chunks (with hidden_out), then step_streams; everything observable."""
    results: list[Any] = []
    for c in np.array_split(x, chunks):
        hidden = np.empty((c.shape[0], cell.hidden), np.float32)
        results += [cell.step(c, stream=stream, hidden_out=hidden), hidden]
    results += [cell.state, cell.counters]
    results.append(cell.step_streams(np.ascontiguousarray(x[: cell.n_streams])))
    results += [cell.state, cell.counters]
    return results


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_compiled_bit_identical_to_reference(compiled: Any, convention: str) -> None:
    fc, fr = make(compiled.L2MUCell, convention, 3), make(L2MUCellRef, convention, 3)
    got, expected = _drive(fc, SMALL_X, 2, 7), _drive(fr, SMALL_X, 2, 7)
    assert fc.counters["active_m"][2] > 20  # the memory is busy: the Ā/Āᵀ gather is exercised
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert same(a, b), f"result {i} differs"


def test_compiled_bit_identical_on_extreme_input(compiled: Any) -> None:
    """NaN, +-inf, float32 max and subnormals: same bits (NaN membranes included) in both backends."""
    x = SMALL_X.copy()
    x[10, 0], x[20, 1], x[30, 2] = np.nan, np.inf, -np.inf
    x[40:60, 1] = np.finfo(np.float32).max * np.where(np.arange(20) % 2 == 0, 1, -1)
    x[60:70, 2] = np.finfo(np.float32).smallest_subnormal
    for convention in CONVENTIONS:
        fc, fr = make(compiled.L2MUCell, convention, 2), make(L2MUCellRef, convention, 2)
        for a, b in zip(_drive(fc, x, 1, 3), _drive(fr, x, 1, 3), strict=True):
            assert same(a, b)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**31 - 1), convention=st.sampled_from(CONVENTIONS))
def test_compiled_bit_identical_on_random_models(compiled: Any, seed: int, convention: str) -> None:
    arrays = random_arrays(seed % 1000, n_inputs=2, n_outputs=3, enc=2, memory=3, order=4, hidden=8)
    x = np.ascontiguousarray(imu(120, seed=seed)[:, :2])
    fc, fr = make(compiled.L2MUCell, convention, 1, arrays), make(L2MUCellRef, convention, 1, arrays)
    assert same(_drive(fc, x, 0, 2), _drive(fr, x, 0, 2))


# --- chunks and streams ----------------------------------------------------------------------------

KERNELS = list(dict.fromkeys([L2MUCell, L2MUCellRef]))
KERNEL_IDS = [k.__module__.rsplit(".", 1)[-1] for k in KERNELS]
CHUNK_N = 200


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
@settings(deadline=None, max_examples=30)
@given(cuts=st.sets(st.integers(1, CHUNK_N - 1), max_size=40), convention=st.sampled_from(CONVENTIONS))
def test_chunk_invariance(kernel: type[Any], cuts: set[int], convention: str) -> None:
    x = SMALL_X[:CHUNK_N]
    whole, chunked = make(kernel, convention, 2), make(kernel, convention, 2)
    h_whole = np.empty((CHUNK_N, whole.hidden), np.float32)
    y_whole = whole.step(x, stream=1, hidden_out=h_whole)
    ys, hs = [], []
    for piece in np.split(x, sorted(cuts)):
        h = np.empty((piece.shape[0], chunked.hidden), np.float32)
        ys.append(chunked.step(piece, stream=1, hidden_out=h))
        hs.append(h)
    assert np.array_equal(np.concatenate(ys), y_whole) and np.array_equal(np.concatenate(hs), h_whole)
    assert same(chunked.state, whole.state) and same(chunked.counters, whole.counters)


def test_streams_are_independent() -> None:
    x = SMALL_X
    cell = make(L2MUCell, n_streams=3)
    cell.step(x[:150], stream=0)
    state = cell.state
    assert all(not v[1:].any() for v in state.values())  # streams 1 and 2 untouched
    assert cell.counters["steps"].tolist() == [150, 0, 0]
    assert np.array_equal(cell.step(x[150:], stream=2), make(L2MUCell).step(x[150:]))
    cell.reset(stream=2)
    state = cell.state
    assert all(not v[2].any() for v in state.values()) and state["mem_h"][0].any()
    assert cell.counters["steps"].tolist() == [150, 0, 250]  # reset() leaves the counters alone
    cell.reset_counters(stream=0)
    assert cell.counters["steps"].tolist() == [0, 0, 250]
    cell.reset_counters()
    assert not any(v.any() for v in cell.counters.values())


def test_step_streams_equals_stepping_each_stream() -> None:
    n_streams = 4
    x = np.ascontiguousarray(imu(150, seed=9, n_streams=n_streams)[:, :, :3])
    together, apart = make(L2MUCell, "AT", n_streams), make(L2MUCell, "AT", n_streams)
    out = np.empty((n_streams, together.n_outputs), np.float32)
    hidden = np.empty((n_streams, together.hidden), np.float32)
    for sample in x:
        assert together.step_streams(sample, out=out, hidden_out=hidden) is out
        for k in range(n_streams):
            h = np.empty((1, apart.hidden), np.float32)
            assert np.array_equal(apart.step(sample[k : k + 1], stream=k, hidden_out=h)[0], out[k])
            assert np.array_equal(h[0], hidden[k])
    assert same(together.state, apart.state) and same(together.counters, apart.counters)


# --- input and output handling -----------------------------------------------------------------


def test_read_only_input() -> None:
    ro = np.frombuffer(SMALL_X.tobytes(), dtype=np.float32).reshape(SMALL_X.shape)
    assert not ro.flags.writeable
    assert np.array_equal(make(L2MUCell).step(ro), make(L2MUCell).step(SMALL_X))
    assert np.array_equal(make(L2MUCell, n_streams=2).step_streams(ro[:2]), make(L2MUCell, n_streams=2).step_streams(SMALL_X[:2]))


def test_preallocated_outputs_and_empty_chunk() -> None:
    cell = make(L2MUCell)
    out = np.full((50, cell.n_outputs), 7.0, np.float32)
    hidden = np.full((50, cell.hidden), 7.0, np.float32)
    assert cell.step(SMALL_X[:50], out=out, hidden_out=hidden) is out
    assert set(np.unique(out)) <= {0.0, 1.0} and set(np.unique(hidden)) <= {0.0, 1.0}
    state = cell.state
    assert cell.step(SMALL_X[:0]).shape == (0, cell.n_outputs)
    assert same(cell.state, state) and cell.counters["steps"][0] == 50


def test_nan_stays_in_its_channel() -> None:
    x = SMALL_X[:100].copy()
    x[20, 1] = np.nan
    cell = make(L2MUCell)
    y = cell.step(x)
    state = cell.state
    enc = cell.enc
    nan_x = np.isnan(state["mem_x"][0])
    assert nan_x[enc : 2 * enc].all() and not nan_x[:enc].any() and not nan_x[2 * enc :].any()
    assert all(np.isfinite(state[k]).all() for k in state if k != "mem_x")  # downstream sees spikes only
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_counters_and_sparsity() -> None:
    cell = make(L2MUCell)
    hidden = np.empty((SMALL_X.shape[0], cell.hidden), np.float32)
    y = cell.step(SMALL_X, hidden_out=hidden)
    c = cell.counters
    n = SMALL_X.shape[0]
    sizes = cell.sizes
    assert c["steps"][0] == n
    assert c["active_o"][0] == y.sum() and c["active_h"][0] == hidden.sum()
    for p in POPULATIONS:
        assert 0 < c[f"active_{p}"][0] < n * sizes[p], p
    # each gather reads fewer columns than the dense product would
    assert 0 < c["columns"][0] < n * cell.dense_columns
    assert 0 < c["synops"][0] < n * cell.dense_synops
    n_v = sizes["x"] + sizes["h"] + sizes["m"]
    assert cell.dense_columns == 2 * n_v + cell.memory * (cell.order + 1) + cell.hidden
    assert cell.dense_synops == n_v * (cell.memory + cell.hidden) + cell.memory * (cell.order + 1) * cell.order \
        + cell.hidden * cell.n_outputs


def test_state_roundtrip_and_reset() -> None:
    a, b = make(L2MUCell, "AT", 2), make(L2MUCell, "AT", 2)
    a.step(SMALL_X[:200], stream=1)
    state = a.state
    assert set(state) == {"mem_x", "mem_u", "mem_m", "mem_h", "mem_o", "s_h", "s_m"}
    assert state["s_m"].shape == (2, a.memory * a.order) and state["mem_x"].shape == (2, a.sizes["x"])
    b.state = state
    assert same(b.state, state)
    assert np.array_equal(a.step(SMALL_X[200:], stream=1), b.step(SMALL_X[200:], stream=1))
    state["mem_h"][...] = 5.0  # a copy: the cell is unaffected
    assert not np.array_equal(a.state["mem_h"], state["mem_h"])
    a.reset()
    assert all(not v.any() for v in a.state.values())
    fresh = make(L2MUCell, "AT", 2)
    assert np.array_equal(a.step(SMALL_X[:100], stream=0), fresh.step(SMALL_X[:100], stream=0))


def test_properties() -> None:
    cell = make(L2MUCell, "AT", 3)
    assert (cell.n_inputs, cell.enc, cell.memory, cell.order, cell.hidden, cell.n_outputs, cell.n_streams) == (
        3, 3, 4, 5, 16, 4, 3)
    assert cell.memory_convention == "AT"
    assert cell.sizes == {"x": 9, "u": 4, "m": 20, "h": 16, "o": 4}
    arrays = cell.arrays
    assert set(arrays) == set(ARRAYS)
    for k, v in arrays.items():
        expected = np.clip(ARRAYS[k], 0, 1) if k.startswith("beta") else ARRAYS[k]
        assert np.array_equal(v, expected) and v.dtype == np.float32, k
    arrays["W_h"][...] = 0.0  # a copy
    assert cell.arrays["W_h"].any()
    with pytest.raises(AttributeError):
        cell.hidden = 3  # type: ignore[misc]


def test_scalar_neuron_parameters() -> None:
    """beta/threshold may be scalars (as snnTorch allows), expanded to one per neuron."""
    arrays = dict(ARRAYS)
    arrays["beta_h"], arrays["threshold_h"] = np.float32(0.9), 1.0  # type: ignore[assignment]
    cell = make(L2MUCell, arrays=arrays)
    assert np.array_equal(cell.arrays["beta_h"], np.full(16, 0.9, np.float32))
    expanded = dict(ARRAYS, beta_h=np.full(16, 0.9, np.float32), threshold_h=np.ones(16, np.float32))
    assert np.array_equal(cell.step(SMALL_X), make(L2MUCell, arrays=expanded).step(SMALL_X))


# --- errors ----------------------------------------------------------------------------------------


def _bad_calls() -> list[tuple[str, Callable[[Any], object], type[Exception], str]]:
    """(id, call on a 2-stream cell, exception, message fragment)."""
    ok = np.zeros((10, 3), np.float32)
    buf = np.zeros(400, np.float32)
    good_state = make(L2MUCell, n_streams=2).state
    return [
        ("list", lambda c: c.step([[0.0] * 3]), TypeError, "x must be a numpy.ndarray, got list"),
        ("float64", lambda c: c.step(ok.astype(np.float64)), TypeError,
         "x must have dtype float32 in native byte order, got float64"),
        ("byteswapped", lambda c: c.step(ok.astype(ok.dtype.newbyteorder())), TypeError, "native byte order"),
        ("1-D", lambda c: c.step(ok[0]), ValueError, "x must be 2-D with shape (n_samples, 3)"),
        ("columns", lambda c: c.step(np.zeros((10, 4), np.float32)), ValueError,
         "x must have shape (n_samples, 3), got (10, 4)"),
        ("fortran", lambda c: c.step(np.asfortranarray(np.zeros((10, 3), np.float32))), ValueError, "C-contiguous"),
        ("unaligned", lambda c: c.step(np.frombuffer(bytes(121), np.float32, count=30, offset=1).reshape(10, 3)),
         ValueError, "aligned"),
        ("out-shape", lambda c: c.step(ok, out=np.zeros((10, 3), np.float32)), ValueError,
         "out must have shape (10, 4), got (10, 3)"),
        ("out-dtype", lambda c: c.step(ok, out=np.zeros((10, 4), np.float64)), TypeError, "out must have dtype float32"),
        ("out-readonly", lambda c: c.step(ok, out=np.frombuffer(bytes(160), np.float32).reshape(10, 4)), ValueError,
         "writeable"),
        ("out-overlaps-x", lambda c: c.step(buf[:30].reshape(10, 3), out=buf[20:60].reshape(10, 4)), ValueError,
         "out must not overlap x"),
        ("hidden-shape", lambda c: c.step(ok, hidden_out=np.zeros((10, 15), np.float32)), ValueError,
         "hidden_out must have shape (10, 16), got (10, 15)"),
        ("hidden-is-out", lambda c: c.step(ok, out=buf[:40].reshape(10, 4), hidden_out=buf[:160].reshape(10, 16)),
         ValueError, "hidden_out must not overlap out"),
        ("stream-negative", lambda c: c.step(ok, stream=-1), ValueError, "stream must be in [0, 2), got -1"),
        ("stream-high", lambda c: c.step(ok, stream=2), ValueError, "stream must be in [0, 2), got 2"),
        ("streams-rows", lambda c: c.step_streams(np.zeros((3, 3), np.float32)), ValueError,
         "x must have shape (n_streams=2, n_inputs=3), got (3, 3)"),
        ("reset-stream", lambda c: c.reset(stream=2), ValueError, "stream must be -1 (all streams) or in [0, 2), got 2"),
        ("counters-stream", lambda c: c.reset_counters(stream=-2), ValueError, "stream must be -1"),
        ("state-not-mapping", lambda c: setattr(c, "state", [np.zeros(3)]), TypeError, "state must be a mapping"),
        ("state-missing", lambda c: setattr(c, "state", {k: v for k, v in good_state.items() if k != "s_m"}),
         ValueError, "missing s_m"),
        ("state-extra", lambda c: setattr(c, "state", {**good_state, "s_x": good_state["s_h"]}), ValueError,
         "unexpected s_x"),
        ("state-shape", lambda c: setattr(c, "state", {**good_state, "mem_h": np.zeros((1, 16))}), ValueError,
         "state['mem_h'] must have shape (2, 16), got (1, 16)"),
        ("state-nan", lambda c: setattr(c, "state", {**good_state, "mem_u": np.full((2, 4), np.nan)}), ValueError,
         "state['mem_u'] must be finite"),
        ("state-spikes", lambda c: setattr(c, "state", {**good_state, "s_h": np.full((2, 16), 0.5)}), ValueError,
         "state['s_h'] must hold spikes: every value 0.0 or 1.0"),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize(("case", "call", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_raise_clearly(case: str, call: Callable[[Any], object], kind: type[Exception], message: str) -> None:
    for cls in KERNELS:
        cell = make(cls, n_streams=2)
        before = cell.state
        with pytest.raises(kind) as info:
            call(cell)
        assert message in str(info.value), (cls, str(info.value))
        assert same(cell.state, before)  # nothing changed


@pytest.mark.parametrize(("case", "call", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_compiled_and_reference_raise_alike(compiled: Any, case: str, call: Callable[[Any], object],
                                            kind: type[Exception], message: str) -> None:
    errors = []
    for cls in (compiled.L2MUCell, L2MUCellRef):
        with pytest.raises(kind) as info:
            call(make(cls, n_streams=2))
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def _bad_constructions() -> list[tuple[str, dict[str, Any], type[Exception], str]]:
    """(id, constructor keyword arguments, exception, message fragment)."""
    a = ARRAYS
    without_w_o = {k: v for k, v in a.items() if k != "W_o"}
    return [
        ("missing", without_w_o, TypeError, "L2MUCell needs the arrays W_o"),
        ("unknown", {**a, "W_z": a["W_h"]}, TypeError, "unexpected arguments W_z"),
        ("convention", {**a, "memory_convention": "B"}, ValueError, 'memory_convention must be "A"'),
        ("convention-type", {**a, "memory_convention": 1}, ValueError, "memory_convention"),
        ("n_streams", {**a, "n_streams": 0}, ValueError, "n_streams must be >= 1, got 0"),
        ("enc_w-1d", {**a, "enc_w": a["enc_w"].reshape(-1)}, ValueError, "enc_w must be 2-D with shape (n_inputs, enc)"),
        ("enc_w-list", {**a, "enc_w": a["enc_w"].tolist()}, TypeError, "enc_w must be a numpy.ndarray"),
        ("e_x-cols", {**a, "e_x": a["e_x"][:, :-1].copy()}, ValueError,
         "e_x must have shape (memory, n_inputs * enc) = (4, 9), got (4, 8)"),
        ("W_m-shape", {**a, "W_m": a["W_m"][:, :-1].copy()}, ValueError,
         "W_m must have shape (hidden, memory * order) = (16, 20), got (16, 19)"),
        ("A_bar-shape", {**a, "A_bar": np.zeros((5, 4), np.float32)}, ValueError, "A_bar must have shape"),
        ("B_bar-shape", {**a, "B_bar": np.zeros(4, np.float32)}, ValueError, "B_bar must have shape (order,) = (5,)"),
        ("float64", {**a, "W_h": a["W_h"].astype(np.float64)}, TypeError, "W_h must have dtype float32, got float64"),
        ("nan-weight", {**a, "b_o": np.full(4, np.nan, np.float32)}, ValueError, "b_o must be finite"),
        ("beta-shape", {**a, "beta_m": np.ones(19, np.float32)}, ValueError, "beta_m must be a scalar or have shape (20,)"),
        ("threshold-inf", {**a, "threshold_o": np.full(4, np.inf, np.float32)}, ValueError, "threshold_o must be finite"),
    ]


BAD_CONSTRUCTIONS = _bad_constructions()


@pytest.mark.parametrize(("case", "kwargs", "kind", "message"), BAD_CONSTRUCTIONS, ids=[c[0] for c in BAD_CONSTRUCTIONS])
def test_bad_construction_raises_clearly(case: str, kwargs: dict[str, Any], kind: type[Exception], message: str) -> None:
    for cls in KERNELS:
        with pytest.raises(kind) as info:
            cls(**kwargs)
        assert message in str(info.value), (cls, str(info.value))


@pytest.mark.parametrize(("case", "kwargs", "kind", "message"), BAD_CONSTRUCTIONS, ids=[c[0] for c in BAD_CONSTRUCTIONS])
def test_compiled_and_reference_refuse_alike(compiled: Any, case: str, kwargs: dict[str, Any], kind: type[Exception],
                                             message: str) -> None:
    errors = []
    for cls in (compiled.L2MUCell, L2MUCellRef):
        with pytest.raises(kind) as info:
            cls(**kwargs)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_weights_are_copied() -> None:
    arrays = {k: v.copy() for k, v in ARRAYS.items()}
    for v in arrays.values():
        v.flags.writeable = False  # read-only weights are fine
    cell = make(L2MUCell, arrays=arrays)
    reference = make(L2MUCell)
    mutable = {k: v.copy() for k, v in ARRAYS.items()}
    cell2 = make(L2MUCell, arrays=mutable)
    mutable["W_h"][...] = 0.0  # changing the caller's arrays afterwards does not reach the cell
    assert np.array_equal(cell.step(SMALL_X), reference.step(SMALL_X))
    assert np.array_equal(cell2.step(SMALL_X), make(L2MUCell).step(SMALL_X))


# --- model files -----------------------------------------------------------------------------------


def _config(**overrides: Any) -> dict[str, Any]:
    return {**SMALL, "memory_convention": "A", "beta": 0.9, "threshold": 1.0, **overrides}


def _write(tmp_path: Path, arrays: dict[str, Any] | None = None, kind: str = "l2mu", **meta: Any) -> Path:
    info = {"config": _config(), "reset": "subtract", "neuron": "leaky", **meta}
    return save(tmp_path / "model.json", kind, ARRAYS if arrays is None else arrays, info)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_load_l2mu_builds_the_cell(tmp_path: Path, convention: str) -> None:
    path = _write(tmp_path, config=_config(memory_convention=convention))
    cell = load_l2mu(path, n_streams=2)
    assert isinstance(cell, L2MUCell) and cell.n_streams == 2 and cell.memory_convention == convention
    direct = make(L2MUCell, convention, 2)
    assert np.array_equal(cell.step(SMALL_X), direct.step(SMALL_X))
    assert np.array_equal(load_l2mu(load(path)).step(SMALL_X), make(L2MUCell, convention).step(SMALL_X))


def _bad_files() -> list[tuple[str, Callable[[Path], Path], str]]:
    a = ARRAYS
    return [
        ("wrong-kind", lambda p: _write(p, kind="delta_gru"), "is a 'delta_gru' model, expected 'l2mu'"),
        ("missing-array", lambda p: _write(p, {k: v for k, v in a.items() if k != "e_m"}), "no array 'e_m'"),
        ("wrong-shape", lambda p: _write(p, {**a, "W_h": np.zeros((16, 15), np.float32)}),
         "array 'W_h' has shape (16, 15), expected (16, 16)"),
        ("wrong-beta-shape", lambda p: _write(p, {**a, "beta_x": np.ones(8, np.float32)}),
         "array 'beta_x' has shape (8,), expected (9)"),
        ("float64", lambda p: _write(p, {**a, "b_o": a["b_o"].astype(np.float64)}), "array 'b_o' is float64, expected float32"),
        ("unknown-array", lambda p: _write(p, {**a, "alpha_h": a["beta_h"]}), "unknown arrays alpha_h"),
        ("nan", lambda p: _write(p, {**a, "e_h": np.full((4, 16), np.nan, np.float32)}), "array 'e_h' contains NaN or inf"),
        ("config-size-mismatch", lambda p: _write(p, config=_config(hidden=17)),
         "array 'e_h' has shape (4, 16), expected (4, 17)"),
        ("no-config", lambda p: _write(p, config=None), "meta.config missing or not an object"),
        ("config-hidden", lambda p: _write(p, config=_config(hidden=0)), "meta.config.hidden must be an integer >= 1, got 0"),
        ("config-missing-key", lambda p: _write(p, config={k: v for k, v in _config().items() if k != "order"}),
         "meta.config.order must be an integer >= 1, got None"),
        ("config-theta", lambda p: _write(p, config=_config(theta="50")), "meta.config.theta must be a number > 0"),
        ("config-convention", lambda p: _write(p, config=_config(memory_convention="ATA")),
         'meta.config.memory_convention must be "A"'),
        ("reset-zero", lambda p: _write(p, reset="zero"), "meta.reset is 'zero'; the L2MU kernel runs 'subtract' only"),
        ("transposed-A", lambda p: _write(p, {**a, "A_bar": np.ascontiguousarray(a["A_bar"].T)}),
         "A_bar differs from the Legendre system of order 5, theta 20.0 by up to"),
        ("other-theta", lambda p: _write(p, config=_config(theta=25.0)), "differs from the Legendre system"),
    ]


BAD_FILES = _bad_files()


@pytest.mark.parametrize(("case", "write", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_model_files_raise_model_error(tmp_path: Path, case: str, write: Callable[[Path], Path], message: str) -> None:
    path = write(tmp_path)
    with pytest.raises(ModelError) as info:
        load_l2mu(path)
    assert message in str(info.value)
    if case == "transposed-A":
        assert "it is the transpose" in str(info.value)


def test_missing_model_file_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model"):
        load_l2mu(tmp_path / "nope.json")
