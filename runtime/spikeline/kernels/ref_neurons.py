"""Pure-numpy references for the spiking kernels in ext/neurons.pyx (spikeline._ext.neurons).

Each reference has the compiled class's constructor, methods, properties, validation and error
messages, and performs the same float32 operations in the same order (see ext/neurons.pxd), so
its output and state are bit-identical to the compiled kernel's. The loop over samples is plain
Python, vectorised over neurons (and streams): correct and slow. It is the fallback when the
extension is not built, and the oracle the compiled kernels are tested against.

The parameter and state validators at the top (`count_arg`, `param_array`, `reset_code`,
`state_array`) are also what the compiled classes call in their constructors and state setters,
so both backends accept and refuse exactly the same parameters. Per-call input checks are
duplicated in C in the extension (they run on every call) and mirrored here.

NaN and inf are data, not errors, as in C (and in snnTorch): a NaN input current makes that
neuron's membrane NaN, which never spikes and stays NaN until reset() (or a new state); the
delta modulator ignores a NaN sample. See each class's docstring.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CubaLIFPopulationRef", "DeltaModulatorRef", "LIFEncoderRef", "LIFPopulationRef"]

F32 = npt.NDArray[np.float32]

RESET_SUBTRACT = 0
RESET_ZERO = 1
_RESETS = {"subtract": RESET_SUBTRACT, "zero": RESET_ZERO}
_RESET_NAMES = {code: name for name, code in _RESETS.items()}


# --- parameter and state validation, shared with ext/neurons.pyx --------------------------------


def count_arg(value: object, name: str) -> int:
    """value as an int >= 1 (a size: n_neurons, n_channels, n_streams...)."""
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _real_array(value: object, name: str) -> npt.NDArray[Any]:
    """value as an ndarray, refusing non-numeric and complex input (the cast would drop data)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def param_array(value: object, name: str, n: int, grid: tuple[int, int] | None = None, *,
                clamp01: bool = False, positive: bool = False) -> F32:
    """A per-neuron (or per-channel) float32 parameter of length n, as a new C-contiguous array.

    value is a scalar, shape (1,) or (n,), or the 2-D `grid` shape (n_channels, per_channel) with
    grid[0] * grid[1] == n. It is cast to float32 first (as snnTorch's float32 tensors), then must
    be finite; clamp01 clips it to [0, 1] (snnTorch's beta.clamp(0, 1)), positive requires > 0.
    """
    arr = _real_array(value, name)
    allowed: list[tuple[int, ...]] = [(), (1,), (n,)]
    if grid is not None:
        allowed.append(grid)
    if arr.shape not in allowed:
        alt = f" or {grid}" if grid is not None else ""
        raise ValueError(f"{name} must be a scalar or have shape ({n},){alt}, got shape {arr.shape}")
    with np.errstate(all="ignore"):  # float64 beyond float32 range becomes inf: refused below
        flat = arr.reshape(-1).astype(np.float32)
    out: F32 = np.empty(n, dtype=np.float32)
    out[...] = flat
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if positive and (out <= 0.0).any():
        raise ValueError(f"{name} must be > 0, got {float(out.min())}")
    if clamp01:
        np.clip(out, np.float32(0.0), np.float32(1.0), out=out)
    return out


def reset_code(reset: object) -> int:
    """RESET_SUBTRACT or RESET_ZERO for snnTorch's reset_mechanism names."""
    if not isinstance(reset, str) or reset not in _RESETS:
        raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
    return _RESETS[reset]


def reset_name(code: int) -> str:
    return _RESET_NAMES[code]


def state_array(value: object, name: str, shape: tuple[int, ...], *, allow_nan: bool = False) -> F32:
    """A state array of `shape` as float32; refuses +-inf, and NaN unless allow_nan."""
    arr = _real_array(value, name)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    with np.errstate(all="ignore"):
        out: F32 = arr.astype(np.float32)
    if allow_nan:
        if np.isinf(out).any():
            raise ValueError(f"{name} must not contain +-inf (NaN marks a channel that has not seen a sample yet)")
    elif not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return out


# --- per-call input checks, mirroring the C-API checks in ext/neurons.pyx -------------------------


