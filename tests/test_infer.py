"""The onnx and litert stages against numpy on tiny models built here, whose outputs numpy computes exactly:

- windowed: per-channel mean and log-variance over the window (ONNX, NTC), a linear map over the whole
  window (ONNX and LiteRT, NTC and NCT, EEGNet-style (1, 1, C, T) inputs);
- one-step recurrent: h' = tanh(W x + U h) with h carried as state (ONNX and LiteRT);
- the same outputs, seqs and timestamps however the stream is cut into chunks (hypothesis), hops longer
  and shorter than the chunks, reset(), metadata (classes, input spec, sidecar), registry ids, and bad
  models and streams refused at start() with a StageError that says what is wrong.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, need
from spikeline import registry
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.stages import StageError, build_stage
from spikeline.stages.infer import LiteRTStage, OnnxStage

F32 = npt.NDArray[np.float32]
C, H, T, K = 3, 5, 8, 4  # channels, hidden size, window, linear outputs
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
RNG = np.random.default_rng(7)
W_X = RNG.standard_normal((H, C)).astype(np.float32)
W_H = (0.5 * RNG.standard_normal((H, H))).astype(np.float32)
LIN = (RNG.standard_normal((K, T * C)) / T).astype(np.float32)


def _tools() -> None:
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)


@pytest.fixture(scope="module")
def ort_ok() -> None:
    need(HAVE_ORT, "onnxruntime / onnx not installed (pip install spikeline[onnx] onnx)")


@pytest.fixture(scope="module")
def litert_ok() -> None:
    need(HAVE_LITERT, "ai-edge-litert not installed (pip install spikeline[litert])")


# --- models ----------------------------------------------------------------------------------------


def _onnx(nodes: list[Any], inputs: list[tuple[str, list[Any]]], outputs: list[tuple[str, list[Any]]],
          inits: dict[str, npt.NDArray[Any]] | None = None, meta: dict[str, Any] | None = None) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=json.dumps(v)))
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def onnx_rnn(x_shape: list[Any] | None = None, meta: dict[str, Any] | None = None) -> bytes:
    """h' = tanh(x Wxᵀ + h Whᵀ); outputs y (= h') and h_out."""
    from onnx import helper

    nodes = [helper.make_node("MatMul", ["x", "wxt"], ["a"]), helper.make_node("MatMul", ["h", "wht"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h_out"]),
             helper.make_node("Identity", ["h_out"], ["y"])]
    return _onnx(nodes, [("x", x_shape or [1, C]), ("h", [1, H])], [("y", [1, H]), ("h_out", [1, H])],
                 {"wxt": np.ascontiguousarray(W_X.T), "wht": np.ascontiguousarray(W_H.T)}, meta)


def onnx_meanlogvar(shape: list[Any] | None = None, meta: dict[str, Any] | None = None) -> bytes:
    """(1, T, C) -> (1, 2C): per-channel mean, then log of the (biased) variance over the window."""
    from onnx import helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["v"], axes=[1], keepdims=0),
             helper.make_node("Log", ["v"], ["lv"]),
             helper.make_node("Squeeze", ["m", "axis1"], ["m2"]),
             helper.make_node("Concat", ["m2", "lv"], ["y"], axis=1)]
    out = [shape[0] if shape else 1, 2 * C]  # a dynamic batch in, a dynamic batch out
    return _onnx(nodes, [("x", shape or [1, T, C])], [("y", out)], {"axis1": np.array([1], np.int64)}, meta)


def onnx_linear(shape: list[Any], nct: bool, meta: dict[str, Any] | None = None) -> bytes:
    """The window flattened in its tensor layout, times LINᵀ: y = LIN @ window.ravel() (NTC) or
    LIN @ window.T.ravel() (NCT)."""
    from onnx import helper

    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("MatMul", ["f", "lint"], ["y"])]
    return _onnx(nodes, [("x", shape)], [("y", [1, K])],
                 {"flat": np.array([1, T * C], np.int64), "lint": np.ascontiguousarray(LIN.T)}, meta)


def tflite_rnn() -> bytes:
    _tools()
    from tflite_build import TFLiteBuilder

    b = TFLiteBuilder()
    x, h = b.tensor("x", (1, C)), b.tensor("h", (1, H))
    s = b.binary(b.ops.ADD, b.fully_connected(x, b.const("wx", W_X), -1, "a"),
                 b.fully_connected(h, b.const("wh", W_H), -1, "b"), "s")
    out = b.unary(b.ops.TANH, s, "h_out")
    return b.finish([x, h], [out], "rnn")


def tflite_quantised() -> bytes:
    """int8 in (scale 0.05, zero point 3) -> DEQUANTIZE -> QUANTIZE -> int8 out (scale 0.025, zero point -2):
    y = the input rounded to the input's quantisation grid."""
    _tools()
    from tflite_build import TFLiteBuilder

    b = TFLiteBuilder()
    tfl = b.tfl
    x = b.tensor("x", (1, C), dtype=tfl.TensorType.INT8)
    y = b.tensor("y", (1, C), dtype=tfl.TensorType.INT8)
    for idx, scale, zero in ((x, 0.05, 3), (y, 0.025, -2)):
        q = tfl.QuantizationParametersT()
        q.scale, q.zeroPoint = [scale], [zero]
        b.tensors[idx].quantization = q
    xf = b.tensor("xf", (1, C))
    b.op(b.ops.DEQUANTIZE, [x], [xf])
    b.op(b.ops.QUANTIZE, [xf], [y])
    return b.finish([x], [y], "quantised")


