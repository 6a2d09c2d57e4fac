"""Benchmark DeltaGRU against dense one-step GRUs: numpy reference, torch, ONNX Runtime and LiteRT.

Not a test. For GRU 16->64 and 64->128 (torch.nn.GRUCell's default initialisation, seed 0) and input
temporal sparsity 0 / 50 / 90 / 99 % (each step, each input component keeps its previous value with
that probability, otherwise it takes a fresh N(0, 1) value), it times, one call at a time
(perf_counter_ns, GC off, after a warm-up), the median and 99th percentile per call, with one sample
per call and with 32-sample chunks:

- delta: the compiled DeltaGRU (spikeline._ext.delta), theta_x = 0 (unchanged inputs are skipped
  exactly; the input side is lossless) and theta_h = 0.05 (hidden deltas below 0.05 are not sent:
  an approximation, whose cost is reported as the RMS difference of h from the lossless cell);
- delta-ref: the numpy reference DeltaGRURef (same arithmetic, Python loop per sample);
- torch: torch.nn.GRUCell stepped one sample per call (set_num_threads(1), no_grad); for chunks,
  torch.nn.GRU over the 32 samples in one call;
- onnxruntime: the ONNX GRU operator (linear_before_reset=1, torch's equations; 1 step per call, or
  32 steps for chunks) run by benchlib.OrtStep: 1 intra-op thread, sequential, graph optimisation
  ALL, inputs and the carried hidden state bound once (IOBinding, ping-pong between two state buffers);
- litert: benchlib.LiteRTStep, an ai_edge_litert Interpreter (1 thread, default XNNPACK delegate), on
  a one-step GRU .tflite built without TensorFlow by tflite_build.TFLiteBuilder (the flatbuffer object
  API that ai_edge_litert ships, schema_py_generated): FULLY_CONNECTED (x), FULLY_CONNECTED (h),
  SPLIT, ADD, LOGISTIC, MUL, TANH, SUB (32 steps unrolled for chunks). Per call: write x into the
  input tensor, invoke, copy h out into the h input. "litert-invoke" is invoke() alone: a lower bound
  no caller can reach.

Every baseline is checked against torch.nn.GRUCell before it is timed (max |h| difference in the
JSON). The dense baselines do the same work whatever the input, so they are timed once per
configuration and compared with DeltaGRU at every sparsity. "crossover" times one DeltaDense update
with exactly k of n inputs active through the sparse gather and through the dense pass: it is the
measurement behind DEFAULT_DENSE_ABOVE. Prints one JSON document, then the tables.

    python tools/bench_delta.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from benchlib import (
    LiteRTStep,
    OrtStep,
    available,
    cpu_name,
    format_table,
    onnx_bytes,
    time_calls,
    timing,
    versions,
)
from spikeline.kernels.ref_delta import DEFAULT_DENSE_ABOVE, DEFAULT_REFRESH_EVERY, DeltaGRURef
from tflite_build import TFLiteBuilder

CONFIGS = ((16, 64), (64, 128))
SPARSITIES = (0.0, 0.5, 0.9, 0.99)
THETA_X, THETA_H = 0.0, 0.05
CHUNK = 32
SEQ = 4096  # input samples per (config, sparsity), cycled through by the timed calls
TARGETS = {"config": "16->64", "sparsity": 0.9, "max_ratio_90": 0.5, "max_ratio_0": 1.5}

F32 = npt.NDArray[np.float32]
Params = tuple[F32, F32, F32, F32]


def _compiled() -> dict[str, Any] | None:
    try:
        from spikeline._ext import delta
    except ImportError:
        return None
    return {"DeltaGRU": delta.DeltaGRU, "DeltaDense": delta.DeltaDense}


COMPILED = _compiled()



def _inputs(n: int, n_in: int, sparsity: float, rng: np.random.Generator) -> F32:
    """Each step each component keeps its value with probability `sparsity`, else draws N(0, 1)."""
    x = np.empty((n, n_in), np.float32)
    cur = rng.standard_normal(n_in).astype(np.float32)
    for t in range(n):
        change = rng.random(n_in) >= sparsity
        cur = cur.copy()
        cur[change] = rng.standard_normal(int(change.sum()))
        x[t] = cur
    return x


def _params(n_in: int, hidden: int) -> tuple[Params, Any]:
    """GRUCell weights (torch layout, float32) and the torch cell itself (None without torch)."""
    try:
        import torch
    except ImportError:
        rng = np.random.default_rng(0)
        k = 1.0 / np.sqrt(hidden)
        shapes = ((3 * hidden, n_in), (3 * hidden, hidden), (3 * hidden,), (3 * hidden,))
        w = tuple(rng.uniform(-k, k, s).astype(np.float32) for s in shapes)
        return (w[0], w[1], w[2], w[3]), None
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(n_in, hidden)
    p = [t.detach().numpy().astype(np.float32) for t in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    return (p[0], p[1], p[2], p[3]), cell


# --- baselines: each returns (call(i) on one sample or chunk i, run(x) -> h sequence for the check) ---

Baseline = tuple[Callable[[int], object], Callable[[F32], F32]]


def _torch_cell(cell: Any, xs: F32, chunk: int) -> Baseline:
    import torch

    hidden = cell.hidden_size
    if chunk == 1:
        rows = [torch.from_numpy(xs[t : t + 1]) for t in range(len(xs))]
        state = [torch.zeros(1, hidden)]

        def call(i: int) -> object:
            state[0] = cell(rows[i % len(rows)], state[0])
            return state[0]

        def run(x: F32) -> F32:
            h, out = torch.zeros(1, hidden), []
            for t in range(len(x)):
                h = cell(torch.from_numpy(x[t : t + 1]), h)
                out.append(h.numpy()[0].copy())
            return np.array(out)

        return call, run
    gru = torch.nn.GRU(cell.input_size, hidden)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(getattr(cell, name))
    chunks = [torch.from_numpy(xs[k : k + chunk].reshape(chunk, 1, -1)) for k in range(0, len(xs), chunk)]
    hstate = [torch.zeros(1, 1, hidden)]

    def call_chunk(i: int) -> object:
        y, hstate[0] = gru(chunks[i % len(chunks)], hstate[0])
        return y

    def run_chunk(x: F32) -> F32:
        y, _ = gru(torch.from_numpy(x.reshape(len(x), 1, -1)), torch.zeros(1, 1, hidden))
        result: F32 = y.numpy().reshape(len(x), hidden).copy()
        return result

    return call_chunk, run_chunk


def _onnx_gru(p: Params, steps: int) -> bytes:
    """An ONNX model: one GRU operator over `steps` samples, torch's equations (linear_before_reset)."""
    from onnx import TensorProto, helper, numpy_helper

    w_ih, w_hh, b_ih, b_hh = p
    hidden, n_in = w_hh.shape[1], w_ih.shape[1]

    def zrh(a: F32) -> F32:  # torch's gate order (r, z, n) -> ONNX's (z, r, h)
        r, z, n = np.split(a, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)

    inits = [numpy_helper.from_array(zrh(w_ih)[np.newaxis], "W"), numpy_helper.from_array(zrh(w_hh)[np.newaxis], "R"),
             numpy_helper.from_array(np.concatenate([zrh(b_ih), zrh(b_hh)])[np.newaxis], "B")]
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "H0"], ["Y", "Y_h"], hidden_size=hidden,
                            linear_before_reset=1)
    graph = helper.make_graph(
        [node], "gru",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, 1, n_in]),
         helper.make_tensor_value_info("H0", TensorProto.FLOAT, [1, 1, hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, 1, 1, hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, hidden])],
        inits)
    return onnx_bytes(graph)


