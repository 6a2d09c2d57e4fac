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

The dense runtimes run the step as a stateful one-step model, one sample per call, the state carried
from call to call (inputs x and the seven state tensors mem_x, mem_u, mem_m, mem_h, mem_o, s_h, s_m;
outputs the output spikes s_o and the new state):
- "onnxruntime": `L2MUStep`, a torch module written here with the twin's forward maths for one step
  (each Leaky population written out: (beta * mem + current) - (mem > threshold) * threshold; currents
  summed in float64 and rounded once), exported with torch.onnx.export (the TorchScript exporter,
  dynamo=False: the dynamo exporter needs onnxscript, which the bench extra does not install), run by
  benchlib.OrtStep (1 intra-op thread, sequential, optimisation ALL, IOBinding; every state tensor
  ping-pongs between two bound buffers, so no copy). Its output and hidden spikes must equal the
  compiled kernel's on every check sample, or the bench stops;
- "onnxruntime-f32": the same module with float32 matmuls (as "snntorch-f32");
- "litert-f32": the same float32 step as a .tflite flatbuffer (tflite_build.TFLiteBuilder: RESHAPE, MUL,
  ADD, SUB, GREATER, CAST, CONCATENATION, FULLY_CONNECTED; no TensorFlow), run by benchlib.LiteRTStep
  (1 thread, default XNNPACK delegate; per call: write x, invoke, copy the seven new state tensors into
  the state inputs). There is no float64 LiteRT model: FULLY_CONNECTED, BATCH_MATMUL, ADD, MUL and
  SUM all refuse FLOAT64 tensors, so LiteRT cannot sum the currents the twin's way, and a float32 model
  is not guaranteed to spike like the kernel (the check counts the output steps that differ).
The outputs stay in the runtimes' buffers (not copied out), in their favour.

Each call is timed on its own with perf_counter_ns (GC off): median and 99th percentile per call,
µs per sample (median / chunk) and samples/s. Prints one JSON document, then tables. Targets: the
compiled 1-sample step <= 5 µs and >= 20x faster than snnTorch per step; the JSON says whether met.

    python tools/bench_l2mu.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchlib import (
    LiteRTStep,
    OrtStep,
    available,
    cpu_name,
    ratio_table,
    results_table,
    time_calls,
    timing,
    versions,
)
from spikeline.kernels.l2mu import load_l2mu
from spikeline.kernels.ref_l2mu import L2MUCellRef
from tflite_build import TFLiteBuilder

F32 = npt.NDArray[np.float32]
CHUNKS = (1, 50)
POOL = 16  # distinct input chunks cycled through
HAR: dict[str, Any] = {"n_inputs": 6, "n_outputs": 7, "enc": 4, "memory": 8, "order": 6, "theta": 50.0, "hidden": 64}
TARGET_STEP_US = 5.0
TARGET_SPEEDUP = 20.0
STATE = ("mem_x", "mem_u", "mem_m", "mem_h", "mem_o", "s_h", "s_m")  # the kernel's STATE_KEYS


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


# --- one-step dense runtimes ------------------------------------------------------------------------


