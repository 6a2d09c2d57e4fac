"""Spiking neuron populations and spike encoders (ext/neurons.pyx, spikeline.kernels.neurons).

Behaviour tests run on the classes spikeline.kernels.neurons selected: run the file once normally
(compiled) and once with SPIKELINE_NO_EXT=1 (numpy references). The compiled-vs-reference tests
import spikeline._ext.neurons directly and run in both modes. The snnTorch parity tests need
torch and snntorch (the test extra): they skip without them on a developer's machine and fail
with SPIKELINE_REQUIRE_ALL=1 (CI), through conftest.need.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import need
from spikeline.kernels.neurons import (
    BACKEND,
    CubaLIFPopulation,
    CubaLIFPopulationRef,
    DeltaModulator,
    DeltaModulatorRef,
    LIFEncoder,
    LIFEncoderRef,
    LIFPopulation,
    LIFPopulationRef,
)

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
KINDS = ("lif", "cuba", "delta", "encoder")
NAMES = {"lif": "LIFPopulation", "cuba": "CubaLIFPopulation", "delta": "DeltaModulator", "encoder": "LIFEncoder"}
SELECTED: dict[str, type[Any]] = {
    "lif": LIFPopulation, "cuba": CubaLIFPopulation, "delta": DeltaModulator, "encoder": LIFEncoder}
REFERENCE: dict[str, type[Any]] = {
    "lif": LIFPopulationRef, "cuba": CubaLIFPopulationRef, "delta": DeltaModulatorRef, "encoder": LIFEncoderRef}
BACKENDS = dict.fromkeys(KINDS, BACKEND)
RESETS = ("subtract", "zero")

# The standard instance of each kind: 8 neurons (the encoder: 4 channels x 3 neurons), per-neuron
# parameters, some beta/alpha outside [0, 1] so the clamping is exercised.
N = 8
ENC_CHANNELS, ENC_PER = 4, 3
_rng = np.random.default_rng(1234)
BETA = np.array([0.0, 0.5, 0.9, 0.95, 1.0, 1.3, -0.2, 0.8], np.float32)
ALPHA = np.array([0.7, 0.0, 1.0, 0.85, 1.2, -0.5, 0.6, 0.9], np.float32)
THRESHOLD = np.array([1.0, 0.5, 1.5, 1.0, 2.0, 1.0, 0.25, 1.0], np.float32)
DELTA_THRESHOLD = np.array([0.25, 0.5, 0.1, 1.0, 0.3, 0.2, 0.75, 0.05], np.float32)
ENC_GAIN = _rng.uniform(-2.0, 2.0, (ENC_CHANNELS, ENC_PER)).astype(np.float32)
ENC_BIAS = _rng.uniform(-0.5, 0.8, (ENC_CHANNELS, ENC_PER)).astype(np.float32)
ENC_BETA = _rng.uniform(0.5, 1.1, (ENC_CHANNELS, ENC_PER)).astype(np.float32)
ENC_THRESHOLD = _rng.uniform(0.5, 1.5, (ENC_CHANNELS, ENC_PER)).astype(np.float32)


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


def make(kind: str, classes: dict[str, type[Any]], reset: str = "subtract", n_streams: int = 1) -> Any:
    cls = classes[kind]
    if kind == "lif":
        return cls(N, BETA, THRESHOLD, reset=reset, n_streams=n_streams)
    if kind == "cuba":
        return cls(N, ALPHA, BETA, THRESHOLD, reset=reset, n_streams=n_streams)
    if kind == "delta":
        return cls(N, DELTA_THRESHOLD, n_streams=n_streams)
    return cls(ENC_CHANNELS, ENC_PER, ENC_GAIN, ENC_BIAS, ENC_BETA, ENC_THRESHOLD, reset=reset,
               n_streams=n_streams)


def in_cols(kind: str) -> int:
    return ENC_CHANNELS if kind == "encoder" else N


def out_cols(kind: str) -> int:
    return {"lif": N, "cuba": N, "delta": 2 * N, "encoder": ENC_CHANNELS * ENC_PER}[kind]


def signal(kind: str, n: int, seed: int, n_cols: int | None = None) -> F32:
    """Input for a kind: currents around threshold for the neurons, a random walk for the encoders."""
    rng = np.random.default_rng(seed)
    cols = in_cols(kind) if n_cols is None else n_cols
    if kind in ("delta", "encoder"):
        x = np.cumsum(0.3 * rng.standard_normal((n, cols)), axis=0) + rng.uniform(-5.0, 5.0, cols)
    else:
        x = 0.8 * rng.standard_normal((n, cols)) + 0.3
    return np.ascontiguousarray(x, dtype=np.float32)


def bits(a: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    arr = np.ascontiguousarray(a)
    assert arr.dtype == np.float32
    return arr.view(np.uint32)


def same_bits(a: Any, b: Any) -> bool:
    """Bit-identical float32 arrays (NaN payloads and the sign of zero included), or pairs of them."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_bits(p, q) for p, q in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(bits(a), bits(b))


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    """The compiled module itself, whatever backend spikeline.kernels.neurons selected."""
    try:
        import spikeline._ext.neurons as module
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.neurons is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.neurons failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return module


def compiled_classes(module: ModuleType) -> dict[str, type[Any]]:
    return {kind: getattr(module, NAMES[kind]) for kind in KINDS}


# --- backend selection -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_backend_follows_environment(kind: str) -> None:
    if _no_ext_requested():
        assert (BACKENDS[kind], SELECTED[kind]) == ("numpy", REFERENCE[kind])
    else:
        assert BACKENDS[kind] == "ext"
        assert SELECTED[kind].__module__ == "spikeline._ext.neurons"


# --- against snnTorch --------------------------------------------------------------------------


def _snntorch() -> tuple[Any, Any]:
    try:
        import snntorch
        import torch
    except ImportError as exc:
        need(False, f"torch and snntorch are needed for the snnTorch parity tests ({exc}): pip install -e '.[test]'")
        raise AssertionError("unreachable") from exc
    torch.set_num_threads(1)
    return torch, snntorch


