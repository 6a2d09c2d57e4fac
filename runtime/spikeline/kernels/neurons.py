"""Spiking neuron populations and spike encoders, compiled or numpy.

Each class is the compiled kernel from spikeline._ext.neurons unless SPIKELINE_NO_EXT is set to a
non-empty value other than "0", or the extension cannot be imported (then with a RuntimeWarning);
in both cases it is the bit-identical numpy reference from spikeline.kernels.ref_neurons. `BACKEND`
says which ("ext" or "numpy").

- `LIFPopulation`: snnTorch `Leaky` (reset by subtraction or to zero, strict `>`).
- `CubaLIFPopulation`: snnTorch `Synaptic` (current-based LIF).
- `DeltaModulator`: UP/DOWN delta-modulation encoder.
- `LIFEncoder`: per-channel gain/bias feeding LIF neurons (the L2MU input module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from spikeline.kernels._backend import pick_all
from spikeline.kernels.ref_neurons import (
    CubaLIFPopulationRef,
    DeltaModulatorRef,
    LIFEncoderRef,
    LIFPopulationRef,
)

__all__ = [
    "BACKEND",
    "CubaLIFPopulation",
    "CubaLIFPopulationRef",
    "DeltaModulator",
    "DeltaModulatorRef",
    "LIFEncoder",
    "LIFEncoderRef",
    "LIFPopulation",
    "LIFPopulationRef",
]

if TYPE_CHECKING:
    # Type checkers see the compiled classes; the references have the same interface.
    from spikeline._ext.neurons import CubaLIFPopulation, DeltaModulator, LIFEncoder, LIFPopulation

    BACKEND: Literal["ext", "numpy"]
else:
    _impl, BACKEND = pick_all("spikeline._ext.neurons", {
        "LIFPopulation": LIFPopulationRef, "CubaLIFPopulation": CubaLIFPopulationRef,
        "DeltaModulator": DeltaModulatorRef, "LIFEncoder": LIFEncoderRef})
    LIFPopulation, CubaLIFPopulation = _impl["LIFPopulation"], _impl["CubaLIFPopulation"]
    DeltaModulator, LIFEncoder = _impl["DeltaModulator"], _impl["LIFEncoder"]