def _onnxruntime(p: Params, xs: F32, chunk: int) -> Baseline:
    """benchlib.OrtStep on the GRU model: X written per call, the hidden state carried H0 <- Y_h."""
    step = OrtStep(_onnx_gru(p, chunk), state={"H0": "Y_h"})
    n_in, hidden = p[0].shape[1], p[1].shape[1]
    n_chunks = len(xs) // chunk
    src = xs[: n_chunks * chunk].reshape(n_chunks, chunk, 1, n_in)

    def run(x: F32) -> F32:
        step.reset()
        out = []
        for c in x.reshape(-1, chunk, 1, n_in):
            step.inputs["X"][...] = c
            step.run()
            out.append(step.output("Y").reshape(chunk, hidden).copy())
        return np.concatenate(out)

    return step.caller(src, "X"), run


def _tflite_gru(p: Params, steps: int) -> bytes:
    """A .tflite GRU over `steps` samples (unrolled), built with tflite_build.TFLiteBuilder (no TensorFlow)."""
    w_ih, w_hh, b_ih, b_hh = p
    hidden, n_in = w_hh.shape[1], w_ih.shape[1]
    b = TFLiteBuilder()
    ops, i32 = b.ops, b.tfl.TensorType.INT32
    x = b.tensor("x", (steps, n_in))
    h_in = h = b.tensor("h", (1, hidden))
    wi, wh = b.tensor("w_ih", w_ih.shape, w_ih), b.tensor("w_hh", w_hh.shape, w_hh)  # FC weights: (out, in), torch's
    bi, bh = b.tensor("b_ih", b_ih.shape, b_ih), b.tensor("b_hh", b_hh.shape, b_hh)
    axis0 = b.tensor("axis0", (), np.array(0, np.int32), i32)
    axis1 = b.tensor("axis1", (), np.array(1, np.int32), i32)
    gi_all = b.fully_connected(x, wi, bi, "gi")
    gi_rows = [gi_all] if steps == 1 else b.split(axis0, gi_all, steps, [f"gi{t}" for t in range(steps)],
                                                  (1, 3 * hidden))
    outs = []
    for t, gi in enumerate(gi_rows):
        gh = b.fully_connected(h, wh, bh, f"gh{t}")
        gi_r, gi_z, gi_n = b.split(axis1, gi, 3, [f"gi{t}_{g}" for g in "rzn"], (1, hidden))
        gh_r, gh_z, gh_n = b.split(axis1, gh, 3, [f"gh{t}_{g}" for g in "rzn"], (1, hidden))
        r = b.unary(ops.LOGISTIC, b.binary(ops.ADD, gi_r, gh_r, f"ar{t}"), f"r{t}")
        z = b.unary(ops.LOGISTIC, b.binary(ops.ADD, gi_z, gh_z, f"az{t}"), f"z{t}")
        n = b.unary(ops.TANH, b.binary(ops.ADD, gi_n, b.binary(ops.MUL, r, gh_n, f"rn{t}"), f"an{t}"), f"n{t}")
        h = b.binary(ops.ADD, n, b.binary(ops.MUL, z, b.binary(ops.SUB, h, n, f"hn{t}"), f"zhn{t}"), f"h{t + 1}")
        outs.append(h)
    y = outs[0] if steps == 1 else b.concat(outs, 0, "y", (steps, hidden))
    return b.finish([x, h_in], [y], "spikeline GRU step")