def tflite_linear(nct: bool) -> bytes:
    _tools()
    from tflite_build import TFLiteBuilder

    b = TFLiteBuilder()
    x = b.tensor("x", (1, C, T) if nct else (1, T, C))
    flat = b.reshape(x, (1, T * C), "flat")
    y = b.fully_connected(flat, b.const("lin", LIN), -1, "y")
    return b.finish([x], [y], "linear")


# --- numpy references ------------------------------------------------------------------------------


def ref_rnn(x: F32) -> F32:
    h, out = np.zeros(H, np.float64), []
    for row in x.astype(np.float64):
        h = np.tanh(W_X @ row + W_H @ h)
        out.append(h)
    return np.array(out, np.float32)


def window_ends(n: int, window: int, hop: int) -> npt.NDArray[np.intp]:
    return np.arange(window - 1, n, hop)


def ref_windows(x: F32, window: int, hop: int, fn: Any) -> F32:
    return np.array([fn(x[e - window + 1:e + 1].astype(np.float64)) for e in window_ends(len(x), window, hop)],
                    np.float32).reshape(-1, K if fn is lin_ntc or fn is lin_nct else 2 * C)


def meanlogvar(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.concatenate([w.mean(0), np.log(w.var(0))])


def lin_ntc(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(LIN @ w.ravel())


def lin_nct(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(LIN @ w.T.ravel())


# --- streams ---------------------------------------------------------------------------------------

META = StreamMeta("imu", "IMU", tuple(f"c{i}" for i in range(C)), 50.0)


def stream(n: int, seed: int = 0, meta: StreamMeta = META, seq: int = 100) -> SampleChunk:
    rng = np.random.default_rng(seed)
    t = 10.0 + np.arange(n) / meta.nominal_rate
    return SampleChunk(rng.standard_normal((n, meta.n_channels)).astype(np.float32), t, t + 0.25 + 1e-4 * np.arange(n),
                       seq, meta)


def split(chunk: SampleChunk, cuts: list[int]) -> Iterator[SampleChunk]:
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(chunk))), len(chunk)]
    for a, b in itertools.pairwise(edges):
        yield chunk.take(a, b)


