"""DeltaDense / DeltaGRU / DeltaLSTM step_streams(x, streams=...): one call advances any subset of the
streams (gateway mode).

A subset call must be, bit for bit (outputs, state including each stream's sample index t, per-stream
counters), the per-stream step(x[j:j+1], stream=streams[j]) calls: the periodic exact refresh is
scheduled on each stream's own samples. Runs on the backend spikeline.kernels.delta selected (run the
file normally and with SPIKELINE_NO_EXT=1); the compiled classes must equal the numpy references.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.kernels.delta import DeltaDense, DeltaDenseRef, DeltaGRU, DeltaGRURef, DeltaLSTM, DeltaLSTMRef

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
NAMES = ("DeltaDense", "DeltaGRU", "DeltaLSTM")
REFS: dict[str, type[Any]] = {"DeltaDense": DeltaDenseRef, "DeltaGRU": DeltaGRURef, "DeltaLSTM": DeltaLSTMRef}
SELECTED: dict[str, type[Any]] = {"DeltaDense": DeltaDense, "DeltaGRU": DeltaGRU, "DeltaLSTM": DeltaLSTM}
GATES = {"DeltaGRU": 3, "DeltaLSTM": 4}
N_IN, N_OUT, N_STREAMS = 5, 6, 5
REFRESH = 3  # small, so that refreshes land on different rounds for different streams


def _make(name: str, cls: type[Any] | None = None, n_streams: int = N_STREAMS, refresh_every: int = REFRESH) -> Any:
    cls = SELECTED[name] if cls is None else cls
    rng = np.random.default_rng(31)
    if name == "DeltaDense":
        w = rng.uniform(-0.5, 0.5, (N_OUT, N_IN)).astype(np.float32)
        b = rng.uniform(-0.25, 0.25, N_OUT).astype(np.float32)
        return cls(w, b, 0.1, n_streams=n_streams, refresh_every=refresh_every, dense_above=0.5, activation="tanh")
    g, k = GATES[name], 1.0 / math.sqrt(N_OUT)
    shapes = ((g * N_OUT, N_IN), (g * N_OUT, N_OUT), (g * N_OUT,), (g * N_OUT,))
    w_ih, w_hh, b_ih, b_hh = (rng.uniform(-k, k, s).astype(np.float32) for s in shapes)
    return cls(N_IN, N_OUT, w_ih, w_hh, b_ih, b_hh, 0.1, 0.02, n_streams=n_streams, refresh_every=refresh_every,
               dense_above=0.5)


def _signal(n: int, n_streams: int, seed: int) -> F32:
    """(n + 2, n_streams, N_IN) piecewise-constant steps plus small noise, with a NaN and infinities."""
    rng = np.random.default_rng(seed)
    n += 2
    shape = (n, n_streams, N_IN)
    jumps = rng.standard_normal(shape) * (rng.random(shape) < 0.3)
    x = (np.cumsum(jumps, axis=0) + rng.uniform(-0.08, 0.08, shape)).astype(np.float32)
    x[n // 3, 0, 0] = np.nan
    x[n // 2, n_streams - 1, N_IN - 1] = np.inf
    x[n // 2 + 1, n_streams - 1, N_IN - 1] = -np.inf
    return x


def _same(a: Any, b: Any) -> bool:
    """Bit-identical arrays (float32 as bit patterns), or dicts of them."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.float32:
        return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint32), np.ascontiguousarray(b).view(np.uint32)))
    return bool(np.array_equal(a, b))


def _assert_layers_equal(a: Any, b: Any) -> None:
    assert _same(a.state, b.state)
    assert a.counters == b.counters
    for k in range(a.n_streams):
        assert a.stream_counters(k) == b.stream_counters(k), f"stream {k}"


