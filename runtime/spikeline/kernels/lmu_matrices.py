"""The Legendre Memory Unit's state-space matrices, its delay decoder, and the constructor checks
shared by the compiled LMU kernels (spikeline._ext.lmu) and their numpy references.

The LMU memory (Voelker, Kajić & Eliasmith 2019) is the linear system

    θ ṁ(t) = A m(t) + B u(t),   A_ij = (2i+1)·(-1 if i < j else (-1)^(i-j+1)),   B_i = (2i+1)·(-1)^i,

whose state m (order,) holds the Legendre coefficients of the input's last θ seconds. Discretised by
zero-order hold with step dt it becomes m[t+1] = Ā m[t] + B̄ u[t] (column-vector convention, the one
scipy.signal.cont2discrete returns; keras-lmu stores Āᵀ and multiplies row vectors, which is the same
update). `legendre_decoder` gives the weights that read the delayed input u(t - θ') back out of m.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.linalg import expm
from scipy.special import eval_legendre

__all__ = ["legendre_decoder", "lmu_continuous", "lmu_matrices"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _check_count(value: Any, name: str) -> int:
    """value as an int >= 1 (TypeError for non-integers, ValueError below 1)."""
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_positive(value: Any, name: str) -> float:
    """value as a finite float > 0 (TypeError for non-real values such as strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not (math.isfinite(result) and result > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {result}")
    return result


def lmu_continuous(order: int) -> tuple[F64, F64]:
    """The continuous LMU system (A, B): A (order, order), B (order,), float64, for θ ṁ = A m + B u."""
    order = _check_count(order, "order")
    q = np.arange(order)
    i, j = q[:, np.newaxis], q[np.newaxis, :]
    sign = np.where(i < j, -1.0, np.where((i - j + 1) % 2 == 0, 1.0, -1.0))
    a: F64 = ((2.0 * i + 1.0) * sign).astype(np.float64)
    b: F64 = ((2.0 * q + 1.0) * np.where(q % 2 == 0, 1.0, -1.0)).astype(np.float64)
    return a, b


def lmu_matrices(order: int, theta: float, dt: float = 1.0, method: str = "zoh") -> tuple[F64, F64]:
    """(Ā, B̄) of the LMU memory: Ā (order, order) and B̄ (order,), float64, for m ← Ā m + B̄ u.

    theta is the window length and dt the step, in the same unit (the kernels use samples: dt = 1).
    Zero-order hold: the input is held constant over each step, and exp([[A dt/θ, B dt/θ], [0, 0]])
    = [[Ā, B̄], [0, 1]] (Van Loan's block form, the same construction cont2discrete uses).
    """
    a, b = lmu_continuous(order)
    theta = _check_positive(theta, "theta")
    dt = _check_positive(dt, "dt")
    if method != "zoh":
        raise ValueError(f"method must be 'zoh' (zero-order hold, the only discretisation implemented), got {method!r}")
    n = a.shape[0]
    augmented = np.zeros((n + 1, n + 1))
    augmented[:n, :n] = (a / theta) * dt
    augmented[:n, n] = (b / theta) * dt
    e = expm(augmented)
    a_bar: F64 = np.ascontiguousarray(e[:n, :n])
    b_bar: F64 = np.ascontiguousarray(e[:n, n])
    return a_bar, b_bar


def legendre_decoder(order: int, theta_prime_over_theta: float) -> F64:
    """Weights w (order,) float64 with u(t - θ') ≈ w · m(t), for 0 <= θ'/θ <= 1.

    w_i = P̃_i(θ'/θ), the shifted Legendre polynomial P̃_i(r) = P_i(2r - 1)
    = (-1)^i Σ_j C(i, j) C(i + j, j) (-r)^j (Voelker et al. 2019, eq. 3): all ones reads the oldest
    end of the window (θ' = θ), (-1)^i the newest (θ' = 0).
    """
    order = _check_count(order, "order")
    if isinstance(theta_prime_over_theta, bool) or not isinstance(theta_prime_over_theta, numbers.Real):
        raise TypeError(f"theta_prime_over_theta must be a real number, got {type(theta_prime_over_theta).__name__}")
    r = float(theta_prime_over_theta)
    if not 0.0 <= r <= 1.0:  # also refuses NaN
        raise ValueError(f"theta_prime_over_theta must be in [0, 1] (a delay inside the window), got {r}")
    w: F64 = eval_legendre(np.arange(order), 2.0 * r - 1.0).astype(np.float64)
    return w


# --- constructor checks shared by spikeline._ext.lmu and spikeline.kernels.ref_lmu -------------------
# Both implementations call these, so a bad argument gets the same exception and message from either.


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _kernel_matrices(order: int, theta: float, transpose: bool) -> tuple[F32, F32, F32]:
    """(Ā, B̄, Mt) in float32: Mt is the applied matrix M (Ā, or Āᵀ if transpose), stored transposed.

    Mt[j, i] = M[i, j], so the update's inner loop over i (independent accumulators) is contiguous.
    """
    a_bar, b_bar = lmu_matrices(order, theta)
    a32: F32 = a_bar.astype(np.float32)
    b32: F32 = b_bar.astype(np.float32)
    applied = a32.T if transpose else a32
    mt: F32 = np.ascontiguousarray(applied.T)
    return a32, b32, mt


class MemoryParams(NamedTuple):
    n_channels: int
    order: int
    theta: float
    transpose: bool
    n_streams: int
    a_bar: F32  # (order, order) Ā, rounded to float32
    b_bar: F32  # (order,) B̄, rounded to float32
    mt: F32  # (order, order) the applied matrix, transposed: mt[j, i] = M[i, j]


def memory_params(n_channels: Any, order: Any, theta: Any, transpose: Any, n_streams: Any) -> MemoryParams:
    """Checked, normalised LegendreMemory constructor arguments and its float32 matrices."""
    n_channels = _check_count(n_channels, "n_channels")
    order = _check_count(order, "order")
    theta = _check_positive(theta, "theta")
    transpose = _check_bool(transpose, "transpose")
    n_streams = _check_count(n_streams, "n_streams")
    a32, b32, mt = _kernel_matrices(order, theta, transpose)
    return MemoryParams(n_channels, order, theta, transpose, n_streams, a32, b32, mt)


def _weight(value: Any, name: str, shape: tuple[int, ...], desc: str, optional: bool) -> F32:
    """A float32 weight array of exactly `shape`, copied (C-contiguous, native byte order)."""
    if value is None and optional:
        return np.zeros(shape, dtype=np.float32)
    if not isinstance(value, np.ndarray):
        what = "a numpy.ndarray or None" if optional else "a numpy.ndarray"
        raise TypeError(f"{name} must be {what} (float32, shape {desc}), got {type(value).__name__}")
    if value.dtype.kind != "f" or value.dtype.itemsize != 4:
        raise TypeError(f"{name} must have dtype float32, got {value.dtype}; convert it with .astype(np.float32)")
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {desc} = {shape}, got {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    copied: F32 = np.array(value, dtype=np.float32, order="C", copy=True)
    return copied


class CellParams(NamedTuple):
    n_inputs: int
    n_hidden: int
    order: int
    theta: float
    memory_d: int
    transpose: bool
    n_streams: int
    a_bar: F32
    b_bar: F32
    mt: F32
    e_x: F32  # (memory_d, n_inputs)
    e_h: F32  # (memory_d, n_hidden)
    e_m: F32  # (memory_d, memory_d * order)
    W_x: F32  # (n_hidden, n_inputs)
    W_h: F32  # (n_hidden, n_hidden)
    W_m: F32  # (n_hidden, memory_d * order)
    b_u: F32  # (memory_d,)
    b_h: F32  # (n_hidden,)
    ut: F32  # (n_inputs + n_hidden + memory_d * order, memory_d) = [e_x | e_h | e_m]ᵀ
    ht: F32  # (n_inputs + n_hidden + memory_d * order, n_hidden) = [W_x | W_h | W_m]ᵀ


def cell_params(n_inputs: Any, n_hidden: Any, order: Any, theta: Any, e_x: Any, e_h: Any, e_m: Any,
                W_x: Any, W_h: Any, W_m: Any, b_u: Any, b_h: Any, memory_d: Any, transpose: Any,
                n_streams: Any) -> CellParams:
    """Checked, normalised LMUCell constructor arguments, its matrices and its stacked transposed weights."""
    n_inputs = _check_count(n_inputs, "n_inputs")
    n_hidden = _check_count(n_hidden, "n_hidden")
    order = _check_count(order, "order")
    theta = _check_positive(theta, "theta")
    memory_d = _check_count(memory_d, "memory_d")
    transpose = _check_bool(transpose, "transpose")
    n_streams = _check_count(n_streams, "n_streams")
    n_mem = memory_d * order
    ex = _weight(e_x, "e_x", (memory_d, n_inputs), "(memory_d, n_inputs)", optional=False)
    eh = _weight(e_h, "e_h", (memory_d, n_hidden), "(memory_d, n_hidden)", optional=True)
    em = _weight(e_m, "e_m", (memory_d, n_mem), "(memory_d, memory_d * order)", optional=True)
    wx = _weight(W_x, "W_x", (n_hidden, n_inputs), "(n_hidden, n_inputs)", optional=True)
    wh = _weight(W_h, "W_h", (n_hidden, n_hidden), "(n_hidden, n_hidden)", optional=True)
    wm = _weight(W_m, "W_m", (n_hidden, n_mem), "(n_hidden, memory_d * order)", optional=False)
    bu = _weight(b_u, "b_u", (memory_d,), "(memory_d,)", optional=True)
    bh = _weight(b_h, "b_h", (n_hidden,), "(n_hidden,)", optional=True)
    a32, b32, mt = _kernel_matrices(order, theta, transpose)
    ut: F32 = np.ascontiguousarray(np.concatenate([ex, eh, em], axis=1).T)
    ht: F32 = np.ascontiguousarray(np.concatenate([wx, wh, wm], axis=1).T)
    return CellParams(n_inputs, n_hidden, order, theta, memory_d, transpose, n_streams, a32, b32, mt,
                      ex, eh, em, wx, wh, wm, bu, bh, ut, ht)


def float32_state(value: Any, name: str, shape: tuple[int, ...]) -> F32:
    """value as a finite float32 array of exactly `shape` (a state to assign)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
        cast: F32 = arr.astype(np.float32)
    if not np.isfinite(cast).all():
        raise ValueError(f"{name} must be finite in float32, got NaN, inf or a value beyond float32's range")
    return cast


def check_stream(stream: Any, n_streams: int, allow_all: bool = False) -> int:
    """stream as an index in [0, n_streams) (or -1 for all streams if allow_all)."""
    stream = operator.index(stream)
    if allow_all:
        if stream < -1 or stream >= n_streams:
            raise ValueError(f"stream must be -1 (all streams) or in [0, {n_streams}), got {stream}")
    elif stream < 0 or stream >= n_streams:
        raise ValueError(f"stream must be in [0, {n_streams}), got {stream}")
    return int(stream)
