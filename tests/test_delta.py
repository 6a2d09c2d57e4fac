"""The delta-activation layers: DeltaDense, DeltaGRU, DeltaLSTM (spikeline.kernels.delta).

Behaviour tests run on whichever backend spikeline.kernels.delta selected: run the file once
normally (compiled) and once with SPIKELINE_NO_EXT=1 (numpy references). The compiled-vs-reference
tests import spikeline._ext.delta directly and run in both modes. The PyTorch parity tests need
torch (an optional extra): they skip with the reason on a developer's machine without it and fail
under SPIKELINE_REQUIRE_ALL=1 (CI), through conftest.need.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import need
from spikeline.kernels.delta import (
    BACKEND,
    DEFAULT_DENSE_ABOVE,
    DEFAULT_REFRESH_EVERY,
    DeltaDense,
    DeltaDenseRef,
    DeltaGRU,
    DeltaGRURef,
    DeltaLSTM,
    DeltaLSTMRef,
)
from spikeline.kernels.ref_delta import sigmoid_f32, tanh_f32

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
EPS32 = 2.0**-24  # unit roundoff of float32
REFS: dict[str, type[Any]] = {"DeltaDense": DeltaDenseRef, "DeltaGRU": DeltaGRURef, "DeltaLSTM": DeltaLSTMRef}
SELECTED: dict[str, type[Any]] = {"DeltaDense": DeltaDense, "DeltaGRU": DeltaGRU, "DeltaLSTM": DeltaLSTM}
GATES = {"DeltaGRU": 3, "DeltaLSTM": 4}


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


def _same(a: Any, b: Any) -> bool:
    """Bit-identical arrays (float32 compared as bit patterns: -0.0 != +0.0, NaN payloads count)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.float32:
        return bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))
    return bool(np.array_equal(a, b))


def _same_state(s1: dict[str, Any], s2: dict[str, Any]) -> bool:
    return list(s1) == list(s2) and all(_same(s1[k], s2[k]) for k in s1)


def _drift_bound(window: int, n_in: int) -> float:
    """Bound on |acc - (b + W x_hat)| in units of (|b| + sum |W x_hat|): 4 standard deviations of a
    random walk of window * n_in float32 roundings, each of at most half an ulp (<= eps |acc|, so a
    standard deviation <= eps |acc| / sqrt(3)), with |acc| <= |b| + sum |W x_hat|."""
    return 4.0 * math.sqrt(window * n_in / 3.0) * EPS32


def _scale(w: F32, b: F32, xhat: F32) -> npt.NDArray[np.float64]:
    """|b| + sum_i |W_ji xhat_i| per output: the size of the terms an accumulator sums."""
    return np.abs(xhat.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + np.abs(b.astype(np.float64))


def _dense_params(n_in: int, n_out: int, seed: int) -> tuple[F32, F32]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.25, 0.25, (n_out, n_in)).astype(np.float32),
            rng.uniform(-0.25, 0.25, n_out).astype(np.float32))


