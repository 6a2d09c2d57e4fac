"""Benchmark the LMU kernels: compiled vs numpy reference vs a PyTorch per-step implementation.

Not a test. Cases: LegendreMemory with 6 channels x order 16 (a smartwatch IMU at 50 Hz) and
64 channels x order 8 (EEG at 250 Hz), and LMUCell at a HAR-like size (6 inputs, 64 hidden,
order 16, memory_d 1, θ = 100 samples). Chunk sizes 1, 32 and 256 samples, one call per chunk as
the runtime would, writing into a preallocated out. PyTorch runs the same equations one sample at a
time (torch.set_num_threads(1), torch.no_grad(), float32 tensors sharing memory with the numpy
arrays), which is how a torch model would serve a live stream. Each call is timed on its own with
perf_counter_ns (GC off): median and 99th-percentile µs per call, µs per sample (median / chunk),
samples/s (chunk / median) and "x realtime" (samples/s over the case's stream rate). Before timing,
the torch outputs are checked against the compiled kernel's (max |difference| in the JSON).
Prints one JSON document, then the same results as a table.

    python tools/bench_lmu.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchlib import cpu_name, time_calls
from spikeline.kernels.lmu import LegendreMemoryRef, LMUCellRef

F32 = npt.NDArray[np.float32]
CHUNKS = (1, 32, 256)
POOL = 16  # distinct input chunks cycled through
THETA = 100.0
MEMORY_CASES = [("memory 6ch x d16", 6, 16, 50.0), ("memory 64ch x d8", 64, 8, 250.0)]
CELL_CASE = ("cell 6-64-16", 6, 64, 16, 50.0)  # (name, n_inputs, n_hidden, order, rate)


def _compiled_module() -> Any | None:
    try:
        import spikeline._ext.lmu as module
    except ImportError:
        return None
    return module


def _torch() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


COMPILED = _compiled_module()
TORCH = _torch()



class TorchMemory:
    """Per-channel memories m <- Ā m + B̄ u, one sample per step, in float32 torch."""

    def __init__(self, n_channels: int, a_bar: F32, b_bar: F32) -> None:
        assert TORCH is not None
        torch = TORCH
        self.mt = torch.from_numpy(np.ascontiguousarray(a_bar.T))  # m_row @ Āᵀ = (Ā m)ᵀ
        self.b = torch.from_numpy(b_bar.copy())
        self.m = torch.zeros((n_channels, b_bar.size))

    def step(self, x: F32, out: F32) -> F32:
        torch = TORCH
        assert torch is not None
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        with torch.no_grad():
            for t in range(xt.shape[0]):
                self.m = self.m @ self.mt + xt[t, :, None] * self.b
                ot[t] = self.m.reshape(-1)
        return out


class TorchCell:
    """The LMU cell (u -> m -> h) one sample per step, in float32 torch, weights stacked as in the kernel."""

    def __init__(self, weights: dict[str, F32], a_bar: F32, b_bar: F32) -> None:
        torch = TORCH
        assert torch is not None
        w = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
        self.ut = torch.cat([w["e_x"], w["e_h"], w["e_m"]], dim=1).T.contiguous()
        self.ht = torch.cat([w["W_x"], w["W_h"], w["W_m"]], dim=1).T.contiguous()
        self.bu, self.bh = w["b_u"], w["b_h"]
        self.mt = torch.from_numpy(np.ascontiguousarray(a_bar.T))
        self.b = torch.from_numpy(b_bar.copy())
        self.memory_d, self.order = w["e_x"].shape[0], b_bar.size
        self.h = torch.zeros(w["W_h"].shape[0])
        self.m = torch.zeros(self.memory_d * self.order)

    def step(self, x: F32, out: F32) -> F32:
        torch = TORCH
        assert torch is not None
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        with torch.no_grad():
            for t in range(xt.shape[0]):
                u = torch.cat([xt[t], self.h, self.m]) @ self.ut + self.bu
                m = self.m.view(self.memory_d, self.order) @ self.mt + u[:, None] * self.b
                self.m = m.reshape(-1)
                self.h = torch.tanh(torch.cat([xt[t], self.h, self.m]) @ self.ht + self.bh)
                ot[t] = self.h
        return out


# --- cases -------------------------------------------------------------------------------------------


def _cell_weights(n_in: int, n_h: int, order: int, seed: int) -> dict[str, F32]:
    rng = np.random.default_rng(seed)

    def w(rows: int, cols: int, gain: float) -> F32:
        return (gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    return {"e_x": w(1, n_in, 1.0), "e_h": w(1, n_h, 0.5), "e_m": w(1, order, 0.1), "W_x": w(n_h, n_in, 1.0),
            "W_h": w(n_h, n_h, 0.25), "W_m": w(n_h, order, 1.0), "b_u": w(1, 1, 0.3)[0], "b_h": w(1, n_h, 0.3)[0]}


def _makers(kind: str, width_in: int, width_out: int, spec: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Factories of fresh kernels per implementation; each has step(x, out)."""
    makers: dict[str, Callable[[], Any]] = {}
    if kind == "memory":
        args = (width_in, spec["order"], THETA)
        if COMPILED is not None:
            makers["compiled"] = lambda: COMPILED.LegendreMemory(*args)
        makers["reference"] = lambda: LegendreMemoryRef(*args)
        if TORCH is not None:
            ref = LegendreMemoryRef(*args)
            makers["torch"] = lambda: TorchMemory(width_in, ref.A_bar, ref.B_bar)
    else:
        wts = spec["weights"]
        cargs = (width_in, width_out, spec["order"], THETA)
        if COMPILED is not None:
            makers["compiled"] = lambda: COMPILED.LMUCell(*cargs, **wts)
        makers["reference"] = lambda: LMUCellRef(*cargs, **wts)
        if TORCH is not None:
            ref = LMUCellRef(*cargs, **wts)
            makers["torch"] = lambda: TorchCell(wts, ref.A_bar, ref.B_bar)
    return makers



