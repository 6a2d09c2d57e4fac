"""L2MUCell.step_streams(x, streams=...): one call advances any subset of the streams (gateway mode).

A subset call must be, bit for bit (outputs, hidden spikes, state, counters), the per-stream
step(x[j:j+1], stream=streams[j]) calls, on the backend spikeline.kernels.l2mu selected (run the file
normally and with SPIKELINE_NO_EXT=1), and the compiled kernel must equal the numpy reference.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.kernels.l2mu import L2MUCell, L2MUCellRef
from spikeline.kernels.lmu_matrices import lmu_matrices

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
N_IN, N_OUT, HIDDEN = 3, 4, 16
N_STREAMS = 6


def _arrays(seed: int) -> dict[str, F32]:
    """A small l2mu model with random weights, scaled so that every population is active."""
    rng = np.random.default_rng(seed)
    enc, memory, order = 3, 4, 5
    n_x, n_m = N_IN * enc, memory * order

    def w(rows: int, cols: int, gain: float) -> F32:
        scaled: F32 = (gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        return scaled

    a_bar, b_bar = lmu_matrices(order, 20.0)
    arrays = {
        "enc_w": (0.5 * rng.standard_normal((N_IN, enc))).astype(np.float32),
        "enc_b": rng.uniform(0.0, 0.5, (N_IN, enc)).astype(np.float32),
        "e_x": w(memory, n_x, 3.0), "e_h": w(memory, HIDDEN, 1.5), "e_m": w(memory, n_m, 1.5),
        "W_x": w(HIDDEN, n_x, 2.0), "W_h": w(HIDDEN, HIDDEN, 1.0), "W_m": w(HIDDEN, n_m, 3.0),
        "W_o": w(N_OUT, HIDDEN, 3.0), "b_o": (0.1 * rng.standard_normal(N_OUT)).astype(np.float32),
        "A_bar": a_bar.astype(np.float32), "B_bar": b_bar.astype(np.float32),
    }
    sizes = {"x": n_x, "u": memory, "m": n_m, "h": HIDDEN, "o": N_OUT}
    for p, n in sizes.items():
        arrays[f"beta_{p}"] = rng.uniform(0.6, 1.0, n).astype(np.float32)
        low = 0.15 if p == "m" else 0.5
        arrays[f"threshold_{p}"] = rng.uniform(low, 2 * low + 0.5, n).astype(np.float32)
    return arrays


ARRAYS = _arrays(11)


def _make(cls: type[Any] = L2MUCell, n_streams: int = N_STREAMS, convention: str = "A") -> Any:
    return cls(**ARRAYS, memory_convention=convention, n_streams=n_streams)


def _signal(n: int, n_streams: int, seed: int) -> F32:
    """(n, n_streams, N_IN): slow sways plus noise, one independent recording per stream, a NaN in one."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None, None] / 50.0
    freq = rng.uniform(0.3, 2.5, (1, n_streams, N_IN))
    sway = 2.0 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3, (1, n_streams, N_IN)))
    x: F32 = (sway + 0.3 * rng.standard_normal((n, n_streams, N_IN))).astype(np.float32)
    x[n // 2, 0, 1] = np.nan
    return x


def _same(a: Any, b: Any) -> bool:
    """Bit-identical arrays (float32 as bit patterns), or dicts of them."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.float32:
        return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint32), np.ascontiguousarray(b).view(np.uint32)))
    return bool(np.array_equal(a, b))


def _assert_cells_equal(a: Any, b: Any) -> None:
    assert _same(a.state, b.state)
    assert _same(a.counters, b.counters)


@pytest.fixture(scope="module")
def compiled() -> Any:
    try:
        import spikeline._ext.l2mu as module
    except ImportError as exc:
        if os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0"):
            pytest.skip(f"spikeline._ext.l2mu is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.l2mu failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return module.L2MUCell


# A round: a subset of the streams in some order (a permutation and how many of it to take).
ROUNDS = st.lists(st.tuples(st.permutations(range(N_STREAMS)), st.integers(0, N_STREAMS)), min_size=1,
                  max_size=12)


@settings(deadline=None, max_examples=40)
@given(rounds=ROUNDS, convention=st.sampled_from(("A", "AT")), with_hidden=st.booleans())
def test_subset_equals_per_stream_steps(rounds: list[tuple[list[int], int]], convention: str,
                                        with_hidden: bool) -> None:
    x = _signal(len(rounds), N_STREAMS, seed=3)
    together, apart = _make(convention=convention), _make(convention=convention)
    for r, (perm, m) in enumerate(rounds):
        sel = np.array(perm[:m], dtype=np.int64)
        rows = np.ascontiguousarray(x[r, sel])
        hidden = np.full((m, HIDDEN), 7.0, np.float32) if with_hidden else None
        out = together.step_streams(rows, hidden_out=hidden, streams=sel)
        assert out.shape == (m, N_OUT) and out.dtype == np.float32
        for j, s in enumerate(sel):
            h1 = np.empty((1, HIDDEN), np.float32)
            y1 = apart.step(rows[j : j + 1], stream=int(s), hidden_out=h1)
            assert _same(out[j], y1[0]), f"round {r}, stream {s}"
            if hidden is not None:
                assert _same(hidden[j], h1[0])
        _assert_cells_equal(together, apart)


@settings(deadline=None, max_examples=20)
@given(rounds=ROUNDS, convention=st.sampled_from(("A", "AT")))
def test_compiled_subset_bit_identical_to_reference(compiled: type[Any], rounds: list[tuple[list[int], int]],
                                                    convention: str) -> None:
    x = _signal(len(rounds), N_STREAMS, seed=5)
    fc, fr = _make(compiled, convention=convention), _make(L2MUCellRef, convention=convention)
    for r, (perm, m) in enumerate(rounds):
        sel = np.array(perm[:m], dtype=np.intp)
        rows = np.ascontiguousarray(x[r, sel])
        hc, hr = np.empty((m, HIDDEN), np.float32), np.empty((m, HIDDEN), np.float32)
        assert _same(fc.step_streams(rows, hidden_out=hc, streams=sel), fr.step_streams(rows, hidden_out=hr, streams=sel))
        assert _same(hc, hr)
    _assert_cells_equal(fc, fr)


@settings(deadline=None, max_examples=25)
@given(lengths=st.lists(st.integers(0, 9), min_size=N_STREAMS, max_size=N_STREAMS), seed=st.integers(0, 2**16))
def test_rounds_of_subsets_equal_each_stream_chunk(lengths: list[int], seed: int) -> None:
    """Gateway rounds: each device's samples in order, round r advancing every device with an r-th
    sample (in a shuffled order) == each stream stepped through its own samples in one chunk."""
    rng = np.random.default_rng(seed)
    x = _signal(max(lengths) + 1, N_STREAMS, seed=seed)
    rounds_cell, chunk_cell = _make(), _make()
    got: list[list[F32]] = [[] for _ in range(N_STREAMS)]
    for r in range(max(lengths)):
        sel = rng.permutation([s for s in range(N_STREAMS) if lengths[s] > r])
        out = rounds_cell.step_streams(np.ascontiguousarray(x[r, sel]), streams=sel)
        for j, s in enumerate(sel):
            got[s].append(out[j])
    for s in range(N_STREAMS):
        expected = chunk_cell.step(np.ascontiguousarray(x[: lengths[s], s]), stream=s)
        assert _same(np.array(got[s], np.float32).reshape(-1, N_OUT), expected), f"stream {s}"
    _assert_cells_equal(rounds_cell, chunk_cell)


def test_all_streams_in_order_equals_no_subset() -> None:
    x = _signal(20, N_STREAMS, seed=7)
    a, b, c = _make(), _make(), _make()
    everyone = np.arange(N_STREAMS)
    reversed_ = everyone[::-1].copy()
    for sample in x:
        sample = np.ascontiguousarray(sample)
        expected = a.step_streams(sample)
        assert _same(b.step_streams(sample, streams=everyone), expected)
        assert _same(c.step_streams(np.ascontiguousarray(sample[::-1]), streams=reversed_), expected[::-1])
    _assert_cells_equal(a, b)
    _assert_cells_equal(a, c)


@pytest.mark.parametrize("empty", [[], (), np.empty(0, np.int64), np.empty(0, np.intp), np.array([])],
                         ids=["list", "tuple", "int64", "intp", "float64"])
def test_empty_subset_is_a_no_op(empty: Any) -> None:
    cell = _make()
    cell.step_streams(np.ascontiguousarray(_signal(1, N_STREAMS, seed=9)[0]))
    before_state, before_counters = cell.state, cell.counters
    hidden = np.empty((0, HIDDEN), np.float32)
    out = cell.step_streams(np.empty((0, N_IN), np.float32), hidden_out=hidden, streams=empty)
    assert out.shape == (0, N_OUT) and out.dtype == np.float32
    preallocated = np.empty((0, N_OUT), np.float32)
    assert cell.step_streams(np.empty((0, N_IN), np.float32), out=preallocated, streams=empty) is preallocated
    assert _same(cell.state, before_state) and _same(cell.counters, before_counters)


@pytest.mark.parametrize("kind", [list, tuple, np.int32, np.uint16, np.int64, np.intp])
def test_streams_array_likes(kind: Any) -> None:
    x = np.ascontiguousarray(_signal(1, N_STREAMS, seed=13)[0, [4, 1, 2]])
    expected = _make().step_streams(x, streams=np.array([4, 1, 2], np.intp))
    sel = kind([4, 1, 2]) if kind in (list, tuple) else np.array([4, 1, 2], dtype=kind)
    assert _same(_make().step_streams(x, streams=sel), expected)


def test_streams_argument_is_copied_not_kept() -> None:
    x = _signal(2, N_STREAMS, seed=15)
    sel = np.array([3, 0], np.intp)
    a, b = _make(), _make()
    a.step_streams(np.ascontiguousarray(x[0, [3, 0]]), streams=sel)
    sel[:] = [1, 2]  # the caller may reuse its array
    a.step_streams(np.ascontiguousarray(x[1, [1, 2]]), streams=sel)
    b.step_streams(np.ascontiguousarray(x[0, [3, 0]]), streams=[3, 0])
    b.step_streams(np.ascontiguousarray(x[1, [1, 2]]), streams=[1, 2])
    _assert_cells_equal(a, b)
    assert list(a.counters["steps"]) == [1, 1, 1, 1, 0, 0]


def _bad_calls() -> list[tuple[str, Any, Any, Any, type[Exception], str]]:
    """(case, streams, x rows, out, error type, message fragment)."""
    x2 = np.zeros((2, N_IN), np.float32)
    return [
        ("negative", [0, -1], x2, None, ValueError, rf"streams must be in \[0, {N_STREAMS}\), got -1 at position 1"),
        ("too-large", [N_STREAMS, 0], x2, None, ValueError,
         rf"streams must be in \[0, {N_STREAMS}\), got {N_STREAMS} at position 0"),
        ("duplicate", [2, 5, 2], np.zeros((3, N_IN), np.float32), None, ValueError,
         "streams must be distinct, got stream 2 at positions 0 and 2"),
        ("range-before-duplicate", [1, 1, 99], np.zeros((3, N_IN), np.float32), None, ValueError,
         "got 99 at position 2"),
        ("2-d", [[0, 1]], x2, None, ValueError, r"streams must be a 1-d array of stream indices, got shape \(1, 2\)"),
        ("scalar", 3, np.zeros((1, N_IN), np.float32), None, ValueError, "streams must be a 1-d array"),
        ("float", [0.0, 1.0], x2, None, TypeError, "streams must hold integer stream indices, got dtype float64"),
        ("bool", [True, False], x2, None, TypeError, "got dtype bool"),
        ("rows", [0, 1, 2], x2, None, ValueError, r"x must have shape \(len\(streams\)=3, n_inputs=3\)"),
        ("out-rows", [0, 1], x2, np.zeros((3, N_OUT), np.float32), ValueError, r"out must have shape \(2, 4\)"),
        ("x-dtype", [0, 1], x2.astype(np.float64), None, TypeError, "x must have dtype float32"),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize(("case", "streams", "x", "out", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_subsets_raise_before_any_change(case: str, streams: Any, x: F32, out: Any, kind: type[Exception],
                                             message: str) -> None:
    cell = _make()
    cell.step_streams(np.ascontiguousarray(_signal(1, N_STREAMS, seed=17)[0]))
    before_state, before_counters = cell.state, cell.counters
    with pytest.raises(kind, match=message):
        cell.step_streams(x, out=out, streams=streams)
    assert _same(cell.state, before_state) and _same(cell.counters, before_counters)


@pytest.mark.parametrize(("case", "streams", "x", "out", "kind", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_compiled_and_reference_refuse_alike(compiled: type[Any], case: str, streams: Any, x: F32, out: Any,
                                             kind: type[Exception], message: str) -> None:
    errors = []
    for cls in (compiled, L2MUCellRef):
        with pytest.raises(kind, match=message) as info:
            _make(cls).step_streams(x, out=out, streams=streams)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_disjoint_subsets_from_two_threads(compiled: type[Any]) -> None:
    """Calls on disjoint subsets may run concurrently (the loop runs without the GIL)."""
    n_streams, n = 64, 60
    x = _signal(n, n_streams, seed=19)
    halves = [np.arange(0, n_streams, 2), np.arange(1, n_streams, 2)[::-1].copy()]
    together, alone = _make(compiled, n_streams), _make(compiled, n_streams)

    def run(cell: Any, sel: npt.NDArray[np.intp]) -> None:
        for t in range(n):
            cell.step_streams(np.ascontiguousarray(x[t, sel]), streams=sel)

    threads = [threading.Thread(target=run, args=(together, sel)) for sel in halves]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for sel in halves:
        run(alone, sel)
    _assert_cells_equal(together, alone)