def _rnn_params(gates: int, n_in: int, hidden: int, seed: int) -> tuple[F32, F32, F32, F32]:
    """Weights as torch initialises them: U(-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    k = 1.0 / math.sqrt(hidden)
    shapes = ((gates * hidden, n_in), (gates * hidden, hidden), (gates * hidden,), (gates * hidden,))
    w_ih, w_hh, b_ih, b_hh = (rng.uniform(-k, k, s).astype(np.float32) for s in shapes)
    return w_ih, w_hh, b_ih, b_hh


def _make(name: str, cls: type[Any], n_in: int, n_out: int, seed: int, theta: float, theta_h: float = 0.0,
          **kw: Any) -> Any:
    """A layer of family `name` built with class `cls`: DeltaDense (n_in -> n_out) or a cell (hidden n_out)."""
    if name == "DeltaDense":
        w, b = _dense_params(n_in, n_out, seed)
        return cls(w, b, theta, **kw)
    return cls(n_in, n_out, *_rnn_params(GATES[name], n_in, n_out, seed), theta, theta_h, **kw)


def _sparse_signal(n: int, n_in: int, seed: int, p_change: float = 0.2, nonfinite: bool = False) -> F32:
    """Piecewise-constant steps plus small noise: some deltas exceed theta = 0.1, others do not."""
    rng = np.random.default_rng(seed)
    jumps = rng.standard_normal((n, n_in)) * (rng.random((n, n_in)) < p_change)
    x = np.cumsum(jumps, axis=0) + rng.uniform(-0.08, 0.08, (n, n_in))
    x = x.astype(np.float32)
    if nonfinite:
        x[n // 3, 0] = np.nan
        x[n // 2, n_in - 1] = np.inf
        x[n // 2 + 1, n_in - 1] = -np.inf
    return np.ascontiguousarray(x)


@pytest.fixture(scope="module")
def compiled() -> dict[str, type[Any]]:
    """The compiled classes themselves, whatever backend spikeline.kernels.delta selected."""
    try:
        from spikeline._ext import delta as ext
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.delta is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.delta failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return {"DeltaDense": ext.DeltaDense, "DeltaGRU": ext.DeltaGRU, "DeltaLSTM": ext.DeltaLSTM}


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        need(False, f"torch is needed for the PyTorch parity tests ({exc}): pip install torch")
    torch.set_num_threads(1)
    return torch


# --- backend selection -------------------------------------------------------------------------


def test_backend_follows_environment() -> None:
    if _no_ext_requested():
        assert BACKEND == "numpy"
        assert all(SELECTED[name] is REFS[name] for name in REFS)
    else:
        assert BACKEND == "ext"
        assert {cls.__module__ for cls in (DeltaDense, DeltaGRU, DeltaLSTM)} == {"spikeline._ext.delta"}


_IMPORT_WITHOUT_EXT = """
import json, sys, warnings
sys.modules["spikeline._ext.delta"] = None  # makes `import spikeline._ext.delta` fail
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import spikeline.kernels.delta as k
print(json.dumps({"backend": k.BACKEND,
                  "is_ref": [k.DeltaDense is k.DeltaDenseRef, k.DeltaGRU is k.DeltaGRURef, k.DeltaLSTM is k.DeltaLSTMRef],
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
"""


@pytest.mark.parametrize(("no_ext", "warns"), [(None, True), ("0", True), ("1", False)])
def test_missing_extension_falls_back(no_ext: str | None, warns: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPIKELINE_NO_EXT"}
    if no_ext is not None:
        env["SPIKELINE_NO_EXT"] = no_ext
    proc = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT_EXT], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    result = json.loads(proc.stdout)
    assert result["backend"] == "numpy" and result["is_ref"] == [True, True, True]
    ours = [w for w in result["warnings"] if "spikeline._ext.delta" in w]  # other kernels may warn too
    if warns:
        assert len(ours) == 1  # one warning for the module, not one per class
        assert "compiled kernels unavailable" in ours[0]
    else:
        assert result["warnings"] == []


# --- activations -------------------------------------------------------------------------------


def _float32_sweep(step: int = 4099) -> F32:
    """Every step-th float32 bit pattern (both signs, all exponents, subnormals, NaNs, infs), plus
    the neighbours of the clamp (7.90531) and tiny (4e-4) boundaries."""
    patterns = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    x = patterns.view(np.float32)
    edges = []
    for v in (7.90531110763549805, 0.0004, 0.0, 1.0):
        c = np.float32(v)
        for _ in range(3):
            edges += [c, -c]
            c = np.nextafter(c, np.float32(np.inf))
    extra = np.array([*edges, np.finfo(np.float32).max, np.finfo(np.float32).tiny, np.inf, -np.inf], np.float32)
    return np.concatenate([x, extra])


def test_activation_accuracy() -> None:
    """tanh and sigmoid are a rational approximation (basic operations only, so that C and numpy
    agree bit for bit). Against float64, over every finite float32 (an exhaustive run, too slow for
    the suite): max |tanh error| = 4.10e-7 at x = 5.827876, max |sigmoid error| = 2.27e-7 at
    x = 11.549100; the sweep here includes both points."""
    worst = np.array([5.827876091003418, -5.827876091003418, 11.549099922180176], np.float32)
    x = np.concatenate([_float32_sweep(), worst])
    finite = np.isfinite(x)
    t, s = tanh_f32(x), sigmoid_f32(x)
    assert t.dtype == np.float32 and s.dtype == np.float32
    x64 = x[finite].astype(np.float64)
    tanh_err = np.abs(t[finite] - np.tanh(x64))
    assert tanh_err.max() <= 4.11e-7 and tanh_err[-3:].max() > 4.1e-7  # the bound, and the worst case is hit
    with np.errstate(over="ignore"):
        sig64 = 1.0 / (1.0 + np.exp(-x64))
    sig_err = np.abs(s[finite] - sig64)
    assert sig_err.max() <= 2.28e-7 and sig_err[-1] > 2.27e-7
    assert np.abs(t[finite]).max() <= 1.0 and s[finite].min() >= 0.0 and s[finite].max() <= 1.0
    assert _same(tanh_f32(-x[finite]), -t[finite])  # exactly odd
    assert np.isnan(t[np.isnan(x)]).all() and np.isnan(s[np.isnan(x)]).all()
    inf = np.array([np.inf, -np.inf], np.float32)
    assert tanh_f32(inf).tolist() == [1.0, -1.0] and sigmoid_f32(inf).tolist() == [1.0, 0.0]
    tiny = np.array([1e-30, -3e-39, 3e-4], np.float32)
    assert _same(tanh_f32(tiny)[:2], tiny[:2])  # |x| < 4e-4: tanh(x) = x (the rational loses subnormals)


@pytest.mark.parametrize("activation", ["none", "relu", "tanh", "sigmoid"])
def test_compiled_activations_bit_identical(compiled: dict[str, type[Any]], activation: str) -> None:
    """The compiled activations (integer-mask clamp, see ext/delta.pyx) against the reference's plain
    float compares, on a sweep of finite float32 values: identity weights and a refresh every
    sample make acc = x exactly (x = -0.0 gives acc = +0.0)."""
    n = 256
    x = _float32_sweep(step=65537)
    x = x[np.abs(x) < 1e38]  # finite, and no difference of two of them overflows (it would be held)
    x = np.ascontiguousarray(np.resize(x, (-(-x.size // n), n)), dtype=np.float32)
    eye = np.eye(n, dtype=np.float32)
    yc = compiled["DeltaDense"](eye, None, 0.0, refresh_every=1, activation=activation).step(x)
    yr = DeltaDenseRef(eye, None, 0.0, refresh_every=1, activation=activation).step(x)
    assert _same(yc, yr)
    x0 = x + np.float32(0.0)  # what the accumulator holds: -0 -> +0
    expected = {"none": x0, "relu": np.where(x0 < 0, np.float32(0), x0), "tanh": tanh_f32(x0),
                "sigmoid": sigmoid_f32(x0)}[activation]
    assert _same(yr, expected)


# --- against PyTorch at theta = 0 ---------------------------------------------------------------

# DeltaGRU / DeltaLSTM at theta = 0 against torch.nn.GRUCell / LSTMCell (float32), 1000 steps of
# N(0, 1) input, torch's default initialisation, hidden 64. The equations are the same; the numbers
# differ by (1) the activations: |error| <= 4.1e-7 (tanh), 2.3e-7 (sigmoid); (2) float32
# summation order: torch's GEMM sums a whole row per step in its own blocked order (with FMA),
# ours is a persistent accumulator summed column by column over the whole stream, whose rounding
# errors grow like a random walk (about sqrt(t * (I + H)) roundings of ~3e-8 each). The cells are
# contractive, so h does not amplify them. Measured max |h - h_torch| after 1000 steps: 3.2e-6
# (GRU) and 3.4e-6 (LSTM) without refresh, 1.0e-6 and 0.8e-6 with a refresh every 64 samples
# (LSTM c: 4.6e-6 and 0.9e-6). Asserted: 2e-5 without refresh, 5e-6 with (about 5x the
# measurement; 4x that for c, which is not bounded by 1), while a wrong gate order or equation
# gives errors of order 0.1.
TORCH_ATOL = {0: 2e-5, 64: 5e-6}


@pytest.mark.parametrize("refresh_every", [0, 64], ids=["no-refresh", "refresh-64"])
@pytest.mark.parametrize("name", ["DeltaGRU", "DeltaLSTM"])
def test_matches_torch_cell_at_theta_zero(name: str, refresh_every: int) -> None:
    torch = _torch()
    n_in, hidden, n = 16, 64, 1000
    torch.manual_seed(0)
    cell = (torch.nn.GRUCell if name == "DeltaGRU" else torch.nn.LSTMCell)(n_in, hidden)
    params = [p.detach().numpy().copy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    layer = SELECTED[name](n_in, hidden, *params, 0.0, 0.0, refresh_every=refresh_every)
    x = np.random.default_rng(1).standard_normal((n, n_in)).astype(np.float32)
    y = np.concatenate([layer.step(c) for c in np.array_split(x, 10)])
    expected = np.empty((n, hidden), np.float32)
    with torch.no_grad():
        h = torch.zeros(1, hidden)
        c = torch.zeros(1, hidden)
        for t in range(n):
            xt = torch.from_numpy(x[t : t + 1])
            if name == "DeltaGRU":
                h = cell(xt, h)
            else:
                h, c = cell(xt, (h, c))
            expected[t] = h.numpy()[0]
    np.testing.assert_allclose(y, expected, rtol=0.0, atol=TORCH_ATOL[refresh_every])
    assert _same(layer.state["h"][0], y[-1])
    if name == "DeltaLSTM":
        np.testing.assert_allclose(layer.state["c"][0], c.numpy()[0], rtol=0.0, atol=4 * TORCH_ATOL[refresh_every])
    assert layer.counters["refreshes"] == (n // refresh_every if refresh_every else 0)


# --- DeltaDense against plain numpy ------------------------------------------------------------

# y = W x_hat + b is computed incrementally in float32 and compared with float64: the error is the
# accumulator's rounding drift, bounded by _drift_bound(samples since the last refresh, n_in) times
# |b| + sum |W x_hat| (4 standard deviations of the random walk of its roundings). Measured on the
# data below, in those units: 139 without refresh (3000 samples; bound 506), 85 with the default
# refresh (bound 296), 10.5 at theta = 0.1 with a refresh every 100 samples (bound 80); in absolute
# terms 9.4e-6, 5.6e-6 and 1.1e-5 (the last signal is larger).


@pytest.mark.parametrize("refresh_every", [0, DEFAULT_REFRESH_EVERY], ids=["no-refresh", "default-refresh"])
def test_dense_matches_matmul_at_theta_zero(refresh_every: int) -> None:
    w, b = _dense_params(16, 8, seed=2)
    x = np.random.default_rng(3).standard_normal((3000, 16)).astype(np.float32)
    y = DeltaDense(w, b, 0.0, refresh_every=refresh_every).step(x)
    exact = x.astype(np.float64) @ w.astype(np.float64).T + b.astype(np.float64)
    bound = _drift_bound(refresh_every or len(x), 16) * _scale(w, b, x)
    assert (np.abs(y - exact) <= bound).all()


def _plain_delta_dense(w: F32, b: F32, theta: float, x: F32) -> tuple[F32, npt.NDArray[np.float64]]:
    """The definition, written plainly: x_hat follows the threshold rule, y = W x_hat + b (float64).

    Returns the x_hat sequence (n, n_in) and y (n, n_out)."""
    th = np.float32(theta)
    xhat = np.zeros(x.shape[1], np.float32)
    xhats = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        for t, row in enumerate(x):
            d = np.abs(row - xhat)
            send = (d > th) & np.isfinite(d)
            xhat[send] = row[send]
            xhats[t] = xhat
    return xhats, xhats.astype(np.float64) @ w.astype(np.float64).T + b


@pytest.mark.parametrize("activation", ["none", "tanh"])
def test_dense_matches_plain_numpy_above_theta_zero(activation: str) -> None:
    w, b = _dense_params(12, 5, seed=4)
    x = _sparse_signal(2000, 12, seed=5, nonfinite=True)
    layer = DeltaDense(w, b, 0.1, refresh_every=100, activation=activation)
    y = np.concatenate([layer.step(c) for c in np.array_split(x, 7)])
    xhats, pre = _plain_delta_dense(w, b, 0.1, x)
    assert _same(layer.state["x_hat"][0], xhats[-1])  # the held values are exact, not approximate
    bound = _drift_bound(100, 12) * _scale(w, b, xhats)
    if activation == "tanh":  # tanh is 1-Lipschitz, plus its own approximation error
        assert (np.abs(y - np.tanh(pre)) <= bound + 4.1e-7).all()
    else:
        assert (np.abs(y - pre) <= bound).all()


# --- exact sparsity counters -------------------------------------------------------------------


def _piecewise_with_known_changes(n: int, n_in: int, theta: float, seed: int) -> tuple[F32, npt.NDArray[np.bool_]]:
    """x (n, n_in) and sent (n, n_in): the deltas a correct layer must send, known by construction.

    Each component holds a level (|level| >= 3 theta at t = 0, so the first sample is sent) plus
    noise in [-theta/4, theta/4] (never sent: |x - x_hat| <= theta/2); at random times the level
    jumps by 2 theta .. 1 (always sent: |x - x_hat| >= 1.5 theta). Changes arrive in bursts of
    varying size, so that both paths are exercised at every dense_above.
    """
    rng = np.random.default_rng(seed)
    rate = rng.choice([0.0, 0.05, 0.3, 0.9, 1.0], size=n)[:, np.newaxis]
    change = rng.random((n, n_in)) < rate
    change[0] = True
    start = rng.uniform(3 * theta, 2.0, n_in) * rng.choice([-1.0, 1.0], n_in)
    jumps = rng.uniform(2 * theta, 1.0, (n, n_in)) * rng.choice([-1.0, 1.0], (n, n_in))
    levels = np.cumsum(np.where(change, jumps, 0.0), axis=0) - jumps[0] + start
    noise = rng.uniform(-theta / 4, theta / 4, (n, n_in))
    return np.ascontiguousarray(levels + noise, dtype=np.float32), change


def _expected_counts(sent: npt.NDArray[np.bool_], n_out: int, dense_above: float, refresh_every: int) -> dict[str, int]:
    n, n_in = sent.shape
    nnz = sent.sum(axis=1)
    dense_min = math.floor(dense_above * n_in)
    refresh = np.zeros(n, bool)
    if refresh_every:
        refresh[refresh_every - 1 :: refresh_every] = True
    dense = ~refresh & (nnz > dense_min)
    sparse = ~refresh & (nnz > 0) & (nnz <= dense_min)
    macs = n_in * n_out * int(refresh.sum() + dense.sum()) + n_out * int(nnz[sparse].sum())
    return {"steps": n, "x_sent": int(nnz.sum()), "x_possible": n * n_in, "held_nonfinite": 0, "macs": macs,
            "macs_dense": n * n_in * n_out, "refreshes": int(refresh.sum()), "dense_passes": int(dense.sum())}


@pytest.mark.parametrize("refresh_every", [0, 25])
@pytest.mark.parametrize("dense_above", [0.0, 0.5, DEFAULT_DENSE_ABOVE, 1.0])
def test_dense_counters_are_exact(dense_above: float, refresh_every: int) -> None:
    theta, n_in, n_out = 0.1, 10, 7
    x, sent = _piecewise_with_known_changes(300, n_in, theta, seed=6)
    w, b = _dense_params(n_in, n_out, seed=7)
    layer = DeltaDense(w, b, theta, refresh_every=refresh_every, dense_above=dense_above)
    for chunk in np.array_split(x, 9):
        layer.step(chunk)
    assert layer.counters == _expected_counts(sent, n_out, dense_above, refresh_every)
    last_sent = np.where(sent, np.arange(len(x))[:, np.newaxis], -1).max(axis=0)
    assert _same(layer.state["x_hat"][0], x[last_sent, np.arange(n_in)])


def _hidden_sends(h: F32, theta: float) -> int:
    """Hidden deltas sent, recounted from the outputs: step t delta-codes h_{t-1} against h_hat."""
    hhat = np.zeros(h.shape[1], np.float32)
    count = 0
    for prev in np.vstack([np.zeros((1, h.shape[1]), np.float32), h[:-1]]):
        send = np.abs(prev - hhat) > np.float32(theta)
        hhat[send] = prev[send]
        count += int(send.sum())
    return count


@pytest.mark.parametrize("name", ["DeltaGRU", "DeltaLSTM"])
@pytest.mark.parametrize("dense_above", [0.0, DEFAULT_DENSE_ABOVE, 1.0])
def test_cell_counters_are_exact(name: str, dense_above: float) -> None:
    theta, n_in, hidden = 0.1, 8, 12
    x, sent = _piecewise_with_known_changes(300, n_in, theta, seed=8)
    g = GATES[name]
    # theta_h = 3 > max |h_t - h_hat| (h is in (-1, 1)): no hidden delta is ever sent, so the MACs
    # are exactly those of the input side.
    mute = _make(name, SELECTED[name], n_in, hidden, 9, theta, 3.0, refresh_every=0, dense_above=dense_above)
    mute.step(x)
    expected = _expected_counts(sent, g * hidden, dense_above, 0)
    expected["macs_dense"] = 300 * (n_in + hidden) * g * hidden
    assert mute.counters == {**expected, "h_sent": 0, "h_possible": 300 * hidden}
    # theta_h = 0.05: the hidden sends recounted independently from the output sequence.
    layer = _make(name, SELECTED[name], n_in, hidden, 9, theta, 0.05, refresh_every=0, dense_above=dense_above)
    h = np.concatenate([layer.step(c) for c in np.array_split(x, 4)])
    counts = layer.counters
    assert counts["x_sent"] == int(sent.sum())
    assert counts["h_sent"] == _hidden_sends(h, 0.05)
    assert 0 < counts["h_sent"] < counts["h_possible"]


# --- the sparse and the dense path give the same bits -------------------------------------------


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_sparse_and_dense_paths_bit_identical(name: str) -> None:
    x = _sparse_signal(600, 16, seed=10, nonfinite=True)
    runs = {}
    for dense_above in (0.0, 1.0):  # 0: dense pass whenever a delta is sent; 1: always the gather
        layer = _make(name, SELECTED[name], 16, 24, 11, 0.1, 0.02, refresh_every=50, dense_above=dense_above)
        runs[dense_above] = (layer.step(x), layer.state, layer.counters)
    (y_dense, s_dense, c_dense), (y_sparse, s_sparse, c_sparse) = runs[0.0], runs[1.0]
    assert _same(y_dense, y_sparse)
    assert _same_state(s_dense, s_sparse)
    assert c_sparse["dense_passes"] == 0 and c_dense["dense_passes"] > 0
    assert c_dense["macs"] > c_sparse["macs"]
    same_keys = [k for k in c_dense if k not in ("macs", "dense_passes")]
    assert {k: c_dense[k] for k in same_keys} == {k: c_sparse[k] for k in same_keys}


# --- float32 drift of the persistent accumulator -------------------------------------------------


def _ar1_walk(n: int, n_in: int, seed: int) -> F32:
    """A mean-reverting random walk (AR(1), coefficient 0.999, stationary std 1)."""
    rng = np.random.default_rng(seed)
    a = 0.999
    x = np.empty((n, n_in))
    cur = rng.standard_normal(n_in)
    steps = math.sqrt(1 - a * a) * rng.standard_normal((n, n_in))
    for t in range(n):
        cur = a * cur + steps[t]
        x[t] = cur
    return np.ascontiguousarray(x, dtype=np.float32)


def test_drift_is_bounded_by_the_refresh(record_property: Callable[[str, object], None]) -> None:
    """100 000 samples of a random walk at theta = 0 (every delta sent), 16 inputs, 64 outputs.

    Measured max |acc - (b + W x)| (float64 reference; |b| + sum |W x| <= 3.9): 4.9e-5 without
    refresh (rms 1.2e-5, growing like sqrt(t)); 2.1e-5 with the default refresh every 1024 samples
    (rms 1.3e-6). Asserted with the refresh: _drift_bound(1024, 16) * (|b| + sum |W x|), at most
    7e-5 here. Right after a refresh the error obeys the rigorous bound of recursive summation,
    gamma_(n_in + 1) * (|b| + sum |W x|), gamma_n = n u / (1 - n u): measured 0.18 of it.
    """
    n, n_in, n_out = 100_000, 16, 64
    w, b = _dense_params(n_in, n_out, seed=12)
    x = _ar1_walk(n, n_in, seed=13)
    exact = x.astype(np.float64) @ w.astype(np.float64).T + b.astype(np.float64)
    scale = _scale(w, b, x)
    err = {}
    for refresh_every in (0, DEFAULT_REFRESH_EVERY):
        y = DeltaDense(w, b, 0.0, refresh_every=refresh_every).step(x)
        err[refresh_every] = np.abs(y - exact)
    with_refresh, without = err[DEFAULT_REFRESH_EVERY], err[0]
    record_property("drift_max_no_refresh", float(without.max()))
    record_property("drift_max_refresh", float(with_refresh.max()))
    assert (with_refresh <= _drift_bound(DEFAULT_REFRESH_EVERY, n_in) * scale).all()
    gamma = (n_in + 1) * EPS32 / (1 - (n_in + 1) * EPS32)
    rows = np.arange(DEFAULT_REFRESH_EVERY - 1, n, DEFAULT_REFRESH_EVERY)
    assert (with_refresh[rows] <= gamma * scale[rows]).all()
    rms = {k: float(np.sqrt((v**2).mean())) for k, v in err.items()}
    assert rms[0] > 4 * rms[DEFAULT_REFRESH_EVERY]  # the refresh is what keeps it small
    assert without.max() < 1e-3  # and without it the drift is still a random walk, not a blow-up


# --- compiled == reference, bit for bit --------------------------------------------------------


@pytest.mark.parametrize("dense_above", [0.0, DEFAULT_DENSE_ABOVE, 1.0])
@pytest.mark.parametrize("activation", ["none", "relu", "tanh", "sigmoid"])
def test_compiled_dense_bit_identical_to_reference(compiled: dict[str, type[Any]], activation: str,
                                                   dense_above: float) -> None:
    x = _sparse_signal(800, 12, seed=14, nonfinite=True)
    w, b = _dense_params(12, 9, seed=15)
    kw: dict[str, Any] = {"n_streams": 3, "refresh_every": 37, "dense_above": dense_above, "activation": activation}
    fc, fr = compiled["DeltaDense"](w, b, 0.1, **kw), DeltaDenseRef(w, b, 0.1, **kw)
    for chunk in np.array_split(x, 7):
        assert _same(fc.step(chunk, stream=2), fr.step(chunk, stream=2))
    for sample in x[:30].reshape(10, 3, 12):
        assert _same(fc.step_streams(sample), fr.step_streams(sample))
    assert _same_state(fc.state, fr.state)
    assert fc.counters == fr.counters
    assert all(fc.stream_counters(k) == fr.stream_counters(k) for k in range(3))


@pytest.mark.parametrize("dense_above", [0.0, DEFAULT_DENSE_ABOVE, 1.0])
@pytest.mark.parametrize("name", ["DeltaGRU", "DeltaLSTM"])
def test_compiled_cell_bit_identical_to_reference(compiled: dict[str, type[Any]], name: str,
                                                  dense_above: float) -> None:
    x = _sparse_signal(500, 10, seed=16, nonfinite=True)
    kw: dict[str, Any] = {"n_streams": 3, "refresh_every": 29, "dense_above": dense_above}
    fc = _make(name, compiled[name], 10, 20, 17, 0.1, 0.03, **kw)
    fr = _make(name, REFS[name], 10, 20, 17, 0.1, 0.03, **kw)
    for chunk in np.array_split(x, 6):
        assert _same(fc.step(chunk, stream=1), fr.step(chunk, stream=1))
    for sample in x[:60].reshape(20, 3, 10):
        assert _same(fc.step_streams(sample), fr.step_streams(sample))
    assert _same_state(fc.state, fr.state)
    assert fc.counters == fr.counters


@pytest.mark.parametrize("activation", ["none", "relu", "tanh", "sigmoid"])
def test_compiled_nonfinite_accumulators_bit_identical(compiled: dict[str, type[Any]], activation: str) -> None:
    """Overflowed accumulators (+-inf, then inf - inf = NaN) are the only way non-finite values reach
    the activations; the compiled bit-pattern clamp and the reference's compares must agree there too."""
    w = np.array([[1e20, 1e20, 1e20], [-1e20, 1e20, 0.5]], np.float32)
    x = np.ones((40, 3), np.float32)
    x[5:8] = 1e20
    x[20:22, 1] = -1e20
    kw: dict[str, Any] = {"refresh_every": 16, "activation": activation}
    yc = compiled["DeltaDense"](w, None, 0.0, **kw).step(x)
    yr = DeltaDenseRef(w, None, 0.0, **kw).step(x)
    assert not np.isfinite(yr).all() if activation in ("none", "relu") else np.isnan(yr).any()
    assert _same(yc, yr)


def test_internal_base_class_cannot_be_built(compiled: dict[str, type[Any]]) -> None:
    base = compiled["DeltaGRU"].__mro__[1]
    assert base.__name__ == "_DeltaRNN"
    with pytest.raises(TypeError, match="internal base class"):
        base()


def test_negative_zero_threshold_is_zero() -> None:
    w, b = _dense_params(6, 4, seed=41)
    x = _sparse_signal(200, 6, seed=42, nonfinite=True)
    neg, pos = DeltaDense(w, b, -0.0), DeltaDense(w, b, 0.0)
    assert math.copysign(1.0, neg.theta) == 1.0
    assert _same(neg.step(x), pos.step(x)) and neg.counters == pos.counters


def test_distinct_streams_can_run_concurrently() -> None:
    """The GIL is released once per call: distinct streams stepped from threads at the same time
    give exactly what stepping them one after the other gives."""
    import threading

    n_streams = 4
    xs = [_sparse_signal(400, 8, seed=43 + k, nonfinite=True) for k in range(n_streams)]
    shared = _make("DeltaGRU", DeltaGRU, 8, 32, 47, 0.1, 0.02, n_streams=n_streams, refresh_every=50)
    alone = _make("DeltaGRU", DeltaGRU, 8, 32, 47, 0.1, 0.02, n_streams=n_streams, refresh_every=50)
    results: dict[int, F32] = {}
    start = threading.Barrier(n_streams)

    def work(k: int) -> None:
        start.wait()
        results[k] = np.concatenate([shared.step(c, stream=k) for c in np.array_split(xs[k], 40)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(n_streams):
        assert _same(results[k], alone.step(xs[k], stream=k))
    assert _same_state(shared.state, alone.state) and shared.counters == alone.counters


def _bad_calls(name: str) -> list[tuple[str, Callable[[Any], object]]]:
    """(id, call) pairs that must raise, on a layer built by _small(name, cls) (4 in, 3 out, 2 streams)."""
    ok = np.zeros((10, 4), np.float32)
    state_keys = list(_small(name, REFS[name]).state)
    good_state = _small(name, REFS[name]).state

    def with_state(**changes: Any) -> dict[str, Any]:
        return {**good_state, **changes}

    return [
        ("list", lambda f: f.step([[0.0] * 4])),
        ("float64", lambda f: f.step(ok.astype(np.float64))),
        ("int16", lambda f: f.step(ok.astype(np.int16))),
        ("byteswapped", lambda f: f.step(ok.astype(ok.dtype.newbyteorder()))),
        ("1-D", lambda f: f.step(ok[0])),
        ("3-D", lambda f: f.step(ok[np.newaxis])),
        ("features", lambda f: f.step(np.zeros((10, 5), np.float32))),
        ("fortran", lambda f: f.step(np.asfortranarray(np.zeros((10, 4), np.float32)))),
        ("strided", lambda f: f.step(np.zeros((10, 8), np.float32)[:, ::2])),
        ("unaligned", lambda f: f.step(np.frombuffer(bytes(161), np.float32, count=40, offset=1).reshape(10, 4))),
        ("out-list", lambda f: f.step(ok, out=[0.0])),
        ("out-dtype", lambda f: f.step(ok, out=np.zeros((10, 3), np.float64))),
        ("out-shape", lambda f: f.step(ok, out=np.zeros((10, 4), np.float32))),
        ("out-readonly", lambda f: f.step(ok, out=np.frombuffer(bytes(120), np.float32).reshape(10, 3))),
        ("out-overlap", lambda f: (lambda buf: f.step(buf[2:42].reshape(10, 4), out=buf[:30].reshape(10, 3)))(
            np.zeros(42, np.float32))),
        ("stream-negative", lambda f: f.step(ok, stream=-1)),
        ("stream-high", lambda f: f.step(ok, stream=2)),
        ("stream-float", lambda f: f.step(ok, stream=1.0)),
        ("streams-rows", lambda f: f.step_streams(np.zeros((3, 4), np.float32))),
        ("streams-out", lambda f: f.step_streams(np.zeros((2, 4), np.float32), out=np.zeros((2, 4), np.float32))),
        ("counters-stream", lambda f: f.stream_counters(2)),
        ("state-list", lambda f: setattr(f, "state", [1.0])),
        ("state-keys", lambda f: setattr(f, "state", {"x_hat": good_state["x_hat"]})),
        ("state-extra", lambda f: setattr(f, "state", with_state(extra=np.zeros(1)))),
        ("state-shape", lambda f: setattr(f, "state", with_state(x_hat=np.zeros((1, 4))))),
        ("state-nan", lambda f: setattr(f, "state", with_state(**{state_keys[1]: np.full((2, 3), np.nan)}))),
        ("state-complex", lambda f: setattr(f, "state", with_state(x_hat=np.zeros((2, 4), complex)))),
        ("state-t-float", lambda f: setattr(f, "state", with_state(t=np.zeros(2)))),
        ("state-t-negative", lambda f: setattr(f, "state", with_state(t=np.array([0, -1])))),
    ]


def _small(name: str, cls: type[Any], **kw: Any) -> Any:
    return _make(name, cls, 4, 3, 18, 0.1, 0.1, n_streams=2, **kw)


EXPECTED_ERRORS = {
    "list": (TypeError, "x must be a numpy.ndarray"), "float64": (TypeError, "x must have dtype float32"),
    "int16": (TypeError, "float32"), "byteswapped": (TypeError, "native byte order"),
    "1-D": (ValueError, "2-D"), "3-D": (ValueError, "2-D"), "features": (ValueError, "=4)"),
    "fortran": (ValueError, "C-contiguous"), "strided": (ValueError, "C-contiguous"),
    "unaligned": (ValueError, "aligned"), "out-list": (TypeError, "out must be a numpy.ndarray"),
    "out-dtype": (TypeError, "out must have dtype float32"), "out-shape": (ValueError, "= (10, 3), got (10, 4)"),
    "out-readonly": (ValueError, "writeable"), "out-overlap": (ValueError, "overlap"),
    "stream-negative": (ValueError, "stream must be in [0, 2)"), "stream-high": (ValueError, "stream must be in [0, 2)"),
    "stream-float": (TypeError, "integer"), "streams-rows": (ValueError, "(n_streams=2, "),
    "streams-out": (ValueError, "(n_streams=2, "), "counters-stream": (ValueError, "stream must be in [0, 2)"),
    "state-list": (TypeError, "state must be a dict"), "state-keys": (ValueError, "exactly the keys"),
    "state-extra": (ValueError, "exactly the keys"), "state-shape": (ValueError, "state['x_hat'] must have shape (2, 4)"),
    "state-nan": (ValueError, "finite"), "state-complex": (TypeError, "real numeric"),
    "state-t-float": (TypeError, "state['t'] must be an integer array"), "state-t-negative": (ValueError, ">= 0"),
}


def _bad_constructions(name: str) -> list[tuple[str, Callable[[type[Any]], object]]]:
    if name == "DeltaDense":
        w, b = _dense_params(4, 3, seed=19)
        big = w.astype(np.float64)
        big[0, 0] = 1e39
        return [
            ("weight-1d", lambda cls: cls(w[0])), ("weight-empty", lambda cls: cls(np.zeros((0, 4)))),
            ("weight-nan", lambda cls: cls(np.full((3, 4), np.nan))), ("weight-complex", lambda cls: cls(w.astype(complex))),
            ("weight-overflow", lambda cls: cls(big)), ("bias-shape", lambda cls: cls(w, np.zeros(4))),
            ("theta-negative", lambda cls: cls(w, b, -0.1)), ("theta-nan", lambda cls: cls(w, b, float("nan"))),
            ("theta-inf", lambda cls: cls(w, b, float("inf"))), ("streams", lambda cls: cls(w, b, 0.0, 0)),
            ("streams-float", lambda cls: cls(w, b, 0.0, 1.5)), ("refresh", lambda cls: cls(w, b, 0.0, 1, -1)),
            ("dense-above", lambda cls: cls(w, b, 0.0, 1, 0, 1.5)),
            ("activation", lambda cls: cls(w, b, 0.0, activation="gelu")),
        ]
    g = GATES[name]
    wi, wh, bi, bh = _rnn_params(g, 4, 3, seed=20)
    return [
        ("input-size", lambda cls: cls(0, 3, wi, wh, bi, bh)), ("hidden-size", lambda cls: cls(4, 0, wi, wh, bi, bh)),
        ("weight-ih-shape", lambda cls: cls(4, 3, wi.T, wh, bi, bh)), ("weight-hh-shape", lambda cls: cls(4, 3, wi, wi, bi, bh)),
        ("weight-hh-inf", lambda cls: cls(4, 3, wi, np.full_like(wh, np.inf), bi, bh)),
        ("bias-ih-shape", lambda cls: cls(4, 3, wi, wh, bi[:3], bh)), ("bias-hh-complex", lambda cls: cls(4, 3, wi, wh, bi, bh * 1j)),
        ("theta-x", lambda cls: cls(4, 3, wi, wh, bi, bh, -1.0)), ("theta-h", lambda cls: cls(4, 3, wi, wh, bi, bh, 0.0, float("nan"))),
        ("streams", lambda cls: cls(4, 3, wi, wh, bi, bh, n_streams=0)),
        ("refresh", lambda cls: cls(4, 3, wi, wh, bi, bh, refresh_every=-5)),
        ("dense-above", lambda cls: cls(4, 3, wi, wh, bi, bh, dense_above=-0.5)),
    ]


EXPECTED_REFUSALS = {
    "weight-1d": (ValueError, "(out_features, in_features)"), "weight-empty": (ValueError, "both >= 1"),
    "weight-nan": (ValueError, "finite"), "weight-complex": (TypeError, "real numeric"),
    "weight-overflow": (ValueError, "beyond float32 range"), "bias-shape": (ValueError, "bias must have shape (3,)"),
    "theta-negative": (ValueError, "theta must be a finite number >= 0"), "theta-nan": (ValueError, "theta must be"),
    "theta-inf": (ValueError, "theta must be"), "streams": (ValueError, "n_streams must be >= 1"),
    "streams-float": (TypeError, "integer"), "refresh": (ValueError, "refresh_every must be >= 0"),
    "dense-above": (ValueError, "dense_above must be in [0, 1]"), "activation": (ValueError, "activation must be one of"),
    "input-size": (ValueError, "input_size must be >= 1"), "hidden-size": (ValueError, "hidden_size must be >= 1"),
    "weight-ih-shape": (ValueError, "weight_ih must have shape"), "weight-hh-shape": (ValueError, "weight_hh must have shape"),
    "weight-hh-inf": (ValueError, "weight_hh must be finite"), "bias-ih-shape": (ValueError, "bias_ih must have shape"),
    "bias-hh-complex": (TypeError, "bias_hh must be a real numeric array"),
    "theta-x": (ValueError, "theta_x must be"), "theta-h": (ValueError, "theta_h must be"),
}

CALL_CASES = [(name, case, call) for name in REFS for case, call in _bad_calls(name)]
CONSTRUCTION_CASES = [(name, case, make) for name in REFS for case, make in _bad_constructions(name)]


def _raised(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize(("name", "case", "call"), CALL_CASES, ids=[f"{n}-{c}" for n, c, _ in CALL_CASES])
def test_compiled_and_reference_raise_alike(compiled: dict[str, type[Any]], name: str, case: str,
                                            call: Callable[[Any], object]) -> None:
    assert _raised(lambda: call(_small(name, compiled[name]))) == _raised(lambda: call(_small(name, REFS[name])))


@pytest.mark.parametrize(("name", "case", "make"), CONSTRUCTION_CASES, ids=[f"{n}-{c}" for n, c, _ in CONSTRUCTION_CASES])
def test_compiled_and_reference_refuse_alike(compiled: dict[str, type[Any]], name: str, case: str,
                                             make: Callable[[type[Any]], object]) -> None:
    assert _raised(lambda: make(compiled[name])) == _raised(lambda: make(REFS[name]))


@pytest.mark.parametrize(("name", "case", "call"), CALL_CASES, ids=[f"{n}-{c}" for n, c, _ in CALL_CASES])
def test_bad_calls_raise_clearly(name: str, case: str, call: Callable[[Any], object]) -> None:
    layer = _small(name, SELECTED[name])
    layer.step(np.ones((3, 4), np.float32))
    before, counters = layer.state, layer.counters
    kind, message = _raised(lambda: call(layer))
    assert (kind, EXPECTED_ERRORS[case][1] in message) == (EXPECTED_ERRORS[case][0], True), message
    assert _same_state(layer.state, before) and layer.counters == counters  # a refused call changes nothing


@pytest.mark.parametrize(("name", "case", "make"), CONSTRUCTION_CASES, ids=[f"{n}-{c}" for n, c, _ in CONSTRUCTION_CASES])
def test_bad_construction_raises_clearly(name: str, case: str, make: Callable[[type[Any]], object]) -> None:
    kind, message = _raised(lambda: make(SELECTED[name]))
    assert (kind, EXPECTED_REFUSALS[case][1] in message) == (EXPECTED_REFUSALS[case][0], True), message


# --- chunking never changes the result ---------------------------------------------------------

CHUNK_N = 120
CHUNK_X = _sparse_signal(CHUNK_N, 6, seed=21, nonfinite=True)
KERNELS = [(name, cls) for name, cls in SELECTED.items()]
KERNELS += [(name, REFS[name]) for name, cls in SELECTED.items() if cls is not REFS[name]]


@pytest.mark.parametrize(("name", "kernel"), KERNELS, ids=[f"{n}-{k.__module__.rsplit('.', 1)[-1]}" for n, k in KERNELS])
@settings(deadline=None, max_examples=30)
@given(cuts=st.sets(st.integers(1, CHUNK_N - 1), max_size=40), refresh_every=st.sampled_from([0, 1, 7, 50]),
       dense_above=st.sampled_from([0.0, 0.5, 1.0]))
def test_chunk_invariance(name: str, kernel: type[Any], cuts: set[int], refresh_every: int, dense_above: float) -> None:
    kw: dict[str, Any] = {"n_streams": 2, "refresh_every": refresh_every, "dense_above": dense_above}
    whole = _make(name, kernel, 6, 5, 22, 0.1, 0.02, **kw)
    chunked = _make(name, kernel, 6, 5, 22, 0.1, 0.02, **kw)
    y_whole = whole.step(CHUNK_X, stream=1)
    y_chunked = np.concatenate([chunked.step(c, stream=1) for c in np.split(CHUNK_X, sorted(cuts))])
    assert _same(y_chunked, y_whole)
    assert _same_state(chunked.state, whole.state)
    assert chunked.counters == whole.counters


# --- streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_streams_are_independent(name: str) -> None:
    x = _sparse_signal(200, 6, seed=23)
    layer = _make(name, SELECTED[name], 6, 5, 24, 0.1, 0.02, n_streams=3, refresh_every=16)
    fresh = _make(name, SELECTED[name], 6, 5, 24, 0.1, 0.02, refresh_every=16)
    initial = layer.state
    layer.step(x[:100], stream=0)
    after = layer.state
    for key in after:  # stepping stream 0 leaves streams 1 and 2 alone
        assert _same(after[key][1:], initial[key][1:])
    assert layer.stream_counters(1)["steps"] == 0 and layer.stream_counters(0)["steps"] == 100
    assert _same(layer.step(x[100:], stream=1), fresh.step(x[100:]))
    assert sum(layer.stream_counters(k)["x_sent"] for k in range(3)) == layer.counters["x_sent"]


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_step_streams_equals_stepping_each_stream(name: str) -> None:
    n_streams = 4
    x = _sparse_signal(90, 6 * n_streams, seed=25, nonfinite=True).reshape(90, n_streams, 6)
    together = _make(name, SELECTED[name], 6, 5, 26, 0.1, 0.02, n_streams=n_streams, refresh_every=8)
    apart = _make(name, SELECTED[name], 6, 5, 26, 0.1, 0.02, n_streams=n_streams, refresh_every=8)
    out = np.empty((n_streams, 5), np.float32)
    for sample in x:
        sample = np.ascontiguousarray(sample)
        assert together.step_streams(sample, out=out) is out
        one_by_one = [apart.step(sample[k : k + 1], stream=k)[0] for k in range(n_streams)]
        assert _same(out, np.array(one_by_one))
    assert _same_state(together.state, apart.state)
    assert together.counters == apart.counters


# --- input handling ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU"])
def test_read_only_input(name: str) -> None:
    x = _sparse_signal(100, 6, seed=27)
    ro = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not ro.flags.writeable
    a, b = (_make(name, SELECTED[name], 6, 5, 28, 0.1, 0.02) for _ in range(2))
    assert _same(a.step(ro), b.step(x))
    ro_rows = np.frombuffer(x[:1].tobytes(), dtype=np.float32).reshape(1, 6)
    assert _same(a.step_streams(ro_rows), b.step_streams(x[:1].copy()))


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU"])
def test_preallocated_and_in_place_out(name: str) -> None:
    x = _sparse_signal(50, 5, seed=29)
    expected = _make(name, SELECTED[name], 5, 5, 30, 0.1, 0.02).step(x)
    out = np.empty_like(x)
    assert _make(name, SELECTED[name], 5, 5, 30, 0.1, 0.02).step(x, out=out) is out
    assert _same(out, expected)
    assert _make(name, SELECTED[name], 5, 5, 30, 0.1, 0.02).step(x, out=x) is x  # same shape: in place is safe
    assert _same(x, expected)


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU"])
def test_zero_length_chunk(name: str) -> None:
    layer = _make(name, SELECTED[name], 4, 3, 31, 0.1, 0.02)
    layer.step(np.ones((5, 4), np.float32))
    before, counters = layer.state, layer.counters
    empty = np.empty((0, 4), np.float32)
    y = layer.step(empty)
    assert y.shape == (0, 3) and y.dtype == np.float32
    assert _same_state(layer.state, before) and layer.counters == counters


def _forward_fill(x: F32) -> F32:
    """Non-finite entries replaced by the last finite value of their column (0 before any)."""
    filled = x.copy()
    last = np.zeros(x.shape[1], np.float32)
    for row in filled:
        bad = ~np.isfinite(row)
        row[bad] = last[bad]
        last = row.copy()
    return filled


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_nonfinite_input_is_held(name: str) -> None:
    """A NaN or +-inf input component is never sent: the layer acts as if that component had not
    changed (it holds its last sent value) and counts it in held_nonfinite. At theta = 0 the last
    sent value is the last finite input, so the output equals that of the forward-filled input,
    bit for bit, and stays finite."""
    rng = np.random.default_rng(32)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    bad = rng.random(x.shape) < 0.05
    bad[0, 0] = bad[1, 0] = bad[2, 0] = True  # a run of NaN at the very start: held at 0
    x[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(bad.sum()))
    a = _make(name, SELECTED[name], 6, 5, 33, 0.0, 0.0, refresh_every=32)
    b = _make(name, SELECTED[name], 6, 5, 33, 0.0, 0.0, refresh_every=32)
    y = a.step(x)
    assert np.isfinite(y).all()
    assert _same(y, b.step(_forward_fill(x)))
    assert _same_state(a.state, b.state)
    assert a.counters["held_nonfinite"] == int(bad.sum()) and b.counters["held_nonfinite"] == 0
    assert a.counters["x_sent"] == b.counters["x_sent"]


def test_overflowing_delta_is_held() -> None:
    """A difference of two finite inputs that overflows float32 counts as non-finite and is held."""
    big = np.finfo(np.float32).max
    layer = DeltaDense(np.ones((1, 1), np.float32), None, 0.0)
    y = layer.step(np.array([[big], [-big], [1.0]], np.float32))
    # -big - big = -inf: held. 1 - big rounds to -big (finite): sent, and acc = big + (-big) = 0,
    # float32 absorption that the refresh (acc = 1 * x_hat = 1) would correct.
    assert y[:, 0].tolist() == [big, big, 0.0]
    assert layer.counters["held_nonfinite"] == 1 and layer.counters["x_sent"] == 2
    assert layer.state["x_hat"][0, 0] == 1.0


def test_overflowed_accumulator_recovers_at_the_refresh() -> None:
    """Finite but huge inputs can overflow an accumulator (inf, then inf - inf = NaN); the next
    refresh recomputes it from x_hat. (A recurrent cell's h is not refreshed: a NaN h, possible only
    after such an overflow, stays until reset() or a state assignment.)"""
    w = np.full((2, 3), 1e20, np.float32)
    x = np.ones((40, 3), np.float32)
    x[5:8] = 1e20  # 3e40 > float32 max
    layer = DeltaDense(w, None, 0.0, refresh_every=16)
    y = layer.step(x)
    assert not np.isfinite(y[5:15]).any()
    np.testing.assert_allclose(y[15:], 3e20, rtol=1e-6)  # the refresh at sample 16 (row 15) recovers


# --- state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_state_roundtrip_reset_and_counters(name: str) -> None:
    layer = _make(name, SELECTED[name], 4, 3, 34, 0.1, 0.02, n_streams=2, refresh_every=10)
    state = layer.state
    keys = {"DeltaDense": ["x_hat", "acc", "t"], "DeltaGRU": ["x_hat", "h", "h_hat", "acc_x", "acc_h", "t"],
            "DeltaLSTM": ["x_hat", "h", "h_hat", "c", "acc_x", "acc_h", "t"]}[name]
    assert list(state) == keys
    assert all(v.dtype == (np.int64 if k == "t" else np.float32) and v.shape[0] == 2 for k, v in state.items())
    x = _sparse_signal(60, 4, seed=35)
    layer.step(x[:25], stream=1)
    saved = layer.state
    y1 = layer.step(x[25:], stream=1)
    layer.state = saved
    assert _same(layer.step(x[25:], stream=1), y1)  # restoring the state replays exactly (refresh phase too)
    got = layer.state
    got["x_hat"][...] = 99.0
    assert not (layer.state["x_hat"] == 99.0).any()  # the getter returns copies
    counters = layer.counters
    assert counters["steps"] == 25 + 35 + 35 and counters["refreshes"] == 2 + 4 + 4  # counters are not state
    layer.reset()
    fresh = _make(name, SELECTED[name], 4, 3, 34, 0.1, 0.02, n_streams=2, refresh_every=10).state
    assert _same_state(layer.state, fresh)
    assert layer.counters == counters  # reset() keeps the counters
    layer.reset_counters()
    assert set(layer.counters.values()) == {0}


def test_state_setter_normalises_negative_zero() -> None:
    """acc must never hold -0.0 (the dense path would turn it into +0.0, see ext/delta.pyx)."""
    w, _ = _dense_params(3, 2, seed=36)
    layer = DeltaDense(w, -np.zeros(2, np.float32), 0.0)
    assert not np.signbit(layer.state["acc"]).any() and not np.signbit(layer.bias).any()
    layer.state = {"x_hat": np.zeros((1, 3)), "acc": -np.zeros((1, 2)), "t": np.zeros(1, np.int64)}
    assert not np.signbit(layer.state["acc"]).any()


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU", "DeltaLSTM"])
def test_properties(name: str) -> None:
    if name == "DeltaDense":
        w, b = _dense_params(4, 3, seed=37)
        layer = SELECTED[name](w.tolist(), b.tolist(), 0.1, 2, 7, 0.25, "tanh")
        assert (layer.in_features, layer.out_features, layer.activation) == (4, 3, "tanh")
        assert _same(layer.weight, w) and _same(layer.bias, b)
        names = ["in_features", "out_features", "n_streams", "theta", "weight", "bias"]
    else:
        g = GATES[name]
        params = _rnn_params(g, 4, 3, seed=38)
        layer = SELECTED[name](4, 3, *(p.astype(np.float64) for p in params), 0.1, 0.05, 2, 7, 0.25)
        assert (layer.input_size, layer.hidden_size, layer.theta_h) == (4, 3, float(np.float32(0.05)))
        for attr, p in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), params, strict=True):
            assert _same(getattr(layer, attr), p)
        names = ["input_size", "hidden_size", "n_streams", "theta_x", "theta_h", "weight_ih", "bias_hh"]
    theta = layer.theta if name == "DeltaDense" else layer.theta_x
    assert theta == float(np.float32(0.1))  # thresholds are compared in float32
    assert (layer.n_streams, layer.refresh_every, layer.dense_above) == (2, 7, 0.25)
    for attr in names:
        with pytest.raises(AttributeError):
            setattr(layer, attr, 1)


def test_cell_without_bias_and_defaults() -> None:
    g = DeltaGRU(4, 3, *_rnn_params(3, 4, 3, seed=39)[:2])
    assert not g.bias_ih.any() and not g.bias_hh.any()
    assert (g.theta_x, g.theta_h, g.n_streams) == (0.0, 0.0, 1)
    assert (g.refresh_every, g.dense_above) == (DEFAULT_REFRESH_EVERY, DEFAULT_DENSE_ABOVE)
