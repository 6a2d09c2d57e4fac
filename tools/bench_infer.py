"""Benchmark the onnx and litert stages: what a stage call costs over the bare runtime call on the same model.

Not a test. Two small models, each built here (onnx.helper; tools/tflite_build.TFLiteBuilder, no
TensorFlow) in both formats and checked against numpy through the stage before anything is timed:

- step: a one-step recurrent model, HAR-sized: h' = tanh(W x + U h + b), y = V h' (6 inputs, 64 hidden,
  7 outputs), h carried as state. The stage call is process() of a 1-row chunk (one model call);
- window: an EEG-sized windowed model, y = V tanh(W vec(window)) on a (1, 160, 16) NTC window (1 s at
  160 Hz, 16 channels, 32 hidden, 2 outputs), hop 1, so that process() of a 1-row chunk makes exactly one
  model call (after the window has filled).

Rows per model and backend, each timed one call at a time (perf_counter_ns, GC off, after a warm-up;
median and 99th percentile):

- bare: the runtime's own call on bound buffers, nothing around it: ONNX Runtime's run_with_iobinding
  (the C++ session call behind the Python wrapper), LiteRT's interpreter.invoke();
- session.run (ONNX Runtime only): the plain Python API, a dict of numpy inputs in, a list of new
  output arrays out (the state fed back by hand) — what code without IOBinding pays;
- runner: spikeline.backends' runner.run(): inputs written in place, state carried (ONNX Runtime: two
  bound buffers per state, alternating; LiteRT: set_tensor from preallocated buffers, invoke, the new
  state copied in with get/set_tensor), the call timed for the stage's counters;
- stage: the stage's process() on a 1-row chunk: the row written into the input (or the window
  rolled and copied), runner.run(), the output copied out, the output SampleChunk built.

"over bare" is the row's median minus the bare call's median: the Python cost spikeline adds per call.

    python tools/bench_infer.py [--quick]
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

from benchlib import available, cpu_name, format_table, onnx_bytes, time_calls, timing, versions
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.stages import build_stage

F32 = npt.NDArray[np.float32]
POOL = 16  # distinct input rows cycled through
STEP = {"inputs": 6, "hidden": 64, "outputs": 7, "rate_hz": 50.0}
WINDOW = {"window": 160, "channels": 16, "hidden": 32, "outputs": 2, "rate_hz": 160.0}


def _weights(seed: int, *shapes: tuple[int, ...]) -> list[F32]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for s in shapes]


def _builder() -> Any:
    try:
        from tflite_build import TFLiteBuilder
    except ImportError:  # before the builder moved out of benchlib
        from benchlib import TFLiteBuilder  # type: ignore[attr-defined,no-redef]
    return TFLiteBuilder()


# --- models ----------------------------------------------------------------------------------------


def step_weights() -> list[F32]:
    c, h, k = STEP["inputs"], STEP["hidden"], STEP["outputs"]
    w, u, v, b = _weights(1, (h, c), (h, h), (k, h), (1, h))
    return [w, u, v, b.reshape(h)]


def step_ref(x: F32, w: list[F32]) -> F32:
    h, out = np.zeros(w[1].shape[0]), []
    for row in x.astype(np.float64):
        h = np.tanh(w[0] @ row + w[1] @ h + w[3])
        out.append(w[2] @ h)
    return np.array(out, np.float32)


def step_onnx(w: list[F32]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    c, h, k = STEP["inputs"], STEP["hidden"], STEP["outputs"]
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["a"]), helper.make_node("MatMul", ["h", "ut"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Add", ["s", "bias"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["h_out"]), helper.make_node("MatMul", ["h_out", "vt"], ["y"])]
    inits = [numpy_helper.from_array(np.ascontiguousarray(a.T), n) for n, a in (("wt", w[0]), ("ut", w[1]), ("vt", w[2]))]
    inits.append(numpy_helper.from_array(w[3], "bias"))
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "step", [helper.make_tensor_value_info("x", f, [1, c]),
                                              helper.make_tensor_value_info("h", f, [1, h])],
                              [helper.make_tensor_value_info("y", f, [1, k]),
                               helper.make_tensor_value_info("h_out", f, [1, h])], inits)
    return onnx_bytes(graph)


def step_tflite(w: list[F32]) -> bytes:
    b = _builder()
    c, h = STEP["inputs"], STEP["hidden"]
    x, hin = b.tensor("x", (1, c)), b.tensor("h", (1, h))
    s = b.binary(b.ops.ADD, b.fully_connected(x, b.const("w", w[0]), b.const("bias", w[3]), "a"),
                 b.fully_connected(hin, b.const("u", w[1]), -1, "b"), "s")
    h_out = b.unary(b.ops.TANH, s, "h_out")
    y = b.fully_connected(h_out, b.const("v", w[2]), -1, "y")
    return bytes(b.finish([x, hin], [y, h_out], "spikeline bench step"))


def window_weights() -> list[F32]:
    t, c, h, k = WINDOW["window"], WINDOW["channels"], WINDOW["hidden"], WINDOW["outputs"]
    w, v = _weights(2, (h, t * c), (k, h))
    return [w, v]


def window_ref(x: F32, w: list[F32], window: int) -> F32:
    ends = range(window - 1, len(x))
    return np.array([w[1] @ np.tanh(w[0] @ x[e - window + 1:e + 1].astype(np.float64).ravel()) for e in ends],
                    np.float32)


def window_onnx(w: list[F32]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    t, c, k = WINDOW["window"], WINDOW["channels"], WINDOW["outputs"]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("MatMul", ["f", "wt"], ["a"]),
             helper.make_node("Tanh", ["a"], ["z"]), helper.make_node("MatMul", ["z", "vt"], ["y"])]
    inits = [numpy_helper.from_array(np.array([1, t * c], np.int64), "flat"),
             numpy_helper.from_array(np.ascontiguousarray(w[0].T), "wt"),
             numpy_helper.from_array(np.ascontiguousarray(w[1].T), "vt")]
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "window", [helper.make_tensor_value_info("x", f, [1, t, c])],
                              [helper.make_tensor_value_info("y", f, [1, k])], inits)
    return onnx_bytes(graph)


def window_tflite(w: list[F32]) -> bytes:
    b = _builder()
    t, c = WINDOW["window"], WINDOW["channels"]
    x = b.tensor("x", (1, t, c))
    z = b.unary(b.ops.TANH, b.fully_connected(b.reshape(x, (1, t * c), "flat"), b.const("w", w[0]), -1, "a"), "z")
    y = b.fully_connected(z, b.const("v", w[1]), -1, "y")
    return bytes(b.finish([x], [y], "spikeline bench window"))


# --- timing ----------------------------------------------------------------------------------------


def _stream(n: int, channels: int, rate: float, seed: int) -> SampleChunk:
    meta = StreamMeta("bench", "bench", tuple(f"c{i}" for i in range(channels)), rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return SampleChunk(rng.standard_normal((n, channels)).astype(np.float32), t, t.copy(), 0, meta)


def _stage_case(kind: str, path: Path, p: dict[str, Any], x: SampleChunk, ref: F32, skip: int
                ) -> tuple[Any, Callable[[int], object], float]:
    """The stage (started, checked against `ref` on the whole stream) and a 1-row-chunk caller."""
    stage = build_stage(kind, {"model": str(path), **p})
    stage.start(x.meta)
    got = np.concatenate([o.data for o in (stage.process(x.take(i, i + 1)) for i in range(len(x))) if o is not None])
    err = float(np.max(np.abs(got - ref)))
    rows = [x.take(i, i + 1) for i in range(skip, skip + POOL)]
    process = stage.process

    def call(i: int) -> object:
        return process(rows[i % POOL])

    return stage, call, err


def _bench_model(name: str, kind: str, model: bytes, path: Path, p: dict[str, Any], x: SampleChunk, ref: F32,
                 skip: int, budget: tuple[float, int, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path.write_bytes(model)
    stage, stage_call, err = _stage_case(kind, path, p, x, ref, skip)
    runner = stage._runner
    backend = "onnxruntime" if kind == "onnx" else "litert"
    data_in = next(n for n in runner.inputs if n not in runner.state)
    buf = runner.buffer(data_in)
    rows_per_call = buf.size // x.meta.n_channels  # 1 (step) or the window
    pool = [x.data[i:i + rows_per_call].reshape(buf.shape) for i in range(POOL)]
    cases: dict[str, Callable[[int], object]] = {}
    bare = runner.bare()
    cases["bare"] = lambda i: bare()
    if kind == "onnx":
        sess = runner.session
        feeds = {n: np.zeros(runner.shape(n), np.float32) for n in runner.inputs}
        state = dict(runner.state)
        names = [o.name for o in sess.get_outputs()]
        index = {o: names.index(o) for o in state.values()}

        def plain(i: int) -> object:
            feeds[data_in] = pool[i % POOL]
            out = sess.run(None, feeds)
            for s, o in state.items():
                feeds[s] = out[index[o]]
            return out

        cases["session.run"] = plain
    run = runner.run

    def runner_call(i: int) -> object:
        buf[...] = pool[i % POOL]
        run()
        return None

    cases["runner"] = runner_call
    cases["stage"] = stage_call
    rows = []
    for impl, call in cases.items():
        if impl == "stage":
            stage.reset()
            for i in range(skip):  # refill the window
                stage.process(x.take(i, i + 1))
        rows.append({"model": name, "backend": backend, "impl": impl, **timing(time_calls(call, *budget), 1)})
    base = rows[0]["median_us"]
    for r in rows:
        r["over_bare_us"] = round(r["median_us"] - base, 3)
    return rows, {"model": name, "backend": backend, "max_abs_error_vs_numpy": err, "calls_counted": stage.counters()}


def run(quick: bool) -> dict[str, Any]:
    budget = (0.15, 30, 20_000) if quick else (1.0, 300, 300_000)
    skipped = {k: why for k, m in (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("litert", "ai_edge_litert"))
               if (why := available(m))}
    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    sw, ww = step_weights(), window_weights()
    xs = _stream(POOL + 64, STEP["inputs"], STEP["rate_hz"], 3)
    win = WINDOW["window"]
    xw = _stream(win + POOL + 16, WINDOW["channels"], WINDOW["rate_hz"], 4)
    builds: list[tuple[str, str, Callable[[], bytes], dict[str, Any], SampleChunk, F32, int]] = []
    if "onnxruntime" not in skipped and "onnx" not in skipped:
        builds += [("step", "onnx", lambda: step_onnx(sw), {"state": {"h": "h_out"}}, xs, step_ref(xs.data, sw), 0),
                   ("window", "onnx", lambda: window_onnx(ww), {"hop": 1}, xw, window_ref(xw.data, ww, win), win)]
    if "litert" not in skipped:
        builds += [("step", "litert", lambda: step_tflite(sw), {"state": {"h": "h_out"}, "output": "y"}, xs,
                    step_ref(xs.data, sw), 0),
                   ("window", "litert", lambda: window_tflite(ww), {"hop": 1}, xw, window_ref(xw.data, ww, win), win)]
    with tempfile.TemporaryDirectory() as d:
        for name, kind, build, p, x, ref, skip in builds:
            path = Path(d) / f"{name}.{'onnx' if kind == 'onnx' else 'tflite'}"
            rows, check = _bench_model(name, kind, build(), path, p, x, ref, skip, budget)
            results += rows
            checks.append(check)
    return {
        "meta": {"quick": quick, "step_model": STEP, "window_model": WINDOW, "threads": 1, "skipped": skipped,
                 "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
                 "cpu": cpu_name(), **versions("onnxruntime", "ai_edge_litert")},
        "checks": checks,
        "results": results,
    }


def table(report: dict[str, Any], markdown: bool = False) -> str:
    rows = [["model", "backend", "call", "calls", "median µs", "p99 µs", "over bare µs"]]
    for r in report["results"]:
        rows.append([r["model"], r["backend"], r["impl"], str(r["calls"]), f"{r['median_us']:.2f}",
                     f"{r['p99_us']:.2f}", "-" if r["impl"] == "bare" else f"{r['over_bare_us']:+.2f}"])
    checks = [["model", "backend", "max |stage - numpy|"]] + [
        [c["model"], c["backend"], f"{c['max_abs_error_vs_numpy']:.2e}"] for c in report["checks"]]
    return "\n".join([format_table(rows, left=3, markdown=markdown), "",
                      "Stage output against the numpy reference before timing:",
                      format_table(checks, left=2, markdown=markdown)])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short time budget per case (~0.15 s instead of ~1 s)")
    args = parser.parse_args()
    report = run(args.quick)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))


if __name__ == "__main__":
    main()
