"""Stateful signal kernels, and the switch between their compiled and numpy implementations.

`SOSFilter` is the compiled kernel (spikeline._ext.sosfilt) unless SPIKELINE_NO_EXT is set to a
non-empty value other than "0", or the extension cannot be imported (then with a RuntimeWarning);
in both cases it is the bit-identical numpy reference `SOSFilterRef`. `BACKEND` says which.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from scipy.signal import butter, iirnotch, tf2sos

from spikeline.kernels._backend import pick
from spikeline.kernels.reference import SOSFilterRef

__all__ = ["BACKEND", "SOSFilter", "SOSFilterRef", "design_bandpass", "design_lowpass", "design_notch", "design_one_pole"]

if TYPE_CHECKING:
    # Type checkers see the compiled class; the reference has the same interface.
    from spikeline._ext.sosfilt import SOSFilter

    BACKEND: Literal["ext", "numpy"]
else:
    SOSFilter, BACKEND = pick("spikeline._ext.sosfilt", "SOSFilter", SOSFilterRef)


def _check_fs(fs: float) -> float:
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a finite sampling rate > 0 Hz, got {fs}")
    return float(fs)


def _check_order(order: int) -> int:
    order = operator.index(order)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    return order


def _as_sos(sos: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.ascontiguousarray(sos, dtype=np.float64)


def design_bandpass(low_hz: float, high_hz: float, fs: float, order: int = 4) -> npt.NDArray[np.float64]:
    """Butterworth band-pass as (order, 6) float64 SOS (2 * order poles), for SOSFilter."""
    fs, order = _check_fs(fs), _check_order(order)
    if not 0 < low_hz < high_hz < fs / 2:
        raise ValueError(
            f"band-pass needs 0 < low_hz < high_hz < fs/2 = {fs / 2:g} Hz, got low_hz={low_hz}, high_hz={high_hz}")
    return _as_sos(butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos"))


def design_lowpass(cutoff_hz: float, fs: float, order: int) -> npt.NDArray[np.float64]:
    """Butterworth low-pass as (ceil(order / 2), 6) float64 SOS, for SOSFilter."""
    fs, order = _check_fs(fs), _check_order(order)
    if not 0 < cutoff_hz < fs / 2:
        raise ValueError(f"low-pass needs 0 < cutoff_hz < fs/2 = {fs / 2:g} Hz, got cutoff_hz={cutoff_hz}")
    return _as_sos(butter(order, cutoff_hz, btype="lowpass", fs=fs, output="sos"))


def design_one_pole(decay: float, gain: float = 1.0) -> npt.NDArray[np.float64]:
    """y[n] = gain * x[n] + decay * y[n-1] as one (1, 6) SOS section: smoothers and leaky counters."""
    if not (math.isfinite(decay) and 0.0 <= decay < 1.0):
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    return _as_sos([[gain, 0.0, 0.0, 1.0, -decay, 0.0]])


def design_notch(freq_hz: float, fs: float, q: float = 30.0) -> npt.NDArray[np.float64]:
    """Second-order IIR notch (e.g. mains at 50/60 Hz) as (1, 6) float64 SOS, for SOSFilter.

    q is the quality factor: the -3 dB bandwidth is freq_hz / q.
    """
    fs = _check_fs(fs)
    if not 0 < freq_hz < fs / 2:
        raise ValueError(f"notch needs 0 < freq_hz < fs/2 = {fs / 2:g} Hz, got freq_hz={freq_hz}")
    if not (math.isfinite(q) and q > 0):
        raise ValueError(f"q must be finite and > 0, got {q}")
    b, a = iirnotch(freq_hz, q, fs=fs)
    return _as_sos(tf2sos(b, a))