def _litert(p: Params, xs: F32, chunk: int) -> tuple[Baseline, Callable[[int], object]]:
    """benchlib.LiteRTStep on the GRU model: x written per call, h <- the last row of y after invoke."""
    y_name = "y" if chunk > 1 else "h1"  # one step: the output is the new h itself
    step = LiteRTStep(_tflite_gru(p, chunk), state={"h": y_name})
    n_chunks = len(xs) // chunk
    src = xs[: n_chunks * chunk].reshape(n_chunks, chunk, -1)
    x_view, y_view = step.inputs["x"], step.outputs[y_name]

    def run(x: F32) -> F32:
        step.reset()
        out = []
        for c in x.reshape(-1, chunk, x.shape[1]):
            x_view()[...] = c
            step.run()
            out.append(y_view().copy())
        return np.concatenate(out)

    return (step.caller(src, "x"), run), step.invoke_only()


def _delta(cls: type[Any], p: Params, xs: F32, chunk: int) -> Callable[[int], object]:
    n_in, hidden = p[0].shape[1], p[1].shape[1]
    layer = cls(n_in, hidden, *p, THETA_X, THETA_H)
    out = np.empty((chunk, hidden), np.float32)
    n_chunks = len(xs) // chunk
    rows = [np.ascontiguousarray(xs[k * chunk : (k + 1) * chunk]) for k in range(n_chunks)]
    return lambda i: layer.step(rows[i % n_chunks], out)


