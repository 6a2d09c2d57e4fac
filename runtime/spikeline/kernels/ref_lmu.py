"""Pure-numpy references for the Legendre Memory Unit kernels in ext/lmu.pyx.

`LegendreMemoryRef` and `LMUCellRef` have the compiled classes' constructors, methods,
properties, validation and error messages, and perform the same IEEE operations in the same order,
so their outputs and states are bit-identical to the compiled kernels': float32 matrices, weights,
inputs and states; every sum accumulated in double, in the order bias (or B̄ u), then the input
elements 0, 1, 2, ...; one rounding to float32 when a value is stored; tanh from the C library
(math.tanh) in double. The loop over samples is plain Python, vectorised over channels, outputs
and streams: correct and slow. See ext/lmu.pyx for the conventions (Ā vs Āᵀ) and the reasons.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from spikeline.kernels.lmu_matrices import (
    cell_params,
    check_stream,
    float32_state,
    memory_params,
)

__all__ = ["LMUCellRef", "LegendreMemoryRef"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _checked_io(x: object, out: object, n_rows: int, in_width: int, out_width: int, shape_desc: str) -> F32:
    """Validate x (n, in_width) and out (n, out_width), float32; return out, allocated if None.

    n_rows < 0: any number of rows. Same checks, same order, same messages as ext/lmu.pyx.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.dtype(np.float32):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}; "
                        "convert it with x.astype(np.float32)")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
    if x.shape[1] != in_width or (n_rows >= 0 and x.shape[0] != n_rows):
        raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not x.flags.aligned:
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    expected = (x.shape[0], out_width)
    if out is None:
        return np.empty(expected, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.dtype != np.dtype(np.float32):
        raise TypeError(f"out must have dtype float32 in native byte order, got {out.dtype}")
    if out.shape != expected:
        raise ValueError(f"out must have shape {expected}, got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError("out must be C-contiguous, aligned and writeable")
    xs, os = x.ctypes.data, out.ctypes.data
    if xs < os + out.nbytes and os < xs + x.nbytes:
        raise ValueError("out must not overlap x")
    result: F32 = out
    return result


def _ordered_matvec(first: F64, wt: F64, v: F64) -> F64:
    """first + W v, summed as first, then the terms of v[..., 0], v[..., 1], ...: the C loops' order.

    wt (n_in, n_out) is Wᵀ, v (..., n_in), first (..., n_out). np.add.accumulate adds the stacked
    terms one at a time, left to right, exactly like the kernel's `acc[o] = acc[o] + w * v[j]`
    (np.sum and BLAS would sum in another order); each product is one IEEE double multiply.
    """
    n_in = wt.shape[0]
    batch = v.shape[:-1]
    terms = np.empty((n_in + 1, *batch, wt.shape[1]), dtype=np.float64)
    terms[0] = first
    terms[1:] = wt.reshape(n_in, *((1,) * len(batch)), wt.shape[1]) * np.moveaxis(v, -1, 0)[..., np.newaxis]
    result: F64 = np.add.accumulate(terms, axis=0)[-1]
    return result


def _memory_update(m: F32, u: F64, mt64: F64, b64: F64) -> F32:
    """The memories m (..., order) after m <- M m + B̄ u, with u (...,): accumulated in double, rounded once."""
    acc = _ordered_matvec(b64 * u[..., np.newaxis], mt64, m.astype(np.float64))
    updated: F32 = acc.astype(np.float32)
    return updated


def _tanh(z: F64) -> F64:
    """tanh of every element by the C library's tanh (math.tanh), as the compiled kernel calls it."""
    result: F64 = np.array([math.tanh(t) for t in z.ravel().tolist()], dtype=np.float64).reshape(z.shape)
    return result


class LegendreMemoryRef:
    """Per-channel Legendre memories: n_channels independent LMU memories of `order` coefficients.

    Every sample, each channel's memory m (order,) is updated m <- Ā m + B̄ u with u that
    channel's input (transpose=True: m <- Āᵀ m + B̄ u, the public L2MU training code's
    convention). theta is the window length in samples (dt = 1). x (n, n_channels) float32 gives
    out (n, n_channels * order) float32, channel-major: channel c's memory is in columns
    c * order:(c + 1) * order. Each of n_streams streams keeps its own state.
    """

    def __init__(self, n_channels: int, order: int, theta: float, transpose: bool = False,
                 n_streams: int = 1) -> None:
        p = memory_params(n_channels, order, theta, transpose, n_streams)
        self._n_channels = p.n_channels
        self._order = p.order
        self._theta = p.theta
        self._transpose = p.transpose
        self._n_streams = p.n_streams
        self._a_bar = p.a_bar
        self._b_bar = p.b_bar
        self._mt64: F64 = p.mt.astype(np.float64)
        self._b64: F64 = p.b_bar.astype(np.float64)
        self._state: F32 = np.zeros((p.n_streams, p.n_channels, p.order), dtype=np.float32)

    def step(self, x: F32, out: F32 | None = None, stream: int = 0) -> F32:
        """Update stream `stream` with a chunk x (n, n_channels); returns out (n, n_channels * order)."""
        result = _checked_io(x, out, -1, self._n_channels, self._n_channels * self._order,
                             f"(n_samples, {self._n_channels})")
        stream = check_stream(stream, self._n_streams)
        with np.errstate(all="ignore"):  # NaN/inf input and float32 overflow are data, not errors (as in C)
            for t in range(x.shape[0]):
                m = _memory_update(self._state[stream], x[t].astype(np.float64), self._mt64, self._b64)
                self._state[stream] = m
                result[t] = m.reshape(-1)
        return result

    def step_streams(self, x: F32, out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x (n_streams, n_channels), row k for stream k."""
        result = _checked_io(x, out, self._n_streams, self._n_channels, self._n_channels * self._order,
                             f"(n_streams={self._n_streams}, n_channels={self._n_channels})")
        with np.errstate(all="ignore"):
            self._state[...] = _memory_update(self._state, x.astype(np.float64), self._mt64, self._b64)
        result[...] = self._state.reshape(self._n_streams, -1)
        return result

    def reset(self, stream: int = -1) -> None:
        """Zero the memories of one stream, or of every stream (stream=-1)."""
        k = check_stream(stream, self._n_streams, allow_all=True)
        if k == -1:
            self._state.fill(0.0)
        else:
            self._state[k] = 0.0

    @property
    def state(self) -> F32:
        """A copy of the memories, (n_streams, n_channels, order) float32."""
        return self._state.copy()

    @state.setter
    def state(self, value: npt.ArrayLike) -> None:
        self._state[...] = float32_state(value, "state", self._state.shape)

    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def order(self) -> int:
        return self._order

    @property
    def theta(self) -> float:
        return self._theta

    @property
    def transpose(self) -> bool:
        return self._transpose

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def A_bar(self) -> F32:
        """A copy of Ā (order, order) as used, rounded to float32 (Ā itself even if transpose)."""
        return self._a_bar.copy()

    @property
    def B_bar(self) -> F32:
        """A copy of B̄ (order,) as used, rounded to float32."""
        return self._b_bar.copy()


class LMUCellRef:
    """The LMU cell of Voelker et al. (2019), with memory_d memories of `order` coefficients.

    Per sample, with x (n_inputs,), the hidden state h (n_hidden,) and the memories m
    (memory_d, order) flattened memory-major to (memory_d * order,):
        u = e_x x + e_h h + e_m m + b_u                 (memory_d,), old h and old m
        m_k <- Ā m_k + B̄ u_k, k < memory_d              (transpose=True: Āᵀ)
        h = tanh(W_x x + W_h h + W_m m + b_h)           new m, old h
    and h is the output. Weights are float32 in (out, in) orientation, like torch.nn.Linear.weight
    (keras-lmu's kernels are the transposes). e_h, e_m, W_x, W_h and the biases may be None: no
    such connection. keras-lmu's LMUCell with hidden_to_memory, memory_to_memory,
    input_to_hidden, use_bias and a tanh SimpleRNNCell is this cell. theta is in samples.
    """

    def __init__(self, n_inputs: int, n_hidden: int, order: int, theta: float, *, e_x: F32,
                 e_h: F32 | None = None, e_m: F32 | None = None, W_x: F32 | None = None,
                 W_h: F32 | None = None, W_m: F32, b_u: F32 | None = None, b_h: F32 | None = None,
                 memory_d: int = 1, transpose: bool = False, n_streams: int = 1) -> None:
        p = cell_params(n_inputs, n_hidden, order, theta, e_x, e_h, e_m, W_x, W_h, W_m, b_u, b_h,
                        memory_d, transpose, n_streams)
        self._p = p
        self._n_in, self._n_h, self._order, self._md = p.n_inputs, p.n_hidden, p.order, p.memory_d
        self._n_streams = p.n_streams
        self._mt64: F64 = p.mt.astype(np.float64)
        self._bbar64: F64 = p.b_bar.astype(np.float64)
        self._ut64: F64 = p.ut.astype(np.float64)
        self._ht64: F64 = p.ht.astype(np.float64)
        self._bu64: F64 = p.b_u.astype(np.float64)
        self._bh64: F64 = p.b_h.astype(np.float64)
        # [x | h | m] per stream, the compiled kernel's layout
        self._v: F32 = np.zeros((p.n_streams, p.n_inputs + p.n_hidden + p.memory_d * p.order), dtype=np.float32)

    def _sample(self, v: F32, x: F32) -> None:
        """One sample for the rows v (..., n_v) with inputs x (..., n_inputs), in place (h, m)."""
        n_in, n_h = self._n_in, self._n_h
        lead = v.shape[:-1]
        v[..., :n_in] = x
        u = _ordered_matvec(np.broadcast_to(self._bu64, (*lead, self._md)), self._ut64, v.astype(np.float64))
        m = v[..., n_in + n_h:].reshape(*lead, self._md, self._order)
        v[..., n_in + n_h:] = _memory_update(m, u, self._mt64, self._bbar64).reshape(*lead, -1)
        z = _ordered_matvec(np.broadcast_to(self._bh64, (*lead, n_h)), self._ht64, v.astype(np.float64))
        v[..., n_in:n_in + n_h] = _tanh(z).astype(np.float32)

    def step(self, x: F32, out: F32 | None = None, stream: int = 0) -> F32:
        """Run stream `stream` over a chunk x (n, n_inputs); returns h for every sample, out (n, n_hidden)."""
        result = _checked_io(x, out, -1, self._n_in, self._n_h, f"(n_samples, {self._n_in})")
        stream = check_stream(stream, self._n_streams)
        v = self._v[stream]
        with np.errstate(all="ignore"):
            for t in range(x.shape[0]):
                self._sample(v, x[t])
                result[t] = v[self._n_in:self._n_in + self._n_h]
        return result

    def step_streams(self, x: F32, out: F32 | None = None) -> F32:
        """Advance every stream by one sample: x (n_streams, n_inputs), row k for stream k."""
        result = _checked_io(x, out, self._n_streams, self._n_in, self._n_h,
                             f"(n_streams={self._n_streams}, n_inputs={self._n_in})")
        with np.errstate(all="ignore"):
            self._sample(self._v, x)
        result[...] = self._v[:, self._n_in:self._n_in + self._n_h]
        return result

    def reset(self, stream: int = -1) -> None:
        """Zero h and m of one stream, or of every stream (stream=-1)."""
        k = check_stream(stream, self._n_streams, allow_all=True)
        if k == -1:
            self._v.fill(0.0)
        else:
            self._v[k] = 0.0

    @property
    def state(self) -> tuple[F32, F32]:
        """Copies (h, m): h (n_streams, n_hidden) and m (n_streams, memory_d, order), float32."""
        h = self._v[:, self._n_in:self._n_in + self._n_h].copy()
        m = self._v[:, self._n_in + self._n_h:].reshape(self._n_streams, self._md, self._order)
        return h, m.copy()

    @state.setter
    def state(self, value: Any) -> None:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"state must be a pair (h, m), got {type(value).__name__}")
        if len(value) != 2:
            raise ValueError(f"state must be a pair (h, m), got {len(value)} items")
        h = float32_state(value[0], "state h", (self._n_streams, self._n_h))
        m = float32_state(value[1], "state m", (self._n_streams, self._md, self._order))
        self._v[:, self._n_in:self._n_in + self._n_h] = h
        self._v[:, self._n_in + self._n_h:] = m.reshape(self._n_streams, self._md * self._order)

    @property
    def n_inputs(self) -> int:
        return self._n_in

    @property
    def n_hidden(self) -> int:
        return self._n_h

    @property
    def order(self) -> int:
        return self._order

    @property
    def theta(self) -> float:
        return self._p.theta

    @property
    def memory_d(self) -> int:
        return self._md

    @property
    def transpose(self) -> bool:
        return self._p.transpose

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def A_bar(self) -> F32:
        """A copy of Ā (order, order) as used, rounded to float32 (Ā itself even if transpose)."""
        return self._p.a_bar.copy()

    @property
    def B_bar(self) -> F32:
        """A copy of B̄ (order,) as used, rounded to float32."""
        return self._p.b_bar.copy()

    @property
    def weights(self) -> dict[str, F32]:
        """Copies of the weights by name (e_x, e_h, e_m, W_x, W_h, W_m, b_u, b_h), float32, as passed."""
        p = self._p
        return {"e_x": p.e_x.copy(), "e_h": p.e_h.copy(), "e_m": p.e_m.copy(), "W_x": p.W_x.copy(),
                "W_h": p.W_h.copy(), "W_m": p.W_m.copy(), "b_u": p.b_u.copy(), "b_h": p.b_h.copy()}