def run(stage: Any, chunks: Any) -> tuple[F32, npt.NDArray[np.int64], npt.NDArray[np.float64],
                                           npt.NDArray[np.float64]]:
    outs = [o for o in (stage.process(c) for c in chunks) if o is not None and len(o)]
    if not outs:
        return (np.zeros((0, stage._out.n_channels), np.float32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    return (np.concatenate([o.data for o in outs]), np.concatenate([o.seqs() for o in outs]),
            np.concatenate([o.t for o in outs]), np.concatenate([o.t_recv for o in outs]))


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("models")
    out: dict[str, str] = {}
    if HAVE_ORT:
        out["rnn.onnx"] = write(d / "rnn.onnx", onnx_rnn())
        out["mlv.onnx"] = write(d / "mlv.onnx", onnx_meanlogvar())
        out["lin_ntc.onnx"] = write(d / "lin_ntc.onnx", onnx_linear([1, T, C], nct=False))
        out["lin_nct.onnx"] = write(d / "lin_nct.onnx", onnx_linear([1, 1, C, T], nct=True))
    if HAVE_LITERT:
        out["rnn.tflite"] = write(d / "rnn.tflite", tflite_rnn())
        out["lin_ntc.tflite"] = write(d / "lin_ntc.tflite", tflite_linear(nct=False))
        out["lin_nct.tflite"] = write(d / "lin_nct.tflite", tflite_linear(nct=True))
    return out


def start(kind: str, p: dict[str, Any], meta: StreamMeta = META) -> OnnxStage | LiteRTStage:
    s = build_stage(kind, p)
    s.start(meta)
    assert isinstance(s, OnnxStage | LiteRTStage)
    return s


BACKENDS = [pytest.param(("onnx", "onnx"), id="onnx"), pytest.param(("litert", "tflite"), id="litert")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind, ext = request.param
    need(HAVE_ORT if kind == "onnx" else HAVE_LITERT,
         f"{'onnxruntime' if kind == 'onnx' else 'ai-edge-litert'} not installed (pip install spikeline[{kind}])")
    return kind, ext


# --- step mode -------------------------------------------------------------------------------------


def test_step_rnn_matches_numpy(backend: tuple[str, str], models: dict[str, str]) -> None:
    kind, ext = backend
    s = start(kind, {"model": models[f"rnn.{ext}"], "state": {"h": "h_out"}})
    assert s._mode == "step"
    x = stream(200, seed=1)
    y, seqs, t, t_recv = run(s, split(x, [1, 2, 50, 51, 120]))
    np.testing.assert_allclose(y, ref_rnn(x.data), rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(seqs, x.seqs())
    np.testing.assert_array_equal(t, x.t)
    np.testing.assert_array_equal(t_recv, x.t_recv)
    c = s.counters()
    assert c["calls"] == 200 and 0 < c["call_us_mean"] <= c["call_us_max"]


def test_step_reset_zeroes_state(backend: tuple[str, str], models: dict[str, str]) -> None:
    kind, ext = backend
    s = start(kind, {"model": models[f"rnn.{ext}"], "state": {"h": "h_out"}})
    x = stream(40, seed=2)
    first, *_ = run(s, [x])
    s.reset()
    again, *_ = run(s, [x])
    np.testing.assert_array_equal(first, again)
    # without reset the state carries on: the same input gives other outputs
    carried, *_ = run(s, [x])
    assert not np.allclose(carried[:5], first[:5])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 89), max_size=12))
def test_step_chunk_invariance(backend: tuple[str, str], models: dict[str, str], cuts: list[int]) -> None:
    kind, ext = backend
    s = _cached(kind, {"model": models[f"rnn.{ext}"], "state": {"h": "h_out"}})
    x = stream(90, seed=3)
    s.reset()
    whole = run(s, [x])
    s.reset()
    parts = run(s, split(x, cuts))
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a, b)


_CACHE: dict[str, Any] = {}