def run(quick: bool) -> dict[str, Any]:
    budget_s, min_calls, max_calls = (0.15, 20, 20_000) if quick else (1.0, 100, 200_000)
    rng = np.random.default_rng(0)
    cases: list[tuple[str, str, int, int, float, dict[str, Any]]] = [
        (name, "memory", ch, ch * order, rate, {"order": order}) for name, ch, order, rate in MEMORY_CASES]
    name, n_in, n_h, order, rate = CELL_CASE
    cases.append((name, "cell", n_in, n_h, rate, {"order": order, "weights": _cell_weights(n_in, n_h, order, 1)}))
    results: list[dict[str, Any]] = []
    checks: dict[str, float] = {}
    for case, kind, width_in, width_out, rate, spec in cases:
        makers = _makers(kind, width_in, width_out, spec)
        check_x = rng.standard_normal((256, width_in)).astype(np.float32)
        outs = {impl: make().step(check_x, np.empty((256, width_out), np.float32)) for impl, make in makers.items()}
        if "compiled" in outs:
            checks.update({f"{case}: {impl} vs compiled": float(np.max(np.abs(y - outs["compiled"])))
                           for impl, y in outs.items() if impl != "compiled"})
        for chunk in CHUNKS:
            pool = [rng.standard_normal((chunk, width_in)).astype(np.float32) for _ in range(POOL)]
            out = np.empty((chunk, width_out), np.float32)
            for impl, make in makers.items():
                kernel = make()
                ns = time_calls(lambda i, k=kernel, p=pool, o=out: k.step(p[i % POOL], o), budget_s, min_calls, max_calls)
                median_us = float(np.median(ns)) / 1e3
                samples_per_s = chunk / (median_us * 1e-6)
                results.append({
                    "case": case, "impl": impl, "chunk": chunk, "calls": int(ns.size),
                    "median_us": round(median_us, 3), "p99_us": round(float(np.percentile(ns, 99)) / 1e3, 3),
                    "us_per_sample": round(median_us / chunk, 4), "samples_per_s": round(samples_per_s),
                    "rate_hz": rate, "x_realtime": round(samples_per_s / rate, 1),
                })
    return {
        "meta": {
            "theta": THETA, "dtype": "float32", "quick": quick, "compiled": COMPILED is not None,
            "torch": None if TORCH is None else TORCH.__version__, "torch_threads": 1 if TORCH is not None else None,
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpu": cpu_name(), "max_abs_diff_vs_compiled": checks,
        },
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    header = ("case", "impl", "chunk", "calls", "median µs", "p99 µs", "µs/sample", "samples/s", "x realtime")
    rows = [header] + [
        (r["case"], r["impl"], str(r["chunk"]), str(r["calls"]), f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}",
         f"{r['us_per_sample']:.3f}", f"{r['samples_per_s']:,}", f"{r['x_realtime']:,}")
        for r in report["results"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
