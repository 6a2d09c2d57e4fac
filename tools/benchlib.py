"""Shared by the kernel benchmarks in tools/: timing calls, naming the CPU, tables, and the dense
baselines' plumbing: ONNX Runtime sessions and one-step runners, LiteRT interpreters (.tflite files are
built without TensorFlow by tools/tflite_build.py)."""

from __future__ import annotations

import contextlib
import gc
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def time_calls(call: Callable[[int], object], budget_s: float, min_calls: int, max_calls: int) -> npt.NDArray[np.int64]:
    """Nanoseconds per call: at least min_calls, then until budget_s has passed (at most max_calls)."""
    for i in range(min(min_calls, 20)):  # warm-up: caches, branch predictors, lazy imports
        call(i)
    times: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        i = 0
        while len(times) < max_calls and (len(times) < min_calls or clock() < deadline):
            t0 = clock()
            call(i)
            times.append(clock() - t0)
            i += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return np.array(times, dtype=np.int64)


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (x86 "model name", Raspberry Pi "Model"), else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.machine()


# --- results and tables ----------------------------------------------------------------------------


def timing(ns: npt.NDArray[np.int64], samples: int) -> dict[str, Any]:
    """The usual result fields of one timed case: calls, median and p99 µs per call, µs/sample, samples/s."""
    median_us = float(np.median(ns)) / 1e3
    return {"calls": int(ns.size), "median_us": round(median_us, 3),
            "p99_us": round(float(np.percentile(ns, 99)) / 1e3, 3),
            "us_per_sample": round(median_us / samples, 4), "samples_per_s": round(samples / (median_us * 1e-6))}


def format_table(rows: Sequence[Sequence[str]], left: int = 1, markdown: bool = False) -> str:
    """A table whose first row is the header, the first `left` columns left-aligned, the rest right.

    Plain text (columns padded, a dashed rule under the header), or a Markdown pipe table that starts
    with an empty line (so that it never continues a paragraph).
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if markdown:
        def line(r: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                     for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"

        rule = "|" + "|".join((":" + "-" * (w + 1)) if i < left else ("-" * (w + 1) + ":")
                              for i, w in enumerate(widths)) + "|"
        return "\n".join(["", line(rows[0]), rule, *(line(r) for r in rows[1:])])
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_table(results: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str]], markdown: bool = False,
                  extra: Sequence[tuple[str, str]] = ()) -> str:
    """Every result row: the `keys` columns ((field, header) pairs, left-aligned), then calls, median and
    p99 µs per call, µs per sample, samples/s, then `extra` columns (preformatted strings)."""
    header = [h for _, h in keys] + ["calls", "median µs", "p99 µs", "µs/sample", "samples/s"] + [h for _, h in extra]
    rows = [header] + [
        [str(r[k]) for k, _ in keys] + [str(r["calls"]), f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}",
                                        f"{r['us_per_sample']:.3f}", f"{r['samples_per_s']:,}"]
        + [_cell(r.get(k)) for k, _ in extra]
        for r in results
    ]
    return format_table(rows, left=len(keys), markdown=markdown)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def ratio_table(results: Sequence[Mapping[str, Any]], group: Sequence[tuple[str, str]], target: str = "compiled",
                markdown: bool = False, names: Mapping[str, str] | None = None) -> str:
    """One row per `group` value (e.g. case and chunk) that has a `target` result: the target's median and
    p99 per call, µs/sample and samples/s, then every other implementation's median µs/sample divided by
    the target's ("12.3x": the target is 12.3 times faster; "-": not measured for that group)."""
    names = names or {}
    others: list[str] = []
    for r in results:
        if r["impl"] != target and r["impl"] not in others:
            others.append(r["impl"])
    by_group: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = {}
    for r in results:
        by_group.setdefault(tuple(r[k] for k, _ in group), {})[r["impl"]] = r
    header = [h for _, h in group] + [f"{target} median µs", "p99 µs", "µs/sample", "samples/s"]
    header += [f"{names.get(o, o)} ÷ {target}" for o in others]
    rows = [header]
    for key, impls in by_group.items():
        t = impls.get(target)
        if t is None:
            continue
        rows.append([str(k) for k in key] + [f"{t['median_us']:.2f}", f"{t['p99_us']:.2f}", f"{t['us_per_sample']:.3f}",
                                             f"{t['samples_per_s']:,}"]
                    + [ratio(impls[o]["us_per_sample"], t["us_per_sample"]) if o in impls else "-" for o in others])
    return format_table(rows, left=len(group), markdown=markdown)


