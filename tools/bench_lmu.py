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

The LMUCell case also runs, one sample per call, as a one-step float32 model in the dense runtimes,
h and m carried from call to call (inputs x, h, m; outputs h_out, m_out):
- "onnxruntime": an ONNX graph built with onnx.helper (Concat, MatMul, Add, Mul, Tanh), run by
  benchlib.OrtStep (1 intra-op thread, sequential, optimisation ALL, IOBinding; h and m ping-pong
  between two bound buffers each, so the state is carried without a copy);
- "litert": the same step as a .tflite flatbuffer (tflite_build.TFLiteBuilder: CONCATENATION,
  FULLY_CONNECTED, MUL, ADD, TANH; no TensorFlow), run by benchlib.LiteRTStep (1 thread, default
  XNNPACK delegate; per call: write x, invoke, copy h_out and m_out into the h and m inputs).
Both sum in float32 in their own order (the kernel: double, in a fixed order), so they are checked
against the compiled kernel to a tolerance (max |difference| of h over 256 samples, in the JSON).
Prints one JSON document, then the same results as tables.

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
from spikeline.kernels.lmu import LegendreMemoryRef, LMUCellRef
from tflite_build import TFLiteBuilder

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


# --- one-step dense runtimes (LMUCell) ------------------------------------------------------------


def _cell_arrays(weights: dict[str, F32], a_bar: F32, b_bar: F32) -> dict[str, F32]:
    """The cell's stacked float32 arrays: U = [e_x | e_h | e_m] (memory_d, n_v), H = [W_x | W_h | W_m]
    (n_hidden, n_v), the biases, Ā (order, order) and B̄ (order,)."""
    return {"U": np.concatenate([weights["e_x"], weights["e_h"], weights["e_m"]], axis=1),
            "H": np.concatenate([weights["W_x"], weights["W_h"], weights["W_m"]], axis=1),
            "b_u": weights["b_u"], "b_h": weights["b_h"], "A": a_bar.astype(np.float32),
            "B": b_bar.astype(np.float32)}


def _onnx_cell(arrays: dict[str, F32], n_in: int) -> bytes:
    """One LMUCell step (memory_d 1) as an ONNX graph: inputs x, h, m; outputs h_out, m_out."""
    from onnx import TensorProto, helper, numpy_helper

    n_h, order = arrays["H"].shape[0], arrays["A"].shape[0]
    if arrays["U"].shape[0] != 1:
        raise ValueError("the one-step LMUCell graph is written for memory_d == 1")
    node = helper.make_node
    nodes = [node("Concat", ["x", "h", "m"], ["v"], axis=1),
             node("MatMul", ["v", "UT"], ["u0"]), node("Add", ["u0", "b_u"], ["u"]),
             node("MatMul", ["m", "AT"], ["am"]), node("Mul", ["u", "B"], ["bu"]), node("Add", ["am", "bu"], ["m_out"]),
             node("Concat", ["x", "h", "m_out"], ["v2"], axis=1),
             node("MatMul", ["v2", "HT"], ["z0"]), node("Add", ["z0", "b_h"], ["z"]), node("Tanh", ["z"], ["h_out"])]
    inits = {"UT": arrays["U"].T, "b_u": arrays["b_u"], "AT": arrays["A"].T, "B": arrays["B"], "HT": arrays["H"].T,
             "b_h": arrays["b_h"]}

    def io(name: str, width: int) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, width])

    graph = helper.make_graph(nodes, "lmu_cell", [io("x", n_in), io("h", n_h), io("m", order)],
                              [io("h_out", n_h), io("m_out", order)],
                              [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in inits.items()])
    return onnx_bytes(graph)


def _tflite_cell(arrays: dict[str, F32], n_in: int) -> bytes:
    """The same step as a .tflite flatbuffer: inputs x, h, m; outputs h_out, m_out."""
    n_h, order = arrays["H"].shape[0], arrays["A"].shape[0]
    b = TFLiteBuilder()
    ops = b.ops
    x, h, m = b.tensor("x", (1, n_in)), b.tensor("h", (1, n_h)), b.tensor("m", (1, order))
    u_w, u_b, a, bb, h_w, h_b = (b.const(k, np.ascontiguousarray(arrays[k])) for k in ("U", "b_u", "A", "B", "H", "b_h"))
    v = b.concat([x, h, m], 1, "v", (1, n_in + n_h + order))
    u = b.fully_connected(v, u_w, u_b, "u")
    m_out = b.binary(ops.ADD, b.fully_connected(m, a, -1, "am"), b.binary(ops.MUL, u, bb, "bu"), "m_out")
    v2 = b.concat([x, h, m_out], 1, "v2", (1, n_in + n_h + order))
    h_out = b.unary(ops.TANH, b.fully_connected(v2, h_w, h_b, "z"), "h_out")
    return b.finish([x, h, m], [h_out, m_out], "spikeline LMUCell step")


