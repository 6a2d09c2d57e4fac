"""Neuromorphic and recurrent kernel stages: each wraps one compiled kernel that steps its state per sample."""

from __future__ import annotations

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..kernels.lmu import LegendreMemory
from ..params import Param
from .base import Stage, StageError


class LMU(Stage):
    kind = "lmu"
    summary = "Legendre memory per channel (LMU, Voelker 2019): the last theta of each channel as d coefficients"
    params = {
        "order": Param("int", 6, min=1, max=256, help="Legendre order d: coefficients per channel"),
        "theta_s": Param("number", 1.0, min=0, min_exclusive=True, help="memory window in seconds"),
        "transpose": Param("bool", False, help="apply Āᵀ instead of Ā (models trained with the public L2MU code)"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        if meta.nominal_rate <= 0:
            raise StageError(f"lmu needs a regular sampling rate; stream {meta.name!r} declares none")
        theta = self.p["theta_s"] * meta.nominal_rate
        if theta < 1:
            raise StageError(f"theta_s = {self.p['theta_s']:g} s is less than one sample at {meta.nominal_rate:g} Hz",
                             "theta_s")
        d = self.p["order"]
        self._kernel = LegendreMemory(meta.n_channels, d, theta, transpose=self.p["transpose"])
        channels = tuple(f"{c}.m{i}" for c in meta.channels for i in range(d))
        self._out = meta.derive(channels=channels, units=("",) * len(channels))
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        out = np.empty((len(chunk), self._out.n_channels), np.float32)
        return chunk.with_data(self._kernel.step(chunk.data, out=out), self._out)

    def reset(self) -> None:
        self._kernel.reset()
