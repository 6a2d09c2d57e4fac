"""Delta-activation layers: DeltaDense, DeltaGRU and DeltaLSTM (Neil et al. 2017, Gao et al. 2018).

A delta layer keeps the last input it acted on (x_hat) and persistent accumulators (acc = b + W x_hat).
Each step only the input components that moved by more than a threshold theta are sent, and only
their weight columns are added to the accumulators: work is proportional to how much the signal
changes. DeltaGRU and DeltaLSTM also delta-code their hidden state (theta_h) and have exactly
torch.nn.GRUCell's / LSTMCell's equations, gate order and weight layout. See ext/delta.pyx for the
design (thresholds, NaN handling, sparse/dense paths, periodic exact refresh of the accumulators).

The names are the compiled kernels (spikeline._ext.delta) unless SPIKELINE_NO_EXT is set to a
non-empty value other than "0", or the extension cannot be imported (then with a RuntimeWarning);
in both cases they are the bit-identical numpy references. `BACKEND` says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from spikeline.kernels._backend import pick
from spikeline.kernels.ref_delta import (
    ACTIVATIONS,
    DEFAULT_DENSE_ABOVE,
    DEFAULT_REFRESH_EVERY,
    DeltaDenseRef,
    DeltaGRURef,
    DeltaLSTMRef,
)

__all__ = [
    "ACTIVATIONS",
    "BACKEND",
    "DEFAULT_DENSE_ABOVE",
    "DEFAULT_REFRESH_EVERY",
    "DeltaDense",
    "DeltaDenseRef",
    "DeltaGRU",
    "DeltaGRURef",
    "DeltaLSTM",
    "DeltaLSTMRef",
]

if TYPE_CHECKING:
    # Type checkers see the compiled classes; the references have the same interface.
    from spikeline._ext.delta import DeltaDense, DeltaGRU, DeltaLSTM

    BACKEND: Literal["ext", "numpy"]
else:
    DeltaDense, BACKEND = pick("spikeline._ext.delta", "DeltaDense", DeltaDenseRef)
    # One import decides for the module (and warns at most once).
    if BACKEND == "ext":
        DeltaGRU, _ = pick("spikeline._ext.delta", "DeltaGRU", DeltaGRURef)
        DeltaLSTM, _ = pick("spikeline._ext.delta", "DeltaLSTM", DeltaLSTMRef)
    else:
        DeltaGRU, DeltaLSTM = DeltaGRURef, DeltaLSTMRef