def _step_module(model: Any, exact: bool) -> Any:
    """L2MUStep: the twin's forward for one sample as a stateless torch module, for torch.onnx.export.

    forward(x (1, n_inputs), mem_x, mem_u, mem_m, mem_h, mem_o, s_h, s_m) -> (s_o, the new state in the
    same order). exact: currents summed in float64 and rounded once, as the twin; else float32 matmuls.
    """
    assert TWIN is not None
    torch = TWIN[0]
    module: Any = torch.nn.Module

    class L2MUStep(module):  # type: ignore[misc]  # torch is imported at run time (TWIN), so Module is Any here
        def __init__(self) -> None:
            super().__init__()
            cfg = model.cfg
            self.m, self.d = cfg.memory, cfg.order
            dt = torch.float64 if exact else torch.float32
            self.dt = dt
            with torch.no_grad():
                def buf(name: str, t: Any) -> None:
                    self.register_buffer(name, t.detach().clone().contiguous())

                buf("enc_w", model.enc_w)
                buf("enc_b", model.enc_b)
                buf("e_x", model.e_x.T.to(dt))
                buf("e_h", model.e_h.T.to(dt))
                buf("e_m", model.e_m.T.to(dt))
                buf("w_x", model.W_x.T.to(dt))
                buf("w_h", model.W_h.T.to(dt))
                buf("w_m", model.W_m.T.to(dt))
                buf("w_o", model.W_o.T.to(dt))
                buf("b_o", model.b_o.to(dt))
                buf("a_t", model.a_applied.T.to(dt))
                buf("b_bar", model.B_bar.to(dt))
                for p in ("x", "u", "m", "h", "o"):
                    buf(f"beta_{p}", model.lif[p].beta.clamp(0, 1))
                    buf(f"thr_{p}", model.lif[p].threshold)

        def lif(self, p: str, current: Any, mem: Any) -> tuple[Any, Any]:
            """snnTorch Leaky (reset by subtraction, reset_delay): the reset from the previous membrane."""
            thr = getattr(self, f"thr_{p}")
            new = getattr(self, f"beta_{p}") * mem + current - (mem > thr).float() * thr
            return (new > thr).float(), new

        def forward(self, x: Any, mem_x: Any, mem_u: Any, mem_m: Any, mem_h: Any, mem_o: Any, s_h: Any,
                    s_m: Any) -> tuple[Any, ...]:
            dt = self.dt
            s_x, mem_x = self.lif("x", (x[:, :, None] * self.enc_w + self.enc_b).reshape(1, -1), mem_x)
            x_, h_, m_ = s_x.to(dt), s_h.to(dt), s_m.to(dt)
            s_u, mem_u = self.lif("u", (x_ @ self.e_x + h_ @ self.e_h + m_ @ self.e_m).float(), mem_u)
            cur_m = (m_.reshape(1, self.m, self.d) @ self.a_t + s_u.to(dt)[:, :, None] * self.b_bar).float()
            s_m, mem_m = self.lif("m", cur_m.reshape(1, -1), mem_m)
            s_h, mem_h = self.lif("h", (x_ @ self.w_x + h_ @ self.w_h + s_m.to(dt) @ self.w_m).float(), mem_h)
            s_o, mem_o = self.lif("o", (s_h.to(dt) @ self.w_o + self.b_o).float(), mem_o)
            return s_o, mem_x, mem_u, mem_m, mem_h, mem_o, s_h, s_m

    return L2MUStep().eval()


def _state_shapes(cfg: Any) -> dict[str, tuple[int, int]]:
    n_x, n_m = cfg.n_inputs * cfg.enc, cfg.memory * cfg.order
    sizes = {"x": n_x, "u": cfg.memory, "m": n_m, "h": cfg.hidden, "o": cfg.n_outputs}
    return {**{f"mem_{p}": (1, n) for p, n in sizes.items()}, "s_h": (1, cfg.hidden), "s_m": (1, n_m)}


def _onnx_step(model: Any, exact: bool) -> bytes:
    """L2MUStep exported to ONNX (opset 17): inputs x and STATE, outputs s_o and STATE + "_out"."""
    assert TWIN is not None
    torch = TWIN[0]
    cfg = model.cfg
    args = (torch.zeros(1, cfg.n_inputs), *(torch.zeros(shape) for shape in _state_shapes(cfg).values()))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated
        torch.onnx.export(_step_module(model, exact), args, buf, dynamo=False, opset_version=17,
                          input_names=["x", *STATE], output_names=["s_o", *(f"{k}_out" for k in STATE)])
    return buf.getvalue()


