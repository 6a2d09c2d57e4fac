"""Legendre Memory Unit kernels, and the switch between their compiled and numpy implementations.

`LegendreMemory` (per-channel LMU memories) and `LMUCell` (the full LMU cell) are the compiled
kernels in spikeline._ext.lmu unless SPIKELINE_NO_EXT is set to a non-empty value other than "0",
or the extension cannot be imported (then with a RuntimeWarning); in both cases they are the
bit-identical numpy references `LegendreMemoryRef` and `LMUCellRef`. `BACKEND` says which.
`lmu_matrices` gives the memory's (Ā, B̄), `legendre_decoder` the weights that read a delayed
input back out of a memory. ext/lmu.pyx documents the conventions (Ā vs Āᵀ) and the precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from spikeline.kernels._backend import pick_all
from spikeline.kernels.lmu_matrices import legendre_decoder, lmu_continuous, lmu_matrices
from spikeline.kernels.ref_lmu import LegendreMemoryRef, LMUCellRef

__all__ = [
    "BACKEND",
    "LMUCell",
    "LMUCellRef",
    "LegendreMemory",
    "LegendreMemoryRef",
    "legendre_decoder",
    "lmu_continuous",
    "lmu_matrices",
]

if TYPE_CHECKING:
    # Type checkers see the compiled classes; the references have the same interface.
    from spikeline._ext.lmu import LegendreMemory, LMUCell

    BACKEND: Literal["ext", "numpy"]
else:
    _impl, BACKEND = pick_all("spikeline._ext.lmu", {"LegendreMemory": LegendreMemoryRef, "LMUCell": LMUCellRef})
    LegendreMemory, LMUCell = _impl["LegendreMemory"], _impl["LMUCell"]