SNN_STEPS = 600
SNN_NEURONS = 32
# Spikes must be identical; membranes agree within 1e-6 (on x86-64 they are in fact bit-identical:
# the operations are the same float32 operations in the same order).
MEM_ATOL = 1e-6


def _snn_params(per_neuron: bool) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    if not per_neuron:
        return {"alpha": np.float32(0.8), "beta": np.float32(0.9), "threshold": np.float32(1.0)}
    # some decays outside [0, 1]: both sides clamp them
    return {"alpha": rng.uniform(-0.3, 1.3, SNN_NEURONS).astype(np.float32),
            "beta": rng.uniform(-0.3, 1.3, SNN_NEURONS).astype(np.float32),
            "threshold": rng.uniform(0.5, 1.5, SNN_NEURONS).astype(np.float32)}


def _snn_input(n_streams: int, seed: int, synaptic: bool = False) -> F32:
    """Currents that make a fair share of the neurons spike (CuBa-LIF integrates twice: less drive)."""
    rng = np.random.default_rng(seed)
    x = 0.7 * rng.standard_normal((SNN_STEPS, n_streams, SNN_NEURONS)) + (0.02 if synaptic else 0.25)
    x[:, :, :4] *= 4.0  # strong inputs: several consecutive spikes and deep resets
    return x.astype(np.float32)


