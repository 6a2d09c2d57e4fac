"""Model stages on ONNX Runtime (`onnx`) and LiteRT (`litert`): windowed models and one-step recurrent models.

window mode: the stage keeps the last `window` input rows and calls the model once every `hop` rows (counted
from the first row after start/reset; the first call once `window` rows have arrived) on a (1, window,
channels) "NTC" or (1, channels, window) "NCT" tensor (leading 1-dims allowed: (1, 1, C, T) for EEGNet-style
models). Each call emits one row, carrying the timestamps and seq of the window's newest row.

step mode: the model takes one sample (any shape holding `channels` values, e.g. (1, C)) plus state tensors
(`state = {h = "h_out"}`: input name = output name), carried from call to call, zero at start and after
reset(). One call and one output row per input row.

Either way the output row is the chosen output tensor flattened, optionally soft-maxed. Channel names come
from the `outputs` param, else the model's metadata ("outputs" or "classes": ONNX metadata_props holding JSON
lists, or a `<model>.tflite.json` sidecar, or the registry entry's meta), else y0..yN; "classes" also marks
the rows as decisions (label = argmax). A metadata "input" object ({"rate_hz", "channels", "window", "hop",
"layout"}) is checked against the stream and fills in what the params leave open.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..backends import OPTIMIZATION, Runner, open_runner
from ..chunk import SampleChunk, StreamMeta
from ..modelfile import ModelError
from ..params import Param
from .base import Stage, StageError, need_rate


class NameMap(Param):
    """A TOML table of strings to strings (state input name = state output name)."""

    def convert(self, v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            return None, 'expected a table of input name = output name, e.g. {h = "h_out"}'
        return dict(v), None


COMMON: dict[str, Param] = {
    "model": Param("str", help="model file, or a model id from the registry (models/manifest.json)"),
    "mode": Param("str", "auto", choices=("auto", "window", "step"),
                  help="window: one call per hop on the last window rows; step: one call per row with state "
                       "carried; auto: step when the input holds one sample, else window"),
    "window": Param("int", 0, min=0, help="window length in samples (0: window_s, the metadata or the model)"),
    "window_s": Param("number", 0.0, min=0, help="window length in seconds (0: see window)"),
    "hop": Param("int", 0, min=0, help="samples between calls (0: hop_s, the metadata, else the window)"),
    "hop_s": Param("number", 0.0, min=0, help="seconds between calls (0: see hop)"),
    "layout": Param("str", "auto", choices=("auto", "NTC", "NCT"),
                    help="window tensor layout: (.., time, channels) or (.., channels, time); auto: from the "
                         "metadata or the model's input shape"),
    "state": NameMap("table", {}, help="state input = output carried across calls, zero-initialised"),
    "input": Param("str", "", help="the input fed with the stream (needed when several non-state inputs)"),
    "output": Param("str", "", help="the output emitted (default: the first non-state output)"),
    "outputs": Param("str_list", [], help="names of the output channels (default: the model's, else y0..yN)"),
    "softmax": Param("bool", False, help="apply a softmax over each output row"),
    "threads": Param("int", 1, min=1, max=64, help="intra-op threads (LiteRT: num_threads)"),
    "warmup": Param("int", 1, min=0, help="calls made at start() before the stream (allocation, lazy set-up)"),
    "check_names": Param("bool", True, help="the stream's channel names must equal the model's declared ones"),
}


def _leading_ones(dims: tuple[int | None, ...], what: str) -> None:
    if any(d not in (1, None) for d in dims):
        raise StageError(f"{what}: the leading dimensions must be 1 (one batch), got {dims}", "model")


class _InferStage(Stage):
    backend: ClassVar[str] = ""
    registry_kinds: ClassVar[tuple[str, ...]] = ()
    suffix_hint: ClassVar[dict[str, str]] = {}

    _runner: Runner

    # --- model, metadata ----------------------------------------------------------------------------

    def _open(self) -> tuple[Runner, dict[str, Any]]:
        from .. import registry

        ref = self.p["model"]
        try:
            path = registry.resolve(ref)
        except ModelError as e:
            raise StageError(str(e), "model") from e
        meta: dict[str, Any] = {}
        if Path(ref) != path:  # a registry id
            entry = registry.entries()[ref]
            if entry.kind not in self.registry_kinds:
                raise StageError(f"model {ref!r} is a {entry.kind!r} model; the {self.kind} stage runs "
                                 f"{' / '.join(repr(k) for k in self.registry_kinds)} models", "model")
            meta = dict(entry.meta)
        if not path.is_file():
            raise StageError(f"model file {path} not found", "model")
        hint = self.suffix_hint.get(path.suffix.lower(), "")
        try:
            runner = open_runner(self.backend, path, self.p["state"], threads=self.p["threads"],
                                 **self._backend_options())
        except ModelError as e:
            raise StageError(str(e) + hint, "model") from e
        return runner, {**meta, **runner.metadata}

    def _backend_options(self) -> dict[str, Any]:
        return {}

    def _check_input_spec(self, meta: StreamMeta, md: dict[str, Any]) -> dict[str, Any]:
        spec = md.get("input") or {}
        if not isinstance(spec, dict):
            raise StageError(f"model metadata 'input' must be an object, got {spec!r}", "model")
        rate = spec.get("rate_hz") or md.get("rate_hz")
        if rate and abs(float(rate) - meta.nominal_rate) > 1e-6 * float(rate):
            raise StageError(f"the model was trained at {rate} Hz, stream {meta.name!r} runs at "
                             f"{meta.nominal_rate:g} Hz", "model")
        channels = spec.get("channels")
        if isinstance(channels, int) and channels != meta.n_channels:
            raise StageError(f"the model takes {channels} channels, stream {meta.name!r} has {meta.n_channels}",
                             "model")
        if isinstance(channels, list):
            if len(channels) != meta.n_channels:
                raise StageError(f"the model takes {len(channels)} channels, stream {meta.name!r} has "
                                 f"{meta.n_channels}", "model")
            names = [str(c) for c in channels]
            if self.p["check_names"] and tuple(names) != meta.channels:
                missing = [c for c in names if c not in meta.channels]
                why = (f"has no channels {missing[:8]}" if missing else "has them in another order")
                raise StageError(f"the model takes channels {names[:8]}{' ...' if len(names) > 8 else ''}; "
                                 f"stream {meta.name!r} {why} (put a select stage with channels = the model's "
                                 "list before it, or set check_names = false)", "model")
        return spec

    # --- start --------------------------------------------------------------------------------------

    def start(self, meta: StreamMeta) -> StreamMeta:
        runner, md = self._open()
        spec = self._check_input_spec(meta, md)
        state = self.p["state"]
        free_in = [n for n in runner.inputs if n not in state]
        name = self.p["input"]
        if name:
            if name not in free_in:
                raise StageError(f"model has no non-state input {name!r} (inputs: {', '.join(runner.inputs)})",
                                 "input")
        elif len(free_in) != 1:
            raise StageError(f"the model has {len(free_in)} non-state inputs ({', '.join(free_in) or 'none'}); "
                             "name the stream's one with input = ... and the state ones with state = {...}",
                             "input")
        else:
            name = free_in[0]
        info = runner.inputs[name]
        if info.dtype.kind != "f" and self.backend != "litert":
            raise StageError(f"model input {info.describe()}: the stream is float, the input is {info.dtype}",
                             "model")
        c = meta.n_channels
        mode = self.p["mode"]
        dims = info.shape
        if mode == "auto":
            windowed = bool(self.p["window"] or self.p["window_s"] or spec.get("window"))
            mode = "window" if windowed or len(dims) >= 3 or (len(dims) == 2 and dims[0] not in (1, None)) else "step"
        shapes: dict[str, tuple[int, ...]] = {}
        for other in free_in:
            if other != name and runner.inputs[other].dynamic:
                raise StageError(f"extra input {runner.inputs[other].describe()} has dynamic dimensions", "model")
        if mode == "step":
            shape = tuple(c if (d is None and k == len(dims) - 1) else (1 if d is None else d)
                          for k, d in enumerate(dims))
            if math.prod(shape) != c:
                raise StageError(f"model input {info.describe()} takes {math.prod(shape)} values per call; stream "
                                 f"{meta.name!r} has {c} channels (step mode feeds one sample per call)", "model")
            shapes[name] = shape
            self._window = 0
        else:
            shapes[name] = self._window_shape(meta, info.describe(), dims, spec)
        for i, o in state.items():
            si = runner.inputs[i]
            if si.dynamic:
                if runner.outputs[o].dynamic:
                    raise StageError(f"state input {si.describe()} has dynamic dimensions", "state")
                shapes[i] = tuple(int(d) for d in runner.outputs[o].shape if d is not None)
        try:
            runner.prepare(shapes, warmup=self.p["warmup"])
        except ModelError as e:
            raise StageError(str(e), "model") from e
        self._runner = runner
        self._mode = mode
        x = runner.buffer(name)
        # a view of the input buffer: (time, channels) or (channels, time) for windows, (channels,) for steps
        self._xv: npt.NDArray[Any] = (x.reshape(c) if mode == "step" else
                                      x.reshape((self._window, c) if self._layout == "NTC" else (c, self._window)))
        return self._output_meta(meta, runner, md)

    def _window_shape(self, meta: StreamMeta, what: str, dims: tuple[int | None, ...],
                      spec: dict[str, Any]) -> tuple[int, ...]:
        c = meta.n_channels
        if len(dims) < 2:
            raise StageError(f"model input {what} cannot take a window: it needs (..., time, channels) or "
                             "(..., channels, time)", "model")
        _leading_ones(dims[:-2], f"model input {what}")
        a, b = dims[-2], dims[-1]
        p = self.p
        window = p["window"]
        if not window and p["window_s"]:
            window = round(p["window_s"] * need_rate(meta, f"{self.kind} window_s"))
        if not window and spec.get("window"):
            window = int(spec["window"])
        layout = p["layout"] if p["layout"] != "auto" else str(spec.get("layout", "auto")).upper()
        if layout not in ("AUTO", "NTC", "NCT"):
            raise StageError(f"model metadata layout {layout!r}: expected NTC or NCT", "model")
        if layout == "AUTO":
            fits = [lay for lay, (t, ch) in (("NTC", (a, b)), ("NCT", (b, a)))
                    if ch in (None, c) and (t is None or not window or t == window)]
            if len(fits) == 2 and (a is None) == (b is None) and a == b:
                raise StageError(f"model input {what}: cannot tell time from channels; set layout = "
                                 '"NTC" or "NCT"', "layout")
            if len(fits) == 2:  # one of the two dims is the channel count: the other must be time
                fits = ["NTC" if b == c else "NCT"]
            if not fits:
                raise StageError(f"model input {what} does not fit stream {meta.name!r} with {c} channels"
                                 + (f" and a window of {window}" if window else "")
                                 + f": NTC needs (..., {window or 'window'}, {c}), NCT (..., {c}, "
                                   f"{window or 'window'})", "model")
            layout = fits[0]
        t_dim, c_dim = (a, b) if layout == "NTC" else (b, a)
        if c_dim is not None and c_dim != c:
            raise StageError(f"model input {what} ({layout}) takes {c_dim} channels, stream {meta.name!r} has {c}",
                             "model")
        if not window:
            if t_dim is None:
                raise StageError(f"model input {what} has a dynamic time dimension: set window or window_s", "window")
            window = t_dim
        elif t_dim is not None and t_dim != window:
            raise StageError(f"model input {what} ({layout}) takes windows of {t_dim} samples, the stage is set to "
                             f"{window}", "window")
        hop = p["hop"]
        if not hop and p["hop_s"]:
            hop = round(p["hop_s"] * need_rate(meta, f"{self.kind} hop_s"))
        hop = hop or int(spec.get("hop") or 0) or window
        if hop < 1:
            raise StageError(f"hop is {hop} samples: it must be at least one", "hop")
        self._window, self._hop, self._layout = window, hop, layout
        # the rows kept between chunks (window - 1) plus room to append before compacting
        self._buf = np.zeros((window - 1 + max(window, 256), c), np.float32)
        self._end = self._seen = 0
        lead = tuple(1 for _ in dims[:-2])
        return (*lead, window, c) if layout == "NTC" else (*lead, c, window)

    def _output_meta(self, meta: StreamMeta, runner: Runner, md: dict[str, Any]) -> StreamMeta:
        out = self.p["output"]
        free_out = [n for n in runner.outputs if n not in self.p["state"].values()]
        if out:
            if out not in runner.outputs:
                raise StageError(f"model has no output {out!r} (outputs: {', '.join(runner.outputs)})", "output")
        elif free_out:
            out = free_out[0]
        else:  # every output is state: emit the first one (e.g. a GRU's hidden state)
            out = next(iter(runner.outputs))
        self._oname = out
        k = math.prod(runner.shape(out))
        self._oshape = runner.shape(out)

        def names(key: str) -> list[str]:
            v = md.get(key)
            if v is None:
                return []
            if not isinstance(v, list) or len(v) != k:
                raise StageError(f"model metadata {key!r} must list {k} names (output {out} has {k} values), "
                                 f"got {v!r}", "model")
            return [str(x) for x in v]

        classes = names("classes")
        labels = list(self.p["outputs"]) or names("outputs") or classes or [f"y{i}" for i in range(k)]
        if len(labels) != k:
            raise StageError(f"outputs names {len(labels)} channels, output {out} has {k} values", "outputs")
        rate = meta.nominal_rate / self._hop if self._mode == "window" else meta.nominal_rate
        self._classes = bool(classes)
        self._out = meta.derive(channels=tuple(labels), units=("",) * k, nominal_rate=rate, classes=tuple(classes))
        return self._out

    # --- process ------------------------------------------------------------------------------------

    def process(self, chunk: SampleChunk) -> SampleChunk | None:
        if self._mode == "step":
            return self._finish(chunk, self._step(chunk.data), 0, 1)
        return self._windows(chunk)

    def _step(self, data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n = data.shape[0]
        out = np.empty((n, *self._oshape), np.float32)
        x, run, output, name = self._xv, self._runner.run, self._runner.output, self._oname
        for i in range(n):
            x[...] = data[i]
            run()
            out[i] = output(name)
        return out.reshape(n, -1)

    def _windows(self, chunk: SampleChunk) -> SampleChunk | None:
        n, w, hop = len(chunk), self._window, self._hop
        seen = self._seen
        self._seen = seen + n
        # row i is the (seen + i + 1)-th since start: a call ends at rows w, w + hop, w + 2 hop, ...
        k0 = seen + 1
        first_k = w if k0 <= w else w + -(-(k0 - w) // hop) * hop
        first = first_k - k0
        count = 0 if first >= n else (n - 1 - first) // hop + 1
        out = np.empty((count, *self._oshape), np.float32)
        buf, x, run, output, name = self._buf, self._xv, self._runner.run, self._runner.output, self._oname
        nct = self._layout == "NCT"
        data = chunk.data
        cap, keep_max = buf.shape[0], w - 1
        pos, j, nxt = 0, 0, first
        while pos < n:
            end = self._end
            if end == cap:
                keep = min(end, keep_max)
                buf[:keep] = buf[end - keep:end]
                end = keep
            m = min(cap - end, n - pos)
            buf[end:end + m] = data[pos:pos + m]
            while j < count and nxt < pos + m:
                e = end + (nxt - pos) + 1
                x[...] = buf[e - w:e].T if nct else buf[e - w:e]
                run()
                out[j] = output(name)
                j += 1
                nxt += hop
            self._end = end + m
            pos += m
        if count == 0:
            return None
        return self._finish(chunk, out.reshape(count, -1), first, hop)

    def _finish(self, chunk: SampleChunk, y: npt.NDArray[np.float32], first: int, step: int) -> SampleChunk:
        if self.p["softmax"] and y.size:
            z = np.exp(y - y.max(axis=1, keepdims=True))
            y = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
        label = np.argmax(y, axis=1).astype(np.int16) if self._classes else None
        if first == 0 and step == 1:
            return chunk.with_data(y, self._out, label=label) if label is not None else SampleChunk(
                y, chunk.t, chunk.t_recv, chunk.seq, self._out, None, chunk.stride)
        rows = slice(first, None, step)
        return SampleChunk(y, chunk.t[rows], chunk.t_recv[rows], chunk.seq + first * chunk.stride, self._out, label,
                           chunk.stride * step)

    def reset(self) -> None:
        self._runner.reset()
        if self._mode == "window":
            self._end = self._seen = 0

    def counters(self) -> dict[str, int | float]:
        return self._runner.counters()


class OnnxStage(_InferStage):
    kind = "onnx"
    backend = "onnx"
    registry_kinds = ("onnx",)
    suffix_hint = {".tflite": ' (a .tflite model: use type = "litert")'}
    summary = "ONNX model on ONNX Runtime: windowed (one call per hop) or one-step recurrent (state carried)"
    params = {
        **COMMON,
        "optimization": Param("str", "all", choices=OPTIMIZATION, help="ONNX Runtime graph optimisation level"),
        "cache_dir": Param("str", "", help="keep the optimised graph here and load it next time (\"\": off)"),
    }

    def _backend_options(self) -> dict[str, Any]:
        return {"optimization": self.p["optimization"], "cache_dir": self.p["cache_dir"] or None}


class LiteRTStage(_InferStage):
    kind = "litert"
    backend = "litert"
    registry_kinds = ("litert", "tflite")
    suffix_hint = {".onnx": ' (an ONNX model: use type = "onnx")'}
    summary = "LiteRT (.tflite) model: windowed (one call per hop) or one-step recurrent (state carried)"
    params = dict(COMMON)