def _input(x: object, n_cols: int, n_rows: int, shape_desc: str) -> F32:
    """Validate x for one call. n_rows < 0: any number of rows."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.dtype(np.float32):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
    if x.shape[1] != n_cols or (n_rows >= 0 and x.shape[0] != n_rows):
        raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not x.flags.aligned:
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    return x


def _overlap(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    a0, b0 = a.ctypes.data, b.ctypes.data
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


def _output(out: object, name: str, x: F32, n_cols: int, in_place: bool) -> F32:
    """Validate an output array (n_rows of x, n_cols) float32 for one call; None: allocate one.

    in_place: it may be x itself (same buffer and shape); otherwise it must not overlap x at all.
    """
    expected = (x.shape[0], n_cols)
    if out is None:
        return np.empty(expected, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.dtype != np.dtype(np.float32):
        raise TypeError(f"{name} must have dtype float32 in native byte order, got {out.dtype}")
    if out.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous, aligned and writeable")
    if _overlap(out, x):
        if not in_place:
            raise ValueError(f"{name} must not overlap x")
        if out.ctypes.data != x.ctypes.data or out.nbytes != x.nbytes:
            raise ValueError(f"{name} must be x itself (in-place) or must not overlap x")
    return out


def _disjoint(a: F32, name_a: str, b: F32, name_b: str) -> None:
    if _overlap(a, b):
        raise ValueError(f"{name_b} must not overlap {name_a}")


def _stream(stream: int, n_streams: int) -> int:
    stream = operator.index(stream)
    if stream < 0 or stream >= n_streams:
        raise ValueError(f"stream must be in [0, {n_streams}), got {stream}")
    return stream


# --- the per-sample maths of ext/neurons.pxd, vectorised over neurons and streams ----------------


def _heaviside(mem: F32, threshold: F32) -> F32:
    return (mem > threshold).astype(np.float32)


def _lif_update(mem: F32, current: F32, beta: F32, threshold: F32, reset: int) -> F32:
    """lif_update of ext/neurons.pxd: the next membrane of snnTorch Leaky neurons."""
    r = _heaviside(mem, threshold)
    if reset == RESET_ZERO:
        keep = np.float32(1.0) - r
        kept = keep * mem
        decayed = beta * kept
        return decayed + current
    decayed = beta * mem
    integrated = decayed + current
    drop = r * threshold
    return integrated - drop


def _cuba_update(syn: F32, mem: F32, current: F32, alpha: F32, beta: F32, threshold: F32, reset: int) -> F32:
    """cuba_syn_update then cuba_mem_update of ext/neurons.pxd (snnTorch Synaptic); syn in place."""
    r = _heaviside(mem, threshold)
    s = alpha * syn
    s = s + current
    syn[...] = s
    decayed = beta * mem
    m = decayed + s
    drop = m * r if reset == RESET_ZERO else r * threshold
    return m - drop


# --- the kernels -------------------------------------------------------------------------------


class LIFPopulationRef:
    """n_neurons leaky integrate-and-fire neurons with snnTorch `Leaky` semantics, n_streams states.

    Per sample, with r = (mem > threshold) from the previous membrane:
      subtract: mem = beta * mem + x - r * threshold
      zero:     mem = beta * ((1 - r) * mem) + x
    and spike = (mem > threshold). beta (clamped to [0, 1] here, once, as snnTorch clamps it on
    every step) and threshold are scalars or per-neuron. x are input currents (n_samples, n_neurons)
    float32; out the spikes, 0.0 or 1.0. A NaN current makes that neuron's membrane NaN for good
    (it never spikes) until reset() or a new state; the other neurons are unaffected.
    """

    def __init__(self, n_neurons: int, beta: npt.ArrayLike, threshold: npt.ArrayLike = 1.0,
                 reset: str = "subtract", n_streams: int = 1) -> None:
        n = count_arg(n_neurons, "n_neurons")
        self._beta = param_array(beta, "beta", n, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._mem: F32 = np.zeros((self._n_streams, n), dtype=np.float32)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_neurons={n})"

    def _outputs(self, x: F32, out: F32 | None, mem_out: F32 | None) -> tuple[F32, F32 | None]:
        result = _output(out, "out", x, self._n, True)
        if mem_out is not None:
            mem_out = _output(mem_out, "mem_out", x, self._n, True)
            _disjoint(result, "out", mem_out, "mem_out")
        return result, mem_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0, mem_out: F32 | None = None) -> F32:
        """Step stream `stream` through x (n_samples, n_neurons); returns the spikes in out.

        mem_out, if given, receives the membrane after each sample (same shape). out and mem_out
        may each be x itself (in-place) but must not overlap each other.
        """
        x = _input(x, self._n, -1, self._desc_step)
        result, mem_out = self._outputs(x, out, mem_out)
        mem = self._mem[_stream(stream, self._n_streams)]
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                mem[...] = _lif_update(mem, x[i], self._beta, self._threshold, self._reset)
                result[i] = _heaviside(mem, self._threshold)
                if mem_out is not None:
                    mem_out[i] = mem
        return result

    def step_streams(self, x: F32, out: F32 | None = None, mem_out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x is (n_streams, n_neurons), row k for stream k."""
        x = _input(x, self._n, self._n_streams, self._desc_streams)
        result, mem_out = self._outputs(x, out, mem_out)
        with np.errstate(all="ignore"):
            self._mem[...] = _lif_update(self._mem, x, self._beta, self._threshold, self._reset)
            result[...] = _heaviside(self._mem, self._threshold)
        if mem_out is not None:
            mem_out[...] = self._mem
        return result

    def reset(self) -> None:
        """Zero the membrane of every stream."""
        self._mem.fill(0.0)

    @property
    def state(self) -> F32:
        """A copy of the membranes, (n_streams, n_neurons) float32."""
        return self._mem.copy()

    @state.setter
    def state(self, value: npt.ArrayLike) -> None:
        self._mem[...] = state_array(value, "state", self._mem.shape)

    @property
    def n_neurons(self) -> int:
        return self._n

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def beta(self) -> F32:
        """A copy of the per-neuron decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self) -> F32:
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self) -> str:
        return reset_name(self._reset)


class CubaLIFPopulationRef:
    """n_neurons current-based LIF neurons with snnTorch `Synaptic` semantics, n_streams states.

    Per sample, with r = (mem > threshold) from the previous membrane:
      syn = alpha * syn + x
      m = beta * mem + syn
      subtract: mem = m - r * threshold;  zero: mem = m - m * r  (syn is never reset)
    and spike = (mem > threshold). alpha and beta are clamped to [0, 1]. The state is the pair
    (syn, mem), each (n_streams, n_neurons). A NaN current makes that neuron's syn and mem NaN
    until reset() or a new state.
    """

    def __init__(self, n_neurons: int, alpha: npt.ArrayLike, beta: npt.ArrayLike,
                 threshold: npt.ArrayLike = 1.0, reset: str = "subtract", n_streams: int = 1) -> None:
        n = count_arg(n_neurons, "n_neurons")
        self._alpha = param_array(alpha, "alpha", n, clamp01=True)
        self._beta = param_array(beta, "beta", n, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._syn: F32 = np.zeros((self._n_streams, n), dtype=np.float32)
        self._mem: F32 = np.zeros((self._n_streams, n), dtype=np.float32)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_neurons={n})"

    def _outputs(self, x: F32, out: F32 | None, mem_out: F32 | None,
                 syn_out: F32 | None) -> tuple[F32, F32 | None, F32 | None]:
        result = _output(out, "out", x, self._n, True)
        if mem_out is not None:
            mem_out = _output(mem_out, "mem_out", x, self._n, True)
            _disjoint(result, "out", mem_out, "mem_out")
        if syn_out is not None:
            syn_out = _output(syn_out, "syn_out", x, self._n, True)
            _disjoint(result, "out", syn_out, "syn_out")
            if mem_out is not None:
                _disjoint(mem_out, "mem_out", syn_out, "syn_out")
        return result, mem_out, syn_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0, mem_out: F32 | None = None,
             syn_out: F32 | None = None) -> F32:
        """Step stream `stream` through x (n_samples, n_neurons); returns the spikes in out.

        mem_out / syn_out, if given, receive the membrane / synaptic current after each sample.
        Each output may be x itself (in-place) but the outputs must not overlap each other.
        """
        x = _input(x, self._n, -1, self._desc_step)
        result, mem_out, syn_out = self._outputs(x, out, mem_out, syn_out)
        k = _stream(stream, self._n_streams)
        syn, mem = self._syn[k], self._mem[k]
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                mem[...] = _cuba_update(syn, mem, x[i], self._alpha, self._beta, self._threshold, self._reset)
                result[i] = _heaviside(mem, self._threshold)
                if mem_out is not None:
                    mem_out[i] = mem
                if syn_out is not None:
                    syn_out[i] = syn
        return result

    def step_streams(self, x: F32, out: F32 | None = None, mem_out: F32 | None = None,
                     syn_out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x is (n_streams, n_neurons), row k for stream k."""
        x = _input(x, self._n, self._n_streams, self._desc_streams)
        result, mem_out, syn_out = self._outputs(x, out, mem_out, syn_out)
        with np.errstate(all="ignore"):
            self._mem[...] = _cuba_update(self._syn, self._mem, x, self._alpha, self._beta,
                                          self._threshold, self._reset)
            result[...] = _heaviside(self._mem, self._threshold)
        if mem_out is not None:
            mem_out[...] = self._mem
        if syn_out is not None:
            syn_out[...] = self._syn
        return result

    def reset(self) -> None:
        """Zero the synaptic current and membrane of every stream."""
        self._syn.fill(0.0)
        self._mem.fill(0.0)

    @property
    def state(self) -> tuple[F32, F32]:
        """Copies of (syn, mem), each (n_streams, n_neurons) float32."""
        return self._syn.copy(), self._mem.copy()

    @state.setter
    def state(self, value: tuple[npt.ArrayLike, npt.ArrayLike]) -> None:
        shape = self._mem.shape
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise TypeError(f"state must be a (syn, mem) pair of arrays of shape {shape}, got {type(value).__name__}")
        syn = state_array(value[0], "state[0] (syn)", shape)
        mem = state_array(value[1], "state[1] (mem)", shape)
        self._syn[...] = syn
        self._mem[...] = mem

    @property
    def n_neurons(self) -> int:
        return self._n

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def alpha(self) -> F32:
        """A copy of the per-neuron synaptic decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._alpha.copy()

    @property
    def beta(self) -> F32:
        """A copy of the per-neuron membrane decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self) -> F32:
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self) -> str:
        return reset_name(self._reset)


