"""The L2MU (LIF-based Legendre Memory Unit) in PyTorch/snnTorch: the training-side twin of spikeline's kernel.

Training only (needs the `reference` extra: torch==2.13.0, snntorch); the runtime never imports this.
`export()` writes a spikeline model file (kind "l2mu") that `spikeline.kernels` runs sample by sample.

One step, batch-first, every population an snnTorch `Leaky` (reset by subtraction, strict threshold):

    s_x = lif_x(x * enc_w + enc_b)                      input module: per channel `enc` neurons
    s_u = lif_u(e_x s_x + e_h s_h' + e_m vec(s_m'))     ' = the previous step's spikes
    s_m[k, :] = lif_m(A s_m'[k, :] + B s_u[k])          A = Ā, or Āᵀ when memory_convention == "AT"
    s_h = lif_h(W_x s_x + W_h s_h' + W_m vec(s_m))      (the memory spikes just computed)
    s_o = lif_o(W_o s_h + b_o)

Ā, B̄ are the LMU's Legendre delay system discretised by zero-order hold (order d, window θ samples), fixed.
The public L2MU training code applies Āᵀ (a torch Linear holding Ā multiplies by its transpose); both
conventions are supported and recorded in the model file.

Precision (what makes the compiled kernel reproduce this model spike for spike): every synaptic current
(the four right-hand sides above, biases and B̄ s_u included) is summed in float64 and rounded to float32
once; the neurons, the encoder and all parameters stay float32. The inputs of every product are spikes
(0.0/1.0), so each product is one weight exactly, and a float64 sum of float32 weights is exact as long as
it fits in 53 bits: with n inputs, when log2(max|w| / min|w|) + log2(n) <= 28 over the nonzero weights
feeding one neuron (136 inputs: a span of 2^20; trained HAR-size models span at most about 2^19).
The rounded current is then the correctly rounded exact sum, whatever order the sum is taken in: MKL's
blocked, vectorised order here, spikeline's column gather (ext/l2mu.pyx) on the device. A float32 matmul
does not have that property: its result depends on the BLAS library, the CPU's vector width and the
summation order, differs from an in-order float32 sum in the last bit for most currents, and a last-bit
difference in a membrane sitting at the threshold flips a spike, after which the two runs diverge.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import snntorch as snn
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from spikeline.kernels.lmu_matrices import lmu_matrices
from spikeline.modelfile import save

POPULATIONS = ("x", "u", "m", "h", "o")


@dataclass
class L2MUConfig:
    n_inputs: int
    n_outputs: int
    enc: int = 4  # input-module neurons per input channel
    memory: int = 8  # M: memory channels (size of u)
    order: int = 6  # d: Legendre order
    theta: float = 50.0  # window, samples
    hidden: int = 64
    memory_convention: str = "A"  # "A": Ā m (Voelker); "AT": Āᵀ m (the public L2MU code)
    beta: float = 0.9
    threshold: float = 1.0


class L2MU(nn.Module):
    def __init__(self, cfg: L2MUConfig, seed: int = 0) -> None:
        super().__init__()
        if cfg.memory_convention not in ("A", "AT"):
            raise ValueError(f'memory_convention must be "A" or "AT", got {cfg.memory_convention!r}')
        g = torch.Generator().manual_seed(seed)
        self.cfg = cfg
        n_x, m, d, h = cfg.n_inputs * cfg.enc, cfg.memory, cfg.order, cfg.hidden

        def lin(n_out: int, n_in: int, gain: float = 1.0) -> nn.Parameter:
            return nn.Parameter(torch.randn(n_out, n_in, generator=g) * gain / np.sqrt(n_in))

        self.enc_w = nn.Parameter(torch.randn(cfg.n_inputs, cfg.enc, generator=g))
        self.enc_b = nn.Parameter(torch.rand(cfg.n_inputs, cfg.enc, generator=g) * 0.5)
        self.e_x, self.e_h, self.e_m = lin(m, n_x, 2.0), lin(m, h), lin(m, m * d)
        self.W_x, self.W_h, self.W_m = lin(h, n_x, 2.0), lin(h, h), lin(h, m * d, 2.0)
        self.W_o = lin(cfg.n_outputs, h, 2.0)
        self.b_o = nn.Parameter(torch.zeros(cfg.n_outputs))
        a_bar, b_bar = lmu_matrices(d, cfg.theta)
        self.register_buffer("A_bar", torch.tensor(a_bar, dtype=torch.float32))
        self.register_buffer("B_bar", torch.tensor(b_bar.reshape(-1), dtype=torch.float32))
        sizes = {"x": n_x, "u": m, "m": m * d, "h": h, "o": cfg.n_outputs}
        self.lif = nn.ModuleDict({
            p: snn.Leaky(beta=torch.full((sizes[p],), cfg.beta), threshold=torch.full((sizes[p],), cfg.threshold),
                         learn_beta=True, learn_threshold=True, reset_mechanism="subtract")
            for p in POPULATIONS})

    @property
    def a_applied(self) -> torch.Tensor:
        return self.A_bar if self.cfg.memory_convention == "A" else self.A_bar.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (batch, time, n_inputs) -> output spikes (batch, time, n_outputs), all spikes by population."""
        cfg = self.cfg
        bsz, steps, _ = x.shape
        m, d = cfg.memory, cfg.order
        mem = {p: torch.zeros(bsz, self.lif[p].beta.shape[0]) for p in POPULATIONS}
        s_h = torch.zeros(bsz, cfg.hidden)
        s_m = torch.zeros(bsz, m * d)
        rec: dict[str, list[torch.Tensor]] = {p: [] for p in POPULATIONS}
        f64 = torch.float64
        # Weights (transposed) and Ā, B̄ in float64 for the current sums; see the module docstring.
        e_x, e_h, e_m = self.e_x.T.to(f64), self.e_h.T.to(f64), self.e_m.T.to(f64)
        w_x, w_h, w_m = self.W_x.T.to(f64), self.W_h.T.to(f64), self.W_m.T.to(f64)
        w_o, b_o = self.W_o.T.to(f64), self.b_o.to(f64)
        a_t, b_bar = self.a_applied.T.to(f64), self.B_bar.to(f64)
        for t in range(steps):
            cur_x = (x[:, t, :, None] * self.enc_w + self.enc_b).reshape(bsz, -1)
            s_x, mem["x"] = self.lif["x"](cur_x, mem["x"])
            x64, h64, m64 = s_x.to(f64), s_h.to(f64), s_m.to(f64)  # ' = previous step's h and m
            cur_u = (x64 @ e_x + h64 @ e_h + m64 @ e_m).float()
            s_u, mem["u"] = self.lif["u"](cur_u, mem["u"])
            cur_m = (m64.reshape(bsz, m, d) @ a_t + s_u.to(f64)[:, :, None] * b_bar).float()
            s_m, mem["m"] = self.lif["m"](cur_m.reshape(bsz, m * d), mem["m"])
            cur_h = (x64 @ w_x + h64 @ w_h + s_m.to(f64) @ w_m).float()
            s_h, mem["h"] = self.lif["h"](cur_h, mem["h"])
            s_o, mem["o"] = self.lif["o"]((s_h.to(f64) @ w_o + b_o).float(), mem["o"])
            for p, s in zip(POPULATIONS, (s_x, s_u, s_m, s_h, s_o), strict=True):
                rec[p].append(s)
        spikes = {p: torch.stack(v, dim=1) for p, v in rec.items()}
        return spikes["o"], spikes


def export(model: L2MU, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the model as a spikeline model file (kind "l2mu"); returns the JSON path."""
    t = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    arrays = {k: t[k] for k in ("enc_w", "enc_b", "e_x", "e_h", "e_m", "W_x", "W_h", "W_m", "W_o", "b_o",
                                "A_bar", "B_bar")}
    for p in POPULATIONS:
        lif = model.lif[p]
        # snnTorch clamps beta to [0, 1] when it steps; store what it uses.
        arrays[f"beta_{p}"] = lif.beta.detach().clamp(0, 1).numpy().astype(np.float32)
        arrays[f"threshold_{p}"] = lif.threshold.detach().numpy().astype(np.float32)
    info = {"config": asdict(model.cfg), "reset": "subtract", "neuron": "leaky", **(meta or {})}
    return save(path, "l2mu", arrays, info)