def _cached(kind: str, p: dict[str, Any]) -> Any:
    key = json.dumps([kind, p], sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = start(kind, p)
    return _CACHE[key]


# --- window mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hop", [1, 3, 8, 50])
def test_window_meanlogvar_matches_numpy(ort_ok: None, models: dict[str, str], hop: int) -> None:
    s = start("onnx", {"model": models["mlv.onnx"], "hop": hop})
    assert (s._mode, s._window, s._hop, s._layout) == ("window", T, hop, "NTC")
    x = stream(300, seed=4)
    y, seqs, t, t_recv = run(s, split(x, list(range(0, 300, 7))))  # chunks of 7: hops longer and shorter
    ends = window_ends(300, T, hop)
    np.testing.assert_allclose(y, ref_windows(x.data, T, hop, meanlogvar), rtol=1e-4, atol=1e-5)
    # each row carries the seq and timestamps of its window's newest sample
    np.testing.assert_array_equal(seqs, x.seq + ends)
    np.testing.assert_array_equal(t, x.t[ends])
    np.testing.assert_array_equal(t_recv, x.t_recv[ends])
    assert s._out.nominal_rate == pytest.approx(META.nominal_rate / hop)
    assert s.counters()["calls"] == len(ends)


@pytest.mark.parametrize(("model", "fn"), [("lin_ntc", lin_ntc), ("lin_nct", lin_nct)])
def test_window_linear_matches_numpy(backend: tuple[str, str], models: dict[str, str], model: str, fn: Any) -> None:
    kind, ext = backend
    s = start(kind, {"model": models[f"{model}.{ext}"], "hop": 5})
    assert s._layout == ("NCT" if fn is lin_nct else "NTC")
    x = stream(120, seed=5)
    y, *_ = run(s, split(x, [3, 4, 60]))
    np.testing.assert_allclose(y, ref_windows(x.data, T, 5, fn), rtol=1e-5, atol=1e-5)


def test_quantised_litert_io(litert_ok: None, tmp_path: Path) -> None:
    """int8 inputs and outputs with a scale are quantised / dequantised by the runner: float32 in and out."""
    s = start("litert", {"model": write(tmp_path / "q.tflite", tflite_quantised())})
    assert s._mode == "step"
    x = stream(64, seed=12)
    x.data[...] = np.clip(x.data, -3, 3)
    y, *_ = run(s, [x])
    grid = (np.clip(np.rint(x.data / np.float32(0.05)) + 3, -128, 127) - 3) * 0.05
    np.testing.assert_allclose(y, grid, atol=1e-6)
    assert np.any(np.abs(y - x.data) > 1e-3)  # the grid is visible: the values did go through int8


def test_onnx_optimised_model_cache(ort_ok: None, models: dict[str, str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = {"model": models["rnn.onnx"], "state": {"h": "h_out"}, "cache_dir": str(cache)}
    x = stream(30, seed=13)
    first, *_ = run(start("onnx", p), [x])
    saved = list(cache.glob("*.onnx"))
    assert len(saved) == 1
    stamp = saved[0].stat().st_mtime_ns
    again, *_ = run(start("onnx", p), [x])  # loads the optimised graph from the cache
    assert saved[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, ref_rnn(x.data), rtol=1e-5, atol=2e-6)


def test_window_default_hop_is_the_window(ort_ok: None, models: dict[str, str]) -> None:
    s = start("onnx", {"model": models["mlv.onnx"]})
    x = stream(40)
    _, seqs, *_ = run(s, [x])
    np.testing.assert_array_equal(seqs, x.seq + np.array([7, 15, 23, 31, 39]))


def test_window_seconds(ort_ok: None, tmp_path: Path) -> None:
    path = write(tmp_path / "dyn.onnx", onnx_meanlogvar(["N", "T", C]))
    s = start("onnx", {"model": path, "window_s": 0.2, "hop_s": 0.06})  # 50 Hz: 10 and 3 samples
    assert (s._window, s._hop) == (10, 3)
    x = stream(50, seed=6)
    y, *_ = run(s, [x])
    np.testing.assert_allclose(y, ref_windows(x.data, 10, 3, meanlogvar), rtol=1e-4, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 149), max_size=20), hop=st.sampled_from([1, 2, 7, 9, 40]),
       kind=st.sampled_from(["onnx", "litert"]))
def test_window_chunk_invariance(models: dict[str, str], cuts: list[int], hop: int, kind: str) -> None:
    need(HAVE_ORT and HAVE_LITERT, "onnxruntime and ai-edge-litert are both needed")
    s = _cached(kind, {"model": models[f"lin_nct.{'onnx' if kind == 'onnx' else 'tflite'}"], "hop": hop})
    x = stream(150, seed=8)
    s.reset()
    whole = run(s, [x])
    s.reset()
    parts = run(s, split(x, cuts))
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole[1], x.seq + window_ends(150, T, hop))


def test_window_long_chunk_compacts_buffer(ort_ok: None, models: dict[str, str]) -> None:
    """A chunk longer than the stage's buffer, then single rows: the buffer wraps correctly."""
    s = start("onnx", {"model": models["lin_ntc.onnx"], "hop": 1})
    x = stream(1200, seed=9)
    y, seqs, *_ = run(s, [x.take(0, 700), *(x.take(i, i + 1) for i in range(700, 1200))])
    np.testing.assert_allclose(y, ref_windows(x.data, T, 1, lin_ntc), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seqs, x.seq + window_ends(1200, T, 1))


def test_window_reset_needs_a_full_window_again(ort_ok: None, models: dict[str, str]) -> None:
    s = start("onnx", {"model": models["lin_ntc.onnx"], "hop": 2})
    x = stream(30, seed=10)
    first = run(s, [x])
    s.reset()
    assert s.process(x.take(0, T - 1)) is None
    s.reset()
    again = run(s, split(x, [5, 9]))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