def _baselines(p: Params, cell: Any, xs: F32, mode: int, skipped: dict[str, str]
               ) -> list[tuple[str, Callable[[int], object], Callable[[F32], F32] | None]]:
    """(impl, timed call, check run or None) for every available dense baseline, `mode` samples per call."""
    out: list[tuple[str, Callable[[int], object], Callable[[F32], F32] | None]] = []
    if "torch" not in skipped:
        out.append(("torch", *_torch_cell(cell, xs, mode)))
    if "onnxruntime" not in skipped:
        out.append(("onnxruntime", *_onnxruntime(p, xs, mode)))
    if "litert" not in skipped:
        (call, check), invoke_only = _litert(p, xs, mode)
        out += [("litert", call, check), ("litert-invoke", invoke_only, None)]
    return out


def _time_layer(layer: Any, x: F32, budget: tuple[float, int, int]) -> float:
    """Median nanoseconds of layer.step(x, out)."""
    out = np.empty((x.shape[0], layer.out_features), np.float32)
    return float(np.median(time_calls(lambda _: layer.step(x, out), *budget)))


@contextlib.contextmanager
def _torch_single_thread_no_grad() -> Iterator[None]:
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


def _row(impl: str, cfg: str, mode: int, ns: npt.NDArray[np.int64], **extra: Any) -> dict[str, Any]:
    return {"impl": impl, "config": cfg, "chunk": mode, **timing(ns, mode), **extra}


def _crossover(quick: bool, budget: tuple[float, int, int]) -> list[dict[str, Any]]:
    """Time of one DeltaDense update with k of n inputs active: sparse gather vs dense pass."""
    if COMPILED is None:
        return []
    cls = COMPILED["DeltaDense"]
    rng = np.random.default_rng(1)
    shapes = ((16, 192), (64, 384)) if quick else ((16, 192), (64, 192), (64, 384), (128, 384))
    fractions = (0.5, 0.75, 0.875, 1.0) if quick else (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.95, 1.0)
    rows = []
    for n_in, n_out in shapes:
        w = rng.standard_normal((n_out, n_in)).astype(np.float32)
        for frac in fractions:
            k = max(1, round(frac * n_in))
            x = np.zeros((CHUNK, n_in), np.float32)
            cur = np.zeros(n_in, np.float32)
            for t in range(CHUNK):  # exactly k components change per sample, by at least 1
                cur = cur.copy()
                idx = rng.choice(n_in, k, replace=False)
                cur[idx] += rng.choice([-1.0, 1.0], k) * rng.uniform(1.0, 2.0, k)
                x[t] = cur
            ns = {path: _time_layer(cls(w, None, 0.0, refresh_every=0, dense_above=dense_above), x, budget) / CHUNK
                  for path, dense_above in (("sparse", 1.0), ("dense", 0.0))}
            rows.append({"n_in": n_in, "n_out": n_out, "active_fraction": round(k / n_in, 4),
                         "sparse_ns": round(ns["sparse"]), "dense_ns": round(ns["dense"]),
                         "dense_over_sparse": round(ns["dense"] / ns["sparse"], 3)})
    return rows


