"""Event-camera kernels: denoising filters, time surface, binning and the HD-SNN motion layer.

- `RefractoryFilter(width, height, refractory_us)`, `BackgroundActivityFilter(width, height, filter_us)`:
  `.filter(events, out=None) -> kept events`, `.reset()`, `.seen`, `.kept` (tonic 1.7's RefractoryPeriod
  and Denoise, exactly).
- `TimeSurface(width, height, tau_us, polarities=2)`: `.update(events)`, `.sample(t_us, out=None) -> float32
  (polarities, height, width)`, `.reset()`.
- `EventFrames(width, height, window_us, polarities=2, t0_us=0)`, `VoxelGrid(width, height, window_us, n_bins,
  t0_us=0)`: `.push(events)` / `.flush_until(t_us)` -> (float32 (n, channels, height, width), t_end int64 (n,))
  for the windows completed, empty ones included.
- `HDSNN(width, height, weights, dt_us, threshold, stride=1, t0_us=0, binary=False)`: `.push(events)` /
  `.flush_until(t_us)` -> (t_end int64 (n,), counts int32 (n, C)) for completed steps with spikes;
  `.counters` (dict: events, synops, steps, spikes), `.spike_map` (C, Ho, Wo), `.reset()`.
- `motion_kernels(...) -> (weights, labels)`: direction-selective HD-SNN weights; `DIRECTION_NAMES`.
  Tested setting (tests/test_hdsnn.py): `binary=True` (OR-pooling) and threshold 0.75 * D; on the
  320x240 DVXplorer: 8 directions x speeds (0.2, 0.4) px/ms, K=9, D=7, dt_us=2000, stride=4.

The semantics, validation and streaming rules are documented in spikeline.kernels.ref_events (the
numpy references, `*Ref`) and ext/evkernels.pyx. The names are the compiled kernels
(spikeline._ext.evkernels) unless SPIKELINE_NO_EXT is set to a non-empty value other than "0", or the
extension cannot be imported (then with a RuntimeWarning); `BACKEND` says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from spikeline.kernels._backend import pick_all
from spikeline.kernels.ref_events import (
    MAX_OUTPUT_BYTES,
    BackgroundActivityFilterRef,
    EventFramesRef,
    HDSNNRef,
    RefractoryFilterRef,
    TimeSurfaceRef,
    VoxelGridRef,
)

__all__ = [
    "BACKEND",
    "DIRECTION_NAMES",
    "HDSNN",
    "MAX_OUTPUT_BYTES",
    "BackgroundActivityFilter",
    "BackgroundActivityFilterRef",
    "EventFrames",
    "EventFramesRef",
    "HDSNNRef",
    "RefractoryFilter",
    "RefractoryFilterRef",
    "TimeSurface",
    "TimeSurfaceRef",
    "VoxelGrid",
    "VoxelGridRef",
    "direction_angles",
    "motion_kernels",
]

if TYPE_CHECKING:
    # Type checkers see the compiled classes; the references have the same interface.
    from spikeline._ext.evkernels import (
        HDSNN,
        BackgroundActivityFilter,
        EventFrames,
        RefractoryFilter,
        TimeSurface,
        VoxelGrid,
    )

    BACKEND: Literal["ext", "numpy"]
else:
    _impl, BACKEND = pick_all("spikeline._ext.evkernels", {
        "RefractoryFilter": RefractoryFilterRef,
        "BackgroundActivityFilter": BackgroundActivityFilterRef,
        "TimeSurface": TimeSurfaceRef,
        "EventFrames": EventFramesRef,
        "VoxelGrid": VoxelGridRef,
        "HDSNN": HDSNNRef,
    })
    RefractoryFilter = _impl["RefractoryFilter"]
    BackgroundActivityFilter = _impl["BackgroundActivityFilter"]
    TimeSurface = _impl["TimeSurface"]
    EventFrames = _impl["EventFrames"]
    VoxelGrid = _impl["VoxelGrid"]
    HDSNN = _impl["HDSNN"]

# Names of the 8 directions in SENSOR axes (x right, y DOWN): the
# angle grows from x towards y, i.e. clockwise as seen on screen: 0 = right, 45 = down-right, 90 = down.
DIRECTION_NAMES: Final = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")


def direction_angles(n_directions: int = 8) -> npt.NDArray[np.float64]:
    """Angles (radians) of the motion directions: theta_i = 2 pi i / n, x right, y DOWN (sensor axes)."""
    return 2.0 * np.pi * np.arange(n_directions) / n_directions


def _direction_name(i: int, n: int) -> str:
    if n == 8:
        return DIRECTION_NAMES[i]
    return f"{360.0 * i / n:g}deg"


def motion_kernels(n_directions: int = 8, speeds_px_per_ms: Sequence[float] = (0.5, 1.0), K: int = 9,
                   D: int = 8, dt_us: int = 2000, stride: int = 1,
                   polarities: int = 2,
                   interpolation: Literal["bilinear", "nearest"] = "bilinear",
                   opponent: float = 0.0) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Analytic direction-selective weights for `HDSNN`: (weights float32 (C, polarities, K, K, D), labels).

    Channel c = i_direction * len(speeds) + i_speed detects a point moving with velocity
    v (cos theta, sin theta), theta = 2 pi i_direction / n_directions, in SENSOR axes: x to the right,
    y DOWN (so theta = 90 deg is "down"; names in DIRECTION_NAMES for n_directions = 8), v in sensor
    pixels per millisecond. On the HDSNN's pooled grid (stride s) the point moves
    u = v * dt_us / 1000 / s pooled pixels per step. A neuron at (i, j) evaluated at step n should
    collect, for each delay d, the input from where the point was d steps earlier; the trajectory is
    centred on the neuron, so the weight for delay d sits at offset
        o(d) = -u (cos theta, sin theta) (d - (D - 1) / 2)
    from the kernel centre (K // 2, K // 2), splatted bilinearly onto the 4 nearest taps (each delay's
    taps sum to 1, so a point on the trajectory gives V = D), or with interpolation="nearest" put on
    the nearest tap with weight 1 (about a third of the synaptic updates per event, coarser speeds). The neuron therefore fires when a moving
    point or edge passes its position (D - 1) / 2 steps earlier with the right velocity: events from
    D successive steps arrive in coincidence. Both polarities get the same weights (an edge of either
    contrast). ValueError if the trajectory (|u| (D - 1) + 2 taps) does not fit in K.

    opponent = a > 0 subtracts a times the kernel of the OPPOSITE direction (same speed, for
    n_directions even): W_c - a W_opposite(c), a Reichardt-style opponent detector. Anything that
    drives both directions alike (a long edge seen by the detectors along its length, flicker,
    background noise) then cancels, which matters when pooling (stride > 1) sums several events
    per cell and step.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if n_directions < 1 or K < 1 or D < 1 or dt_us < 1 or stride < 1 or polarities not in (1, 2):
        raise ValueError("n_directions, K, D, dt_us and stride must be >= 1 and polarities 1 or 2")
    speeds = [float(v) for v in speeds_px_per_ms]
    if not speeds or not all(math.isfinite(v) and v > 0 for v in speeds):
        raise ValueError(f"speeds_px_per_ms must be positive finite numbers, got {speeds_px_per_ms!r}")
    theta = direction_angles(n_directions)
    c_total = n_directions * len(speeds)
    w = np.zeros((c_total, polarities, K, K, D), np.float64)
    labels: list[str] = []
    centre = K // 2
    for i, th in enumerate(theta):
        for j, v in enumerate(speeds):
            c = i * len(speeds) + j
            labels.append(f"{_direction_name(i, n_directions)} {v:g}px/ms")
            u = v * dt_us / 1000.0 / stride
            for d in range(D):
                r = -u * (d - (D - 1) / 2.0)
                fx, fy = centre + r * math.cos(th), centre + r * math.sin(th)
                if interpolation == "nearest":
                    fx, fy = math.floor(fx + 0.5), math.floor(fy + 0.5)
                x0, y0 = math.floor(fx), math.floor(fy)
                ax, ay = fx - x0, fy - y0
                for yy, wy in ((y0, 1.0 - ay), (y0 + 1, ay)):
                    for xx, wx in ((x0, 1.0 - ax), (x0 + 1, ax)):
                        if wx * wy < 1e-9:
                            continue
                        if not (0 <= xx < K and 0 <= yy < K):
                            raise ValueError(f"speed {v} px/ms with dt_us={dt_us}, stride={stride}, D={D} moves "
                                             f"{u * (D - 1):.2f} pooled px over the delays: K={K} is too small")
                        w[c, :, yy, xx, d] += wx * wy
    if opponent:
        if not (math.isfinite(opponent) and opponent > 0) or n_directions % 2:
            raise ValueError(f"opponent must be a positive number and n_directions even, got {opponent!r}, "
                             f"{n_directions}")
        half = n_directions // 2 * len(speeds)
        w = w - opponent * np.roll(w, half, axis=0)
    return w.astype(np.float32), labels