# --- outputs and metadata --------------------------------------------------------------------------


def test_classes_and_softmax(ort_ok: None, tmp_path: Path) -> None:
    classes = ["a", "b", "c", "d"]
    path = write(tmp_path / "m.onnx", onnx_linear([1, T, C], nct=False, meta={"classes": classes}))
    s = build_stage("onnx", {"model": path, "softmax": True})
    out = s.start(META)
    assert out.classes == tuple(classes) and out.channels == tuple(classes)
    x = stream(40, seed=11)
    o = s.process(x)
    assert o is not None and o.label is not None
    logits = ref_windows(x.data, T, T, lin_ntc).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(o.data, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(o.label, np.argmax(p, 1))


def test_output_names_param_and_default(ort_ok: None, models: dict[str, str]) -> None:
    s = build_stage("onnx", {"model": models["lin_ntc.onnx"], "outputs": ["w", "x", "y", "z"]})
    assert s.start(META).channels == ("w", "x", "y", "z")
    s = build_stage("onnx", {"model": models["lin_ntc.onnx"]})
    out = s.start(META)
    assert out.channels == ("y0", "y1", "y2", "y3") and out.classes == ()
    with pytest.raises(StageError, match="outputs names 2 channels, output y has 4"):
        start("onnx", {"model": models["lin_ntc.onnx"], "outputs": ["a", "b"]})


def test_metadata_input_spec(ort_ok: None, tmp_path: Path) -> None:
    spec = {"rate_hz": 50, "channels": list(META.channels), "window": T, "hop": 4}
    path = write(tmp_path / "m.onnx", onnx_meanlogvar(["N", "T", C], meta={"input": spec}))
    s = start("onnx", {"model": path})
    assert (s._window, s._hop) == (T, 4)
    with pytest.raises(StageError, match="trained at 50 Hz, stream 'imu' runs at 100 Hz"):
        start("onnx", {"model": path}, META.derive(nominal_rate=100.0))
    with pytest.raises(StageError, match="in another order"):
        start("onnx", {"model": path}, META.derive(channels=tuple(reversed(META.channels))))
    with pytest.raises(StageError, match=r"has no channels \['c0'"):
        start("onnx", {"model": path}, META.derive(channels=("x", "y", "z")))
    start("onnx", {"model": path, "check_names": False}, META.derive(channels=("x", "y", "z")))


def test_tflite_sidecar(litert_ok: None, tmp_path: Path) -> None:
    path = write(tmp_path / "m.tflite", tflite_linear(nct=False))
    (tmp_path / "m.tflite.json").write_text(json.dumps({"classes": ["p", "q", "r", "s"],
                                                        "input": {"rate_hz": 50, "channels": C, "hop": 2}}))
    s = build_stage("litert", {"model": path})
    assert s.start(META).classes == ("p", "q", "r", "s")
    assert isinstance(s, LiteRTStage) and s._hop == 2
    with pytest.raises(StageError, match="takes 3 channels, stream 'imu' has 4"):
        start("litert", {"model": path}, META.derive(channels=(*META.channels, "c3")))


def test_registry_id(backend: tuple[str, str], models: dict[str, str], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    kind, ext = backend
    d = tmp_path / "reg"
    d.mkdir()
    f = d / f"lin.{ext}"
    f.write_bytes(Path(models[f"lin_ntc.{ext}"]).read_bytes())
    registry.register(d, "tiny-lin", f, "onnx" if kind == "onnx" else "tflite", meta={"classes": list("wxyz")})
    registry.register(d, "other-kind", f, "l2mu")
    monkeypatch.setenv("SPIKELINE_MODELS", str(d))
    s = build_stage(kind, {"model": "tiny-lin"})
    assert s.start(META).classes == tuple("wxyz")
    with pytest.raises(StageError, match="is a 'l2mu' model"):
        start(kind, {"model": "other-kind"})
    with pytest.raises(StageError, match="no model file or registered model id 'nope'"):
        start(kind, {"model": "nope"})
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(StageError, match="sha256"):
        start(kind, {"model": "tiny-lin"})


# --- refusals --------------------------------------------------------------------------------------


def test_wrong_channel_count(backend: tuple[str, str], models: dict[str, str]) -> None:
    kind, ext = backend
    four = META.derive(channels=("a", "b", "c", "d"))
    with pytest.raises(StageError, match="takes 3 values per call; stream 'imu' has 4 channels"):
        start(kind, {"model": models[f"rnn.{ext}"], "state": {"h": "h_out"}}, four)
    with pytest.raises(StageError, match="does not fit stream 'imu' with 4 channels"):
        start(kind, {"model": models[f"lin_ntc.{ext}"]}, four)
    with pytest.raises(StageError, match=r"\(NTC\) takes 3 channels, stream 'imu' has 4"):
        start(kind, {"model": models[f"lin_ntc.{ext}"], "layout": "NTC"}, four)


def test_wrong_window(backend: tuple[str, str], models: dict[str, str]) -> None:
    kind, ext = backend
    with pytest.raises(StageError, match="does not fit stream 'imu' with 3 channels and a window of 9"):
        start(kind, {"model": models[f"lin_ntc.{ext}"], "window": 9})
    with pytest.raises(StageError, match=r"takes windows of 8 samples, the stage is set to 9"):
        start(kind, {"model": models[f"lin_ntc.{ext}"], "window": 9, "layout": "NTC"})


def test_dynamic_time_needs_a_window(ort_ok: None, tmp_path: Path) -> None:
    path = write(tmp_path / "dyn.onnx", onnx_meanlogvar(["N", "T", C]))
    with pytest.raises(StageError, match="dynamic time dimension: set window or window_s"):
        start("onnx", {"model": path})
    both = write(tmp_path / "both.onnx", onnx_meanlogvar(["N", "A", "B"]))
    with pytest.raises(StageError, match="cannot tell time from channels"):
        start("onnx", {"model": both, "window": 5})
    s = start("onnx", {"model": both, "window": 5, "layout": "NTC"})
    assert s._runner.shape("x") == (1, 5, C)


def test_state_names_checked(backend: tuple[str, str], models: dict[str, str]) -> None:
    kind, ext = backend
    m = models[f"rnn.{ext}"]
    with pytest.raises(StageError, match=r"state inputs \['hx'\] are not inputs of the model"):
        start(kind, {"model": m, "state": {"hx": "h_out"}})
    with pytest.raises(StageError, match=r"state outputs \['h_new'\] are not outputs of the model"):
        start(kind, {"model": m, "state": {"h": "h_new"}})
    with pytest.raises(StageError, match="2 non-state inputs"):
        start(kind, {"model": m})


def test_bad_files(backend: tuple[str, str], models: dict[str, str], tmp_path: Path) -> None:
    kind, ext = backend
    good = Path(models[f"rnn.{ext}"]).read_bytes()
    corrupt = write(tmp_path / f"corrupt.{ext}", good[: len(good) // 2])
    with pytest.raises(StageError, match=f"corrupt.{ext}: not a model"):
        start(kind, {"model": corrupt, "state": {"h": "h_out"}})
    text = write(tmp_path / f"notes.{ext}", b"these are my notes, not a model\n")
    with pytest.raises(StageError, match=f"notes.{ext}: not a model"):
        start(kind, {"model": text})
    with pytest.raises(StageError, match="not found"):
        start(kind, {"model": str(tmp_path / f"missing.{ext}")})
    other = "tflite" if ext == "onnx" else "onnx"
    wrong = write(tmp_path / f"m.{other}", b"x" * 64)
    with pytest.raises(StageError, match=f'use type = "{"litert" if kind == "onnx" else "onnx"}"'):
        start(kind, {"model": wrong})


def test_bad_params(ort_ok: None, models: dict[str, str]) -> None:
    from spikeline.params import ConfigError

    with pytest.raises(ConfigError, match="expected a table of input name = output name"):
        build_stage("onnx", {"model": models["rnn.onnx"], "state": ["h", "h_out"]})
    with pytest.raises(StageError, match="no non-state input 'z'"):
        start("onnx", {"model": models["lin_ntc.onnx"], "input": "z"})
    with pytest.raises(StageError, match="no output 'z'"):
        start("onnx", {"model": models["lin_ntc.onnx"], "output": "z"})


def test_missing_backend_names_the_extra(models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(StageError, match=r"pip install spikeline\[onnx\]"):
        start("onnx", {"model": models.get("lin_ntc.onnx", "x.onnx")} if HAVE_ORT else {"model": __file__})
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.raises(StageError, match=r"pip install spikeline\[litert\]"):
        start("litert", {"model": __file__})
