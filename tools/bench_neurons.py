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

The LIF 256 case also runs, one sample per call, as a one-step model in the dense runtimes, the
membrane carried from call to call (inputs x and mem, outputs spikes and the new mem; the same float32
operations in the kernel's order: Greater, Cast, Mul, Mul, Add, Sub, Greater, Cast):
- "onnxruntime": an ONNX graph built with onnx.helper, run by benchlib.OrtStep (1 intra-op thread,
  sequential, optimisation ALL, IOBinding; the membrane ping-pongs between two bound buffers);
- "litert": the same graph as a .tflite flatbuffer (tflite_build.TFLiteBuilder: GREATER, CAST, MUL, ADD,
  SUB; no TensorFlow), run by benchlib.LiteRTStep (1 thread, default XNNPACK delegate; per call: write
  x, invoke, copy the new membrane into the mem input).
Both must reproduce the compiled kernel exactly (spikes and membranes over 300 samples, checked before
timing), or the bench stops.

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

from benchlib import (
    LiteRTStep,
    OrtStep,
    available,
    cpu_name,
    onnx_bytes,
    ratio_table,
    results_table,
    time_calls,
    timing,
    versions,
)
from spikeline.kernels.ref_neurons import (
    CubaLIFPopulationRef,
    DeltaModulatorRef,
    LIFEncoderRef,
    LIFPopulationRef,
)
from tflite_build import TFLiteBuilder

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
DENSE_CASE = "LIF 256"  # the case also run one step per call in ONNX Runtime and LiteRT
CHECK_STEPS = 300

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


# --- one-step dense runtimes (LIF population) -----------------------------------------------------


def _onnx_lif(beta: F32, threshold: F32) -> bytes:
    """One LIF step as an ONNX graph: inputs x, mem (1, n); outputs spikes, mem_out (1, n)."""
    from onnx import TensorProto, helper, numpy_helper

    n = beta.size
    node = helper.make_node
    nodes = [node("Greater", ["mem", "threshold"], ["reset_bool"]),
             node("Cast", ["reset_bool"], ["reset"], to=TensorProto.FLOAT),
             node("Mul", ["reset", "threshold"], ["drop"]),
             node("Mul", ["beta", "mem"], ["decayed"]),
             node("Add", ["decayed", "x"], ["integrated"]),
             node("Sub", ["integrated", "drop"], ["mem_out"]),
             node("Greater", ["mem_out", "threshold"], ["spikes_bool"]),
             node("Cast", ["spikes_bool"], ["spikes"], to=TensorProto.FLOAT)]

    def io(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n])

    graph = helper.make_graph(nodes, "lif", [io("x"), io("mem")], [io("spikes"), io("mem_out")],
                              [numpy_helper.from_array(beta, "beta"), numpy_helper.from_array(threshold, "threshold")])
    return onnx_bytes(graph)


def _tflite_lif(beta: F32, threshold: F32) -> bytes:
    """The same step as a .tflite flatbuffer: inputs x, mem; outputs lif_spikes, lif_mem."""
    b = TFLiteBuilder()
    n = beta.size
    x, mem = b.tensor("x", (1, n)), b.tensor("mem", (1, n))
    spikes, new_mem = b.leaky(x, mem, b.const("beta", beta), b.const("threshold", threshold), "lif")
    return b.finish([x, mem], [spikes, new_mem], "spikeline LIF step")