class DeltaModulatorRef:
    """Delta-modulation spike encoder over n_channels, n_streams independent states.

    Per channel a reference level ref; per sample, d = x - ref:
      d > threshold:  UP spike,   ref += threshold
      d < -threshold: DOWN spike, ref -= threshold
    at most one spike per channel and sample (a signal moving faster than threshold per sample
    is followed with lag: slope overload). Output (n_samples, 2 * n_channels) float32: UP in the
    first n_channels columns, DOWN in the last. ref starts "not initialised" (NaN in the state):
    a channel's first finite sample becomes its reference and emits nothing. A NaN sample emits
    nothing and leaves ref alone; +inf / -inf after initialisation emit UP / DOWN.
    See ext/neurons.pyx for the definition's sources.
    """

    def __init__(self, n_channels: int, threshold: npt.ArrayLike, n_streams: int = 1) -> None:
        n = count_arg(n_channels, "n_channels")
        self._threshold = param_array(threshold, "threshold", n, positive=True)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._ref: F32 = np.full((self._n_streams, n), np.nan, dtype=np.float32)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_channels={n})"

    def _delta(self, ref: F32, x: F32, out: F32) -> None:
        """delta_row of ext/neurons.pxd, vectorised: ref (..., n), x (..., n), out (..., 2n)."""
        th = self._threshold
        ref[...] = np.where(np.isnan(ref) & np.isfinite(x), x, ref)  # initialise from a finite sample
        d = x - ref
        up = (d > th).astype(np.float32)
        down = (d < -th).astype(np.float32)
        out[..., : self._n] = up
        out[..., self._n :] = down
        moved = ref + th * up
        ref[...] = moved - th * down

    def step(self, x: F32, out: F32 | None = None, stream: int = 0) -> F32:
        """Encode x (n_samples, n_channels) of stream `stream`; returns out (n_samples, 2 * n_channels)."""
        x = _input(x, self._n, -1, self._desc_step)
        result = _output(out, "out", x, 2 * self._n, False)
        ref = self._ref[_stream(stream, self._n_streams)]
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                self._delta(ref, x[i], result[i])
        return result

    def step_streams(self, x: F32, out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x (n_streams, n_channels) -> (n_streams, 2 * n_channels)."""
        x = _input(x, self._n, self._n_streams, self._desc_streams)
        result = _output(out, "out", x, 2 * self._n, False)
        with np.errstate(all="ignore"):
            self._delta(self._ref, x, result)
        return result

    def reset(self) -> None:
        """Forget every reference: each channel re-initialises from its next finite sample."""
        self._ref.fill(np.nan)

    @property
    def state(self) -> F32:
        """A copy of the references, (n_streams, n_channels) float32; NaN: not initialised yet."""
        return self._ref.copy()

    @state.setter
    def state(self, value: npt.ArrayLike) -> None:
        self._ref[...] = state_array(value, "state", self._ref.shape, allow_nan=True)

    @property
    def n_channels(self) -> int:
        return self._n

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def threshold(self) -> F32:
        """A copy of the per-channel threshold, (n_channels,) float32."""
        return self._threshold.copy()


class LIFEncoderRef:
    """The L2MU "encoding-free" input module: a per-channel linear map feeding LIF neurons.

    Each of n_channels drives n_neurons_per_channel LIF neurons; neuron j = c * per_channel + k
    gets the current gain[j] * x[c] + bias[j] and follows LIFPopulationRef's update. gain, bias,
    beta (clamped to [0, 1]) and threshold are scalars, (n_neurons,) or (n_channels,
    n_neurons_per_channel). Output (n_samples, n_neurons) spikes, channel-major. A NaN sample
    makes that channel's neurons NaN until reset() or a new state.
    """

    def __init__(self, n_channels: int, n_neurons_per_channel: int, gain: npt.ArrayLike,
                 bias: npt.ArrayLike, beta: npt.ArrayLike, threshold: npt.ArrayLike = 1.0,
                 reset: str = "subtract", n_streams: int = 1) -> None:
        nc = count_arg(n_channels, "n_channels")
        per = count_arg(n_neurons_per_channel, "n_neurons_per_channel")
        n = nc * per
        grid = (nc, per)
        self._gain = param_array(gain, "gain", n, grid)
        self._bias = param_array(bias, "bias", n, grid)
        self._beta = param_array(beta, "beta", n, grid, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n, grid)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._nc, self._per, self._n = nc, per, n
        self._mem: F32 = np.zeros((self._n_streams, n), dtype=np.float32)
        self._desc_step = f"(n_samples, {nc})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_channels={nc})"

    def _current(self, x: F32) -> F32:
        """gain * x + bias, x (..., n_channels) -> (..., n_neurons), as lif_encoder_row computes it."""
        cur = self._gain * np.repeat(x, self._per, axis=-1)
        return cur + self._bias

    def _outputs(self, x: F32, out: F32 | None, mem_out: F32 | None) -> tuple[F32, F32 | None]:
        result = _output(out, "out", x, self._n, False)
        if mem_out is not None:
            mem_out = _output(mem_out, "mem_out", x, self._n, False)
            _disjoint(result, "out", mem_out, "mem_out")
        return result, mem_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0, mem_out: F32 | None = None) -> F32:
        """Encode x (n_samples, n_channels) of stream `stream`; returns out (n_samples, n_neurons).

        mem_out, if given, receives the membranes after each sample. Neither output may overlap x.
        """
        x = _input(x, self._nc, -1, self._desc_step)
        result, mem_out = self._outputs(x, out, mem_out)
        mem = self._mem[_stream(stream, self._n_streams)]
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                mem[...] = _lif_update(mem, self._current(x[i]), self._beta, self._threshold, self._reset)
                result[i] = _heaviside(mem, self._threshold)
                if mem_out is not None:
                    mem_out[i] = mem
        return result

    def step_streams(self, x: F32, out: F32 | None = None, mem_out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x (n_streams, n_channels) -> (n_streams, n_neurons)."""
        x = _input(x, self._nc, self._n_streams, self._desc_streams)
        result, mem_out = self._outputs(x, out, mem_out)
        with np.errstate(all="ignore"):
            self._mem[...] = _lif_update(self._mem, self._current(x), self._beta, self._threshold, self._reset)
            result[...] = _heaviside(self._mem, self._threshold)
        if mem_out is not None:
            mem_out[...] = self._mem
        return result

    def reset(self) -> None:
        """Zero the membrane of every stream."""
        self._mem.fill(0.0)

    @property
    def state(self) -> F32:
        """A copy of the membranes, (n_streams, n_neurons) float32."""
        return self._mem.copy()

    @state.setter
    def state(self, value: npt.ArrayLike) -> None:
        self._mem[...] = state_array(value, "state", self._mem.shape)

    @property
    def n_channels(self) -> int:
        return self._nc

    @property
    def n_neurons_per_channel(self) -> int:
        return self._per

    @property
    def n_neurons(self) -> int:
        return self._n

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def gain(self) -> F32:
        """A copy of the per-neuron gain, (n_neurons,) float32, channel-major."""
        return self._gain.copy()

    @property
    def bias(self) -> F32:
        """A copy of the per-neuron bias, (n_neurons,) float32, channel-major."""
        return self._bias.copy()

    @property
    def beta(self) -> F32:
        """A copy of the per-neuron decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self) -> F32:
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self) -> str:
        return reset_name(self._reset)
