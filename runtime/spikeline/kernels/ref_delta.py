"""Pure-numpy references for the delta-activation layers in ext/delta.pyx (spikeline._ext.delta).

`DeltaDenseRef`, `DeltaGRURef` and `DeltaLSTMRef` have the compiled classes' constructors, methods,
properties, validation, error messages and counters, and perform the same IEEE float32 operations
in the same order, so their outputs, states and counters are bit-identical to the compiled
kernels' (setup.py builds with -ffp-contract=off for this). Read the top comment of ext/delta.pyx
for the design; in short:

- a delta d = x - x_hat is sent iff theta < |d| < inf (NaN/inf deltas are held and counted);
- persistent float32 accumulators acc = b + W x_hat, updated by acc[j] = acc[j] + W[i, j] * d_i for
  the sent i in increasing order: `np.add.accumulate` along axis 0 is exactly that left-to-right
  sequence, one float32 rounding per multiply and per add;
- the dense pass (all columns, unsent deltas are +0) and the sparse gather give identical bits;
- every `refresh_every` samples of a stream the accumulators are recomputed from x_hat;
- tanh and sigmoid are the rational approximation in `tanh_f32` / `sigmoid_f32` (basic operations
  only, so numpy and C agree bit for bit).

The loop over samples is plain Python: correct and slow. It is the fallback when the extension is
not built, and the oracle the compiled kernels are tested against.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_DENSE_ABOVE",
    "DEFAULT_REFRESH_EVERY",
    "DeltaDenseRef",
    "DeltaGRURef",
    "DeltaLSTMRef",
    "sigmoid_f32",
    "streams_arg",
    "tanh_f32",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Measured with tools/bench_delta.py and tests/test_delta.py; the same values as in ext/delta.pyx.
DEFAULT_REFRESH_EVERY: Final = 1024
DEFAULT_DENSE_ABOVE: Final = 0.875

ACTIVATIONS: Final = ("none", "relu", "tanh", "sigmoid")

_COUNTER_COLUMNS: Final = {"steps": 0, "x_sent": 1, "x_possible": 2, "h_sent": 3, "h_possible": 4,
                           "held_nonfinite": 5, "macs": 6, "macs_dense": 7, "refreshes": 8, "dense_passes": 9}
_N_COUNTERS: Final = len(_COUNTER_COLUMNS)
_DENSE_COUNTERS: Final = ("steps", "x_sent", "x_possible", "held_nonfinite", "macs", "macs_dense", "refreshes",
                          "dense_passes")
_RNN_COUNTERS: Final = tuple(_COUNTER_COLUMNS)
(_STEPS, _X_SENT, _X_POSSIBLE, _H_SENT, _H_POSSIBLE, _HELD, _MACS, _MACS_DENSE, _REFRESHES,
 _DENSE_PASSES) = range(_N_COUNTERS)

_F = np.float32
_ZERO: Final = _F(0.0)
_HALF: Final = _F(0.5)
_FLT_MAX: Final = _F(np.finfo(np.float32).max)
# [13/6] rational approximation of tanh: Eigen's generic_fast_tanh_float coefficients.
_TANH_CLAMP: Final = _F(7.90531110763549805)
_TANH_TINY: Final = _F(0.0004)
_TANH_A: Final = tuple(_F(a) for a in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                                       5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
                                       -2.76076847742355e-16))
_TANH_B: Final = tuple(_F(b) for b in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
                                       1.19825839466702e-06))


def tanh_f32(x: F32) -> F32:
    """tanh of a float32 array, exactly as the compiled kernels compute it (|error| <= 4.1e-7)."""
    a1, a3, a5, a7, a9, a11, a13 = _TANH_A
    b0, b2, b4, b6 = _TANH_B
    with np.errstate(all="ignore"):
        c = np.where(x > _TANH_CLAMP, _TANH_CLAMP, x)
        c = np.where(c < -_TANH_CLAMP, -_TANH_CLAMP, c)
        x2 = c * c
        p = x2 * a13 + a11
        for a in (a9, a7, a5, a3, a1):
            p = x2 * p + a
        p = c * p
        q = x2 * b6 + b4
        q = x2 * q + b2
        q = x2 * q + b0
        out: F32 = np.where(np.abs(x) < _TANH_TINY, x, p / q)
    return out


def sigmoid_f32(x: F32) -> F32:
    """The logistic function of a float32 array as 0.5 * tanh(0.5 x) + 0.5 (|error| <= 2.3e-7)."""
    with np.errstate(all="ignore"):
        out: F32 = _HALF * tanh_f32(_HALF * x) + _HALF
    return out


def _activate(acc: F32, act: int) -> F32:
    if act == 0:
        return acc.copy()
    if act == 1:
        relu: F32 = np.where(acc < _ZERO, _ZERO, acc)  # NaN passes, as in C
        return relu
    return tanh_f32(acc) if act == 2 else sigmoid_f32(acc)


# --- validation (same checks, same order and same messages as ext/delta.pyx) --------------------------


def _checked_out(x: object, out: object, n_rows: int, n_in: int, n_out: int, x_desc: str,
                 out_desc: str) -> F32:
    """Validate x (n_rows or any rows, n_in) float32 and out; return out, allocated if None."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.dtype(np.float32):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D with shape {x_desc}, got shape {x.shape}")
    if x.shape[1] != n_in or (n_rows >= 0 and x.shape[0] != n_rows):
        raise ValueError(f"x must have shape {x_desc}, got {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not x.flags.aligned:
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    n = x.shape[0]
    if out is None:
        return np.empty((n, n_out), dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.dtype != np.dtype(np.float32):
        raise TypeError(f"out must have dtype float32 in native byte order, got {out.dtype}")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] != n_out:
        raise ValueError(f"out must have shape {out_desc} = ({n}, {n_out}), got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError("out must be C-contiguous, aligned and writeable")
    # Row s of x is read completely before row s of out is written, so out may be x itself when the
    # rows have the same length; any other overlap would read overwritten samples.
    xs, os, xn, on = x.ctypes.data, out.ctypes.data, x.nbytes, out.nbytes
    if not (xs == os and n_in == n_out) and xs < os + on and os < xs + xn:
        raise ValueError("out must be x itself (in-place, same shape) or must not overlap x")
    result: F32 = out
    return result


def _matrix(value: npt.ArrayLike, name: str, shape: tuple[int, ...]) -> F32:
    """value as a C-contiguous float32 copy of the given shape, finite."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    with np.errstate(over="ignore"):
        out: F32 = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite in float32, got NaN, inf or a value beyond float32 range")
    return out


def _bias(value: npt.ArrayLike | None, name: str, n: int) -> F32:
    """A float32 bias of length n (zeros for None), with -0.0 mapped to +0.0."""
    if value is None:
        return np.zeros(n, dtype=np.float32)
    out: F32 = _matrix(value, name, (n,)) + _ZERO
    return out


def _threshold(value: float, name: str) -> np.float32:
    theta = float(value)
    if not (math.isfinite(theta) and theta >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return _F(theta + 0.0)  # -0.0 -> +0.0, as the compiled kernel (which compares bit patterns)


def _positive(value: int, name: str, minimum: int) -> int:
    v = operator.index(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _dense_min(dense_above: float, n_in: int) -> int:
    """The largest nnz that still takes the sparse path."""
    frac = float(dense_above)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"dense_above must be in [0, 1], got {dense_above!r}")
    return math.floor(frac * n_in)


def _checked_stream(stream: int, n_streams: int) -> int:
    if stream < 0 or stream >= n_streams:
        raise ValueError(f"stream must be in [0, {n_streams}), got {stream}")
    return stream


def streams_arg(streams: object, n_streams: int) -> npt.NDArray[np.intp]:
    """The `streams` of step_streams(..., streams=...) as a fresh 1-d intp array of distinct indices.

    Shared by every kernel with a leading stream dimension that can advance a subset of its streams
    (L2MUCell, DeltaDense, DeltaGRU, DeltaLSTM) and by their compiled twins, so both backends accept
    and refuse the same subsets with the same messages. Any order, any length m >= 0; an integer
    array-like (an empty list is accepted whatever its dtype). Checked in two passes, each naming
    its first offender: every index in [0, n_streams), then no index twice. The result is a copy,
    so the caller may release the GIL while reading it.
    """
    arr = np.asarray(streams)
    if arr.ndim != 1:
        raise ValueError(f"streams must be a 1-d array of stream indices, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.intp)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"streams must hold integer stream indices, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_streams))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"streams must be in [0, {n_streams}), got {int(arr[j])} at position {j}")
    idx: npt.NDArray[np.intp] = np.array(arr, dtype=np.intp, order="C", copy=True)
    seen = np.zeros(n_streams, dtype=np.bool_)
    seen[idx] = True
    if np.count_nonzero(seen) != idx.size:
        _, first = np.unique(idx, return_index=True)
        repeated = np.ones(idx.size, dtype=np.bool_)
        repeated[first] = False
        j = int(np.flatnonzero(repeated)[0])
        k = int(np.flatnonzero(idx == idx[j])[0])
        raise ValueError(f"streams must be distinct, got stream {int(idx[j])} at positions {k} and {j}")
    return idx


def _set_state(live: dict[str, npt.NDArray[Any]], value: object) -> None:
    """Validate every entry of a state dict, then copy it into the live arrays (all or nothing)."""
    if not isinstance(value, dict):
        raise TypeError(f"state must be a dict with keys {list(live)}, got {type(value).__name__}")
    if set(value) != set(live):
        raise ValueError(f"state must have exactly the keys {list(live)}, got {list(value)}")
    staged: dict[str, npt.NDArray[Any]] = {}
    for name, target in live.items():
        arr = np.asarray(value[name])
        if name == "t":
            if arr.dtype.kind not in "iu":
                raise TypeError(f"state['t'] must be an integer array, got dtype {arr.dtype}")
            if arr.shape != target.shape:
                raise ValueError(f"state['t'] must have shape {target.shape}, got {arr.shape}")
            if (arr < 0).any():
                raise ValueError("state['t'] must be >= 0")
        else:
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"state[{name!r}] must be a real numeric array, got dtype {arr.dtype}")
            if arr.shape != target.shape:
                raise ValueError(f"state[{name!r}] must have shape {target.shape}, got {arr.shape}")
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"state[{name!r}] must be finite in float32")
            if name.startswith("acc"):
                arr = arr + _ZERO  # no negative zeros in an accumulator (see ext/delta.pyx)
        staged[name] = arr
    for name, arr in staged.items():
        live[name][...] = arr


def _counter_dict(rows: I64, names: tuple[str, ...]) -> dict[str, int]:
    totals = rows.sum(axis=0) if rows.ndim == 2 else rows
    return {name: int(totals[_COUNTER_COLUMNS[name]]) for name in names}


# --- the arithmetic ----------------------------------------------------------------------------------


class _Layer:
    """One delta-coded matrix: W transposed (n_in, n_out), bias, theta and the path threshold."""

    def __init__(self, wt: F32, bias: F32, theta: np.float32, dense_min: int) -> None:
        self.wt = wt
        self.bias = bias
        self.theta = theta
        self.dense_min = dense_min
        self.n_in, self.n_out = wt.shape

    def encode(self, x: F32, xhat: F32, cnt: I64) -> tuple[F32, npt.NDArray[np.intp]]:
        """Delta-code x against xhat (updated in place); (d with +0 where unsent, sent indices)."""
        with np.errstate(all="ignore"):
            d = x - xhat
            ad = np.abs(d)
        finite = ad <= _FLT_MAX
        send = (ad > self.theta) & finite
        xhat[send] = x[send]
        cnt[_HELD] += np.count_nonzero(~finite)
        sent_d: F32 = np.where(send, d, _ZERO)
        return sent_d, np.flatnonzero(send)

    @staticmethod
    def _accumulate(acc: F32, rows: F32, dv: F32) -> None:
        """acc[j] = acc[j] + rows[k, j] * dv[k] for k = 0, 1, ... in order, in float32."""
        stack = np.empty((rows.shape[0] + 1, acc.shape[0]), dtype=np.float32)
        stack[0] = acc
        with np.errstate(all="ignore"):
            np.multiply(rows, dv[:, np.newaxis], out=stack[1:])
            acc[...] = np.add.accumulate(stack, axis=0)[-1]

    def update(self, acc: F32, d: F32, idx: npt.NDArray[np.intp], cnt: I64) -> int:
        """Add the sent deltas by the path the compiled kernel takes; return the MACs."""
        nnz = idx.size
        if nnz == 0:
            return 0
        if nnz > self.dense_min:
            self._accumulate(acc, self.wt, d)
            cnt[_DENSE_PASSES] += 1
            return int(self.n_in * self.n_out)
        self._accumulate(acc, self.wt[idx], d[idx])
        return int(nnz * self.n_out)

    def refresh(self, acc: F32, xhat: F32) -> int:
        acc[...] = self.bias + _ZERO
        self._accumulate(acc, self.wt, xhat)
        return int(self.n_in * self.n_out)


def _is_refresh(t: I64, k: int, refresh_every: int) -> bool:
    t[k] += 1
    return refresh_every > 0 and int(t[k]) % refresh_every == 0


# --- DeltaDense ---------------------------------------------------------------------------------------


class DeltaDenseRef:
    """y = act(W x + b), computed incrementally from the input deltas, for n_streams streams.

    weight is (out_features, in_features) as in torch.nn.Linear (stored transposed), bias
    (out_features,) or None. theta: a delta is sent iff theta < |x - x_hat| < inf. refresh_every:
    recompute the accumulator exactly every that many samples of a stream (0: never). dense_above:
    take the dense pass when more than this fraction of the inputs sent a delta.
    activation: "none", "relu", "tanh" or "sigmoid".
    """

    def __init__(self, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None, theta: float = 0.0,
                 n_streams: int = 1, refresh_every: int = DEFAULT_REFRESH_EVERY,
                 dense_above: float = DEFAULT_DENSE_ABOVE, activation: str = "none") -> None:
        w0 = np.asarray(weight)
        if w0.ndim != 2 or w0.shape[0] < 1 or w0.shape[1] < 1:
            raise ValueError(f"weight must have shape (out_features, in_features), both >= 1, got {w0.shape}")
        n_out, n_in = int(w0.shape[0]), int(w0.shape[1])
        w = _matrix(w0, "weight", (n_out, n_in))
        b = _bias(bias, "bias", n_out)
        th = _threshold(theta, "theta")
        ns = _positive(n_streams, "n_streams", 1)
        re = _positive(refresh_every, "refresh_every", 0)
        dmin = _dense_min(dense_above, n_in)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self._n_in, self._n_out, self._n_streams, self._refresh_every = n_in, n_out, ns, re
        self._act = ACTIVATIONS.index(activation)
        self._dense_above = float(dense_above)
        self._layer = _Layer(np.ascontiguousarray(w.T), b, th, dmin)
        self._b = b
        self._xhat: F32 = np.zeros((ns, n_in), dtype=np.float32)
        self._acc: F32 = np.zeros((ns, n_out), dtype=np.float32)
        self._acc[...] = b
        self._t: I64 = np.zeros(ns, dtype=np.int64)
        self._cnt: I64 = np.zeros((ns, _N_COUNTERS), dtype=np.int64)
        self._x_desc = f"(n_samples, in_features={n_in})"
        self._out_desc = f"(n_samples, out_features={n_out})"
        self._xs_desc = f"(n_streams={ns}, in_features={n_in})"
        self._outs_desc = f"(n_streams={ns}, out_features={n_out})"

    def _run(self, x: F32, y: F32, k: int) -> None:
        """Samples x (n, in_features) of stream k -> y (n, out_features); as _dense_run in C."""
        layer, cnt, xhat, acc = self._layer, self._cnt[k], self._xhat[k], self._acc[k]
        n = x.shape[0]
        for s in range(n):
            d, idx = layer.encode(x[s], xhat, cnt)
            cnt[_X_SENT] += idx.size
            if _is_refresh(self._t, k, self._refresh_every):
                cnt[_MACS] += layer.refresh(acc, xhat)
                cnt[_REFRESHES] += 1
            else:
                cnt[_MACS] += layer.update(acc, d, idx, cnt)
            y[s] = _activate(acc, self._act)
        cnt[_STEPS] += n
        cnt[_X_POSSIBLE] += n * self._n_in
        cnt[_MACS_DENSE] += n * self._n_in * self._n_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0) -> F32:
        """Process a chunk x (n_samples, in_features) float32 of one stream; returns y (n_samples,
        out_features)."""
        stream = operator.index(stream)
        result = _checked_out(x, out, -1, self._n_in, self._n_out, self._x_desc, self._out_desc)
        k = _checked_stream(stream, self._n_streams)
        self._run(x, result, k)
        return result

    def step_streams(self, x: F32, out: F32 | None = None, streams: npt.ArrayLike | None = None) -> F32:
        """Advance every stream by one sample: x is (n_streams, in_features), row k for stream k.

        streams (distinct indices, any order, m >= 0 of them): advance only those; x and the result
        are (m, ...), row j for stream streams[j]. The same as step(x[j:j+1], stream=streams[j])
        for each j (streams are independent); every argument is checked before any state changes.
        """
        if streams is None:
            result = _checked_out(x, out, self._n_streams, self._n_in, self._n_out, self._xs_desc,
                                  self._outs_desc)
            for k in range(self._n_streams):
                self._run(x[k : k + 1], result[k : k + 1], k)
            return result
        sel = streams_arg(streams, self._n_streams)
        m = sel.size
        result = _checked_out(x, out, m, self._n_in, self._n_out, f"(len(streams)={m}, in_features={self._n_in})",
                              f"(len(streams)={m}, out_features={self._n_out})")
        for j in range(m):
            self._run(x[j : j + 1], result[j : j + 1], int(sel[j]))
        return result

    def reset(self) -> None:
        """Every stream back to the start: x_hat = 0, acc = bias, t = 0 (counters are kept)."""
        self._xhat.fill(0.0)
        self._acc[...] = self._b
        self._t.fill(0)

    @property
    def state(self) -> dict[str, npt.NDArray[Any]]:
        """A copy of the state: {"x_hat": (n_streams, in_features) float32, "acc": (n_streams,
        out_features) float32 (= bias + W x_hat up to rounding), "t": (n_streams,) int64 samples since
        reset}. Assign a dict with exactly these keys to restore it."""
        return {"x_hat": self._xhat.copy(), "acc": self._acc.copy(), "t": self._t.copy()}

    @state.setter
    def state(self, value: dict[str, npt.ArrayLike]) -> None:
        _set_state({"x_hat": self._xhat, "acc": self._acc, "t": self._t}, value)

    @property
    def counters(self) -> dict[str, int]:
        """Counters summed over the streams (see stream_counters)."""
        return _counter_dict(self._cnt, _DENSE_COUNTERS)

    def stream_counters(self, stream: int) -> dict[str, int]:
        """One stream's counters: steps, x_sent / x_possible (input deltas), held_nonfinite, macs
        (multiply-accumulates done, refreshes included) / macs_dense (a dense layer's), refreshes,
        dense_passes (updates that took the dense path)."""
        stream = operator.index(stream)
        return _counter_dict(self._cnt[_checked_stream(stream, self._n_streams)], _DENSE_COUNTERS)

    def reset_counters(self) -> None:
        self._cnt.fill(0)

    @property
    def in_features(self) -> int:
        return self._n_in

    @property
    def out_features(self) -> int:
        return self._n_out

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def theta(self) -> float:
        return float(self._layer.theta)

    @property
    def refresh_every(self) -> int:
        return self._refresh_every

    @property
    def dense_above(self) -> float:
        return self._dense_above

    @property
    def activation(self) -> str:
        return ACTIVATIONS[self._act]

    @property
    def weight(self) -> F32:
        """A copy of the (out_features, in_features) float32 weights."""
        return self._layer.wt.T.copy()

    @property
    def bias(self) -> F32:
        """A copy of the (out_features,) float32 bias."""
        return self._b.copy()


# --- DeltaGRU / DeltaLSTM -------------------------------------------------------------------------------


class _DeltaRNNRef:
    """Shared machinery of DeltaGRURef (3 gates) and DeltaLSTMRef (4 gates)."""

    def __init__(self, lstm: bool, input_size: int, hidden_size: int, weight_ih: npt.ArrayLike,
                 weight_hh: npt.ArrayLike, bias_ih: npt.ArrayLike | None, bias_hh: npt.ArrayLike | None,
                 theta_x: float, theta_h: float, n_streams: int, refresh_every: int, dense_above: float) -> None:
        n_in = _positive(input_size, "input_size", 1)
        hid = _positive(hidden_size, "hidden_size", 1)
        g = 4 if lstm else 3
        wih = _matrix(weight_ih, "weight_ih", (g * hid, n_in))
        whh = _matrix(weight_hh, "weight_hh", (g * hid, hid))
        bih = _bias(bias_ih, "bias_ih", g * hid)
        bhh = _bias(bias_hh, "bias_hh", g * hid)
        thx = _threshold(theta_x, "theta_x")
        thh = _threshold(theta_h, "theta_h")
        ns = _positive(n_streams, "n_streams", 1)
        re = _positive(refresh_every, "refresh_every", 0)
        dmin_x = _dense_min(dense_above, n_in)
        dmin_h = _dense_min(dense_above, hid)
        self._lstm = lstm
        self._n_in, self._hidden, self._n_streams, self._refresh_every = n_in, hid, ns, re
        self._dense_above = float(dense_above)
        self._lx = _Layer(np.ascontiguousarray(wih.T), bih, thx, dmin_x)
        self._lh = _Layer(np.ascontiguousarray(whh.T), bhh, thh, dmin_h)
        self._xhat: F32 = np.zeros((ns, n_in), dtype=np.float32)
        self._h: F32 = np.zeros((ns, hid), dtype=np.float32)
        self._hhat: F32 = np.zeros((ns, hid), dtype=np.float32)
        self._c: F32 = np.zeros((ns, hid), dtype=np.float32)
        self._acc_x: F32 = np.zeros((ns, g * hid), dtype=np.float32)
        self._acc_h: F32 = np.zeros((ns, g * hid), dtype=np.float32)
        self._acc_x[...] = bih
        self._acc_h[...] = bhh
        self._t: I64 = np.zeros(ns, dtype=np.int64)
        self._cnt: I64 = np.zeros((ns, _N_COUNTERS), dtype=np.int64)
        self._x_desc = f"(n_samples, input_size={n_in})"
        self._out_desc = f"(n_samples, hidden_size={hid})"
        self._xs_desc = f"(n_streams={ns}, input_size={n_in})"
        self._outs_desc = f"(n_streams={ns}, hidden_size={hid})"

    def _gates(self, ax: F32, ah: F32, k: int) -> None:
        """torch's GRUCell / LSTMCell gate equations on the accumulators; updates h (and c) of stream k."""
        hid, h = self._hidden, self._h[k]
        with np.errstate(all="ignore"):
            if self._lstm:
                ig = sigmoid_f32(ax[:hid] + ah[:hid])
                fg = sigmoid_f32(ax[hid : 2 * hid] + ah[hid : 2 * hid])
                gg = tanh_f32(ax[2 * hid : 3 * hid] + ah[2 * hid : 3 * hid])
                og = sigmoid_f32(ax[3 * hid :] + ah[3 * hid :])
                c = fg * self._c[k] + ig * gg
                self._c[k] = c
                h[...] = og * tanh_f32(c)
            else:
                r = sigmoid_f32(ax[:hid] + ah[:hid])
                z = sigmoid_f32(ax[hid : 2 * hid] + ah[hid : 2 * hid])
                n = tanh_f32(ax[2 * hid :] + r * ah[2 * hid :])
                h[...] = n + z * (h - n)

    def _run(self, x: F32, y: F32, k: int) -> None:
        """Samples x (n, input_size) of stream k -> y (n, hidden_size); as _rnn_run in C."""
        lx, lh, cnt = self._lx, self._lh, self._cnt[k]
        xhat, h, hhat, acc_x, acc_h = self._xhat[k], self._h[k], self._hhat[k], self._acc_x[k], self._acc_h[k]
        n = x.shape[0]
        for s in range(n):
            dx, ix = lx.encode(x[s], xhat, cnt)
            dh, ih = lh.encode(h, hhat, cnt)
            cnt[_X_SENT] += ix.size
            cnt[_H_SENT] += ih.size
            if _is_refresh(self._t, k, self._refresh_every):
                cnt[_MACS] += lx.refresh(acc_x, xhat) + lh.refresh(acc_h, hhat)
                cnt[_REFRESHES] += 1
            else:
                cnt[_MACS] += lx.update(acc_x, dx, ix, cnt) + lh.update(acc_h, dh, ih, cnt)
            self._gates(acc_x, acc_h, k)
            y[s] = h
        cnt[_STEPS] += n
        cnt[_X_POSSIBLE] += n * self._n_in
        cnt[_H_POSSIBLE] += n * self._hidden
        cnt[_MACS_DENSE] += n * (self._n_in + self._hidden) * lx.n_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0) -> F32:
        """Process a chunk x (n_samples, input_size) float32 of one stream; returns h (n_samples,
        hidden_size)."""
        stream = operator.index(stream)
        result = _checked_out(x, out, -1, self._n_in, self._hidden, self._x_desc, self._out_desc)
        k = _checked_stream(stream, self._n_streams)
        self._run(x, result, k)
        return result

    def step_streams(self, x: F32, out: F32 | None = None, streams: npt.ArrayLike | None = None) -> F32:
        """Advance every stream by one sample: x is (n_streams, input_size), row k for stream k; returns h.

        streams (distinct indices, any order, m >= 0 of them): advance only those; x and h are
        (m, ...), row j for stream streams[j]. The same as step(x[j:j+1], stream=streams[j]) for each
        j: each stream's sample index t (its refresh schedule) and counters advance only when it
        steps. Every argument is checked before any state changes.
        """
        if streams is None:
            result = _checked_out(x, out, self._n_streams, self._n_in, self._hidden, self._xs_desc,
                                  self._outs_desc)
            for k in range(self._n_streams):
                self._run(x[k : k + 1], result[k : k + 1], k)
            return result
        sel = streams_arg(streams, self._n_streams)
        m = sel.size
        result = _checked_out(x, out, m, self._n_in, self._hidden, f"(len(streams)={m}, input_size={self._n_in})",
                              f"(len(streams)={m}, hidden_size={self._hidden})")
        for j in range(m):
            self._run(x[j : j + 1], result[j : j + 1], int(sel[j]))
        return result

    def reset(self) -> None:
        """Every stream back to the start: x_hat, h, h_hat (and c) = 0, acc = biases, t = 0 (counters
        are kept)."""
        self._xhat.fill(0.0)
        self._h.fill(0.0)
        self._hhat.fill(0.0)
        self._c.fill(0.0)
        self._acc_x[...] = self._lx.bias
        self._acc_h[...] = self._lh.bias
        self._t.fill(0)

    def _live(self) -> dict[str, npt.NDArray[Any]]:
        live: dict[str, npt.NDArray[Any]] = {"x_hat": self._xhat, "h": self._h, "h_hat": self._hhat}
        if self._lstm:
            live["c"] = self._c
        live["acc_x"] = self._acc_x
        live["acc_h"] = self._acc_h
        live["t"] = self._t
        return live

    @property
    def state(self) -> dict[str, npt.NDArray[Any]]:
        """A copy of the state, a dict of arrays with a leading stream dimension: "x_hat" (n_streams,
        input_size), "h" and "h_hat" (n_streams, hidden_size), DeltaLSTM also "c" (n_streams,
        hidden_size), "acc_x" = b_ih + W_ih x_hat and "acc_h" = b_hh + W_hh h_hat (n_streams,
        G * hidden_size; up to rounding), all float32, and "t" (n_streams,) int64 samples since reset.
        Assign a dict with exactly these keys to restore it."""
        return {name: arr.copy() for name, arr in self._live().items()}

    @state.setter
    def state(self, value: dict[str, npt.ArrayLike]) -> None:
        _set_state(self._live(), value)

    @property
    def counters(self) -> dict[str, int]:
        """Counters summed over the streams (see stream_counters)."""
        return _counter_dict(self._cnt, _RNN_COUNTERS)

    def stream_counters(self, stream: int) -> dict[str, int]:
        """One stream's counters: steps, x_sent / x_possible (input deltas), h_sent / h_possible
        (hidden deltas), held_nonfinite, macs (multiply-accumulates done, refreshes included) /
        macs_dense (a dense cell's), refreshes, dense_passes (matrix updates that took the dense path)."""
        stream = operator.index(stream)
        return _counter_dict(self._cnt[_checked_stream(stream, self._n_streams)], _RNN_COUNTERS)

    def reset_counters(self) -> None:
        self._cnt.fill(0)

    @property
    def input_size(self) -> int:
        return self._n_in

    @property
    def hidden_size(self) -> int:
        return self._hidden

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def theta_x(self) -> float:
        return float(self._lx.theta)

    @property
    def theta_h(self) -> float:
        return float(self._lh.theta)

    @property
    def refresh_every(self) -> int:
        return self._refresh_every

    @property
    def dense_above(self) -> float:
        return self._dense_above

    @property
    def weight_ih(self) -> F32:
        """A copy of the (G * hidden_size, input_size) float32 input weights, torch layout."""
        return self._lx.wt.T.copy()

    @property
    def weight_hh(self) -> F32:
        """A copy of the (G * hidden_size, hidden_size) float32 hidden weights, torch layout."""
        return self._lh.wt.T.copy()

    @property
    def bias_ih(self) -> F32:
        return self._lx.bias.copy()

    @property
    def bias_hh(self) -> F32:
        return self._lh.bias.copy()


class DeltaGRURef(_DeltaRNNRef):
    """torch.nn.GRUCell (gates r, z, n) with delta-coded input (theta_x) and hidden state (theta_h).

    weight_ih (3H, input_size), weight_hh (3H, H), bias_ih / bias_hh (3H,) or None: torch's layout
    and gate order (cell.weight_ih.detach().numpy() etc.). n_streams independent hidden states.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike,
                 bias_ih: npt.ArrayLike | None = None, bias_hh: npt.ArrayLike | None = None, theta_x: float = 0.0,
                 theta_h: float = 0.0, n_streams: int = 1, refresh_every: int = DEFAULT_REFRESH_EVERY,
                 dense_above: float = DEFAULT_DENSE_ABOVE) -> None:
        super().__init__(False, input_size, hidden_size, weight_ih, weight_hh, bias_ih, bias_hh, theta_x, theta_h,
                         n_streams, refresh_every, dense_above)


class DeltaLSTMRef(_DeltaRNNRef):
    """torch.nn.LSTMCell (gates i, f, g, o) with delta-coded input (theta_x) and hidden state (theta_h).

    weight_ih (4H, input_size), weight_hh (4H, H), bias_ih / bias_hh (4H,) or None: torch's layout
    and gate order. The cell state c is updated exactly every step (it is not delta-coded).
    """

    def __init__(self, input_size: int, hidden_size: int, weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike,
                 bias_ih: npt.ArrayLike | None = None, bias_hh: npt.ArrayLike | None = None, theta_x: float = 0.0,
                 theta_h: float = 0.0, n_streams: int = 1, refresh_every: int = DEFAULT_REFRESH_EVERY,
                 dense_above: float = DEFAULT_DENSE_ABOVE) -> None:
        super().__init__(True, input_size, hidden_size, weight_ih, weight_hh, bias_ih, bias_hh, theta_x, theta_h,
                         n_streams, refresh_every, dense_above)