def ratio(a: float | None, b: float | None) -> str:
    """a / b as "1.23x", or "-" when either is missing."""
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def available(module: str) -> str | None:
    """None if `module` imports, else why not (for a "skipped" entry)."""
    try:
        __import__(module)
    except ImportError as exc:
        return f"{module} not installed ({exc})"
    return None


def versions(*modules: str) -> dict[str, str]:
    """__version__ of each importable module."""
    out = {}
    for module in modules:
        with contextlib.suppress(Exception):
            out[module] = str(getattr(__import__(module), "__version__", "?"))
    return out


# --- ONNX Runtime ----------------------------------------------------------------------------------


def ort_session(model: bytes) -> Any:
    """An ONNX Runtime CPU session as the onnx stage holds one (spikeline.backends.ort_session): 1 intra-op
    and 1 inter-op thread, sequential execution, graph optimisation level ALL."""
    from spikeline.backends import ort_session as session

    return session(model)


def onnx_bytes(graph: Any, opset: int = 17) -> bytes:
    """A checked, serialised ONNX model (IR version 8) around `graph` (an onnx GraphProto)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


class OrtStep:
    """A static-shape model run one call at a time: the benchmarks' face of the onnx stage's runner
    (spikeline.backends.OrtRunner), so a baseline is called exactly as the runtime calls a model.

    Every input and output has one preallocated numpy buffer bound once through IOBinding: write into
    `inputs[name]`, call run(), read output(name). `state` maps state inputs to the outputs that update
    them: those pairs get two buffers each and two bindings that alternate (ping-pong: call k reads buffer
    k % 2 and writes the other), so the state is carried without a copy. The constructor runs `warmup`
    calls (allocations, lazy kernel set-up) and then zeroes the state.
    """

    def __init__(self, model: bytes, state: Mapping[str, str] | None = None, warmup: int = 10) -> None:
        from spikeline.backends import OrtRunner
        from spikeline.modelfile import ModelError

        self.runner = runner = OrtRunner(model, state)
        try:
            runner.prepare(warmup=warmup)
        except ModelError as e:
            raise ValueError(f"OrtStep needs static shapes and a model that runs: {e}") from e
        self.session = runner.session
        self.inputs: dict[str, npt.NDArray[Any]] = {n: runner.buffer(n) for n in runner.inputs
                                                     if n not in runner.state}
        self.run: Callable[[], None] = runner.run
        self.reset: Callable[[], None] = runner.reset

    def write(self, name: str, value: npt.ArrayLike) -> None:
        """Copy `value` into input `name` for the next run()."""
        self.inputs[name][...] = value

    def output(self, name: str) -> npt.NDArray[Any]:
        """The latest value of an output (for a state output: the state the next call reads)."""
        return self.runner.output(name)

    def caller(self, xs: npt.NDArray[Any], name: str) -> Callable[[int], object]:
        """A time_calls callable: call i copies xs[i % len(xs)] into input `name`, then runs one step."""
        buf, run, n = self.inputs[name], self.run, len(xs)

        def call(i: int) -> object:
            buf[...] = xs[i % n]
            run()
            return buf

        return call


# --- LiteRT (ai_edge_litert) -----------------------------------------------------------------------


class LiteRTStep:
    """An ai_edge_litert Interpreter (1 thread, default XNNPACK delegate) run one call at a time.

    Tensors are allocated once; numpy views of them are fetched per use (the interpreter refuses to
    invoke while a view is held). `state` maps state inputs to the outputs that update them: after
    each invoke the output is copied into the input (an output with more rows than its input, a
    sequence, gives its last rows). The constructor runs `warmup` calls, then zeroes every input
    (allocate_tensors leaves them uninitialised).
    """

    def __init__(self, model: bytes, state: Mapping[str, str] | None = None, threads: int = 1,
                 warmup: int = 10) -> None:
        from spikeline.backends import import_litert_interpreter

        self.interpreter = interp = import_litert_interpreter()(model_content=model, num_threads=threads)
        interp.allocate_tensors()
        self.inputs = {d["name"]: interp.tensor(d["index"]) for d in interp.get_input_details()}
        self.outputs = {d["name"]: interp.tensor(d["index"]) for d in interp.get_output_details()}
        shapes = {d["name"]: tuple(d["shape"]) for d in (*interp.get_input_details(), *interp.get_output_details())}
        self._carry: list[tuple[Callable[[], npt.NDArray[Any]], Callable[[], npt.NDArray[Any]], int]] = []
        for inp, out in (state or {}).items():
            rows = shapes[inp][0] if shapes[out][0] != shapes[inp][0] else 0  # 0: the whole output
            self._carry.append((self.inputs[inp], self.outputs[out], rows))
        self._state_inputs = [self.inputs[inp] for inp in (state or {})]
        self.invoke = interp.invoke
        for view in self.inputs.values():
            view()[...] = 0
        for _ in range(warmup):
            self.run()
        for view in self.inputs.values():
            view()[...] = 0

    def run(self) -> None:
        """invoke(), then copy the new state into the state inputs."""
        self.invoke()
        for dst, src, rows in self._carry:
            if rows:
                dst()[...] = src()[-rows:]
            else:
                dst()[...] = src()

    def write(self, name: str, value: npt.ArrayLike) -> None:
        """Copy `value` into input `name` for the next run()."""
        self.inputs[name]()[...] = value

    def output(self, name: str) -> npt.NDArray[Any]:
        """A copy of output `name` after the last run() (the interpreter refuses to invoke while a view
        of its tensors is alive, so no view is handed out)."""
        value: npt.NDArray[Any] = self.outputs[name]().copy()
        return value

    def reset(self) -> None:
        """Zero the state inputs."""
        for view in self._state_inputs:
            view()[...] = 0

    def caller(self, xs: npt.NDArray[Any], name: str) -> Callable[[int], object]:
        """A time_calls callable: call i writes xs[i % len(xs)] into input `name`, then run()."""
        view, run, n = self.inputs[name], self.run, len(xs)

        def call(i: int) -> object:
            view()[...] = xs[i % n]
            run()
            return None

        return call

    def invoke_only(self) -> Callable[[int], object]:
        """A time_calls callable doing invoke() alone: a lower bound no caller can reach."""
        invoke = self.invoke

        def call(_: int) -> object:
            invoke()
            return None

        return call


# --- interleaved timing (tools/bench_events.py) ----------------------------------------------------


def time_interleaved(callers: Mapping[str, Callable[[int], object]], budget_s: float, min_calls: int,
                     max_calls: int, rounds: int = 5) -> dict[str, npt.NDArray[np.int64]]:
    """Nanoseconds per call of every callable, the callables taking turns so that a change of the
    machine's load is shared out between the implementations compared: `rounds` rounds; in each,
    every callable (in an order rotated by one per round) runs ceil(min_calls / rounds) calls, then
    more until its share budget_s / rounds has passed (at most ceil(max_calls / rounds) calls). One
    warm-up call each first. The call index i counts every call of that callable."""
    names = list(callers)
    for name in names:
        callers[name](0)
    per_min = max(1, -(-min_calls // rounds))
    per_max = max(per_min, -(-max_calls // rounds))
    slice_ns = int(budget_s / rounds * 1e9)
    times: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                call, out = callers[name], times[name]
                deadline = clock() + slice_ns
                k = 0
                while k < per_max and (k < per_min or clock() < deadline):
                    t0 = clock()
                    call(len(out) + 1)
                    out.append(clock() - t0)
                    k += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: np.array(t, dtype=np.int64) for name, t in times.items()}