def run(quick: bool, crossover: bool = True) -> dict[str, Any]:
    """Every configuration, sparsity and implementation; crossover=False skips the DeltaDense sweep."""
    budget = (0.15, 30, 20_000) if quick else (1.0, 300, 200_000)
    ref_budget = (0.15, 10, 2_000) if quick else (1.0, 50, 20_000)
    skipped: dict[str, str] = {}
    for impl, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("litert", "ai_edge_litert")):
        reason = available(module)
        if reason:
            skipped[impl] = reason
    if "onnxruntime" not in skipped and available("onnx"):
        skipped["onnxruntime"] = "the onnx package (model building) is not installed"
    if COMPILED is None:
        skipped["delta"] = "spikeline._ext.delta is not built (SPIKELINE_EXT_ONLY=delta python setup.py build_ext --inplace)"
    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    sparsity_info: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    with _torch_single_thread_no_grad():
        for n_in, hidden in CONFIGS:
            cfg = f"{n_in}->{hidden}"
            p, cell = _params(n_in, hidden)
            dense_x = _inputs(SEQ, n_in, 0.0, rng)
            check_x = dense_x[: CHUNK * 4]
            if cell is not None:
                check_against, expected = "torch.nn.GRUCell", _torch_cell(cell, dense_x, 1)[1](check_x)
            else:
                check_against = "DeltaGRURef at theta 0"
                expected = DeltaGRURef(n_in, hidden, *p, 0.0, 0.0, refresh_every=0).step(check_x)
            # --- dense baselines: timed once per configuration
            for mode in (1, CHUNK):
                for impl, call, check in _baselines(p, cell, dense_x, mode, skipped):
                    if check is not None:
                        diff = float(np.abs(check(check_x) - expected).max())
                        checks.append({"impl": impl, "config": cfg, "chunk": mode, "against": check_against,
                                       "max_abs_diff": diff})
                    results.append(_row(impl, cfg, mode, time_calls(call, *budget)))
            # --- DeltaGRU at each input sparsity
            for sparsity in SPARSITIES:
                xs = dense_x if sparsity == 0.0 else _inputs(SEQ, n_in, sparsity, rng)
                layer = (COMPILED["DeltaGRU"] if COMPILED else DeltaGRURef)(n_in, hidden, *p, THETA_X, THETA_H)
                h = layer.step(xs)
                h_exact = (COMPILED["DeltaGRU"] if COMPILED else DeltaGRURef)(n_in, hidden, *p, 0.0, 0.0).step(xs)
                c = layer.counters
                info = {"config": cfg, "input_sparsity": sparsity,
                        "x_sparsity": round(1 - c["x_sent"] / c["x_possible"], 4),
                        "h_sparsity": round(1 - c["h_sent"] / c["h_possible"], 4),
                        "macs_fraction": round(c["macs"] / c["macs_dense"], 4),
                        "h_rms_vs_lossless": float(np.sqrt(np.mean((h - h_exact) ** 2))),
                        "h_std": float(h_exact.std())}
                sparsity_info.append(info)
                extra = {"input_sparsity": sparsity, "h_sparsity": info["h_sparsity"]}
                for mode in (1, CHUNK):
                    if COMPILED is not None:
                        results.append(_row("delta", cfg, mode, time_calls(_delta(COMPILED["DeltaGRU"], p, xs, mode),
                                                                            *budget), **extra))
                    results.append(_row("delta-ref", cfg, mode, time_calls(_delta(DeltaGRURef, p, xs, mode),
                                                                            *ref_budget), **extra))
    return {
        "meta": {
            "quick": quick, "theta_x": THETA_X, "theta_h": THETA_H, "chunk": CHUNK, "sequence": SEQ,
            "refresh_every": DEFAULT_REFRESH_EVERY, "dense_above": DEFAULT_DENSE_ABOVE, "skipped": skipped,
            "compiled": COMPILED is not None, "python": platform.python_version(), "numpy": np.__version__,
            "versions": versions("torch", "onnxruntime", "onnx", "ai_edge_litert"), "machine": platform.machine(), "cpu": cpu_name(),
        },
        "checks": checks,
        "sparsity": sparsity_info,
        "results": results,
        "crossover": _crossover(quick, budget) if crossover else [],
    }