@pytest.fixture(scope="module")
def compiled() -> dict[str, type[Any]]:
    try:
        from spikeline._ext import delta as ext
    except ImportError as exc:
        if os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0"):
            pytest.skip(f"spikeline._ext.delta is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.delta failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return {"DeltaDense": ext.DeltaDense, "DeltaGRU": ext.DeltaGRU, "DeltaLSTM": ext.DeltaLSTM}


ROUNDS = st.lists(st.tuples(st.permutations(range(N_STREAMS)), st.integers(0, N_STREAMS)), min_size=1,
                  max_size=16)


@pytest.mark.parametrize("name", NAMES)
@settings(deadline=None, max_examples=30)
@given(rounds=ROUNDS)
def test_subset_equals_per_stream_steps(name: str, rounds: list[tuple[list[int], int]]) -> None:
    x = _signal(len(rounds), N_STREAMS, seed=3)
    together, apart = _make(name), _make(name)
    for r, (perm, m) in enumerate(rounds):
        sel = np.array(perm[:m], dtype=np.int64)
        rows = np.ascontiguousarray(x[r, sel])
        out = together.step_streams(rows, streams=sel)
        assert out.shape == (m, N_OUT) and out.dtype == np.float32
        for j, s in enumerate(sel):
            assert _same(out[j], apart.step(rows[j : j + 1], stream=int(s))[0]), f"round {r}, stream {s}"
        _assert_layers_equal(together, apart)


@pytest.mark.parametrize("name", NAMES)
@settings(deadline=None, max_examples=20)
@given(rounds=ROUNDS)
def test_compiled_subset_bit_identical_to_reference(compiled: dict[str, type[Any]], name: str,
                                                    rounds: list[tuple[list[int], int]]) -> None:
    x = _signal(len(rounds), N_STREAMS, seed=5)
    fc, fr = _make(name, compiled[name]), _make(name, REFS[name])
    for r, (perm, m) in enumerate(rounds):
        sel = np.array(perm[:m], dtype=np.intp)
        rows = np.ascontiguousarray(x[r, sel])
        assert _same(fc.step_streams(rows, streams=sel), fr.step_streams(rows, streams=sel))
    _assert_layers_equal(fc, fr)


@pytest.mark.parametrize("name", NAMES)
@settings(deadline=None, max_examples=20)
@given(lengths=st.lists(st.integers(0, 14), min_size=N_STREAMS, max_size=N_STREAMS), seed=st.integers(0, 2**16))
def test_rounds_of_subsets_equal_each_stream_chunk(name: str, lengths: list[int], seed: int) -> None:
    """Gateway rounds (round r advances every stream with an r-th sample, in a shuffled order) ==
    each stream stepped through its own samples in one chunk; refreshes included (REFRESH = 3)."""
    rng = np.random.default_rng(seed)
    x = _signal(max(lengths) + 1, N_STREAMS, seed=seed)
    rounds_layer, chunk_layer = _make(name), _make(name)
    got: list[list[F32]] = [[] for _ in range(N_STREAMS)]
    for r in range(max(lengths)):
        sel = rng.permutation([s for s in range(N_STREAMS) if lengths[s] > r])
        out = rounds_layer.step_streams(np.ascontiguousarray(x[r, sel]), streams=sel)
        for j, s in enumerate(sel):
            got[s].append(out[j])
    for s in range(N_STREAMS):
        expected = chunk_layer.step(np.ascontiguousarray(x[: lengths[s], s]), stream=s)
        assert _same(np.array(got[s], np.float32).reshape(-1, N_OUT), expected), f"stream {s}"
    _assert_layers_equal(rounds_layer, chunk_layer)
    assert [rounds_layer.stream_counters(s)["refreshes"] for s in range(N_STREAMS)] == [n // REFRESH for n in lengths]


@pytest.mark.parametrize("name", NAMES)
def test_all_streams_in_order_equals_no_subset(name: str) -> None:
    x = _signal(12, N_STREAMS, seed=7)
    a, b, c = _make(name), _make(name), _make(name)
    reversed_ = np.arange(N_STREAMS)[::-1].copy()
    for sample in x:
        sample = np.ascontiguousarray(sample)
        expected = a.step_streams(sample)
        assert _same(b.step_streams(sample, streams=list(range(N_STREAMS))), expected)
        assert _same(c.step_streams(np.ascontiguousarray(sample[::-1]), streams=reversed_), expected[::-1])
    _assert_layers_equal(a, b)
    _assert_layers_equal(a, c)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("empty", [[], np.empty(0, np.int64), np.array([])], ids=["list", "int64", "float64"])
def test_empty_subset_is_a_no_op(name: str, empty: Any) -> None:
    layer = _make(name)
    layer.step_streams(np.ascontiguousarray(_signal(1, N_STREAMS, seed=9)[0]))
    before = layer.state
    counters = [layer.stream_counters(k) for k in range(N_STREAMS)]
    out = layer.step_streams(np.empty((0, N_IN), np.float32), streams=empty)
    assert out.shape == (0, N_OUT) and out.dtype == np.float32
    pre = np.empty((0, N_OUT), np.float32)
    assert layer.step_streams(np.empty((0, N_IN), np.float32), out=pre, streams=empty) is pre
    assert _same(layer.state, before)
    assert [layer.stream_counters(k) for k in range(N_STREAMS)] == counters


@pytest.mark.parametrize("name", ["DeltaDense", "DeltaGRU"])
def test_in_place_out_with_subset(name: str) -> None:
    """out may be x itself when the rows have the same length (N_IN == N_OUT here)."""
    n_out = N_IN
    rng = np.random.default_rng(37)
    w = rng.uniform(-0.4, 0.4, (3 * n_out, N_IN)).astype(np.float32)
    u = rng.uniform(-0.4, 0.4, (3 * n_out, n_out)).astype(np.float32)

    def mk() -> Any:
        return DeltaDense(w[:n_out], n_streams=4) if name == "DeltaDense" else DeltaGRU(N_IN, n_out, w, u, n_streams=4)

    a, b = mk(), mk()
    x = np.ascontiguousarray(_signal(1, 2, seed=39)[0])
    expected = a.step_streams(x.copy(), streams=[3, 1])
    assert b.step_streams(x, out=x, streams=[3, 1]) is x
    assert _same(x, expected)


def _bad_calls() -> list[tuple[str, Any, Any, Any, type[Exception], str]]:
    x2 = np.zeros((2, N_IN), np.float32)
    return [
        ("negative", [0, -1], x2, None, ValueError, rf"streams must be in \[0, {N_STREAMS}\), got -1 at position 1"),
        ("too-large", [0, N_STREAMS], x2, None, ValueError,
         rf"streams must be in \[0, {N_STREAMS}\), got {N_STREAMS} at position 1"),
        ("duplicate", [4, 1, 4], np.zeros((3, N_IN), np.float32), None, ValueError,
         "streams must be distinct, got stream 4 at positions 0 and 2"),
        ("2-d", [[0], [1]], x2, None, ValueError, r"streams must be a 1-d array of stream indices, got shape \(2, 1\)"),
        ("float", np.array([0.0, 1.0], np.float32), x2, None, TypeError,
         "streams must hold integer stream indices, got dtype float32"),
        ("rows", [0], x2, None, ValueError, r"x must have shape \(len\(streams\)=1, "),
        ("out-rows", [0, 1], x2, np.zeros((1, N_OUT), np.float32), ValueError, r"out must have shape \(len\(streams\)=2"),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("case", "streams", "x", "out", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_subsets_raise_before_any_change(name: str, case: str, streams: Any, x: F32, out: Any,
                                             kind: type[Exception], message: str) -> None:
    layer = _make(name)
    layer.step_streams(np.ascontiguousarray(_signal(1, N_STREAMS, seed=17)[0]))
    before, counters = layer.state, layer.counters
    with pytest.raises(kind, match=message):
        layer.step_streams(x, out=out, streams=streams)
    assert _same(layer.state, before) and layer.counters == counters


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("case", "streams", "x", "out", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_compiled_and_reference_refuse_alike(compiled: dict[str, type[Any]], name: str, case: str, streams: Any,
                                             x: F32, out: Any, kind: type[Exception], message: str) -> None:
    errors = []
    for cls in (compiled[name], REFS[name]):
        with pytest.raises(kind, match=message) as info:
            _make(name, cls).step_streams(x, out=out, streams=streams)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