def _run_snntorch(neuron: Any, torch: Any, x: F32, synaptic: bool) -> tuple[F32, F32, F32 | None]:
    """Step an snnTorch neuron through x (steps, batch, neurons); spikes, mem (and syn) per step."""
    spikes, mems, syns = [], [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            if synaptic:
                spk, syn, mem = neuron(torch.from_numpy(x[t]))
                syns.append(syn.numpy().copy())
            else:
                spk, mem = neuron(torch.from_numpy(x[t]))
            spikes.append(spk.numpy().copy())
            mems.append(mem.numpy().copy())
    return np.array(spikes), np.array(mems), (np.array(syns) if synaptic else None)


def _torch_params(torch: Any, params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: torch.tensor(np.asarray(params[k], np.float32)) for k in names}


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("reset", RESETS)
def test_lif_matches_snntorch_leaky(reset: str, per_neuron: bool) -> None:
    torch, snn = _snntorch()
    params = _snn_params(per_neuron)
    x = _snn_input(1, seed=11)
    ref_spk, ref_mem, _ = _run_snntorch(
        snn.Leaky(**_torch_params(torch, params, ("beta", "threshold")), reset_mechanism=reset), torch, x, False)
    pop = LIFPopulation(SNN_NEURONS, params["beta"], params["threshold"], reset=reset)
    mem = np.empty_like(x[:, 0])
    spikes = np.concatenate([pop.step(c, mem_out=m) for c, m in
                             zip(np.array_split(x[:, 0], 9), np.array_split(mem, 9), strict=True)])
    assert 0.05 < spikes.mean() < 0.6  # the comparison is meaningful: many spikes and resets
    assert np.array_equal(spikes, ref_spk[:, 0])
    np.testing.assert_allclose(mem, ref_mem[:, 0], rtol=0, atol=MEM_ATOL)
    np.testing.assert_allclose(pop.state[0], ref_mem[-1, 0], rtol=0, atol=MEM_ATOL)


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("reset", RESETS)
def test_cuba_lif_matches_snntorch_synaptic(reset: str, per_neuron: bool) -> None:
    torch, snn = _snntorch()
    params = _snn_params(per_neuron)
    x = _snn_input(1, seed=12, synaptic=True)
    neuron = snn.Synaptic(**_torch_params(torch, params, ("alpha", "beta", "threshold")), reset_mechanism=reset)
    ref_spk, ref_mem, ref_syn = _run_snntorch(neuron, torch, x, True)
    assert ref_syn is not None
    pop = CubaLIFPopulation(SNN_NEURONS, params["alpha"], params["beta"], params["threshold"], reset=reset)
    mem, syn = np.empty_like(x[:, 0]), np.empty_like(x[:, 0])
    spikes = np.concatenate([pop.step(c, mem_out=m, syn_out=s) for c, m, s in zip(
        np.array_split(x[:, 0], 9), np.array_split(mem, 9), np.array_split(syn, 9), strict=True)])
    assert 0.05 < spikes.mean() < 0.6
    assert np.array_equal(spikes, ref_spk[:, 0])
    np.testing.assert_allclose(mem, ref_mem[:, 0], rtol=0, atol=MEM_ATOL)
    np.testing.assert_allclose(syn, ref_syn[:, 0], rtol=0, atol=MEM_ATOL)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("kind", ["lif", "cuba"])
def test_step_streams_matches_snntorch_batch(kind: str, reset: str) -> None:
    """snnTorch's batch dimension is our stream dimension: step_streams == one batched forward."""
    torch, snn = _snntorch()
    params = _snn_params(per_neuron=True)
    x = _snn_input(3, seed=13, synaptic=kind == "cuba")
    if kind == "lif":
        neuron = snn.Leaky(**_torch_params(torch, params, ("beta", "threshold")), reset_mechanism=reset)
        pop: Any = LIFPopulation(SNN_NEURONS, params["beta"], params["threshold"], reset=reset, n_streams=3)
    else:
        neuron = snn.Synaptic(**_torch_params(torch, params, ("alpha", "beta", "threshold")), reset_mechanism=reset)
        pop = CubaLIFPopulation(SNN_NEURONS, params["alpha"], params["beta"], params["threshold"], reset=reset,
                                n_streams=3)
    ref_spk, ref_mem, _ = _run_snntorch(neuron, torch, x, kind == "cuba")
    mem = np.empty((3, SNN_NEURONS), np.float32)
    for t in range(SNN_STEPS):
        assert np.array_equal(pop.step_streams(x[t], mem_out=mem), ref_spk[t]), f"step {t}"
        np.testing.assert_allclose(mem, ref_mem[t], rtol=0, atol=MEM_ATOL)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("kind", ["lif", "cuba"])
def test_nan_input_matches_snntorch(kind: str, reset: str) -> None:
    torch, snn = _snntorch()
    params = _snn_params(per_neuron=False)
    x = _snn_input(1, seed=14, synaptic=kind == "cuba")[:100]
    x[40, 0, 5] = np.nan
    if kind == "lif":
        neuron = snn.Leaky(**_torch_params(torch, params, ("beta", "threshold")), reset_mechanism=reset)
        pop: Any = LIFPopulation(SNN_NEURONS, params["beta"], params["threshold"], reset=reset)
    else:
        neuron = snn.Synaptic(**_torch_params(torch, params, ("alpha", "beta", "threshold")), reset_mechanism=reset)
        pop = CubaLIFPopulation(SNN_NEURONS, params["alpha"], params["beta"], params["threshold"], reset=reset)
    ref_spk, ref_mem, _ = _run_snntorch(neuron, torch, x, kind == "cuba")
    mem = np.empty_like(x[:, 0])
    spikes = pop.step(x[:, 0], mem_out=mem)
    assert np.array_equal(spikes, ref_spk[:, 0])
    np.testing.assert_allclose(mem, ref_mem[:, 0], rtol=0, atol=MEM_ATOL, equal_nan=True)
    assert np.isnan(mem[40:, 5]).all() and not spikes[40:, 5].any()


# --- compiled == reference, bit for bit --------------------------------------------------------


def _drive(kernel: Any, kind: str, x: F32, stream: int, chunks: int) -> list[Any]:
    """Step x through `stream` in chunks (with every trace output), then one step_streams call."""
    results: list[Any] = []
    for c in np.array_split(x, chunks):
        if kind == "delta":
            results.append(kernel.step(c, stream=stream))
        elif kind == "cuba":
            mem, syn = np.empty_like(c), np.empty_like(c)
            results += [kernel.step(c, stream=stream, mem_out=mem, syn_out=syn), mem, syn]
        else:
            mem = np.empty((c.shape[0], out_cols(kind)), np.float32)
            results += [kernel.step(c, stream=stream, mem_out=mem), mem]
    results.append(kernel.state)
    results.append(kernel.step_streams(x[: kernel.n_streams]))
    results.append(kernel.state)
    return results


@pytest.mark.parametrize(("kind", "reset"), [(k, r) for k in KINDS for r in RESETS if k != "delta" or r == "subtract"])
def test_compiled_bit_identical_to_reference(compiled: ModuleType, kind: str, reset: str) -> None:
    x = signal(kind, 2000, seed=21)
    fc, fr = make(kind, compiled_classes(compiled), reset, 3), make(kind, REFERENCE, reset, 3)
    got, expected = _drive(fc, kind, x, 2, 7), _drive(fr, kind, x, 2, 7)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert same_bits(a, b), f"result {i} differs"


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_bit_identical_on_extreme_input(compiled: ModuleType, kind: str) -> None:
    """NaN, +-inf, float32 max and tiny values: same bits (the NaNs included) in both backends."""
    x = signal(kind, 400, seed=22)
    big = np.finfo(np.float32).max
    x[10, 0], x[20, 1], x[30, 2] = np.nan, np.inf, -np.inf
    x[:, 3] = big * np.where(np.arange(400) % 3 == 0, 1, -1)
    x[50:60, 1] = np.finfo(np.float32).smallest_subnormal
    for reset in RESETS:
        fc, fr = make(kind, compiled_classes(compiled), reset, 2), make(kind, REFERENCE, reset, 2)
        for a, b in zip(_drive(fc, kind, x, 1, 3), _drive(fr, kind, x, 1, 3), strict=True):
            assert same_bits(a, b)


def _bad_calls() -> list[tuple[str, str, Callable[[Any], object]]]:
    """(id, kind, call on make(kind, ..., n_streams=2)) triples that must raise."""
    ok = np.zeros((10, N), np.float32)
    enc_ok = np.zeros((10, ENC_CHANNELS), np.float32)
    buf = np.zeros(400, np.float32)
    return [
        ("list", "lif", lambda f: f.step([[0.0] * N])),
        ("float64", "lif", lambda f: f.step(ok.astype(np.float64))),
        ("float16", "lif", lambda f: f.step(ok.astype(np.float16))),
        ("int32", "lif", lambda f: f.step(ok.astype(np.int32))),
        ("byteswapped", "lif", lambda f: f.step(ok.astype(ok.dtype.newbyteorder()))),
        ("1-D", "lif", lambda f: f.step(ok[0])),
        ("3-D", "lif", lambda f: f.step(ok[np.newaxis])),
        ("columns", "lif", lambda f: f.step(np.zeros((10, N + 1), np.float32))),
        ("fortran", "lif", lambda f: f.step(np.asfortranarray(np.zeros((10, N), np.float32)))),
        ("strided", "lif", lambda f: f.step(np.zeros((10, 2 * N), np.float32)[:, ::2])),
        ("unaligned", "lif",
         lambda f: f.step(np.frombuffer(bytes(40 * N + 1), np.float32, count=10 * N, offset=1).reshape(10, N))),
        ("out-list", "lif", lambda f: f.step(ok, out=[0.0])),
        ("out-dtype", "lif", lambda f: f.step(ok, out=np.zeros((10, N), np.float64))),
        ("out-shape", "lif", lambda f: f.step(ok, out=np.zeros((9, N), np.float32))),
        ("out-readonly", "lif", lambda f: f.step(ok, out=np.frombuffer(bytes(40 * N), np.float32).reshape(10, N))),
        ("out-overlap", "lif", lambda f: f.step(buf[N : 11 * N].reshape(10, N), out=buf[: 10 * N].reshape(10, N))),
        ("mem_out-shape", "lif", lambda f: f.step(ok, mem_out=np.zeros((10, N - 1), np.float32))),
        ("mem_out-dtype", "lif", lambda f: f.step(ok, mem_out=np.zeros((10, N), np.float64))),
        ("mem_out-is-out", "lif", lambda f: (lambda o: f.step(ok, out=o, mem_out=o))(np.zeros((10, N), np.float32))),
        ("stream-negative", "lif", lambda f: f.step(ok, stream=-1)),
        ("stream-high", "lif", lambda f: f.step(ok, stream=2)),
        ("streams-rows", "lif", lambda f: f.step_streams(np.zeros((3, N), np.float32))),
        ("streams-columns", "lif", lambda f: f.step_streams(np.zeros((2, N - 1), np.float32))),
        ("state-shape", "lif", lambda f: setattr(f, "state", np.zeros((1, N)))),
        ("state-nan", "lif", lambda f: setattr(f, "state", np.full((2, N), np.nan))),
        ("state-overflow", "lif", lambda f: setattr(f, "state", np.full((2, N), 1e39))),
        ("state-complex", "lif", lambda f: setattr(f, "state", np.zeros((2, N), complex))),
        ("cuba-syn_out-is-mem_out", "cuba",
         lambda f: (lambda o: f.step(ok, mem_out=o, syn_out=o))(np.zeros((10, N), np.float32))),
        ("cuba-state-not-pair", "cuba", lambda f: setattr(f, "state", np.zeros((2, 2, N)))),
        ("cuba-state-triple", "cuba", lambda f: setattr(f, "state", (np.zeros((2, N)),) * 3)),
        ("cuba-state-mem-shape", "cuba", lambda f: setattr(f, "state", (np.zeros((2, N)), np.zeros((2, N + 1))))),
        ("cuba-state-syn-inf", "cuba", lambda f: setattr(f, "state", (np.full((2, N), np.inf), np.zeros((2, N))))),
        ("delta-out-shape", "delta", lambda f: f.step(ok, out=np.zeros((10, N), np.float32))),
        ("delta-out-overlap", "delta",
         lambda f: f.step(buf[: 10 * N].reshape(10, N), out=buf[5 * N : 25 * N].reshape(10, 2 * N))),
        ("delta-state-inf", "delta", lambda f: setattr(f, "state", np.full((2, N), -np.inf))),
        ("encoder-columns", "encoder", lambda f: f.step(ok)),
        ("encoder-out-overlap", "encoder",
         lambda f: f.step(buf[: 10 * ENC_CHANNELS].reshape(10, ENC_CHANNELS),
                          out=buf[: 10 * ENC_CHANNELS * ENC_PER].reshape(10, ENC_CHANNELS * ENC_PER))),
        ("encoder-streams", "encoder", lambda f: f.step_streams(enc_ok[:3])),
    ]


BAD_CALL_MESSAGES: dict[str, tuple[type[Exception], str]] = {
    "list": (TypeError, "x must be a numpy.ndarray, got list"),
    "float64": (TypeError, "x must have dtype float32 in native byte order, got float64"),
    "float16": (TypeError, "float32"), "int32": (TypeError, "float32"),
    "byteswapped": (TypeError, "native byte order"),
    "1-D": (ValueError, f"x must be 2-D with shape (n_samples, {N})"), "3-D": (ValueError, "2-D"),
    "columns": (ValueError, f"x must have shape (n_samples, {N}), got (10, {N + 1})"),
    "fortran": (ValueError, "C-contiguous"), "strided": (ValueError, "C-contiguous"),
    "unaligned": (ValueError, "aligned"),
    "out-list": (TypeError, "out must be a numpy.ndarray or None"),
    "out-dtype": (TypeError, "out must have dtype float32"),
    "out-shape": (ValueError, f"out must have shape (10, {N}), got (9, {N})"),
    "out-readonly": (ValueError, "writeable"),
    "out-overlap": (ValueError, "out must be x itself (in-place) or must not overlap x"),
    "mem_out-shape": (ValueError, f"mem_out must have shape (10, {N})"),
    "mem_out-dtype": (TypeError, "mem_out must have dtype float32"),
    "mem_out-is-out": (ValueError, "mem_out must not overlap out"),
    "stream-negative": (ValueError, "stream must be in [0, 2), got -1"),
    "stream-high": (ValueError, "stream must be in [0, 2), got 2"),
    "streams-rows": (ValueError, f"(n_streams=2, n_neurons={N})"),
    "streams-columns": (ValueError, f"(n_streams=2, n_neurons={N})"),
    "state-shape": (ValueError, f"state must have shape (2, {N}), got (1, {N})"),
    "state-nan": (ValueError, "state must be finite"), "state-overflow": (ValueError, "state must be finite"),
    "state-complex": (TypeError, "real numeric"),
    "cuba-syn_out-is-mem_out": (ValueError, "syn_out must not overlap mem_out"),
    "cuba-state-not-pair": (TypeError, "(syn, mem) pair"), "cuba-state-triple": (TypeError, "(syn, mem) pair"),
    "cuba-state-mem-shape": (ValueError, "state[1] (mem) must have shape"),
    "cuba-state-syn-inf": (ValueError, "state[0] (syn) must be finite"),
    "delta-out-shape": (ValueError, f"out must have shape (10, {2 * N})"),
    "delta-out-overlap": (ValueError, "out must not overlap x"),
    "delta-state-inf": (ValueError, "must not contain +-inf"),
    "encoder-columns": (ValueError, f"x must have shape (n_samples, {ENC_CHANNELS})"),
    "encoder-out-overlap": (ValueError, "out must not overlap x"),
    "encoder-streams": (ValueError, f"(n_streams=2, n_channels={ENC_CHANNELS})"),
}


def _bad_constructions() -> list[tuple[str, str, Callable[[type[Any]], object]]]:
    return [
        ("n-zero", "lif", lambda cls: cls(0, 0.9)),
        ("n-float", "lif", lambda cls: cls(2.5, 0.9)),
        ("beta-shape", "lif", lambda cls: cls(4, np.full(3, 0.9))),
        ("beta-nan", "lif", lambda cls: cls(4, np.nan)),
        ("beta-complex", "lif", lambda cls: cls(4, 0.9 + 0j)),
        ("beta-text", "lif", lambda cls: cls(4, "0.9")),
        ("threshold-inf", "lif", lambda cls: cls(4, 0.9, threshold=np.inf)),
        ("threshold-overflow", "lif", lambda cls: cls(4, 0.9, threshold=1e39)),
        ("reset-unknown", "lif", lambda cls: cls(4, 0.9, reset="none")),
        ("reset-none", "lif", lambda cls: cls(4, 0.9, reset=None)),
        ("streams-zero", "lif", lambda cls: cls(4, 0.9, n_streams=0)),
        ("cuba-alpha-nan", "cuba", lambda cls: cls(4, np.nan, 0.9)),
        ("cuba-alpha-shape", "cuba", lambda cls: cls(4, np.zeros((2, 2)), 0.9)),
        ("delta-threshold-zero", "delta", lambda cls: cls(4, 0.0)),
        ("delta-threshold-negative", "delta", lambda cls: cls(4, np.array([0.1, 0.1, -0.1, 0.1]))),
        ("delta-threshold-shape", "delta", lambda cls: cls(4, np.full(5, 0.1))),
        ("delta-channels", "delta", lambda cls: cls(0, 0.1)),
        ("encoder-gain-grid", "encoder", lambda cls: cls(2, 3, np.ones((3, 2)), 0.0, 0.9)),
        ("encoder-bias-nan", "encoder", lambda cls: cls(2, 3, 1.0, np.nan, 0.9)),
        ("encoder-per-channel", "encoder", lambda cls: cls(2, 0, 1.0, 0.0, 0.9)),
    ]


BAD_CONSTRUCTION_MESSAGES: dict[str, tuple[type[Exception], str]] = {
    "n-zero": (ValueError, "n_neurons must be >= 1, got 0"),
    "n-float": (TypeError, "n_neurons must be an integer, got float"),
    "beta-shape": (ValueError, "beta must be a scalar or have shape (4,), got shape (3,)"),
    "beta-nan": (ValueError, "beta must be finite"), "beta-complex": (TypeError, "beta must be a real numeric"),
    "beta-text": (TypeError, "beta must be a real numeric"), "threshold-inf": (ValueError, "threshold must be finite"),
    "threshold-overflow": (ValueError, "threshold must be finite"),
    "reset-unknown": (ValueError, "reset must be 'subtract' or 'zero', got 'none'"),
    "reset-none": (ValueError, "reset must be 'subtract' or 'zero', got None"),
    "streams-zero": (ValueError, "n_streams must be >= 1"),
    "cuba-alpha-nan": (ValueError, "alpha must be finite"), "cuba-alpha-shape": (ValueError, "alpha must be a scalar"),
    "delta-threshold-zero": (ValueError, "threshold must be > 0"),
    "delta-threshold-negative": (ValueError, "threshold must be > 0"),
    "delta-threshold-shape": (ValueError, "threshold must be a scalar or have shape (4,)"),
    "delta-channels": (ValueError, "n_channels must be >= 1"),
    "encoder-gain-grid": (ValueError, "gain must be a scalar or have shape (6,) or (2, 3), got shape (3, 2)"),
    "encoder-bias-nan": (ValueError, "bias must be finite"),
    "encoder-per-channel": (ValueError, "n_neurons_per_channel must be >= 1"),
}


def _raised(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize(("case", "kind", "call"), _bad_calls(), ids=[c for c, _, _ in _bad_calls()])
def test_compiled_and_reference_raise_alike(compiled: ModuleType, case: str, kind: str,
                                            call: Callable[[Any], object]) -> None:
    got = _raised(lambda: call(make(kind, compiled_classes(compiled), n_streams=2)))
    assert got == _raised(lambda: call(make(kind, REFERENCE, n_streams=2)))


@pytest.mark.parametrize(("case", "kind", "make_one"), _bad_constructions(), ids=[c for c, _, _ in _bad_constructions()])
def test_compiled_and_reference_refuse_alike(compiled: ModuleType, case: str, kind: str,
                                             make_one: Callable[[type[Any]], object]) -> None:
    assert _raised(lambda: make_one(getattr(compiled, NAMES[kind]))) == _raised(lambda: make_one(REFERENCE[kind]))


@pytest.mark.parametrize(("case", "kind", "call"), _bad_calls(), ids=[c for c, _, _ in _bad_calls()])
def test_bad_calls_raise_clearly(case: str, kind: str, call: Callable[[Any], object]) -> None:
    f = make(kind, SELECTED, n_streams=2)
    f.step(signal(kind, 5, seed=23))  # a nonzero state, which a refused call must leave alone
    before = f.state
    kind_raised, message = _raised(lambda: call(f))
    expected = BAD_CALL_MESSAGES[case]
    assert kind_raised is expected[0]
    assert expected[1] in message
    assert same_bits(f.state, before)


@pytest.mark.parametrize(("case", "kind", "make_one"), _bad_constructions(), ids=[c for c, _, _ in _bad_constructions()])
def test_bad_construction_raises_clearly(case: str, kind: str, make_one: Callable[[type[Any]], object]) -> None:
    kind_raised, message = _raised(lambda: make_one(SELECTED[kind]))
    expected = BAD_CONSTRUCTION_MESSAGES[case]
    assert kind_raised is expected[0]
    assert expected[1] in message


# --- chunking never changes the result ---------------------------------------------------------

CHUNK_N = 240
CHUNK_X = {kind: signal(kind, CHUNK_N, seed=31) for kind in KINDS}
KERNEL_SETS = [SELECTED] if SELECTED["lif"] is LIFPopulationRef else [SELECTED, REFERENCE]


def _chunked(kernel: Any, kind: str, parts: list[F32]) -> tuple[F32, F32 | None]:
    """Spikes (and, where the kind has one, the membrane trace) over the parts, concatenated."""
    spikes, mems = [], []
    for p in parts:
        if kind == "delta":
            spikes.append(kernel.step(p, stream=1))
        else:
            mem = np.empty((p.shape[0], out_cols(kind)), np.float32)
            spikes.append(kernel.step(p, stream=1, mem_out=mem))
            mems.append(mem)
    return np.concatenate(spikes), (np.concatenate(mems) if mems else None)


@pytest.mark.parametrize("classes", KERNEL_SETS, ids=["selected", "reference"][: len(KERNEL_SETS)])
@pytest.mark.parametrize("kind", KINDS)
@settings(deadline=None, max_examples=25)
@given(cuts=st.sets(st.integers(1, CHUNK_N - 1), max_size=60), zero=st.booleans())
def test_chunk_invariance(classes: dict[str, type[Any]], kind: str, cuts: set[int], zero: bool) -> None:
    x = CHUNK_X[kind]
    reset = "zero" if zero else "subtract"
    whole, chunked = make(kind, classes, reset, 2), make(kind, classes, reset, 2)
    y_whole = _chunked(whole, kind, [x])
    y_parts = _chunked(chunked, kind, np.split(x, sorted(cuts)))
    assert same_bits(y_parts[0], y_whole[0])
    if y_whole[1] is not None:
        assert same_bits(y_parts[1], y_whole[1])
    assert same_bits(chunked.state, whole.state)


# --- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_streams_are_independent(kind: str) -> None:
    x = signal(kind, 300, seed=41)
    f = make(kind, SELECTED, n_streams=3)
    fresh = make(kind, SELECTED, n_streams=3).state
    f.step(x[:150], stream=0)
    assert same_bits(_rows(f.state, slice(1, None)), _rows(fresh, slice(1, None)))  # 1 and 2 untouched
    assert same_bits(f.step(x[150:], stream=1), make(kind, SELECTED).step(x[150:]))


def _rows(state: Any, rows: slice) -> Any:
    return tuple(s[rows] for s in state) if isinstance(state, tuple) else state[rows]


@pytest.mark.parametrize("kind", KINDS)
def test_step_streams_equals_stepping_each_stream(kind: str) -> None:
    n_streams = 5
    x = signal(kind, 150, seed=42, n_cols=n_streams * in_cols(kind)).reshape(150, n_streams, in_cols(kind))
    together, apart = make(kind, SELECTED, "zero", n_streams), make(kind, SELECTED, "zero", n_streams)
    out = np.empty((n_streams, out_cols(kind)), np.float32)
    for sample in x:
        assert together.step_streams(sample, out=out) is out
        one_by_one = np.array([apart.step(sample[k : k + 1], stream=k)[0] for k in range(n_streams)])
        assert same_bits(out, one_by_one)
    assert same_bits(together.state, apart.state)


@pytest.mark.parametrize("kind", ["lif", "cuba", "encoder"])
def test_step_streams_trace_outputs(kind: str) -> None:
    f = make(kind, SELECTED, n_streams=3)
    x = signal(kind, 3, seed=43)
    mem = np.empty((3, out_cols(kind)), np.float32)
    if kind == "cuba":
        syn = np.empty_like(mem)
        f.step_streams(x, mem_out=mem, syn_out=syn)
        assert same_bits((syn, mem), f.state)
    else:
        f.step_streams(x, mem_out=mem)
        assert same_bits(mem, f.state)


# --- input handling ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_input(kind: str) -> None:
    x = signal(kind, 100, seed=51)
    ro = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not ro.flags.writeable
    assert same_bits(make(kind, SELECTED).step(ro), make(kind, SELECTED).step(x))
    ro_streams = np.frombuffer(x[:2].tobytes(), dtype=np.float32).reshape(2, -1)
    assert same_bits(make(kind, SELECTED, n_streams=2).step_streams(ro_streams),
                     make(kind, SELECTED, n_streams=2).step_streams(x[:2].copy()))


@pytest.mark.parametrize("kind", ["lif", "cuba"])
def test_in_place_and_preallocated_out(kind: str) -> None:
    x = signal(kind, 100, seed=52)
    expected = make(kind, SELECTED).step(x)
    out = np.empty_like(x)
    assert make(kind, SELECTED).step(x, out=out) is out
    assert same_bits(out, expected)
    f = make(kind, SELECTED)
    mem = np.empty_like(x)
    f.step(x.copy(), mem_out=mem)
    x_mem = x.copy()  # the membrane trace may overwrite the input, too
    assert same_bits(make(kind, SELECTED).step(x_mem, mem_out=x_mem), expected)
    assert same_bits(x_mem, mem)
    assert make(kind, SELECTED).step(x, out=x) is x
    assert same_bits(x, expected)


@pytest.mark.parametrize("kind", ["lif", "cuba", "encoder"])
def test_trace_outputs_follow_the_state(kind: str) -> None:
    """mem_out (syn_out) row i is the state after sample i; its last row is the final state."""
    x = signal(kind, 60, seed=53)
    f, g = make(kind, SELECTED), make(kind, SELECTED)
    mem = np.empty((60, out_cols(kind)), np.float32)
    if kind == "cuba":
        syn = np.empty_like(mem)
        f.step(x, mem_out=mem, syn_out=syn)
        assert same_bits((syn[-1:], mem[-1:]), f.state)
    else:
        f.step(x, mem_out=mem)
        assert same_bits(mem[-1:], f.state)
    for i in (0, 17, 59):
        g.reset()
        g.step(x[: i + 1])
        state = g.state
        assert same_bits(mem[i], state[1][0] if kind == "cuba" else state[0])


@pytest.mark.parametrize("kind", KINDS)
def test_zero_length_chunk(kind: str) -> None:
    f = make(kind, SELECTED)
    f.step(signal(kind, 20, seed=54))
    before = f.state
    empty = np.empty((0, in_cols(kind)), np.float32)
    y = f.step(empty)
    assert y.shape == (0, out_cols(kind)) and y.dtype == np.float32
    assert same_bits(f.state, before)


# --- NaN and extremes --------------------------------------------------------------------------


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("kind", ["lif", "cuba"])
def test_nan_poisons_only_its_neuron(kind: str, reset: str) -> None:
    x = signal(kind, 300, seed=61)
    clean_f = make(kind, SELECTED, reset)
    clean = clean_f.step(x)
    x[100, 3] = np.nan
    f = make(kind, SELECTED, reset)
    mem = np.empty_like(x)
    y = f.step(x, mem_out=mem)
    others = [c for c in range(N) if c != 3]
    assert same_bits(y[:, others], clean[:, others])
    assert same_bits(y[:100, 3], clean[:100, 3])
    assert not y[100:, 3].any()  # a NaN membrane never spikes...
    assert np.isnan(mem[100:, 3]).all()  # ...and stays NaN until reset()
    f.reset()
    assert same_bits(f.step(x[200:]), make(kind, SELECTED, reset).step(x[200:]))


def test_nan_in_encoder_poisons_its_channel() -> None:
    x = signal("encoder", 200, seed=62)
    clean = make("encoder", SELECTED).step(x)
    x[50, 1] = np.nan
    y = make("encoder", SELECTED).step(x)
    channel1 = slice(ENC_PER, 2 * ENC_PER)
    others = [j for j in range(ENC_CHANNELS * ENC_PER) if not ENC_PER <= j < 2 * ENC_PER]
    assert same_bits(y[:, others], clean[:, others])
    assert same_bits(y[:50, channel1], clean[:50, channel1]) and not y[50:, channel1].any()


def test_delta_modulator_ignores_nan_samples() -> None:
    x = signal("delta", 200, seed=63)
    x[0, 2] = np.nan  # before initialisation: the channel initialises from its next sample
    x[70, 5] = np.nan
    y = make("delta", SELECTED).step(x)
    assert not y[70, [5, N + 5]].any()
    keep = np.arange(200) != 70
    assert same_bits(y[keep][:, [5, N + 5]], make("delta", SELECTED).step(x[keep])[:, [5, N + 5]])
    assert same_bits(y[1:, [2, N + 2]], make("delta", SELECTED).step(x[1:])[:, [2, N + 2]])


@pytest.mark.parametrize("kind", KINDS)
def test_extreme_values_do_not_crash(kind: str) -> None:
    x = signal(kind, 200, seed=64)
    x[:, 0] = np.finfo(np.float32).max * np.where(np.arange(200) % 2 == 0, 1, -1)
    x[10, 1], x[20, 2] = np.inf, -np.inf
    for reset in RESETS:
        y = make(kind, SELECTED, reset).step(x)
        assert y.shape == (200, out_cols(kind)) and set(np.unique(y)) <= {0.0, 1.0}


# --- the delta modulator on signals worked out by hand ------------------------------------------


def test_delta_modulator_ramps_by_hand() -> None:
    """x[i] = s * i with s = 0.25, threshold 0.5 (all values exact in float32).

    ref starts at x[0] (no spike). After k UP spikes ref = 0.5 k, and the next one comes at the
    first i with 0.25 i - 0.5 k > 0.5, i.e. i > 2 k + 2 (strict: d == threshold at i = 2 is no
    spike): UP at i = 3, 5, 7, ... A falling ramp gives DOWN at the same samples; the same ramp on
    an offset of 100 gives the same spikes (no start-up burst from the DC level).
    """
    n = 40
    i = np.arange(n)
    x = np.stack([0.25 * i, -0.25 * i, 100.0 + 0.25 * i], axis=1).astype(np.float32)
    d = DeltaModulator(3, 0.5)
    y = d.step(x)
    up, down = y[:, :3], y[:, 3:]
    expected = np.zeros(n, np.float32)
    expected[3::2] = 1.0
    assert np.array_equal(up[:, 0], expected) and not down[:, 0].any()
    assert np.array_equal(down[:, 1], expected) and not up[:, 1].any()
    assert np.array_equal(up[:, 2], expected) and not down[:, 2].any()
    k = int(expected.sum())  # 19 spikes: ref = 9.5, and x[39] = 9.75 is within one threshold
    assert np.array_equal(d.state, np.array([[0.5 * k, -0.5 * k, 100.0 + 0.5 * k]], np.float32))


def test_delta_modulator_slope_overload_and_steps() -> None:
    """At most one spike per sample: a ramp steeper than the threshold is followed with lag."""
    n = 10
    steep = (1.5 * np.arange(n)).astype(np.float32)  # d at sample i = 1.5 i - 0.5 (i - 1) = i + 0.5
    step = np.where(np.arange(n) >= 2, 1.2, 0.0).astype(np.float32)  # 1.2 > 0.5, then 0.7 > 0.5, then 0.2
    const = np.full(n, 3.0, np.float32)
    d = DeltaModulator(3, 0.5)
    y = d.step(np.stack([steep, step, const], axis=1))
    assert np.array_equal(y[:, 0], (np.arange(n) >= 1).astype(np.float32))
    assert np.array_equal(y[:, 1], np.isin(np.arange(n), [2, 3]).astype(np.float32))
    assert not y[:, 2].any() and not y[:, 3:].any()
    assert np.array_equal(d.state, np.array([[0.5 * (n - 1), 1.0, 3.0]], np.float32))


def test_delta_modulator_spikes_reconstruct_the_reference() -> None:
    """ref = ref0 + threshold * (cumulative UP - cumulative DOWN), within threshold of the signal.

    Steps are multiples of 1/16 of at most the threshold (0.25), so every value is exact in
    float32 and the bound holds strictly (no slope overload).
    """
    rng = np.random.default_rng(71)
    steps = rng.integers(-4, 5, (500, 6)) / 16.0
    x = (np.cumsum(steps, axis=0) + rng.integers(-50, 50, 6)).astype(np.float32)
    d = DeltaModulator(6, 0.25)
    y = d.step(x)
    recon = x[0] + 0.25 * np.cumsum(y[:, :6] - y[:, 6:], axis=0)
    assert np.abs(x - recon).max() <= 0.25
    assert np.array_equal(recon[-1:].astype(np.float32), d.state)
    assert 0.05 < y.mean() < 0.5


def test_delta_modulator_reset_reinitialises() -> None:
    d = DeltaModulator(2, 0.5, n_streams=2)
    assert np.isnan(d.state).all()
    d.step(np.array([[1.0, 2.0], [3.0, 2.0]], np.float32), stream=1)
    assert np.isnan(d.state[0]).all() and np.array_equal(d.state[1], [1.5, 2.0])
    d.reset()
    assert np.isnan(d.state).all()
    assert not d.step(np.array([[10.0, -10.0]], np.float32)).any()  # re-initialised, no spike
    d.state = np.array([[0.0, np.nan], [1.0, 1.0]])  # NaN: that channel is not initialised yet
    assert np.array_equal(d.step(np.array([[1.0, 1.0]], np.float32)), [[1.0, 0.0, 0.0, 0.0]])


# --- the LIF encoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("reset", RESETS)
def test_lif_encoder_is_linear_map_then_lif(reset: str) -> None:
    x = signal("encoder", 500, seed=81)
    enc = make("encoder", SELECTED, reset)
    current = ENC_GAIN.reshape(-1) * np.repeat(x, ENC_PER, axis=1)  # float32, channel-major
    current = current + ENC_BIAS.reshape(-1)
    lif = LIFPopulationRef(ENC_CHANNELS * ENC_PER, ENC_BETA.reshape(-1), ENC_THRESHOLD.reshape(-1), reset=reset)
    mem_enc, mem_lif = np.empty_like(current), np.empty_like(current)
    spikes = enc.step(x, mem_out=mem_enc)
    assert 0.02 < spikes.mean() < 0.8
    assert same_bits(spikes, lif.step(current, mem_out=mem_lif))
    assert same_bits(mem_enc, mem_lif)
    assert same_bits(enc.state, lif.state)


def test_lif_encoder_parameter_shapes() -> None:
    flat = LIFEncoder(2, 3, np.arange(6.0), 0.5, 0.9, threshold=np.ones((2, 3)))
    grid = LIFEncoder(2, 3, np.arange(6.0).reshape(2, 3), [0.5], 0.9)
    for name in ("gain", "bias", "beta", "threshold"):
        assert same_bits(getattr(flat, name), getattr(grid, name))
        assert getattr(flat, name).shape == (6,)
    assert (flat.n_channels, flat.n_neurons_per_channel, flat.n_neurons, flat.n_streams) == (2, 3, 6, 1)


# --- state and parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_state_roundtrip_and_reset(kind: str) -> None:
    f = make(kind, SELECTED, n_streams=2)
    x = signal(kind, 80, seed=91)
    f.step(x[:40], stream=1)
    saved = f.state
    got = f.state
    for arr in got if isinstance(got, tuple) else (got,):
        assert arr.dtype == np.float32 and arr.shape == (2, out_cols(kind) if kind != "delta" else N)
        arr[...] = 7.0  # the getter returns a copy
    assert same_bits(f.state, saved)
    y1 = f.step(x[40:], stream=1)
    f.state = saved
    assert same_bits(f.step(x[40:], stream=1), y1)  # restoring the state replays exactly
    f.reset()
    assert same_bits(f.state, make(kind, SELECTED, n_streams=2).state)
    f.state = tuple(s.astype(np.float64) for s in saved) if isinstance(saved, tuple) else saved.astype(np.float64)
    assert same_bits(f.state, saved)  # float64 values that are float32 values are kept exactly


@pytest.mark.parametrize("kind", KINDS)
def test_properties_are_read_only_copies(kind: str) -> None:
    f = make(kind, SELECTED, n_streams=2)
    names = {"lif": ("n_neurons", "beta", "threshold", "reset_mechanism"),
             "cuba": ("n_neurons", "alpha", "beta", "threshold", "reset_mechanism"),
             "delta": ("n_channels", "threshold"),
             "encoder": ("n_channels", "n_neurons_per_channel", "n_neurons", "gain", "bias", "beta", "threshold",
                         "reset_mechanism")}[kind]
    assert f.n_streams == 2
    for name in (*names, "n_streams"):
        value = getattr(f, name)
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32
            value[...] = 42.0
            assert not (getattr(f, name) == 42.0).all()
        with pytest.raises(AttributeError):
            setattr(f, name, value)


def test_parameters_are_clamped_and_broadcast() -> None:
    lif = LIFPopulation(N, BETA, THRESHOLD, reset="zero")
    assert same_bits(lif.beta, np.clip(BETA, 0, 1)) and same_bits(lif.threshold, THRESHOLD)
    assert lif.reset_mechanism == "zero" and lif.n_neurons == N
    cuba = CubaLIFPopulation(3, 1.5, [-1.0], threshold=2)
    assert same_bits(cuba.alpha, np.ones(3, np.float32)) and same_bits(cuba.beta, np.zeros(3, np.float32))
    assert same_bits(cuba.threshold, np.full(3, 2.0, np.float32)) and cuba.reset_mechanism == "subtract"
    assert same_bits(DeltaModulator(2, 0.1).threshold, np.full(2, 0.1, np.float32))
    # beta > 1 is clamped to 1: a perfect integrator, not a growing membrane
    grow = LIFPopulation(1, 2.0, threshold=100.0)
    assert np.array_equal(grow.step(np.ones((10, 1), np.float32)), np.zeros((10, 1), np.float32))
    assert grow.state[0, 0] == 10.0


@pytest.mark.parametrize("reset", RESETS)
def test_reset_mechanisms_by_hand(reset: str) -> None:
    """beta = 0.5, threshold 1, constant input 0.75 (all exact in float32), worked out by hand.

    mem: 0.75, 1.125 (spike), then the reset from that previous membrane applies at the next step:
      subtract: 0.5 * 1.125 + 0.75 - 1 = 0.3125, 0.90625, 1.203125 (spike), 0.3515625, ...
      zero:     0.5 * 0 + 0.75 = 0.75, 1.125 (spike), 0.75, 1.125 (spike), ...
    """
    f = LIFPopulation(1, 0.5, 1.0, reset=reset)
    mem = np.empty((6, 1), np.float32)
    spikes = f.step(np.full((6, 1), 0.75, np.float32), mem_out=mem)
    if reset == "subtract":
        expected_mem = [0.75, 1.125, 0.3125, 0.90625, 1.203125, 0.3515625]
        expected_spk = [0, 1, 0, 0, 1, 0]
    else:
        expected_mem = [0.75, 1.125, 0.75, 1.125, 0.75, 1.125]
        expected_spk = [0, 1, 0, 1, 0, 1]
    assert np.array_equal(mem[:, 0], np.array(expected_mem, np.float32))
    assert np.array_equal(spikes[:, 0], np.array(expected_spk, np.float32))
