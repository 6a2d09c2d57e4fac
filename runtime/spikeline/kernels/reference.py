"""Pure-numpy references for the compiled kernels in ext/.

Each reference has the compiled kernel's constructor, methods, properties, validation and error
messages, and performs the same IEEE double operations in the same order, so its output is
bit-identical to the compiled kernel's (setup.py builds with -ffp-contract=off for this). The
loop over samples is plain Python, vectorised over channels (and streams): correct and slow. It is
the fallback when the extension is not built, and the oracle the compiled kernels are tested against.
"""

from __future__ import annotations

import operator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.signal import sosfilt_zi

__all__ = ["SOSFilterRef", "check_sos", "prime_state", "set_state"]

_Real = TypeVar("_Real", np.float32, np.float64)
F64 = npt.NDArray[np.float64]


def _real_array(value: npt.ArrayLike, name: str) -> npt.NDArray[np.generic]:
    """value as an ndarray, refusing non-numeric and complex input (the cast would drop data)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def check_sos(sos: npt.ArrayLike, n_channels: int, n_streams: int) -> F64:
    """The constructor checks of SOSFilter (compiled and reference): a float64 C-contiguous copy of sos."""
    arr = _real_array(sos, "sos")
    if arr.ndim != 2 or arr.shape[1] != 6 or arr.shape[0] < 1:
        raise ValueError(f"sos must have shape (n_sections, 6) with n_sections >= 1, got {arr.shape}")
    coefs: F64 = np.array(arr, dtype=np.float64, order="C", copy=True)
    if not np.isfinite(coefs).all():
        raise ValueError("sos coefficients must be finite, got NaN or inf")
    if (coefs[:, 3] != 1.0).any():
        raise ValueError(
            f"sos[:, 3] (a0) must be 1 in every section, got {coefs[:, 3].tolist()}: normalise the "
            "sections so a0 == 1, as scipy.signal.butter(output='sos') does")
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    return coefs


def prime_state(state: F64, sos: F64, x0: npt.ArrayLike, stream: int) -> None:
    """Write into `state` the steady state for a constant input x0 (n_channels,); stream -1: all streams."""
    stream = operator.index(stream)
    n_streams, n_channels = state.shape[0], state.shape[3]
    arr = _real_array(x0, "x0")
    if arr.shape != (n_channels,):
        raise ValueError(f"x0 must have shape ({n_channels},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("x0 must be finite")
    if stream < -1 or stream >= n_streams:
        raise ValueError(f"stream must be -1 (all streams) or in [0, {n_streams}), got {stream}")
    # sosfilt_zi: (n_sections, 2) state for a unit step, in the same DF2T convention as the kernels.
    steady = sosfilt_zi(sos)[:, :, np.newaxis] * arr.astype(np.float64)
    if stream == -1:
        state[...] = steady
    else:
        state[stream] = steady


def set_state(state: F64, value: npt.ArrayLike) -> None:
    """Copy a validated `value` into `state` (same shape, finite)."""
    arr = _real_array(value, "state")
    if arr.shape != state.shape:
        raise ValueError(f"state must have shape {state.shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("state must be finite")
    state[...] = arr


def _is_native_float(arr: npt.NDArray[Any]) -> bool:
    return arr.dtype in (np.dtype(np.float32), np.dtype(np.float64))


class SOSFilterRef:
    """Streaming cascaded-biquad IIR filter over n_channels, with n_streams independent states.

    sos is (n_sections, 6) rows of [b0 b1 b2 a0 a1 a2] with a0 == 1, as returned by
    scipy.signal.butter(..., output="sos"). Each stream (e.g. one device) keeps its own state,
    shaped (n_streams, n_sections, 2, n_channels) in direct form II transposed.
    """

    def __init__(self, sos: npt.ArrayLike, n_channels: int, n_streams: int = 1) -> None:
        n_channels = operator.index(n_channels)
        n_streams = operator.index(n_streams)
        coefs = check_sos(sos, n_channels, n_streams)
        self._sos = coefs
        # Python floats: each product below is then one IEEE double multiply, as in the kernel.
        self._sections: list[tuple[float, float, float, float, float]] = [
            (b0, b1, b2, a1, a2) for b0, b1, b2, _a0, a1, a2 in coefs.tolist()]
        self._n_channels = n_channels
        self._n_streams = n_streams
        self._state: F64 = np.zeros((n_streams, len(self._sections), 2, n_channels), dtype=np.float64)

    def _checked_out(self, x: object, out: object, n_rows: int, shape_desc: str) -> npt.NDArray[Any]:
        """Validate x (and out) for one call; return out, allocated if None. n_rows < 0: any."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        if not _is_native_float(x):
            raise TypeError(f"x must have dtype float32 or float64 in native byte order, got {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
        if x.shape[1] != self._n_channels or (n_rows >= 0 and x.shape[0] != n_rows):
            raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
        if not x.flags.c_contiguous:
            raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
        if not x.flags.aligned:
            raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
        if out is None:
            return np.empty(x.shape, dtype=x.dtype)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
        if out.dtype != x.dtype:
            raise TypeError(f"out must have the same dtype as x ({x.dtype}), got {out.dtype}")
        if out.shape != x.shape:
            raise ValueError(f"out must have the same shape as x {x.shape}, got {out.shape}")
        if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
            raise ValueError("out must be C-contiguous, aligned and writeable")
        # Both are contiguous with the same byte size: equal starts is in-place (safe, x row i is
        # read before out row i is written), any other overlap would read overwritten samples.
        xs, os, nbytes = x.ctypes.data, out.ctypes.data, x.nbytes
        if xs != os and xs < os + nbytes and os < xs + nbytes:
            raise ValueError("out must be x itself (in-place) or must not overlap x")
        return out

    def _cascade(self, w: F64, z: F64) -> F64:
        """One sample through every section: w (..., n_channels), z (..., n_sections, 2, n_channels).

        Same operations, same order as _cascade in ext/sosfilt.pyx; z is updated in place.
        """
        for s, (b0, b1, b2, a1, a2) in enumerate(self._sections):
            z0 = z[..., s, 0, :]
            z1 = z[..., s, 1, :]
            y = b0 * w + z0
            z0[...] = (b1 * w - a1 * y) + z1
            z1[...] = b2 * w - a2 * y
            w = y
        return w

    def step(self, x: npt.NDArray[_Real], out: npt.NDArray[_Real] | None = None, stream: int = 0) -> npt.NDArray[_Real]:
        """Filter a chunk x (n_samples, n_channels) of stream `stream`; returns out (same dtype)."""
        stream = operator.index(stream)
        result = self._checked_out(x, out, -1, f"(n_samples, {self._n_channels})")
        if stream < 0 or stream >= self._n_streams:
            raise ValueError(f"stream must be in [0, {self._n_streams}), got {stream}")
        z = self._state[stream]
        # NaN/inf input and float64 -> float32 overflow are data here, not errors (as in C).
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                result[i] = self._cascade(x[i].astype(np.float64), z)
        return result

    def step_streams(self, x: npt.NDArray[_Real], out: npt.NDArray[_Real] | None = None) -> npt.NDArray[_Real]:
        """Advance every stream by one sample: x is (n_streams, n_channels), row k for stream k."""
        result = self._checked_out(
            x, out, self._n_streams, f"(n_streams={self._n_streams}, n_channels={self._n_channels})")
        with np.errstate(all="ignore"):
            result[...] = self._cascade(x.astype(np.float64), self._state)
        return result

    def reset(self) -> None:
        """Zero the state of every stream."""
        self._state.fill(0.0)

    def prime(self, x0: npt.ArrayLike, stream: int = -1) -> None:
        """Set the state to the steady state for a constant input x0 (n_channels,); -1: all streams."""
        prime_state(self._state, self._sos, x0, stream)

    @property
    def state(self) -> F64:
        """A copy of the state, (n_streams, n_sections, 2, n_channels) float64."""
        return self._state.copy()

    @state.setter
    def state(self, value: npt.ArrayLike) -> None:
        set_state(self._state, value)

    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def n_streams(self) -> int:
        return self._n_streams

    @property
    def n_sections(self) -> int:
        return len(self._sections)

    @property
    def sos(self) -> F64:
        """A copy of the (n_sections, 6) float64 coefficients."""
        return self._sos.copy()
