"""The streaming SOS (cascaded biquad) filter kernel.

Behaviour tests run on `spikeline.kernels.SOSFilter`, i.e. on whichever backend is selected: run
the file once normally (compiled) and once with SPIKELINE_NO_EXT=1 (numpy reference). The
compiled-vs-reference tests import spikeline._ext.sosfilt directly and run in both modes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.kernels import (
    BACKEND,
    SOSFilter,
    SOSFilterRef,
    design_bandpass,
    design_lowpass,
    design_notch,
)

pytestmark = pytest.mark.kernel

FS = 250.0
BANDPASS = design_bandpass(8.0, 30.0, FS, order=4)
NOTCH = design_notch(50.0, FS)
FILTERS = {"bandpass": BANDPASS, "notch": NOTCH}
DTYPES = [np.float32, np.float64]

# Against scipy (double precision throughout; our float32 output is the double result rounded once):
# - float32 output: rounding to nearest float32 is off by at most 2**-24 relative, so rtol = 2**-23
#   (one float32 ulp) holds with a factor-2 margin.
# - both dtypes: atol = 1e-9 (inputs are ~20 units of noise on offsets up to 3000) allows for
#   double-level differences if scipy's build fuses multiply-adds (aarch64 compilers do by
#   default, our build has -ffp-contract=off): ~1e-16 relative on states of ~1e4, amplified by the
#   narrow band's noise gain, stays well below it.
# - float64 output and the final state: rtol = 1e-12, the same allowance in relative terms.
# On x86-64 with scipy's wheels the results are in fact bit-identical; the tolerance keeps the
# test honest on other builds without hiding a real error (a wrong coefficient or state layout
# gives differences of order 1).
SCIPY_RTOL = {np.float32: 2.0**-23, np.float64: 1e-12}
SCIPY_ATOL = 1e-9
STATE_RTOL = 1e-12


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


def _eeg(n: int, n_channels: int, seed: int, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
    """EEG-like test data: noise of ~20 units on per-channel DC offsets of up to +-3000."""
    rng = np.random.default_rng(seed)
    x = 20.0 * rng.standard_normal((n, n_channels)) + rng.uniform(-3000.0, 3000.0, n_channels)
    return np.ascontiguousarray(x, dtype=dtype)


@pytest.fixture(scope="module")
def compiled() -> type[Any]:
    """The compiled class itself, whatever backend spikeline.kernels selected."""
    try:
        from spikeline._ext.sosfilt import SOSFilter as compiled_sosfilter
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.sosfilt is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.sosfilt failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return compiled_sosfilter


# --- backend selection -------------------------------------------------------------------------


def test_backend_follows_environment() -> None:
    if _no_ext_requested():
        assert (BACKEND, SOSFilter) == ("numpy", SOSFilterRef)
    else:
        assert BACKEND == "ext"
        assert SOSFilter.__module__ == "spikeline._ext.sosfilt"


_IMPORT_WITHOUT_EXT = """
import json, sys, warnings
sys.modules["spikeline._ext.sosfilt"] = None  # makes `import spikeline._ext.sosfilt` fail
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import spikeline.kernels as k
print(json.dumps({"backend": k.BACKEND, "is_ref": k.SOSFilter is k.SOSFilterRef,
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
    assert result["backend"] == "numpy" and result["is_ref"]
    if warns:
        assert len(result["warnings"]) == 1
        assert "compiled kernels unavailable" in result["warnings"][0]
        assert "spikeline._ext.sosfilt" in result["warnings"][0]  # names the import error
    else:
        assert result["warnings"] == []


# --- against scipy -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FILTERS)
def test_matches_scipy(name: str, dtype: type[np.floating[Any]]) -> None:
    sos = FILTERS[name]
    x = _eeg(5000, 64, seed=1, dtype=dtype)
    f = SOSFilter(sos, 64)
    f.state = np.random.default_rng(2).uniform(-100.0, 100.0, f.state.shape)  # a nonzero start
    zi = f.state[0]  # (n_sections, 2, n_channels): scipy's zi layout for axis=0
    y_scipy, zf = ss.sosfilt(sos, x.astype(np.float64), axis=0, zi=zi)
    y = np.concatenate([f.step(chunk) for chunk in np.array_split(x, 20)])
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y_scipy, rtol=SCIPY_RTOL[dtype], atol=SCIPY_ATOL)
    np.testing.assert_allclose(f.state[0], zf, rtol=STATE_RTOL, atol=SCIPY_ATOL)


# --- compiled == reference, bit for bit --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FILTERS)
def test_compiled_bit_identical_to_reference(compiled: type[Any], name: str, dtype: type[np.floating[Any]]) -> None:
    sos = FILTERS[name]
    x = _eeg(5000, 64, seed=3, dtype=dtype)
    fc, fr = compiled(sos, 64, n_streams=3), SOSFilterRef(sos, 64, n_streams=3)
    x0 = x[0].astype(np.float64)
    fc.prime(x0, stream=2)
    fr.prime(x0, stream=2)
    assert np.array_equal(fc.state, fr.state)
    for chunk in np.array_split(x, 7):
        assert np.array_equal(fc.step(chunk, stream=2), fr.step(chunk, stream=2))
    assert np.array_equal(fc.state, fr.state)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_compiled_step_streams_bit_identical_to_reference(compiled: type[Any], dtype: type[np.floating[Any]]) -> None:
    sos = np.vstack([BANDPASS, NOTCH])
    x = _eeg(300, 16 * 8, seed=4, dtype=dtype).reshape(300, 16, 8)
    fc, fr = compiled(sos, 8, n_streams=16), SOSFilterRef(sos, 8, n_streams=16)
    for sample in x:
        assert np.array_equal(fc.step_streams(sample), fr.step_streams(sample))
    assert np.array_equal(fc.state, fr.state)


def _bad_calls() -> list[tuple[str, Callable[[Any], object]]]:
    """(id, call on a filter built as cls(BANDPASS, 4, n_streams=2)) pairs that must raise."""
    ok = np.zeros((10, 4), np.float32)
    return [
        ("list", lambda f: f.step([[0.0] * 4])),
        ("int16", lambda f: f.step(ok.astype(np.int16))),
        ("float16", lambda f: f.step(ok.astype(np.float16))),
        ("byteswapped", lambda f: f.step(ok.astype(ok.dtype.newbyteorder()))),
        ("1-D", lambda f: f.step(ok[0])),
        ("3-D", lambda f: f.step(ok[np.newaxis])),
        ("channels", lambda f: f.step(np.zeros((10, 5), np.float32))),
        ("fortran", lambda f: f.step(np.asfortranarray(ok))),
        ("strided", lambda f: f.step(np.zeros((10, 8), np.float32)[:, ::2])),
        ("unaligned", lambda f: f.step(np.frombuffer(bytes(161), np.float32, count=40, offset=1).reshape(10, 4))),
        ("out-list", lambda f: f.step(ok, out=[0.0])),
        ("out-dtype", lambda f: f.step(ok, out=np.zeros((10, 4), np.float64))),
        ("out-shape", lambda f: f.step(ok, out=np.zeros((9, 4), np.float32))),
        ("out-readonly", lambda f: f.step(ok, out=np.frombuffer(bytes(160), np.float32).reshape(10, 4))),
        ("out-overlap", lambda f: (lambda b: f.step(b[1:11], out=b[:10]))(np.zeros((11, 4), np.float32))),
        ("stream-negative", lambda f: f.step(ok, stream=-1)),
        ("stream-high", lambda f: f.step(ok, stream=2)),
        ("streams-rows", lambda f: f.step_streams(np.zeros((3, 4), np.float32))),
        ("streams-channels", lambda f: f.step_streams(np.zeros((2, 3), np.float32))),
        ("prime-shape", lambda f: f.prime(np.zeros(3))),
        ("prime-nan", lambda f: f.prime(np.array([0.0, np.nan, 0.0, 0.0]))),
        ("prime-stream", lambda f: f.prime(np.zeros(4), stream=2)),
        ("state-shape", lambda f: setattr(f, "state", np.zeros((1, 4, 2, 4)))),
        ("state-inf", lambda f: setattr(f, "state", np.full((2, 4, 2, 4), np.inf))),
        ("state-complex", lambda f: setattr(f, "state", np.zeros((2, 4, 2, 4), complex))),
    ]


def _bad_constructions() -> list[tuple[str, Callable[[type[Any]], object]]]:
    a0 = BANDPASS.copy()
    a0[1, 3] = 2.0
    nan = BANDPASS.copy()
    nan[0, 0] = np.nan
    return [
        ("sos-1d", lambda cls: cls(BANDPASS[0], 4)),
        ("sos-5-columns", lambda cls: cls(BANDPASS[:, :5], 4)),
        ("sos-empty", lambda cls: cls(np.zeros((0, 6)), 4)),
        ("sos-nan", lambda cls: cls(nan, 4)),
        ("sos-a0", lambda cls: cls(a0, 4)),
        ("sos-complex", lambda cls: cls(BANDPASS.astype(complex), 4)),
        ("channels", lambda cls: cls(BANDPASS, 0)),
        ("streams", lambda cls: cls(BANDPASS, 4, n_streams=0)),
    ]


def _raised(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize(("case", "call"), _bad_calls(), ids=[c for c, _ in _bad_calls()])
def test_compiled_and_reference_raise_alike(compiled: type[Any], case: str, call: Callable[[Any], object]) -> None:
    assert _raised(lambda: call(compiled(BANDPASS, 4, n_streams=2))) == _raised(
        lambda: call(SOSFilterRef(BANDPASS, 4, n_streams=2)))


@pytest.mark.parametrize(("case", "make"), _bad_constructions(), ids=[c for c, _ in _bad_constructions()])
def test_compiled_and_reference_refuse_alike(compiled: type[Any], case: str, make: Callable[[type[Any]], object]) -> None:
    assert _raised(lambda: make(compiled)) == _raised(lambda: make(SOSFilterRef))


# --- chunking never changes the result ---------------------------------------------------------

CHUNK_N = 300
CHUNK_SOS = np.vstack([BANDPASS, NOTCH])
CHUNK_X = {dtype: _eeg(CHUNK_N, 8, seed=5, dtype=dtype) for dtype in DTYPES}
KERNELS = [SOSFilter] if SOSFilter is SOSFilterRef else [SOSFilter, SOSFilterRef]


@pytest.mark.parametrize("kernel", KERNELS, ids=[k.__module__.rsplit(".", 1)[-1] for k in KERNELS])
@settings(deadline=None, max_examples=40)
@given(cuts=st.sets(st.integers(1, CHUNK_N - 1), max_size=60), f32=st.booleans())
def test_chunk_invariance(kernel: type[Any], cuts: set[int], f32: bool) -> None:
    x = CHUNK_X[np.float32 if f32 else np.float64]
    whole, chunked = kernel(CHUNK_SOS, 8, n_streams=2), kernel(CHUNK_SOS, 8, n_streams=2)
    for f in (whole, chunked):
        f.prime(x[0].astype(np.float64))
    y_whole = whole.step(x, stream=1)
    y_chunked = np.concatenate([chunked.step(c, stream=1) for c in np.split(x, sorted(cuts))])
    assert np.array_equal(y_chunked, y_whole)
    assert np.array_equal(chunked.state, whole.state)


# --- input handling ----------------------------------------------------------------------------


def test_read_only_input() -> None:
    x = _eeg(100, 8, seed=6)
    ro = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not ro.flags.writeable
    assert np.array_equal(SOSFilter(BANDPASS, 8).step(ro), SOSFilter(BANDPASS, 8).step(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_in_place_and_preallocated_out(dtype: type[np.floating[Any]]) -> None:
    x = _eeg(100, 8, seed=7, dtype=dtype)
    expected = SOSFilter(BANDPASS, 8).step(x)
    out = np.empty_like(x)
    assert SOSFilter(BANDPASS, 8).step(x, out=out) is out
    assert np.array_equal(out, expected)
    assert SOSFilter(BANDPASS, 8).step(x, out=x) is x
    assert np.array_equal(x, expected)


@pytest.mark.parametrize(("case", "call"), _bad_calls(), ids=[c for c, _ in _bad_calls()])
def test_bad_calls_raise_clearly(case: str, call: Callable[[Any], object]) -> None:
    f = SOSFilter(BANDPASS, 4, n_streams=2)
    before = f.state
    kind, message = _raised(lambda: call(f))
    expected = {
        "list": (TypeError, "numpy.ndarray"), "int16": (TypeError, "float32 or float64"),
        "float16": (TypeError, "float32 or float64"), "byteswapped": (TypeError, "native byte order"),
        "1-D": (ValueError, "2-D"), "3-D": (ValueError, "2-D"), "channels": (ValueError, "(n_samples, 4)"),
        "fortran": (ValueError, "C-contiguous"), "strided": (ValueError, "C-contiguous"),
        "unaligned": (ValueError, "aligned"), "out-list": (TypeError, "out must be a numpy.ndarray"),
        "out-dtype": (TypeError, "same dtype"), "out-shape": (ValueError, "same shape"),
        "out-readonly": (ValueError, "writeable"), "out-overlap": (ValueError, "overlap"),
        "stream-negative": (ValueError, "stream must be in [0, 2)"),
        "stream-high": (ValueError, "stream must be in [0, 2)"),
        "streams-rows": (ValueError, "n_streams=2"), "streams-channels": (ValueError, "n_channels=4"),
        "prime-shape": (ValueError, "x0 must have shape (4,)"), "prime-nan": (ValueError, "finite"),
        "prime-stream": (ValueError, "-1 (all streams)"), "state-shape": (ValueError, "(2, 4, 2, 4)"),
        "state-inf": (ValueError, "finite"), "state-complex": (TypeError, "real numeric"),
    }[case]
    assert kind is expected[0]
    assert expected[1] in message
    assert np.array_equal(f.state, before)  # a refused call leaves the state alone


@pytest.mark.parametrize(("case", "make"), _bad_constructions(), ids=[c for c, _ in _bad_constructions()])
def test_bad_construction_raises_clearly(case: str, make: Callable[[type[Any]], object]) -> None:
    kind, message = _raised(lambda: make(SOSFilter))
    expected = {
        "sos-1d": (ValueError, "(n_sections, 6)"), "sos-5-columns": (ValueError, "(n_sections, 6)"),
        "sos-empty": (ValueError, "n_sections >= 1"), "sos-nan": (ValueError, "finite"),
        "sos-a0": (ValueError, "normalise the sections so a0 == 1, as scipy.signal.butter(output='sos') does"),
        "sos-complex": (TypeError, "real numeric"), "channels": (ValueError, "n_channels must be >= 1"),
        "streams": (ValueError, "n_streams must be >= 1"),
    }[case]
    assert kind is expected[0]
    assert expected[1] in message


def test_nan_stays_in_its_channel() -> None:
    x = _eeg(500, 8, seed=8)
    clean = SOSFilter(BANDPASS, 8).step(x)
    x[100, 3] = np.nan
    f = SOSFilter(BANDPASS, 8)
    y = f.step(x)
    others = [c for c in range(8) if c != 3]
    assert np.array_equal(y[:, others], clean[:, others])
    assert np.array_equal(y[:100, 3], clean[:100, 3])
    assert np.isnan(y[100:, 3]).all()  # a NaN stays in the state until reset() or prime()
    assert np.isnan(f.state[..., 3]).all()
    assert np.isfinite(f.state[..., others]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_extreme_values_do_not_crash(dtype: type[np.floating[Any]]) -> None:
    big = np.finfo(dtype).max
    x = _eeg(200, 4, seed=9, dtype=dtype)
    clean = SOSFilter(BANDPASS, 4).step(x)
    x[50, 0], x[60, 1] = np.inf, -np.inf
    x[:, 2] = big * np.where(np.arange(200) % 2 == 0, 1, -1)  # full-scale square wave
    y = SOSFilter(BANDPASS, 4).step(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert np.array_equal(y[:, 3], clean[:, 3])
    assert np.isfinite(y[:50, 0]).all() and not np.isfinite(y[50:, 0]).any()
    assert np.isfinite(y[:60, 1]).all() and not np.isfinite(y[60:, 1]).any()
    if dtype is np.float32:  # computed in double, full-scale float32 input cannot overflow inside
        assert np.isfinite(y[:, 2]).all()


def test_zero_length_chunk() -> None:
    f = SOSFilter(BANDPASS, 4)
    f.prime(np.arange(4.0))
    before = f.state
    empty = np.empty((0, 4), np.float32)
    y = f.step(empty)
    assert y.shape == (0, 4) and y.dtype == np.float32
    assert f.step(empty, out=empty) is empty
    assert np.array_equal(f.state, before)


# --- state -------------------------------------------------------------------------------------


def test_properties() -> None:
    sos = np.vstack([BANDPASS, NOTCH])
    f = SOSFilter(sos.tolist(), 6, n_streams=3)
    assert (f.n_channels, f.n_streams, f.n_sections) == (6, 3, 5)
    got = f.sos
    assert got.dtype == np.float64 and np.array_equal(got, sos)
    got[0, 0] = 99.0
    assert np.array_equal(f.sos, sos)  # a copy
    for name in ("n_channels", "n_streams", "n_sections", "sos"):
        with pytest.raises(AttributeError):
            setattr(f, name, 1)


def test_state_roundtrip_and_reset() -> None:
    f = SOSFilter(BANDPASS, 3, n_streams=2)
    assert f.state.shape == (2, 4, 2, 3) and f.state.dtype == np.float64 and f.state.flags.c_contiguous
    assert not f.state.any()
    value = np.random.default_rng(10).standard_normal((2, 4, 2, 3))
    f.state = value
    got = f.state
    assert np.array_equal(got, value)
    got[...] = 0.0
    assert np.array_equal(f.state, value)  # the getter returns a copy
    value[...] = 0.0
    assert f.state.any()  # the setter copied in
    x = _eeg(50, 3, seed=11)
    saved = f.state
    y1 = f.step(x, stream=1)
    f.state = saved
    assert np.array_equal(f.step(x, stream=1), y1)  # restoring the state replays exactly
    f.reset()
    assert not f.state.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_prime_removes_the_start_transient(dtype: type[np.floating[Any]]) -> None:
    x0 = np.array([1.0, -3.5, 1234.5, 0.0])
    const = np.tile(x0, (500, 1)).astype(dtype)
    lowpass = design_lowpass(10.0, FS, order=4)
    cold = SOSFilter(lowpass, 4).step(const)
    assert abs(cold[0, 2] - 1234.5) > 1000.0  # unprimed: starts from zero
    f = SOSFilter(lowpass, 4)
    f.prime(x0)
    np.testing.assert_allclose(f.step(const), const, rtol=1e-6, atol=1e-9)
    g = SOSFilter(BANDPASS, 4)
    g.prime(x0)
    np.testing.assert_allclose(g.step(const), 0.0, atol=1e-6 * 1234.5)  # band-pass: no DC


def test_prime_one_stream() -> None:
    f = SOSFilter(BANDPASS, 4, n_streams=3)
    f.prime(np.ones(4), stream=1)
    state = f.state
    assert state[1].any() and not state[0].any() and not state[2].any()
    f.prime(np.full(4, 2.0))
    assert np.array_equal(f.state[0], f.state[2]) and np.allclose(f.state[1], 2.0 * state[1])


# --- streams -----------------------------------------------------------------------------------


def test_streams_are_independent() -> None:
    x = _eeg(400, 8, seed=12)
    f = SOSFilter(BANDPASS, 8, n_streams=3)
    f.step(x[:200], stream=0)
    assert not f.state[1:].any()  # stepping stream 0 leaves streams 1 and 2 alone
    assert np.array_equal(f.step(x[200:], stream=1), SOSFilter(BANDPASS, 8).step(x[200:]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_step_streams_equals_stepping_each_stream(dtype: type[np.floating[Any]]) -> None:
    n_streams, n_channels = 5, 3
    x = _eeg(120, n_streams * n_channels, seed=13, dtype=dtype).reshape(120, n_streams, n_channels)
    together = SOSFilter(NOTCH, n_channels, n_streams=n_streams)
    apart = SOSFilter(NOTCH, n_channels, n_streams=n_streams)
    for f in (together, apart):
        f.prime(x[0, 0].astype(np.float64), stream=2)
    out = np.empty((n_streams, n_channels), dtype)
    for sample in x:
        assert together.step_streams(sample, out=out) is out
        one_by_one = [apart.step(sample[k : k + 1], stream=k)[0] for k in range(n_streams)]
        assert np.array_equal(out, np.array(one_by_one))
    assert np.array_equal(together.state, apart.state)


# --- filter design -----------------------------------------------------------------------------


def test_design_helpers() -> None:
    for sos, n_sections in ((BANDPASS, 4), (NOTCH, 1), (design_lowpass(10.0, FS, 5), 3)):
        assert sos.dtype == np.float64 and sos.flags.c_contiguous and sos.shape == (n_sections, 6)
        assert (sos[:, 3] == 1.0).all()
    _, h = ss.freqz(NOTCH[0, :3], NOTCH[0, 3:], worN=[50.0, 10.0], fs=FS)
    assert abs(h[0]) < 1e-6 and abs(abs(h[1]) - 1.0) < 1e-2
    for bad in (lambda: design_bandpass(30.0, 8.0, FS), lambda: design_bandpass(8.0, 125.0, FS),
                lambda: design_bandpass(0.0, 30.0, FS), lambda: design_bandpass(8.0, 30.0, FS, order=0),
                lambda: design_lowpass(200.0, FS, 4), lambda: design_notch(50.0, 80.0),
                lambda: design_notch(50.0, FS, q=0.0), lambda: design_bandpass(8.0, 30.0, float("nan"))):
        with pytest.raises(ValueError):
            bad()