def _tflite_step(arrays: dict[str, F32], conv: str) -> bytes:
    """The float32 one-step L2MU as a .tflite flatbuffer: inputs x and STATE, outputs s_o and STATE + "_out"."""
    b = TFLiteBuilder()
    ops = b.ops
    n_in, enc = arrays["enc_w"].shape
    memory, order, hidden = arrays["e_x"].shape[0], arrays["A_bar"].shape[0], arrays["W_x"].shape[0]
    n_x, n_m = n_in * enc, memory * order
    sizes = {"x": n_x, "u": memory, "m": n_m, "h": hidden, "o": arrays["W_o"].shape[0]}
    x = b.tensor("x", (1, n_in))
    state = {f"mem_{p}": b.tensor(f"mem_{p}", (1, n)) for p, n in sizes.items()}
    state["s_h"], state["s_m"] = b.tensor("s_h", (1, hidden)), b.tensor("s_m", (1, n_m))

    def lif(p: str, current: int) -> tuple[int, int]:
        beta = b.const(f"beta_{p}", np.ascontiguousarray(arrays[f"beta_{p}"].reshape(-1)))
        thr = b.const(f"threshold_{p}", np.ascontiguousarray(arrays[f"threshold_{p}"].reshape(-1)))
        return b.leaky(current, state[f"mem_{p}"], beta, thr, f"lif_{p}")

    def fc(v: int, w: str, bias: int, name: str) -> int:
        return b.fully_connected(v, b.const(w, np.ascontiguousarray(arrays[w])), bias, name)

    cur_x = b.binary(ops.ADD, b.binary(ops.MUL, b.reshape(x, (n_in, 1), "x_col"), b.const("enc_w", arrays["enc_w"]),
                                       "enc_gx"), b.const("enc_b", arrays["enc_b"]), "enc_cur")
    s_x, mem_x = lif("x", b.reshape(cur_x, (1, n_x), "cur_x"))
    v_u = b.concat([s_x, state["s_h"], state["s_m"]], 1, "v_u", (1, n_x + hidden + n_m))
    arrays = {**arrays, "U": np.concatenate([arrays["e_x"], arrays["e_h"], arrays["e_m"]], axis=1),
              "H": np.concatenate([arrays["W_x"], arrays["W_h"], arrays["W_m"]], axis=1),
              "A": arrays["A_bar"] if conv == "A" else np.ascontiguousarray(arrays["A_bar"].T)}
    s_u, mem_u = lif("u", fc(v_u, "U", -1, "cur_u"))
    am = fc(b.reshape(state["s_m"], (memory, order), "s_m_rows"), "A", -1, "am")
    bu = b.binary(ops.MUL, b.reshape(s_u, (memory, 1), "s_u_col"), b.const("B_bar", arrays["B_bar"]), "bu")
    s_m, mem_m = lif("m", b.reshape(b.binary(ops.ADD, am, bu, "cur_m_rows"), (1, n_m), "cur_m"))
    v_h = b.concat([s_x, state["s_h"], s_m], 1, "v_h", (1, n_x + hidden + n_m))
    s_h, mem_h = lif("h", fc(v_h, "H", -1, "cur_h"))
    s_o, mem_o = lif("o", fc(s_h, "W_o", b.const("b_o", arrays["b_o"]), "cur_o"))
    new = {"mem_x": mem_x, "mem_u": mem_u, "mem_m": mem_m, "mem_h": mem_h, "mem_o": mem_o, "s_h": s_h, "s_m": s_m}
    for key, t in new.items():  # output names: STATE + "_out"
        b.tensors[t].name = f"{key}_out"
    b.tensors[s_o].name = "s_o"
    return b.finish([x, *state.values()], [s_o, *new.values()], "spikeline L2MU step")


def _dense(model: Any, arrays: dict[str, F32], skipped: dict[str, str]) -> dict[str, OrtStep | LiteRTStep]:
    """The one-step dense runners by implementation; state inputs carried from the "_out" outputs."""
    carry = {k: f"{k}_out" for k in STATE}
    out: dict[str, OrtStep | LiteRTStep] = {}
    if "onnxruntime" not in skipped:
        out["onnxruntime"] = OrtStep(_onnx_step(model, exact=True), state=carry)
        out["onnxruntime-f32"] = OrtStep(_onnx_step(model, exact=False), state=carry)
    if "litert" not in skipped:
        out["litert-f32"] = LiteRTStep(_tflite_step(arrays, model.cfg.memory_convention), state=carry)
    return out


def _run_dense(stepper: OrtStep | LiteRTStep, x: F32) -> tuple[F32, F32]:
    """Output and hidden spikes for every sample of x, one call per sample from a zero state."""
    stepper.reset()
    s_o = np.empty((len(x), stepper.output("s_o").shape[1]), np.float32)
    s_h = np.empty((len(x), stepper.output("s_h_out").shape[1]), np.float32)
    for t in range(len(x)):
        stepper.write("x", x[t : t + 1])
        stepper.run()
        s_o[t], s_h[t] = stepper.output("s_o")[0], stepper.output("s_h_out")[0]
    stepper.reset()
    return s_o, s_h


def _stepper(kernel: Any, pool: list[F32], out: F32) -> Callable[[int], object]:
    """A time_calls callable: call i steps the kernel through pool[i % POOL] into out."""
    return lambda i: kernel.step(pool[i % POOL], out)