def _dense_lif(beta: F32, threshold: F32, chunks: list[F32], skipped: dict[str, str],
               checks: dict[str, Any]) -> dict[str, Callable[[int], object]]:
    """The ONNX Runtime and LiteRT one-step callers of the LIF population, checked against the kernel first."""
    steppers: dict[str, tuple[OrtStep | LiteRTStep, str, str]] = {}  # stepper, spikes output, membrane output
    if "onnxruntime" not in skipped:
        steppers["onnxruntime"] = (OrtStep(_onnx_lif(beta, threshold), state={"mem": "mem_out"}), "spikes", "mem_out")
    if "litert" not in skipped:
        steppers["litert"] = (LiteRTStep(_tflite_lif(beta, threshold), state={"mem": "lif_mem"}), "lif_spikes",
                              "lif_mem")
    n = beta.size
    x = (0.8 * np.random.default_rng(7).standard_normal((CHECK_STEPS, n)) + 0.3).astype(np.float32)
    kernel = (COMPILED.LIFPopulation if COMPILED is not None else LIFPopulationRef)(n, beta, threshold)
    spikes, mem = np.empty_like(x), np.empty_like(x)
    kernel.step(x, spikes, mem_out=mem)
    callers: dict[str, Callable[[int], object]] = {}
    for impl, (stepper, spikes_name, mem_name) in steppers.items():
        got_s, got_m = np.empty_like(x), np.empty_like(x)
        stepper.reset()
        for t in range(CHECK_STEPS):
            stepper.write("x", x[t : t + 1])
            stepper.run()
            got_s[t], got_m[t] = stepper.output(spikes_name)[0], stepper.output(mem_name)[0]
        check = {"steps": CHECK_STEPS, "spike_mismatches": int((got_s != spikes).sum()),
                 "max_abs_mem_diff": float(np.abs(got_m - mem).max())}
        checks[f"{DENSE_CASE}: {impl} vs {'compiled' if COMPILED is not None else 'reference'}"] = check
        if check["spike_mismatches"] or check["max_abs_mem_diff"]:
            raise SystemExit(f"the {impl} LIF step does not reproduce the kernel (same float32 operations): {check}")
        stepper.reset()
        callers[impl] = stepper.caller(np.stack(chunks), "x")
    return callers


def _case(name: str, kind: str, n_in: int, n_out: int, n_streams: int, chunk: int,
          rng: np.random.Generator, skipped: dict[str, str], checks: dict[str, Any]
          ) -> dict[str, Callable[[int], object]]:
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
    if name == DENSE_CASE and chunk == 1:
        callers.update(_dense_lif(np.clip(beta, 0.0, 1.0), np.full(n_out, 1.0, np.float32), chunks, skipped, checks))
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
    skipped: dict[str, str] = {}
    for impl, modules in (("onnxruntime", ("onnxruntime", "onnx")), ("litert", ("ai_edge_litert", "flatbuffers"))):
        reason = next((r for r in map(available, modules) if r), None)
        if reason:
            skipped[impl] = reason
    if SNN is None:
        skipped["snntorch"] = available("snntorch") or available("torch") or "?"
    checks: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    for name, kind, n_in, n_out, n_streams in CASES:
        for chunk in (1,) if n_streams > 1 else CHUNKS:
            for impl, call in _case(name, kind, n_in, n_out, n_streams, chunk, rng, skipped, checks).items():
                samples = n_streams if n_streams > 1 else chunk  # stream-samples advanced per call
                ns = time_calls(call, budget_s, min_calls, max_calls)
                results.append({"case": name, "impl": impl, "chunk": chunk, "streams": n_streams,
                                **timing(ns, samples)})
    meta: dict[str, Any] = {
        "dtype": "float32", "quick": quick, "compiled": COMPILED is not None,
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "cpu": cpu_name(), "skipped": skipped, "checks": checks,
        "versions": versions("torch", "snntorch", "onnxruntime", "onnx", "ai_edge_litert"),
    }
    if SNN is not None:
        meta.update({"torch": SNN[0].__version__, "snntorch": SNN[1].__version__,
                     "torch_threads": SNN[0].get_num_threads()})
    return {"meta": meta, "results": results}


def table(report: dict[str, Any], markdown: bool = False) -> str:
    res = report["results"]
    keys = (("case", "case"), ("impl", "impl"), ("chunk", "chunk"))
    out = ["All implementations (µs/sample = median / samples per call; a 16-stream call advances 16 "
           "stream-samples):", results_table(res, keys, markdown), "",
           "Other implementations' median µs/sample ÷ the compiled kernel's (how many times faster the "
           "kernel is):", ratio_table(res, (("case", "case"), ("chunk", "chunk")), markdown=markdown)]
    checks = report["meta"].get("checks", {})
    if checks:
        out += ["", "Checks before timing: " + "; ".join(
            f"{k}: {c['spike_mismatches']} spikes differ in {c['steps']} steps, max |mem diff| "
            f"{c['max_abs_mem_diff']:.3g}" for k, c in checks.items())]
    if report["meta"].get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["meta"]["skipped"].items())]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
