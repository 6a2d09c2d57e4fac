"""Benchmark the L2MU cell: compiled (spikeline._ext.l2mu) vs numpy reference vs the snnTorch twin.

Not a test. The model is the HAR-size L2MU of tools/l2mu_torch.py (6 IMU channels x 4 input neurons,
memory 8 x order 6, θ = 50 samples, 64 hidden, 7 outputs), trained for a few Adam steps on a synthetic
7-class IMU task (so decays, thresholds and spike rates are those of a trained model), exported and
loaded with spikeline.kernels.l2mu.load_l2mu. Every implementation serves a live stream: state kept
between calls, one call per chunk of 1 sample (the latency case) or 50 samples, the output written
into a preallocated array.

snnTorch runs the twin's own modules (its five snn.Leaky populations and its weights) one sample at a
time, as a PyTorch model serving a stream would (torch.no_grad, torch.set_num_threads(1), tensors
sharing memory with the numpy input and output):
- "snntorch": the twin's maths exactly (currents summed in float64, rounded once; spike-identical to
  the kernel, checked before timing);
- "snntorch-f32": the same with float32 matmuls (what the twin computed before its currents went to
  float64, and what a plain snnTorch model does). The ratio column compares with the faster of the two.

Each call is timed on its own with perf_counter_ns (GC off): median and 99th percentile per call,
µs per sample (median / chunk) and samples/s. Prints one JSON document, then a table. Targets: the
compiled 1-sample step <= 5 µs and >= 20x faster than snnTorch per step; the JSON says whether met.

    python tools/bench_l2mu.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchlib import cpu_name, time_calls
from spikeline.kernels.l2mu import load_l2mu
from spikeline.kernels.ref_l2mu import L2MUCellRef

F32 = npt.NDArray[np.float32]
CHUNKS = (1, 50)
POOL = 16  # distinct input chunks cycled through
HAR = {"n_inputs": 6, "n_outputs": 7, "enc": 4, "memory": 8, "order": 6, "theta": 50.0, "hidden": 64}
TARGET_STEP_US = 5.0
TARGET_SPEEDUP = 20.0


def _compiled() -> Any | None:
    try:
        import spikeline._ext.l2mu as module
    except ImportError:
        return None
    return module


def _twin() -> tuple[Any, Any] | None:
    try:
        import torch

        import l2mu_torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch, l2mu_torch


COMPILED = _compiled()
TWIN = _twin()


def imu(n: int, rng: np.random.Generator, activity: int) -> F32:
    """Smartwatch IMU at 50 Hz: accelerometer (m/s², gravity on z) and gyroscope (rad/s)."""
    t = np.arange(n) / 50.0
    amp, freq = 0.5 + 0.6 * activity, 0.4 + 0.35 * activity
    sway = np.sin(2.0 * np.pi * freq * t[:, None] + rng.uniform(0.0, 2.0 * np.pi, 6))
    x = np.empty((n, 6))
    x[:, :3] = 3.0 * amp * sway[:, :3] + np.cumsum(0.05 * rng.standard_normal((n, 3)), axis=0)
    x[:, :3] += 0.3 * rng.standard_normal((n, 3))
    x[:, 2] += 9.81
    x[:, 3:] = 0.8 * amp * sway[:, 3:] + 0.05 * rng.standard_normal((n, 3))
    return x.astype(np.float32)


def _stream(n: int, rng: np.random.Generator) -> F32:
    """A recording that changes activity every 100 samples."""
    return np.concatenate([imu(100, rng, int(a)) for a in rng.integers(0, 7, n // 100)])


def train(steps: int, seed: int = 6) -> Any:
    """The HAR-size twin after `steps` Adam steps on a synthetic 7-class IMU task (surrogate gradient)."""
    assert TWIN is not None
    torch, twin = TWIN
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = twin.L2MU(twin.L2MUConfig(**HAR), seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        labels = rng.integers(0, 7, 16)
        x = torch.from_numpy(np.stack([imu(60, rng, int(c)) for c in labels]))
        out, _ = model(x)
        loss = torch.nn.functional.cross_entropy(out.mean(dim=1) * 10.0, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


class SnnTorchStepper:
    """The twin's forward body for one sample at a time, state kept between calls.

    exact: currents summed in float64 and rounded once (the twin's maths); otherwise float32 matmuls.
    """

    def __init__(self, model: Any, exact: bool) -> None:
        assert TWIN is not None
        torch = TWIN[0]
        cfg = model.cfg
        self.model, self.m, self.d = model, cfg.memory, cfg.order
        dt = torch.float64 if exact else torch.float32
        self.dt = dt
        with torch.no_grad():
            self.e = [w.T.to(dt).contiguous() for w in (model.e_x, model.e_h, model.e_m)]
            self.w = [w.T.to(dt).contiguous() for w in (model.W_x, model.W_h, model.W_m)]
            self.w_o, self.b_o = model.W_o.T.to(dt).contiguous(), model.b_o.to(dt)
            self.a_t, self.b_bar = model.a_applied.T.to(dt).contiguous(), model.B_bar.to(dt)
            self.enc_w, self.enc_b = model.enc_w.detach(), model.enc_b.detach()
        sizes = {"x": cfg.n_inputs * cfg.enc, "u": cfg.memory, "m": cfg.memory * cfg.order, "h": cfg.hidden,
                 "o": cfg.n_outputs}
        self.mem = {p: torch.zeros(1, n) for p, n in sizes.items()}
        self.s_h, self.s_m = torch.zeros(1, cfg.hidden), torch.zeros(1, sizes["m"])

    def step(self, x: F32, out: F32) -> F32:
        assert TWIN is not None
        torch = TWIN[0]
        lif, mem, dt = self.model.lif, self.mem, self.dt
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        with torch.no_grad():
            for t in range(xt.shape[0]):
                cur_x = (xt[t, :, None] * self.enc_w + self.enc_b).reshape(1, -1)
                s_x, mem["x"] = lif["x"](cur_x, mem["x"])
                x_, h_, m_ = s_x.to(dt), self.s_h.to(dt), self.s_m.to(dt)
                cur_u = (x_ @ self.e[0] + h_ @ self.e[1] + m_ @ self.e[2]).float()
                s_u, mem["u"] = lif["u"](cur_u, mem["u"])
                cur_m = (m_.reshape(1, self.m, self.d) @ self.a_t + s_u.to(dt)[:, :, None] * self.b_bar).float()
                self.s_m, mem["m"] = lif["m"](cur_m.reshape(1, -1), mem["m"])
                cur_h = (x_ @ self.w[0] + h_ @ self.w[1] + self.s_m.to(dt) @ self.w[2]).float()
                self.s_h, mem["h"] = lif["h"](cur_h, mem["h"])
                s_o, mem["o"] = lif["o"]((self.s_h.to(dt) @ self.w_o + self.b_o).float(), mem["o"])
                ot[t] = s_o[0]
        return out


def run(quick: bool) -> dict[str, Any]:
    if TWIN is None:
        raise SystemExit("bench_l2mu needs torch and snntorch (pip install -e '.[reference]')")
    budget_s, min_calls, max_calls = (0.2, 20, 20_000) if quick else (1.0, 100, 200_000)
    rng = np.random.default_rng(0)
    model = train(4 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        path = TWIN[1].export(model, Path(tmp) / "har.json")
        arrays = load_l2mu(path).arrays
    conv = model.cfg.memory_convention
    makers: dict[str, Callable[[], Any]] = {}
    if COMPILED is not None:
        makers["compiled"] = lambda: COMPILED.L2MUCell(**arrays, memory_convention=conv)
    makers["reference"] = lambda: L2MUCellRef(**arrays, memory_convention=conv)
    makers["snntorch"] = lambda: SnnTorchStepper(model, exact=True)
    makers["snntorch-f32"] = lambda: SnnTorchStepper(model, exact=False)

    # Before timing: every implementation on the same 1000 samples, against the compiled kernel
    # (or the reference): output spikes identical?
    check_x = _stream(1000, rng)
    outs = {impl: make().step(check_x, np.empty((1000, HAR["n_outputs"]), np.float32)) for impl, make in makers.items()}
    base = outs["compiled" if "compiled" in outs else "reference"]
    checks = {impl: int((y != base).any(axis=1).sum()) for impl, y in outs.items()}
    probe = makers["compiled" if "compiled" in makers else "reference"]()
    probe.step(check_x)
    c = probe.counters
    sparsity = {
        "spike_rate": {p: round(float(c[f"active_{p}"][0]) / (1000 * probe.sizes[p]), 3) for p in probe.sizes},
        "columns_vs_dense": round(float(c["columns"][0]) / (1000 * probe.dense_columns), 3),
        "synops_vs_dense": round(float(c["synops"][0]) / (1000 * probe.dense_synops), 3),
    }

    results: list[dict[str, Any]] = []
    signal = _stream(POOL * max(CHUNKS) + 100, rng)
    for chunk in CHUNKS:
        pool = [np.ascontiguousarray(signal[i * chunk:(i + 1) * chunk]) for i in range(POOL)]
        out = np.empty((chunk, HAR["n_outputs"]), np.float32)
        for impl, make in makers.items():
            kernel = make()
            lo = max(2, min_calls // 5) if impl == "reference" and chunk > 1 else min_calls
            ns = time_calls(lambda i, k=kernel, p=pool, o=out: k.step(p[i % POOL], o), budget_s, lo, max_calls)
            median_us = float(np.median(ns)) / 1e3
            results.append({
                "impl": impl, "chunk": chunk, "calls": int(ns.size),
                "median_us": round(median_us, 3), "p99_us": round(float(np.percentile(ns, 99)) / 1e3, 3),
                "us_per_sample": round(median_us / chunk, 4), "samples_per_s": round(chunk / (median_us * 1e-6)),
            })
    for r in results:
        snn = min(q["us_per_sample"] for q in results if q["chunk"] == r["chunk"] and q["impl"].startswith("snntorch"))
        r["speedup_vs_snntorch"] = round(snn / r["us_per_sample"], 1)
    targets: dict[str, Any] = {}
    one = next((r for r in results if r["impl"] == "compiled" and r["chunk"] == 1), None)
    if one is not None:
        targets = {
            "step_us_1_sample": one["median_us"], "step_target_us": TARGET_STEP_US,
            "step_met": one["median_us"] <= TARGET_STEP_US,
            "speedup_1_sample": one["speedup_vs_snntorch"], "speedup_target": TARGET_SPEEDUP,
            "speedup_met": one["speedup_vs_snntorch"] >= TARGET_SPEEDUP,
        }
    torch, twin = TWIN
    return {
        "meta": {
            "model": {**HAR, "memory_convention": conv}, "dtype": "float32", "quick": quick,
            "compiled": COMPILED is not None, "torch": torch.__version__, "snntorch": twin.snn.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "cpu": cpu_name(),
            "output_steps_differing_from_compiled_in_1000": checks, "sparsity": sparsity,
        },
        "targets": targets,
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    header = ("impl", "chunk", "calls", "median µs", "p99 µs", "µs/sample", "samples/s", "x snnTorch")
    rows = [header] + [
        (r["impl"], str(r["chunk"]), str(r["calls"]), f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}",
         f"{r['us_per_sample']:.3f}", f"{r['samples_per_s']:,}", f"{r['speedup_vs_snntorch']:,}")
        for r in report["results"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    t = report["targets"]
    if t:
        lines.append("")
        lines.append(f"target: compiled 1-sample step {t['step_us_1_sample']:.2f} µs <= {t['step_target_us']} µs: "
                     f"{'met' if t['step_met'] else 'NOT met'}; {t['speedup_1_sample']}x snnTorch >= "
                     f"{t['speedup_target']}x: {'met' if t['speedup_met'] else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.2 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
