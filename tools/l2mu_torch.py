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
`exact_sums()` zeroes the (negligible) weights that would break that condition, in place, before export.

Training helpers (tools/train_l2mu.py uses them; none changes what `forward(x)` computes):
- `forward(x, exact=False)`: the same model with float32 currents from concatenated weights, 3-7 times
  as fast; for training only (its spikes differ from the exact ones wherever a current rounds differently).
  Its gradient is tunable: `surrogate_scale` multiplies snnTorch's arctan surrogate (at 1.0, backprop
  through the recurrent spikes explodes within ~100 steps: the memory's Ā is near the identity and adds to
  the membranes' own decay, so the loop gain exceeds 1); `temporal_grad = "membrane"` cuts the gradient
  through the fed-back spikes altogether (always stable; the past is reached through the membranes only).
- input standardisation: `set_input_norm(mean, std)` makes the encoder see (x - mean) / std during
  training; `fold_input_norm()` then folds it into enc_w / enc_b, so the exported model takes the sensor's
  own units and the stream needs no normalisation stage.
- `calibrate_thresholds()`: data-driven initialisation, population by population (x, u, m, h), of the
  thresholds so that each starts at a target firing rate on real input.
- `from_file(path)`: the twin of an exported model file (fine-tune it, prune it, check parity).
- `exact_sums()`: see above. `pruned(keep)`: structured pruning: a smaller L2MU keeping the given encoder neurons, memory channels
  (u with its `order` memory neurons) and hidden neurons; it runs in the same kernel, faster.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
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