def run(quick: bool) -> dict[str, Any]:
    if TWIN is None:
        raise SystemExit("bench_l2mu needs torch and snntorch (pip install -e '.[reference]')")
    budget_s, min_calls, max_calls = (0.2, 20, 20_000) if quick else (1.0, 100, 200_000)
    rng = np.random.default_rng(0)
    skipped: dict[str, str] = {}
    for impl, modules in (("onnxruntime", ("onnxruntime", "onnx")), ("litert", ("ai_edge_litert", "flatbuffers"))):
        reason = next((r for r in map(available, modules) if r), None)
        if reason:
            skipped[impl] = reason
    model = train(4 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        path = TWIN[1].export(model, Path(tmp) / "har.json")
        arrays: dict[str, Any] = load_l2mu(path).arrays
    conv = model.cfg.memory_convention
    makers: dict[str, Callable[[], Any]] = {}
    if COMPILED is not None:
        makers["compiled"] = lambda: COMPILED.L2MUCell(**arrays, memory_convention=conv)
    makers["reference"] = lambda: L2MUCellRef(**arrays, memory_convention=conv)
    makers["snntorch"] = lambda: SnnTorchStepper(model, exact=True)
    makers["snntorch-f32"] = lambda: SnnTorchStepper(model, exact=False)
    dense = _dense(model, arrays, skipped)

    # Before timing: every implementation on the same 1000 samples, against the compiled kernel
    # (or the reference): output spikes identical? (the dense runtimes: hidden spikes too)
    n = 1000
    check_x = _stream(n, rng)
    base_impl = "compiled" if "compiled" in makers else "reference"
    probe = makers[base_impl]()
    base, base_h = np.empty((n, HAR["n_outputs"]), np.float32), np.empty((n, HAR["hidden"]), np.float32)
    probe.step(check_x, base, hidden_out=base_h)
    outs = {impl: make().step(check_x, np.empty((n, HAR["n_outputs"]), np.float32)) for impl, make in makers.items()}
    checks = {impl: int((y != base).any(axis=1).sum()) for impl, y in outs.items()}
    hidden_checks: dict[str, int] = {}
    for impl, stepper in dense.items():
        s_o, s_h = _run_dense(stepper, check_x)
        checks[impl] = int((s_o != base).any(axis=1).sum())
        hidden_checks[impl] = int((s_h != base_h).any(axis=1).sum())
    if checks.get("onnxruntime", 0) or hidden_checks.get("onnxruntime", 0):
        raise SystemExit(f"the exported L2MUStep does not spike like the {base_impl} kernel: "
                         f"{checks['onnxruntime']} output and {hidden_checks['onnxruntime']} hidden steps of {n} differ")
    c = probe.counters
    sparsity = {
        "spike_rate": {p: round(float(c[f"active_{p}"][0]) / (n * probe.sizes[p]), 3) for p in probe.sizes},
        "columns_vs_dense": round(float(c["columns"][0]) / (n * probe.dense_columns), 3),
        "synops_vs_dense": round(float(c["synops"][0]) / (n * probe.dense_synops), 3),
    }

    results: list[dict[str, Any]] = []
    signal = _stream(POOL * max(CHUNKS) + 100, rng)
    for chunk in CHUNKS:
        pool = [np.ascontiguousarray(signal[i * chunk:(i + 1) * chunk]) for i in range(POOL)]
        out = np.empty((chunk, HAR["n_outputs"]), np.float32)
        callers: dict[str, tuple[Callable[[int], object], int]] = {}
        for impl, make in makers.items():
            lo = max(2, min_calls // 5) if impl == "reference" and chunk > 1 else min_calls
            callers[impl] = _stepper(make(), pool, out), lo
        if chunk == 1:
            callers.update({impl: (stepper.caller(np.stack(pool), "x"), min_calls) for impl, stepper in dense.items()})
        for impl, (call, lo) in callers.items():
            results.append({"impl": impl, "chunk": chunk, **timing(time_calls(call, budget_s, lo, max_calls), chunk)})
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
            "versions": versions("torch", "snntorch", "onnxruntime", "onnx", "ai_edge_litert"),
            f"output_steps_differing_from_{base_impl}_in_{n}": checks,
            f"hidden_steps_differing_from_{base_impl}_in_{n}": hidden_checks,
            "sparsity": sparsity, "skipped": skipped,
        },
        "targets": targets,
        "results": results,
    }


def table(report: dict[str, Any], markdown: bool = False) -> str:
    res = report["results"]
    out = ["All implementations (x snnTorch: the faster snnTorch row's µs/sample ÷ this row's):",
           results_table(res, (("impl", "impl"), ("chunk", "chunk")), markdown,
                         extra=(("speedup_vs_snntorch", "x snnTorch"),)), "",
           "Other implementations' median µs/sample ÷ the compiled kernel's (how many times faster the kernel is):",
           ratio_table(res, (("chunk", "chunk"),), markdown=markdown)]
    meta = report["meta"]
    diffs = {k: v for k, v in meta.items() if k.startswith(("output_steps_differing", "hidden_steps_differing"))}
    for key, counts in diffs.items():
        if counts:
            out += ["", key.replace("_", " ").capitalize() + ": " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    t = report["targets"]
    if t:
        out.append("")
        out.append(f"Target: compiled 1-sample step {t['step_us_1_sample']:.2f} µs <= {t['step_target_us']} µs: "
                   f"{'met' if t['step_met'] else 'NOT met'}; {t['speedup_1_sample']}x snnTorch >= "
                   f"{t['speedup_target']}x: {'met' if t['speedup_met'] else 'NOT met'}")
    if meta.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items())]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.2 s instead of ~1 s)")
    report = run(parser.parse_args().quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
