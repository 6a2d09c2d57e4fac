"""Model runners for the `onnx` and `litert` stages: one ONNX Runtime session or one LiteRT interpreter,
called one step at a time with every buffer preallocated.

A runner is built in two phases, because a stage must look at the model before it can size it:

    r = OrtRunner(path, state={"h": "h_out"}, threads=1)   # load; r.inputs / r.outputs describe the model
    r.prepare({"x": (1, 6)})                               # fix dynamic dims, allocate, bind, warm up
    r.buffer("x")[...] = row                               # write the inputs in place
    r.run()                                                # one timed call; the state is carried
    y = r.output("y")                                      # the latest output (overwritten by the next run)

Tuned for latency on small CPUs: one intra-op and one inter-op thread (ONNX Runtime: sequential
execution, graph optimisation ALL unless told otherwise, an optional cache of the optimised graph;
LiteRT: num_threads). State tensors (`state` maps a state input to the output that updates it) start
at zero and are carried from call to call: ONNX Runtime ping-pongs two bound buffers per state (no
copy), LiteRT copies the output into the input after invoke(). Quantised LiteRT inputs and outputs
(int8/uint8 with a scale) are converted to and from float32 here, so callers always see float32.

The backends are optional extras: `pip install spikeline[onnx]` / `spikeline[litert]`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .modelfile import ModelError

Shape = tuple[int | None, ...]  # None: a dynamic dimension


class BackendMissing(ModelError):
    """The runtime library for a model format is not installed."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Shape
    dtype: np.dtype[Any]

    @property
    def dynamic(self) -> bool:
        return any(d is None for d in self.shape)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dims}) {self.dtype}"