class _Spike(torch.autograd.Function):
    """Heaviside (strict >) forward; snnTorch's arctan surrogate (alpha 2) times `scale` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.scale / (1 + (torch.pi * x) ** 2), None


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
        # Training-time input standardisation (see set_input_norm / fold_input_norm); off by default.
        self.register_buffer("in_mean", torch.zeros(cfg.n_inputs))
        self.register_buffer("in_std", torch.ones(cfg.n_inputs))
        self.input_norm = False
        # Training-only knobs of the fast forward (exact=False); see _forward_fast.
        self.surrogate_scale = 1.0
        self.temporal_grad = "full"  # or "membrane": no gradient through the fed-back spikes s_h', s_m'

    def set_input_norm(self, mean: Any, std: Any) -> None:
        """The encoder sees (x - mean) / std (per input channel) until fold_input_norm()."""
        self.in_mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
        self.in_std.copy_(torch.as_tensor(np.asarray(std, np.float32)))
        self.input_norm = True

    @torch.no_grad()
    def fold_input_norm(self) -> None:
        """Fold the standardisation into the encoder: enc_w / std, enc_b - enc_w * mean / std (float64, then
        rounded once). Afterwards forward(x) takes x in the sensor's units, exactly like the exported kernel."""
        if not self.input_norm:
            return
        w, b = self.enc_w.double(), self.enc_b.double()
        mean, std = self.in_mean.double()[:, None], self.in_std.double()[:, None]
        self.enc_w.copy_((w / std).float())
        self.enc_b.copy_((b - w * mean / std).float())
        self.in_mean.zero_()
        self.in_std.fill_(1.0)
        self.input_norm = False

    @property
    def a_applied(self) -> torch.Tensor:
        return self.A_bar if self.cfg.memory_convention == "A" else self.A_bar.T

    def forward(self, x: torch.Tensor, exact: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (batch, time, n_inputs) -> output spikes (batch, time, n_outputs), all spikes by population.

        exact=False: float32 currents (training speed); see the module docstring."""
        if self.input_norm:
            x = (x - self.in_mean) / self.in_std
        if not exact:
            return self._forward_fast(x)
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

    def _lif_step(self, p: str, cur: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """snnTorch Leaky's step (reset by subtraction from the previous membrane, detached; strict
        threshold), without the module call's overhead; its arctan surrogate gradient scaled by
        `surrogate_scale` (1.0: snnTorch's)."""
        lif = self.lif[p]
        thr = lif.threshold
        reset = (mem > thr).to(cur.dtype)
        mem = lif.beta.clamp(0, 1) * mem + cur - reset * thr
        return _Spike.apply(mem - thr, self.surrogate_scale), mem

    def _forward_fast(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        bsz, steps, _ = x.shape
        m, d = cfg.memory, cfg.order
        n_x = cfg.n_inputs * cfg.enc
        w_u = torch.cat([self.e_x, self.e_h, self.e_m], dim=1).T
        w_h = torch.cat([self.W_x, self.W_h, self.W_m], dim=1).T
        w_o, a_t, b_bar = self.W_o.T, self.a_applied.T, self.B_bar
        cur_x = (x[..., None] * self.enc_w + self.enc_b).reshape(bsz, steps, n_x)
        mem = {p: x.new_zeros(bsz, self.lif[p].beta.shape[0]) for p in POPULATIONS}
        s_h, s_m = x.new_zeros(bsz, cfg.hidden), x.new_zeros(bsz, m * d)
        rec: dict[str, list[torch.Tensor]] = {p: [] for p in POPULATIONS}
        cut = self.temporal_grad == "membrane"
        for t in range(steps):
            if cut:  # the previous step's spikes as constants: gradients reach the past through membranes only
                s_h, s_m = s_h.detach(), s_m.detach()
            s_x, mem["x"] = self._lif_step("x", cur_x[:, t], mem["x"])
            s_u, mem["u"] = self._lif_step("u", torch.cat([s_x, s_h, s_m], dim=1) @ w_u, mem["u"])
            cur_m = (s_m.reshape(bsz, m, d) @ a_t + s_u[:, :, None] * b_bar).reshape(bsz, m * d)
            s_m, mem["m"] = self._lif_step("m", cur_m, mem["m"])
            s_h, mem["h"] = self._lif_step("h", torch.cat([s_x, s_h, s_m], dim=1) @ w_h, mem["h"])
            s_o, mem["o"] = self._lif_step("o", s_h @ w_o + self.b_o, mem["o"])
            for p, s in zip(POPULATIONS, (s_x, s_u, s_m, s_h, s_o), strict=True):
                rec[p].append(s)
        spikes = {p: torch.stack(v, dim=1) for p, v in rec.items()}
        return spikes["o"], spikes

    # --- initialisation and compression ---

    @torch.no_grad()
    def calibrate_thresholds(self, x: torch.Tensor, target: dict[str, float], iters: int = 12) -> dict[str, float]:
        """Scale each population's thresholds (x, u, m, h in that order; those named in `target`) so that
        its mean firing rate on x is about target[p]; returns the rates reached. A bisection on one scale
        per population, in log space between 1/64 and 64 of the current thresholds."""
        reached = {}
        for p in ("x", "u", "m", "h", "o"):
            if p not in target:
                continue
            thr0 = self.lif[p].threshold.detach().clone()
            lo, hi = -6.0, 6.0
            for _ in range(iters):
                mid = (lo + hi) / 2
                self.lif[p].threshold.copy_(thr0 * 2.0 ** mid)
                rate = float(self(x, exact=False)[1][p].mean())
                lo, hi = (lo, mid) if rate < target[p] else (mid, hi)
            self.lif[p].threshold.copy_(thr0 * 2.0 ** ((lo + hi) / 2))
            reached[p] = float(self(x, exact=False)[1][p].mean())
        return reached

    @torch.no_grad()
    def pruned(self, keep_enc: Any, keep_memory: Any, keep_hidden: Any) -> L2MU:
        """A smaller L2MU: keep_enc (n_inputs, k) encoder neuron indices per channel (the same count for
        every channel), keep_memory the memory channels (each keeps its u neuron and its `order` memory
        neurons), keep_hidden the hidden neurons. Weights, decays and thresholds are copied, so the pruned
        model computes what the full one would with the removed neurons silenced."""
        cfg = self.cfg
        ke = torch.as_tensor(np.asarray(keep_enc, np.int64))
        km = torch.as_tensor(np.sort(np.asarray(keep_memory, np.int64)))
        kh = torch.as_tensor(np.sort(np.asarray(keep_hidden, np.int64)))
        if ke.ndim != 2 or ke.shape[0] != cfg.n_inputs:
            raise ValueError(f"keep_enc must be (n_inputs={cfg.n_inputs}, k), got {tuple(ke.shape)}")
        ke = ke.sort(dim=1).values
        d = cfg.order
        kx = (torch.arange(cfg.n_inputs)[:, None] * cfg.enc + ke).reshape(-1)  # flat x neuron indices
        kmd = (km[:, None] * d + torch.arange(d)).reshape(-1)  # memory neuron indices
        new = L2MU(replace(cfg, enc=int(ke.shape[1]), memory=int(km.numel()), hidden=int(kh.numel())))
        new.enc_w.copy_(torch.gather(self.enc_w, 1, ke))
        new.enc_b.copy_(torch.gather(self.enc_b, 1, ke))
        new.e_x.copy_(self.e_x[km][:, kx])
        new.e_h.copy_(self.e_h[km][:, kh])
        new.e_m.copy_(self.e_m[km][:, kmd])
        new.W_x.copy_(self.W_x[kh][:, kx])
        new.W_h.copy_(self.W_h[kh][:, kh])
        new.W_m.copy_(self.W_m[kh][:, kmd])
        new.W_o.copy_(self.W_o[:, kh])
        new.b_o.copy_(self.b_o)
        for p, idx in (("x", kx), ("u", km), ("m", kmd), ("h", kh), ("o", torch.arange(cfg.n_outputs))):
            new.lif[p].beta.copy_(self.lif[p].beta[idx])
            new.lif[p].threshold.copy_(self.lif[p].threshold[idx])
        new.in_mean.copy_(self.in_mean)
        new.in_std.copy_(self.in_std)
        new.input_norm = self.input_norm
        new.surrogate_scale, new.temporal_grad = self.surrogate_scale, self.temporal_grad
        return new

    @torch.no_grad()
    def exact_sums(self, bits: int = 28) -> int:
        """Zero, in place, every weight too small for the float64 current sums to stay exact (the module
        docstring's condition: log2(max|w| / min|w|) + log2(fan-in) <= bits per neuron). Returns how many
        were zeroed: such a weight is below 2^-(bits - log2 fan-in) of its neuron's largest, so far below
        anything that moves a spike; zeroing it keeps the kernel and this twin spike for spike."""
        zeroed = 0
        groups = (((self.e_x, self.e_h, self.e_m), None), ((self.W_x, self.W_h, self.W_m), None),
                  ((self.W_o,), self.b_o))
        for mats, bias in groups:
            rows = torch.cat([w.double() for w in mats] + ([bias.double()[:, None]] if bias is not None else []),
                             dim=1)
            limit = rows.abs().amax(dim=1, keepdim=True) * 2.0 ** -(bits - np.log2(rows.shape[1]))
            small = (rows.abs() < limit) & (rows != 0)
            zeroed += int(small.sum())
            col = 0
            for w in mats:
                w[small[:, col:col + w.shape[1]]] = 0.0
                col += w.shape[1]
            if bias is not None:
                bias[small[:, col]] = 0.0
        return zeroed


def from_file(path: str | Path) -> L2MU:
    """The twin of a spikeline model file of kind "l2mu" (to fine-tune it, prune it or check parity)."""
    from spikeline.modelfile import load

    m = load(path, kind="l2mu")
    fields = {f: m.meta["config"][f] for f in L2MUConfig.__dataclass_fields__ if f in m.meta["config"]}
    model = L2MU(L2MUConfig(**fields))
    with torch.no_grad():
        for name in ("enc_w", "enc_b", "e_x", "e_h", "e_m", "W_x", "W_h", "W_m", "W_o", "b_o"):
            getattr(model, name).copy_(torch.from_numpy(m.arrays[name]))
        for p in POPULATIONS:
            model.lif[p].beta.copy_(torch.from_numpy(m.arrays[f"beta_{p}"]))
            model.lif[p].threshold.copy_(torch.from_numpy(m.arrays[f"threshold_{p}"]))
    if not (np.array_equal(m.arrays["A_bar"], model.A_bar.numpy())
            and np.array_equal(m.arrays["B_bar"], model.B_bar.numpy())):
        raise ValueError(f"{path}: A_bar/B_bar are not this twin's Legendre matrices for the file's order and theta")
    return model


def export(model: L2MU, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the model as a spikeline model file (kind "l2mu"); returns the JSON path.

    A model trained with set_input_norm() must be folded first (fold_input_norm): the file's encoder
    takes the sensor's units."""
    if model.input_norm:
        raise ValueError("the model standardises its input: call fold_input_norm() before export()")
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