def tables(report: dict[str, Any], markdown: bool = False) -> str:
    res = report["results"]
    header = ("impl", "config", "sparsity", "samples/call", "calls", "median µs/call", "p99 µs/call", "µs/sample",
              "samples/s")
    rows: list[tuple[str, ...]] = [header] + [
        (r["impl"], r["config"], f"{r['input_sparsity']:.0%}" if "input_sparsity" in r else "-", str(r["chunk"]),
         str(r["calls"]), f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}", f"{r['us_per_sample']:.3f}",
         f"{r['samples_per_s']:,}")
        for r in res
    ]
    out = ["All implementations (dense baselines are timed once per configuration: their work does not",
           "depend on the input):", format_table(rows, markdown=markdown), ""]
    base = {(r["impl"], r["config"], r["chunk"]): r for r in res if "input_sparsity" not in r}
    impls = [b for b in ("litert", "onnxruntime", "torch") if any(k[0] == b for k in base)]
    ratio_header = ("config", "sparsity", "h sparsity", "samples/call", "delta µs/sample",
                    *[f"delta / {b}" for b in impls], "delta p99 / litert p99" if "litert" in impls else "")
    rows = [ratio_header]
    for r in (r for r in res if r["impl"] == "delta"):
        ratios = []
        for b in impls:
            ref = base.get((b, r["config"], r["chunk"]))
            ratios.append(f"{r['us_per_sample'] / ref['us_per_sample']:.2f}x" if ref else "-")
        lite = base.get(("litert", r["config"], r["chunk"]))
        p99 = f"{r['p99_us'] / lite['p99_us']:.2f}x" if lite else ""
        rows.append((r["config"], f"{r['input_sparsity']:.0%}", f"{r['h_sparsity']:.0%}", str(r["chunk"]),
                     f"{r['us_per_sample']:.3f}", *ratios, p99))
    out += [f"DeltaGRU (theta_x={report['meta']['theta_x']}, theta_h={report['meta']['theta_h']}) / dense "
            "baseline, median time per sample (lower is better):", format_table(rows, markdown=markdown), ""]
    rows = [("config", "input sparsity", "x sparsity", "h sparsity", "MACs done / dense", "h RMS vs lossless", "h std")]
    rows += [(s["config"], f"{s['input_sparsity']:.0%}", f"{s['x_sparsity']:.1%}", f"{s['h_sparsity']:.1%}",
              f"{s['macs_fraction']:.1%}", f"{s['h_rms_vs_lossless']:.4f}", f"{s['h_std']:.3f}")
             for s in report["sparsity"]]
    out += ["Measured sparsity and the cost of theta_h:", format_table(rows, markdown=markdown), ""]
    out.append(_targets(report, markdown))
    if report["crossover"]:
        rows = [("n_in -> n_out", "active fraction", "sparse ns", "dense ns", "dense / sparse")]
        rows += [(f"{c['n_in']}->{c['n_out']}", f"{c['active_fraction']:.3f}", str(c["sparse_ns"]), str(c["dense_ns"]),
                  f"{c['dense_over_sparse']:.2f}") for c in report["crossover"]]
        out += ["", f"Sparse gather vs dense pass per DeltaDense update (DEFAULT_DENSE_ABOVE = "
                f"{report['meta']['dense_above']}):", format_table(rows, markdown=markdown)]
    if report["meta"]["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["meta"]["skipped"].items())]
    return "\n".join(out)


def _targets(report: dict[str, Any], markdown: bool = False) -> str:
    res = report["results"]
    lines = ["Targets (one sample per call, median): DeltaGRU 16->64 at 90 % sparsity <= 0.5x and at 0 % <= 1.5x "
             "the dense LiteRT (else ONNX Runtime) step:" + ("\n" if markdown else "")]
    for baseline in ("litert", "onnxruntime"):
        ref = next((r for r in res if r["impl"] == baseline and r["config"] == TARGETS["config"] and r["chunk"] == 1),
                   None)
        if ref is None:
            continue
        for sparsity, limit in ((0.9, TARGETS["max_ratio_90"]), (0.0, TARGETS["max_ratio_0"])):
            d = next((r for r in res if r["impl"] == "delta" and r["config"] == TARGETS["config"] and r["chunk"] == 1
                      and r["input_sparsity"] == sparsity), None)
            if d is None:
                continue
            ratio = d["median_us"] / ref["median_us"]
            verdict = "met" if ratio <= limit else "NOT met"
            lines.append(f"{'- ' if markdown else '  '}vs {baseline}: {sparsity:.0%} sparsity: {d['median_us']:.2f} / {ref['median_us']:.2f} µs = "
                         f"{ratio:.2f}x (target <= {limit}x): {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(tables(report))


if __name__ == "__main__":
    main()
