"""Benchmark the spiking kernels: compiled (spikeline._ext.neurons) vs numpy reference vs snnTorch.

Not a test. Cases: LIF populations of 64, 256 and 1024 neurons, a 256-neuron CuBa-LIF population,
the delta modulator on 64 channels, the LIF encoder (8 channels x 16 neurons), and a gateway
case: 16 streams of 64 LIF neurons advanced together by step_streams (snnTorch: batch of 16).
Each implementation is called the way a streaming runtime would call it: one call per chunk of 1
sample (the latency case) and of 32 samples. The kernels write into a preallocated out; snnTorch
(torch.no_grad, torch.set_num_threads(1), float32) gets each chunk through torch.from_numpy
(no copy) and steps it one sample at a time, as snnTorch models do; its output stays a tensor
(no conversion back, in snnTorch's favour). There is no streaming snnTorch delta modulator
(snntorch.spikegen.delta differences whole recorded sequences), so that case has no snnTorch row.

Each call is timed on its own with perf_counter_ns (GC off): median and 99th percentile per call,
per-sample µs = median / chunk, samples/s = chunk / median. Prints one JSON document, then a table.

    python tools/bench_neurons.py [--quick]
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
from spikeline.kernels.ref_neurons import (
    CubaLIFPopulationRef,
    DeltaModulatorRef,
    LIFEncoderRef,
    LIFPopulationRef,
)

CHUNKS = (1, 32)
POOL = 16  # distinct input chunks cycled through, so every call does not read the same cache lines
F32 = npt.NDArray[np.float32]


def _compiled() -> Any:
    try:
        import spikeline._ext.neurons as module
    except ImportError:
        return None
    return module


def _snntorch() -> tuple[Any, Any] | None:
    try:
        import snntorch
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch, snntorch


COMPILED = _compiled()
SNN = _snntorch()



def _kernel_caller(kernel: Any, chunks: list[F32], out_cols: int, streams: bool) -> Callable[[int], object]:
    out = np.empty((chunks[0].shape[0], out_cols), np.float32)
    if streams:
        return lambda i: kernel.step_streams(chunks[i % POOL], out)
    return lambda i: kernel.step(chunks[i % POOL], out)


def _snn_caller(step: Callable[[Any], object], chunks: list[F32], streams: bool) -> Callable[[int], object]:
    """Step an snnTorch module through chunks[i % POOL] one sample at a time (streams: one batched step)."""
    assert SNN is not None
    torch = SNN[0]
    tensors = [torch.from_numpy(c) for c in chunks]

    def call(i: int) -> object:
        x = tensors[i % POOL]
        with torch.no_grad():
            if streams:
                return step(x)
            result = None
            for t in range(x.shape[0]):
                result = step(x[t : t + 1])
            return result

    return call


def _case(name: str, kind: str, n_in: int, n_out: int, n_streams: int, chunk: int,
          rng: np.random.Generator) -> dict[str, Callable[[int], object]]:
    """The callables of one case, keyed by implementation."""
    streams = n_streams > 1
    rows = n_streams if streams else chunk
    if kind == "delta":
        chunks = [np.cumsum(0.3 * rng.standard_normal((rows, n_in)), axis=0).astype(np.float32) for _ in range(POOL)]
    else:
        chunks = [(0.8 * rng.standard_normal((rows, n_in)) + 0.3).astype(np.float32) for _ in range(POOL)]
    beta = rng.uniform(0.8, 0.99, n_out).astype(np.float32)
    alpha = rng.uniform(0.5, 0.9, n_out).astype(np.float32)
    gain = rng.uniform(-2.0, 2.0, n_out).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, n_out).astype(np.float32)
    per = n_out // n_in

    def build(classes: dict[str, Any]) -> Any:
        if kind == "lif":
            return classes["lif"](n_out, beta, 1.0, n_streams=n_streams)
        if kind == "cuba":
            return classes["cuba"](n_out, alpha, beta, 1.0, n_streams=n_streams)
        if kind == "delta":
            return classes["delta"](n_in, 0.2, n_streams=n_streams)
        return classes["encoder"](n_in, per, gain, bias, beta, 1.0, n_streams=n_streams)

    out_cols = 2 * n_in if kind == "delta" else n_out
    callers: dict[str, Callable[[int], object]] = {}
    if COMPILED is not None:
        compiled = {"lif": COMPILED.LIFPopulation, "cuba": COMPILED.CubaLIFPopulation,
                    "delta": COMPILED.DeltaModulator, "encoder": COMPILED.LIFEncoder}
        callers["compiled"] = _kernel_caller(build(compiled), chunks, out_cols, streams)
    reference = {"lif": LIFPopulationRef, "cuba": CubaLIFPopulationRef, "delta": DeltaModulatorRef,
                 "encoder": LIFEncoderRef}
    callers["reference"] = _kernel_caller(build(reference), chunks, out_cols, streams)
    if SNN is not None and kind != "delta":
        torch, snn = SNN
        b = torch.from_numpy(beta)
        if kind == "cuba":
            callers["snntorch"] = _snn_caller(snn.Synaptic(alpha=torch.from_numpy(alpha), beta=b, threshold=1.0),
                                              chunks, streams)
        elif kind == "lif":
            callers["snntorch"] = _snn_caller(snn.Leaky(beta=b, threshold=1.0), chunks, streams)
        else:
            leaky = snn.Leaky(beta=b, threshold=1.0)
            g, bb = torch.from_numpy(gain), torch.from_numpy(bias)
            callers["snntorch"] = _snn_caller(lambda x: leaky(torch.repeat_interleave(x, per, dim=1) * g + bb),
                                              chunks, streams)
    return callers


CASES = [  # (name, kind, inputs, neurons, streams)
    ("LIF 64", "lif", 64, 64, 1),
    ("LIF 256", "lif", 256, 256, 1),
    ("LIF 1024", "lif", 1024, 1024, 1),
    ("CuBa-LIF 256", "cuba", 256, 256, 1),
    ("delta 64 ch", "delta", 64, 64, 1),
    ("LIF encoder 8x16", "encoder", 8, 128, 1),
    ("LIF 64 x 16 streams", "lif", 64, 64, 16),
]



def run(quick: bool) -> dict[str, Any]:
    budget_s, min_calls, max_calls = (0.15, 30, 20_000) if quick else (1.0, 200, 200_000)
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for name, kind, n_in, n_out, n_streams in CASES:
        for chunk in (1,) if n_streams > 1 else CHUNKS:
            for impl, call in _case(name, kind, n_in, n_out, n_streams, chunk, rng).items():
                ns = time_calls(call, budget_s, min_calls, max_calls)
                median_us = float(np.median(ns)) / 1e3
                samples = n_streams if n_streams > 1 else chunk  # stream-samples advanced per call
                results.append({
                    "case": name, "impl": impl, "chunk": chunk, "streams": n_streams, "calls": int(ns.size),
                    "median_us": round(median_us, 3),
                    "p99_us": round(float(np.percentile(ns, 99)) / 1e3, 3),
                    "us_per_sample": round(median_us / samples, 4),
                    "samples_per_s": round(samples / (median_us * 1e-6)),
                })
    meta: dict[str, Any] = {
        "dtype": "float32", "quick": quick, "compiled": COMPILED is not None,
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "cpu": cpu_name(),
    }
    if SNN is not None:
        meta.update({"torch": SNN[0].__version__, "snntorch": SNN[1].__version__,
                     "torch_threads": SNN[0].get_num_threads()})
    return {"meta": meta, "results": results}


def table(report: dict[str, Any]) -> str:
    header = ("case", "impl", "chunk", "calls", "median µs", "p99 µs", "µs/sample", "samples/s")
    rows = [header] + [
        (r["case"], r["impl"], str(r["chunk"]), str(r["calls"]), f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}",
         f"{r['us_per_sample']:.3f}", f"{r['samples_per_s']:,}")
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