class Runner:
    """What both backends offer (see the module docstring). Counters: calls, total_ns, max_ns of run()."""

    backend = ""
    inputs: dict[str, TensorInfo]  # every model input, as declared (dynamic dims are None)
    outputs: dict[str, TensorInfo]
    metadata: dict[str, Any]  # "classes", "outputs", "input", ... from the model (JSON values decoded)

    def __init__(self, path: Path, state: Mapping[str, str]) -> None:
        self.path = path
        self.state = dict(state)
        self.calls = self.total_ns = self.max_ns = 0
        self._buffers: dict[str, npt.NDArray[Any]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _check_state(self) -> None:
        bad_in = [i for i in self.state if i not in self.inputs]
        bad_out = [o for o in self.state.values() if o not in self.outputs]
        if bad_in or bad_out:
            parts = []
            if bad_in:
                parts.append(f"state inputs {bad_in} are not inputs of the model (inputs: {', '.join(self.inputs)})")
            if bad_out:
                parts.append(f"state outputs {bad_out} are not outputs of the model "
                             f"(outputs: {', '.join(self.outputs)})")
            raise ModelError(f"{self.path}: " + "; ".join(parts))

    def _resolve_shapes(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
        """Concrete shapes of every input: given ones (checked against the static dims), else the declared."""
        unknown = [n for n in shapes if n not in self.inputs]
        if unknown:
            raise ModelError(f"{self.path}: no inputs {unknown} (inputs: {', '.join(self.inputs)})")
        out: dict[str, tuple[int, ...]] = {}
        for name, info in self.inputs.items():
            want = tuple(int(d) for d in shapes.get(name, ()))
            if not want:
                if info.dynamic:
                    raise ModelError(f"{self.path}: input {info.describe()} has dynamic dimensions; give its shape")
                want = tuple(int(d) for d in info.shape if d is not None)
            elif len(want) != len(info.shape) or any(d is not None and d != w for d, w in zip(info.shape, want,
                                                                                                 strict=True)):
                raise ModelError(f"{self.path}: input {info.describe()} cannot take shape {want}")
            out[name] = want
        # a state input must have the shape of the output that updates it
        return out

    def prepare(self, shapes: Mapping[str, Sequence[int]] | None = None, warmup: int = 1) -> None:
        """Fix the dynamic input dimensions, allocate and bind every buffer, run `warmup` calls, zero state."""
        raise NotImplementedError

    def buffer(self, name: str) -> npt.NDArray[Any]:
        """The preallocated buffer of a non-state input: write into it, then run()."""
        return self._buffers[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The concrete shape of an input or output after prepare()."""
        return self._shapes[name]

    def run(self) -> None:
        raise NotImplementedError

    def output(self, name: str) -> npt.NDArray[Any]:
        """The latest value of an output, float32 (overwritten or invalidated by the next run)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Zero the carried state."""
        raise NotImplementedError

    def bare(self) -> Callable[[], object]:
        """The backend's own call with nothing around it (session.run_with_iobinding / interpreter.invoke),
        for benchmarks: it does not carry state or count."""
        raise NotImplementedError

    def counters(self) -> dict[str, int | float]:
        mean = self.total_ns / self.calls / 1e3 if self.calls else 0.0
        return {"calls": self.calls, "call_us_mean": round(mean, 2), "call_us_max": round(self.max_ns / 1e3, 2)}


def _decode_meta(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata values that are JSON documents (lists, objects, numbers) decoded; other strings kept."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, str):
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:
                out[k] = v
        else:
            out[k] = v
    return out


def sidecar(path: Path) -> dict[str, Any]:
    """`<model file>.json` beside a model ({"classes": [...], "input": {...}}), or {} when there is none."""
    side = path.with_name(path.name + ".json")
    if not side.is_file():
        return {}
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model metadata {side}: {e}") from e
    if not isinstance(doc, dict):
        raise ModelError(f"model metadata {side}: expected a JSON object")
    return doc


# --- ONNX Runtime ----------------------------------------------------------------------------------

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
OPTIMIZATION = ("disable", "basic", "extended", "all")


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendMissing(f"the onnx stage needs ONNX Runtime: pip install spikeline[onnx] ({e})") from e
    return onnxruntime


def session_options(threads: int = 1, optimization: str = "all") -> Any:
    """SessionOptions for a latency-bound runtime: `threads` intra-op threads, 1 inter-op thread,
    sequential execution, the given graph optimisation level, no spinning worker threads."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so.graph_optimization_level = levels[optimization]
    so.log_severity_level = 3
    # A spinning pool burns a core of a Pi between calls; with one thread there is no pool anyway.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads > 1 else "1")
    return so


def ort_session(model: bytes | str | Path, threads: int = 1, optimization: str = "all",
                cache_dir: str | Path | None = None) -> Any:
    """An ONNX Runtime CPU session with `session_options`. With `cache_dir`, the optimised graph is saved
    there on first use (keyed by the model's sha256, the level and the ONNX Runtime version) and loaded
    from there afterwards; the cache is specific to this machine's CPU."""
    ort = import_onnxruntime()
    so = session_options(threads, optimization)
    source: bytes | str = model if isinstance(model, bytes) else str(model)
    if cache_dir is not None and optimization != "disable":
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        key = hashlib.sha256(data + f"|{optimization}|{ort.__version__}".encode()).hexdigest()[:24]
        cached = Path(cache_dir) / f"{key}.onnx"
        if cached.is_file():
            source = str(cached)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            so.optimized_model_filepath = str(cached)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


class OrtRunner(Runner):
    """One ONNX Runtime session driven through IOBinding: inputs, outputs and state bound once."""

    backend = "onnxruntime"

    def __init__(self, model: str | Path | bytes, state: Mapping[str, str] | None = None, threads: int = 1,
                 optimization: str = "all", cache_dir: str | Path | None = None) -> None:
        path = Path("<bytes>") if isinstance(model, bytes) else Path(model)
        super().__init__(path, state or {})
        if optimization not in OPTIMIZATION:
            raise ValueError(f"optimization must be one of {OPTIMIZATION}, got {optimization!r}")
        self._ort = import_onnxruntime()
        try:
            self.session = ort_session(model, threads, optimization, cache_dir)
        except Exception as e:  # onnxruntime raises its own (pybind) exception types for every load failure
            raise ModelError(f"{path}: not a model ONNX Runtime can load: {str(e).strip()}") from e

        def info(m: Any) -> TensorInfo:
            dtype = _ORT_TYPES.get(m.type)
            if dtype is None:
                raise ModelError(f"{path}: {m.name} has type {m.type}, which spikeline cannot feed or read")
            return TensorInfo(m.name, tuple(d if isinstance(d, int) and d >= 0 else None for d in m.shape),
                              np.dtype(dtype))

        try:
            self.inputs = {m.name: info(m) for m in self.session.get_inputs()}
            self.outputs = {m.name: info(m) for m in self.session.get_outputs()}
            self.metadata = _decode_meta(self.session.get_modelmeta().custom_metadata_map)
        except UnicodeDecodeError as e:  # a damaged name or metadata string
            raise ModelError(f"{path}: damaged model (text that is not UTF-8: {e.reason} at byte {e.start})") from e
        self._check_state()

    def prepare(self, shapes: Mapping[str, Sequence[int]] | None = None, warmup: int = 1) -> None:
        ort, sess = self._ort, self.session
        in_shapes = self._resolve_shapes(shapes or {})
        feeds = {n: np.zeros(s, self.inputs[n].dtype) for n, s in in_shapes.items()}
        out_shapes: dict[str, tuple[int, ...]] = {}
        if any(o.dynamic for o in self.outputs.values()):
            # the output shapes follow from the input shapes: one plain call tells them
            try:
                values = sess.run(None, feeds)
            except Exception as e:
                raise ModelError(f"{self.path}: the model fails on inputs of shapes {in_shapes}: {e}") from e
            out_shapes = {o: tuple(np.shape(v)) for o, v in zip(self.outputs, values, strict=True)}
        else:
            out_shapes = {n: tuple(int(d) for d in o.shape if d is not None) for n, o in self.outputs.items()}
        for i, o in self.state.items():
            if in_shapes[i] != out_shapes[o]:
                raise ModelError(f"{self.path}: state input {i} has shape {in_shapes[i]} but its output {o} has "
                                 f"{out_shapes[o]}")
        self._shapes = {**in_shapes, **out_shapes}
        back = {o: i for i, o in self.state.items()}
        self._buffers = {n: a for n, a in feeds.items() if n not in self.state}
        self._outs = {n: np.zeros(s, self.outputs[n].dtype) for n, s in out_shapes.items() if n not in back}
        self._pairs = {i: [feeds[i], np.zeros_like(feeds[i])] for i in self.state}
        self._back = back
        value = ort.OrtValue.ortvalue_from_numpy
        fixed = {n: value(a) for n, a in {**self._buffers, **self._outs}.items()}
        ping = {n: [value(a) for a in pair] for n, pair in self._pairs.items()}
        self._keep = (fixed, ping)  # the OrtValues must outlive the bindings
        self._bindings = []
        for k in (0, 1):
            io = sess.io_binding()
            for n in self._buffers:
                io.bind_ortvalue_input(n, fixed[n])
            for n in self._outs:
                io.bind_ortvalue_output(n, fixed[n])
            for i, o in self.state.items():
                io.bind_ortvalue_input(i, ping[i][k])
                io.bind_ortvalue_output(o, ping[i][1 - k])
            self._bindings.append(io)
        # The session's own call, without the Python wrapper's per-call checks (graph capture is a GPU feature).
        raw = getattr(sess, "_sess", None)
        if raw is not None and hasattr(raw, "run_with_iobinding") and all(hasattr(b, "_iobinding")
                                                                         for b in self._bindings):
            run, opts = raw.run_with_iobinding, None
            self._calls = [(lambda b=b: run(b._iobinding, opts)) for b in self._bindings]
        else:  # pragma: no cover - other onnxruntime versions
            self._calls = [(lambda b=b: sess.run_with_iobinding(b)) for b in self._bindings]
        self._k = 0
        try:
            for _ in range(warmup):
                self._calls[self._k]()
                self._k ^= 1
        except Exception as e:
            raise ModelError(f"{self.path}: the model fails on inputs of shapes {in_shapes}: {e}") from e
        self.reset()

    def run(self) -> None:
        t0 = time.perf_counter_ns()
        self._calls[self._k]()
        dt = time.perf_counter_ns() - t0
        self._k ^= 1
        self.calls += 1
        self.total_ns += dt
        if dt > self.max_ns:
            self.max_ns = dt

    def output(self, name: str) -> npt.NDArray[Any]:
        i = self._back.get(name)
        if i is not None:
            return self._pairs[i][self._k]
        return self._outs[name]

    def reset(self) -> None:
        for pair in self._pairs.values():
            for a in pair:
                a[...] = 0
        self._k = 0

    def bare(self) -> Callable[[], object]:
        return self._calls[0]


# --- LiteRT ----------------------------------------------------------------------------------------


def import_litert_interpreter() -> Any:
    """ai_edge_litert's Interpreter class, else tflite_runtime's (only if it imports)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise BackendMissing(f"the litert stage needs LiteRT: pip install spikeline[litert] ({e})") from e
    return Interpreter


@dataclass
class _Quant:
    scale: float
    zero: int
    lo: int
    hi: int


def _quant(d: Mapping[str, Any]) -> _Quant | None:
    scale, zero = d.get("quantization", (0.0, 0))
    if not scale or d["dtype"] not in (np.int8, np.uint8, np.int16):
        return None
    ii = np.iinfo(d["dtype"])
    return _Quant(float(scale), int(zero), int(ii.min), int(ii.max))


class LiteRTRunner(Runner):
    """One LiteRT interpreter: set_tensor from preallocated buffers, invoke, get_tensor."""

    backend = "litert"

    def __init__(self, model: str | Path | bytes, state: Mapping[str, str] | None = None,
                 threads: int = 1) -> None:
        path = Path("<bytes>") if isinstance(model, bytes) else Path(model)
        super().__init__(path, state or {})
        interpreter = import_litert_interpreter()
        try:
            if isinstance(model, bytes):
                self.interpreter = interpreter(model_content=model, num_threads=threads)
            else:
                self.interpreter = interpreter(model_path=str(model), num_threads=threads)
        except Exception as e:  # LiteRT raises ValueError / RuntimeError with its own message
            raise ModelError(f"{path}: not a model LiteRT can load: {str(e).strip()}") from e
        it = self.interpreter
        self._in = {d["name"]: d for d in it.get_input_details()}
        self._out = {d["name"]: d for d in it.get_output_details()}

        def info(d: Mapping[str, Any]) -> TensorInfo:
            sig = d.get("shape_signature")
            dims = sig if sig is not None and len(sig) else d["shape"]
            return TensorInfo(d["name"], tuple(int(x) if x >= 0 else None for x in dims), np.dtype(d["dtype"]))

        self.inputs = {n: info(d) for n, d in self._in.items()}
        self.outputs = {n: info(d) for n, d in self._out.items()}
        self.metadata = {} if isinstance(model, bytes) else sidecar(path)
        self._check_state()

    def prepare(self, shapes: Mapping[str, Sequence[int]] | None = None, warmup: int = 1) -> None:
        it = self.interpreter
        in_shapes = self._resolve_shapes(shapes or {})
        try:
            for n, s in in_shapes.items():
                if tuple(self._in[n]["shape"]) != s:
                    it.resize_tensor_input(self._in[n]["index"], list(s), strict=False)
            it.allocate_tensors()
        except Exception as e:
            raise ModelError(f"{self.path}: LiteRT cannot allocate the model for inputs {in_shapes}: {e}") from e
        self._in = {d["name"]: d for d in it.get_input_details()}
        self._out = {d["name"]: d for d in it.get_output_details()}
        self._shapes = {n: tuple(int(x) for x in d["shape"]) for n, d in (*self._in.items(), *self._out.items())}
        for i, o in self.state.items():
            if self._shapes[i] != self._shapes[o] or self._in[i]["dtype"] != self._out[o]["dtype"]:
                raise ModelError(f"{self.path}: state input {i} is {self._shapes[i]} {np.dtype(self._in[i]['dtype'])}"
                                 f" but its output {o} is {self._shapes[o]} {np.dtype(self._out[o]['dtype'])}")
        # float32 buffers the caller writes; quantised inputs get a second buffer of the model's type
        self._buffers = {n: np.zeros(self._shapes[n], np.float32 if _quant(d) else d["dtype"])
                         for n, d in self._in.items() if n not in self.state}
        self._feed = []
        for n, buf in self._buffers.items():
            d = self._in[n]
            self._feed.append((d["index"], buf, _quant(d), np.zeros(self._shapes[n], d["dtype"])))
        self._carry = [(self._in[i]["index"], self._out[o]["index"]) for i, o in self.state.items()]
        self._zero_state = [(self._in[i]["index"], np.zeros(self._shapes[i], self._in[i]["dtype"]))
                            for i in self.state]
        self._outq = {n: _quant(d) for n, d in self._out.items()}
        self._idx = {n: d["index"] for n, d in self._out.items()}
        self._set, self._get, self._invoke = it.set_tensor, it.get_tensor, it.invoke
        self._plain = all(q is None for _, _, q, _ in self._feed)
        self.reset()
        try:
            for _ in range(warmup):
                self.run()
        except Exception as e:
            raise ModelError(f"{self.path}: the model fails on inputs of shapes {in_shapes}: {e}") from e
        self.reset()
        self.calls = self.total_ns = self.max_ns = 0

    def run(self) -> None:
        set_tensor, get_tensor = self._set, self._get
        t0 = time.perf_counter_ns()
        if self._plain:
            for idx, buf, _, _ in self._feed:
                set_tensor(idx, buf)
        else:
            for idx, buf, q, qbuf in self._feed:
                if q is None:
                    set_tensor(idx, buf)
                else:
                    qbuf[...] = np.clip(np.rint(buf / q.scale) + q.zero, q.lo, q.hi)
                    set_tensor(idx, qbuf)
        self._invoke()
        for dst, src in self._carry:
            set_tensor(dst, get_tensor(src))
        dt = time.perf_counter_ns() - t0
        self.calls += 1
        self.total_ns += dt
        if dt > self.max_ns:
            self.max_ns = dt

    def output(self, name: str) -> npt.NDArray[Any]:
        v: npt.NDArray[Any] = self._get(self._idx[name])
        q = self._outq[name]
        if q is not None:
            return ((v.astype(np.float32) - q.zero) * q.scale).astype(np.float32)
        return v

    def reset(self) -> None:
        for idx, zero in self._zero_state:
            self._set(idx, zero)

    def bare(self) -> Callable[[], object]:
        invoke: Callable[[], object] = self._invoke
        return invoke


def open_runner(backend: str, model: str | Path | bytes, state: Mapping[str, str] | None = None, threads: int = 1,
                optimization: str = "all", cache_dir: str | Path | None = None) -> Runner:
    """An OrtRunner ("onnx") or LiteRTRunner ("litert"), not yet prepared."""
    if backend == "onnx":
        return OrtRunner(model, state, threads, optimization, cache_dir)
    if backend == "litert":
        return LiteRTRunner(model, state, threads)
    raise ValueError(f"unknown backend {backend!r}; known: onnx, litert")