def _dense_cell(weights: dict[str, F32], a_bar: F32, b_bar: F32, n_in: int, skipped: dict[str, str]
                ) -> dict[str, OrtStep | LiteRTStep]:
    arrays = _cell_arrays(weights, a_bar, b_bar)
    steppers: dict[str, OrtStep | LiteRTStep] = {}
    if "onnxruntime" not in skipped:
        steppers["onnxruntime"] = OrtStep(_onnx_cell(arrays, n_in), state={"h": "h_out", "m": "m_out"})
    if "litert" not in skipped:
        steppers["litert"] = LiteRTStep(_tflite_cell(arrays, n_in), state={"h": "h_out", "m": "m_out"})
    return steppers


def _run_dense(stepper: OrtStep | LiteRTStep, x: F32) -> F32:
    """h for every sample of x, one call per sample from a zero state (for the check)."""
    stepper.reset()
    out = np.empty((len(x), stepper.output("h_out").shape[1]), np.float32)
    for t in range(len(x)):
        stepper.write("x", x[t : t + 1])
        stepper.run()
        out[t] = stepper.output("h_out")[0]
    stepper.reset()
    return out


# --- cases -------------------------------------------------------------------------------------------


def _cell_weights(n_in: int, n_h: int, order: int, seed: int) -> dict[str, F32]:
    rng = np.random.default_rng(seed)

    def w(rows: int, cols: int, gain: float) -> F32:
        weights: F32 = (gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        return weights

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
            cell = LMUCellRef(*cargs, **wts)
            makers["torch"] = lambda: TorchCell(wts, cell.A_bar, cell.B_bar)
    return makers



def _stepper(kernel: Any, pool: list[F32], out: F32) -> Callable[[int], object]:
    """A time_calls callable: call i steps the kernel through pool[i % POOL] into out."""
    return lambda i: kernel.step(pool[i % POOL], out)


def run(quick: bool) -> dict[str, Any]:
    budget_s, min_calls, max_calls = (0.15, 20, 20_000) if quick else (1.0, 100, 200_000)
    rng = np.random.default_rng(0)
    skipped: dict[str, str] = {}
    for impl, modules in (("onnxruntime", ("onnxruntime", "onnx")), ("litert", ("ai_edge_litert", "flatbuffers"))):
        reason = next((r for r in map(available, modules) if r), None)
        if reason:
            skipped[impl] = reason
    if TORCH is None:
        skipped["torch"] = available("torch") or "?"
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
        dense: dict[str, OrtStep | LiteRTStep] = {}
        if kind == "cell":
            ref = LMUCellRef(width_in, width_out, spec["order"], THETA, **spec["weights"])
            dense = _dense_cell(spec["weights"], ref.A_bar, ref.B_bar, width_in, skipped)
            outs.update({impl: _run_dense(stepper, check_x) for impl, stepper in dense.items()})
        if "compiled" in outs:
            checks.update({f"{case}: {impl} vs compiled": float(np.max(np.abs(y - outs["compiled"])))
                           for impl, y in outs.items() if impl != "compiled"})
        for chunk in CHUNKS:
            pool = [rng.standard_normal((chunk, width_in)).astype(np.float32) for _ in range(POOL)]
            out = np.empty((chunk, width_out), np.float32)
            callers: dict[str, Callable[[int], object]] = {}
            for impl, make in makers.items():
                callers[impl] = _stepper(make(), pool, out)
            if chunk == 1:
                callers.update({impl: stepper.caller(np.stack(pool), "x") for impl, stepper in dense.items()})
            for impl, call in callers.items():
                t = timing(time_calls(call, budget_s, min_calls, max_calls), chunk)
                results.append({"case": case, "impl": impl, "chunk": chunk, **t, "rate_hz": rate,
                                "x_realtime": round(t["samples_per_s"] / rate, 1)})
    return {
        "meta": {
            "theta": THETA, "dtype": "float32", "quick": quick, "compiled": COMPILED is not None,
            "torch": None if TORCH is None else TORCH.__version__, "torch_threads": 1 if TORCH is not None else None,
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpu": cpu_name(), "max_abs_diff_vs_compiled": checks, "skipped": skipped,
            "versions": versions("torch", "onnxruntime", "onnx", "ai_edge_litert"),
        },
        "results": results,
    }


def table(report: dict[str, Any], markdown: bool = False) -> str:
    res = report["results"]
    keys = (("case", "case"), ("impl", "impl"), ("chunk", "chunk"))
    out = ["All implementations:", results_table(res, keys, markdown, extra=(("x_realtime", "x realtime"),)), "",
           "Other implementations' median µs/sample ÷ the compiled kernel's (how many times faster the kernel is):",
           ratio_table(res, (("case", "case"), ("chunk", "chunk")), markdown=markdown)]
    checks = report["meta"].get("max_abs_diff_vs_compiled", {})
    if checks:
        out += ["", "Checks before timing, max |output difference| over 256 samples: "
                + "; ".join(f"{k}: {v:.2g}" for k, v in checks.items())]
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
