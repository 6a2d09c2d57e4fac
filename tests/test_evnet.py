"""The event-driven classifier kernel: EventNet (spikeline.kernels.evnet) and its numpy reference.

Behaviour tests run on whichever backend spikeline.kernels.evnet selected: run the file once normally
(compiled) and once with SPIKELINE_NO_EXT=1 (numpy reference). The compiled-vs-reference tests import
spikeline._ext.evnet directly. The outside reference is PyTorch (conv2d / avg_pool2d / linear on the
event-count image); it is an optional extra: without it those tests skip with the reason on a
developer's machine and fail under SPIKELINE_REQUIRE_ALL=1 (CI), through conftest.need.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import need
from spikeline.chunk import EVENT_DTYPE, as_events
from spikeline.kernels.evnet import BACKEND, EventNet, EventNetRef, build_plan, load_evnet
from spikeline.kernels.ref_evnet import KIND, Plan
from spikeline.modelfile import ModelError, save

pytestmark = pytest.mark.kernel

F32 = npt.NDArray[np.float32]
EPS32 = 2.0**-24
SENSOR = (14, 10)  # (width, height): not square, so x and y cannot be swapped unnoticed
CLASSES = ("a", "b", "c")


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.float32:
        return bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))
    return bool(np.array_equal(a, b))


def _same_state(s1: dict[str, Any], s2: dict[str, Any]) -> bool:
    return list(s1) == list(s2) and all(_same(s1[k], s2[k]) for k in s1)


def _weights(seed: int, c1: int = 4, c2: int = 6, k1: int = 5, k2: int = 3,
             sensor: tuple[int, int] = SENSOR, n_cls: int = len(CLASSES)) -> dict[str, F32]:
    """Random weights of the size a trained model has (activations O(1) for a few events per pixel);
    negative-leaning biases so that the ReLUs are both on and off."""
    rng = np.random.default_rng(seed)
    w, h = sensor
    n_feat = c2 * (h // 4) * (w // 4)

    def f(*shape: int, scale: float, shift: float = 0.0) -> F32:
        return (rng.standard_normal(shape) * scale + shift).astype(np.float32)

    return {"conv1_weight": f(c1, 2, k1, k1, scale=0.3), "conv1_bias": f(c1, scale=0.3, shift=-0.3),
            "conv2_weight": f(c2, c1, k2, k2, scale=0.3), "conv2_bias": f(c2, scale=0.3, shift=-0.2),
            "fc_weight": f(n_cls, n_feat, scale=0.3), "fc_bias": f(n_cls, scale=0.3)}


def _plan(seed: int = 0, theta: float | tuple[float, float] = 0.0, **kw: Any) -> Plan:
    sensor = kw.get("sensor", SENSOR)
    n_cls = kw.get("n_cls", len(CLASSES))
    w = _weights(seed, **kw)
    classes = CLASSES if n_cls == len(CLASSES) else tuple(str(i) for i in range(n_cls))
    return _build(w, sensor, classes, theta)


def _build(w: dict[str, F32], sensor: tuple[int, int], classes: tuple[str, ...],
           theta: float | tuple[float, float] = 0.0) -> Plan:
    return build_plan(w["conv1_weight"], w["conv1_bias"], w["conv2_weight"], w["conv2_bias"], w["fc_weight"],
                      w["fc_bias"], sensor, classes, theta)


def _events(n: int, seed: int, sensor: tuple[int, int] = SENSOR, t0: int = 0, hot: bool = True) -> npt.NDArray[np.void]:
    """n events in time order (repeated times included); with `hot`, half of them on a few pixels, so that
    pixels get many events (as a moving edge gives) and accumulators see long runs of updates."""
    rng = np.random.default_rng(seed)
    w, h = sensor
    x = rng.integers(0, w, n)
    y = rng.integers(0, h, n)
    if hot:
        k = n // 2
        x[:k] = rng.integers(w // 3, w // 3 + 3, k)
        y[:k] = rng.integers(h // 3, h // 3 + 3, k)
        perm = rng.permutation(n)
        x, y = x[perm], y[perm]
    t = t0 + np.sort(rng.integers(0, 50 * n, n))
    return as_events(t, x, y, rng.integers(0, 2, n))


def _count_image(ev: npt.NDArray[np.void], sensor: tuple[int, int] = SENSOR) -> npt.NDArray[np.float64]:
    w, h = sensor
    img = np.zeros((2, h, w))
    np.add.at(img, (ev["p"].astype(np.int64), ev["y"].astype(np.int64), ev["x"].astype(np.int64)), 1.0)
    return img


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        need(False, f"torch is needed for the PyTorch parity tests ({exc}): pip install torch==2.13.0")
    torch.set_num_threads(1)
    return torch


def _torch_forward(w: dict[str, F32], img: npt.NDArray[np.float64], dtype: Any, absolute: bool = False) -> Any:
    """The PyTorch model's forward pass on a count image (dtype float32 or float64). With `absolute`: the
    same network with |W|, |b| and no ReLU (every term as large as it can be): the scale of the sums."""
    torch = _torch()
    import torch.nn.functional as F

    def t(a: Any) -> Any:
        a = np.abs(a) if absolute else a
        return torch.from_numpy(np.asarray(a)).to(dtype)

    act = (lambda v: v) if absolute else F.relu
    x = t(img)[None]
    x = F.avg_pool2d(act(F.conv2d(x, t(w["conv1_weight"]), t(w["conv1_bias"]), padding=w["conv1_weight"].shape[-1] // 2)), 2)
    x = F.avg_pool2d(act(F.conv2d(x, t(w["conv2_weight"]), t(w["conv2_bias"]), padding=w["conv2_weight"].shape[-1] // 2)), 2)
    return F.linear(x.flatten(1), t(w["fc_weight"]), t(w["fc_bias"]))[0].numpy()


@pytest.fixture(scope="module")
def compiled() -> type[Any]:
    try:
        from spikeline._ext import evnet as ext
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.evnet is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.evnet failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return ext.EventNet


# --- backend ---------------------------------------------------------------------------------------


def test_backend_follows_environment() -> None:
    if _no_ext_requested():
        assert BACKEND == "numpy" and EventNet is EventNetRef  # type: ignore[comparison-overlap]
    else:
        assert BACKEND == "ext" and EventNet.__module__ == "spikeline._ext.evnet"


# --- the outside reference: PyTorch on the event-count image ---------------------------------------

# At theta = 0 every change is sent, so the scores are the network on the count image, computed as
# running float32 sums. Tolerance: each accumulator is a float32 sum of n terms; its rounding error is
# at most ~n eps times the sum of the terms' magnitudes (Higham's gamma_n bound), and the errors of a
# layer pass through the next layer's weights. The bound used is 8 sqrt(n) eps M (a random walk of
# n roundings, 8 standard deviations, n = events, as a pixel's accumulator sees at most all of them),
# with M the "absolute network" (|W|, |b|, no ReLU) on the count image: an upper bound on every term
# that reaches a score. That bound is safe but loose (measured errors: 0.2-0.9 % of it), so the test
# also asserts the error is <= 1e-4 of the largest |score| (measured: 3e-6 at 400 events, 1.7e-5 at
# 3000, 2.7e-5 at 20000 events with scores near 1400); a wrong pooling order, weight layout or a
# missed update gives errors of order 1.


@pytest.mark.parametrize(("seed", "n"), [(0, 400), (1, 3000), (2, 1)])
def test_matches_torch_forward_at_theta_zero(seed: int, n: int) -> None:
    torch = _torch()
    w = _weights(seed)
    net = EventNet(_build(w, SENSOR, CLASSES, 0.0))
    ev = _events(n, seed + 10)
    net.push(ev)
    img = _count_image(ev)
    exact = _torch_forward(w, img, torch.float64)
    bound = 8 * math.sqrt(n) * EPS32 * float(np.max(_torch_forward(w, img, torch.float64, absolute=True)))
    err = float(np.max(np.abs(net.scores().astype(np.float64) - exact)))
    assert err <= bound, f"|kernel - torch float64| = {err:.3g} > bound {bound:.3g}"
    assert err <= 1e-4 * max(1.0, float(np.max(np.abs(exact))))
    # and the float32 PyTorch forward (its own rounding, different order) within twice that
    f32 = _torch_forward(w, img, torch.float32)
    np.testing.assert_allclose(net.scores(), f32, rtol=0, atol=2 * bound)


def test_empty_stream_is_the_forward_of_an_empty_image() -> None:
    torch = _torch()
    w = _weights(3)
    net = EventNet(_build(w, SENSOR, CLASSES))
    exact = _torch_forward(w, np.zeros((2, SENSOR[1], SENSOR[0])), torch.float64)
    np.testing.assert_allclose(net.scores(), exact, rtol=0, atol=1e-6)


def test_plan_has_the_convolution_columns() -> None:
    """An event's layer-1 column is conv1 applied to a one-event image (checked with plain numpy)."""
    w = _weights(4)
    plan = _build(w, SENSOR, CLASSES)
    width, height = SENSOR
    c1, _, k, _ = w["conv1_weight"].shape
    for p, y, x in [(0, 0, 0), (1, height - 1, width - 1), (1, 4, 7), (0, 9, 2)]:
        i = (p * height + y) * width + x
        col = np.zeros(c1 * height * width)
        a, b = plan.l1_ptr[i], plan.l1_ptr[i + 1]
        col[plan.l1_idx[a:b]] = plan.l1_w[a:b]
        expected = np.zeros((c1, height, width))
        for yo in range(height):
            for xo in range(width):
                ky, kx = y - yo + k // 2, x - xo + k // 2
                if 0 <= ky < k and 0 <= kx < k:
                    expected[:, yo, xo] = w["conv1_weight"][:, p, ky, kx]
        np.testing.assert_array_equal(col, expected.ravel())


# --- compiled == reference -----------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [0.0, 0.05, 0.3, (0.0, 0.2), (0.4, 0.0)])
def test_compiled_bit_identical_to_reference(compiled: type[Any], theta: float | tuple[float, float]) -> None:
    plan = _plan(5)
    a, b = compiled(plan, theta), EventNetRef(plan, theta)
    for k, ev in enumerate([_events(700, 20), _events(1, 21, t0=10**6), _events(300, 22, t0=2 * 10**6)]):
        a.push(ev)
        b.push(ev)
        assert _same(a.scores(), b.scores()), k
        assert _same_state(a.state, b.state), k
        assert a.counters() == b.counters(), k
    a.reset()
    b.reset()
    assert _same_state(a.state, b.state)


def test_compiled_and_reference_raise_alike(compiled: type[Any]) -> None:
    plan = _plan(6)
    for bad in _bad_pushes():
        msgs = []
        for cls in (compiled, EventNetRef):
            net = cls(plan)
            net.push(_events(5, 1, t0=100))
            with pytest.raises(ValueError) as e:
                net.push(bad)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1]


# --- chunk invariance ---------------------------------------------------------------------------------

CHUNK_EV = _events(240, 30)


@settings(deadline=None, max_examples=25)
@given(cuts=st.sets(st.integers(1, len(CHUNK_EV) - 1), max_size=30),
       theta=st.sampled_from([0.0, 0.02, 0.2, (0.1, 0.0)]))
def test_chunk_invariance(cuts: set[int], theta: float | tuple[float, float]) -> None:
    plan = _chunk_plan()
    whole = EventNet(plan, theta)
    whole.push(CHUNK_EV)
    split = EventNet(plan, theta)
    bounds = [0, *sorted(cuts), len(CHUNK_EV)]
    for a, b in itertools.pairwise(bounds):
        split.push(CHUNK_EV[a:b])
    assert _same(whole.scores(), split.scores())
    assert _same_state(whole.state, split.state)
    assert whole.counters() == split.counters()


_CHUNK_PLAN: list[Plan] = []


def _chunk_plan() -> Plan:
    if not _CHUNK_PLAN:
        _CHUNK_PLAN.append(_plan(7))
    return _CHUNK_PLAN[0]


def test_empty_and_one_event_pushes() -> None:
    ev = _events(50, 31)
    a, b = EventNet(_plan(8)), EventNet(_plan(8))
    a.push(ev)
    for k in range(len(ev)):
        b.push(ev[k:k + 1])
        b.push(ev[:0])
    assert _same(a.scores(), b.scores()) and _same_state(a.state, b.state)


# --- theta > 0 -----------------------------------------------------------------------------------------


def _pool_sum(acc: F32, members: npt.NDArray[np.int32]) -> F32:
    r = np.where(acc > 0, acc, np.float32(0))[members]
    return ((r[:, 0] + r[:, 1]) + r[:, 2]) + r[:, 3]


@pytest.mark.parametrize("theta", [0.0, 0.05, 0.5, (0.3, 0.02)])
def test_sent_values_stay_within_theta(theta: float | tuple[float, float]) -> None:
    """After every push, each delta unit's last sent value is within theta of its true value, and each
    accumulator is the bias plus the weights times the last sent values (up to float32 rounding)."""
    plan = _plan(9)
    net = EventNet(plan, theta)
    th1, th2 = net.theta
    for k in range(4):
        net.push(_events(200, 40 + k, t0=k * 10**6))
        s = net.state
        assert np.all(np.abs(_pool_sum(s["acc1"], plan.pool1_members) - s["xhat1"]) <= th1)
        assert np.all(np.abs(_pool_sum(s["acc2"], plan.pool2_members) - s["xhat2"]) <= th2)
        for ptr, idx, w, xhat, acc, init_x, init_acc in (
                (plan.l2_ptr, plan.l2_idx, plan.l2_w, s["xhat1"], s["acc2"], plan.init_xhat1, plan.init_acc2),
                (plan.l3_ptr, plan.l3_idx, plan.l3_w, s["xhat2"], s["acc3"], plan.init_xhat2, plan.init_acc3)):
            cols = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
            expect = init_acc.astype(np.float64)
            np.add.at(expect, idx, w.astype(np.float64) * (xhat.astype(np.float64) - init_x)[cols])
            scale = 1 + np.abs(init_acc).max() + np.abs(w).max() * np.abs(xhat).sum()
            assert np.max(np.abs(acc - expect)) <= 1e-5 * scale


def test_theta_trades_operations_for_accuracy() -> None:
    plan = _plan(10)
    ev = _events(2000, 50)
    ref = EventNet(plan, 0.0)
    ref.push(ev)
    macs, errs = [], []
    for th in (0.0, 0.05, 0.2, 1.0):
        net = EventNet(plan, th)
        net.push(ev)
        c = net.counters()
        macs.append(c["macs"])
        errs.append(float(np.max(np.abs(net.scores() - ref.scores()))))
        assert c["sent1"] <= c["checked1"] and c["sent2"] <= c["checked2"]
        assert c["events"] == len(ev) and c["macs_dense"] == len(ev) * plan.macs_dense
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0] // 2
    assert errs[0] == 0.0 and errs[-1] > 0.0


def test_huge_theta_sends_nothing() -> None:
    plan = _plan(11)
    net = EventNet(plan, 1e30)
    net.push(_events(300, 51))
    c = net.counters()
    assert c["sent1"] == 0 and c["sent2"] == 0 and c["checked2"] == 0
    assert _same(net.scores(), plan.init_acc3)
    # layer 1 still integrates every event: exactly the column entries
    ev = _events(300, 51)
    width, height = SENSOR
    i = (ev["p"].astype(np.int64) * height + ev["y"]) * width + ev["x"]
    assert c["macs"] == int(np.sum(plan.l1_ptr[i + 1] - plan.l1_ptr[i]))
    assert c["checked1"] == int(np.sum(plan.touch1_ptr[i + 1] - plan.touch1_ptr[i]))


def test_theta_zero_skips_exact_repeats() -> None:
    """A weight column of zeros changes no pooled value: nothing is sent for events on it."""
    w = _weights(12)
    w["conv1_weight"][:, 1] = 0.0  # ON events do nothing
    plan = _build(w, SENSOR, CLASSES, 0.0)
    ev = _events(100, 52)
    ev["p"] = 1
    net = EventNet(plan)
    net.push(ev)
    c = net.counters()
    assert c["checked1"] > 0 and c["sent1"] == 0
    assert _same(net.scores(), plan.init_acc3)


# --- errors, reset, inputs ---------------------------------------------------------------------------


def _bad_pushes() -> list[Any]:
    ev = _events(10, 2, t0=1000)
    out_x = ev.copy()
    out_x["x"][3] = SENSOR[0]
    out_y = ev.copy()
    out_y["y"][7] = SENSOR[1]
    bad_p = ev.copy()
    bad_p["p"][2] = -1
    back = ev.copy()
    back["t"][5] = back["t"][4] - 1
    early = ev.copy()
    early["t"] -= 10**6  # before the events already pushed
    wrong = np.zeros(3, np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")]))
    return [out_x, out_y, bad_p, back, early, wrong, ev.reshape(2, 5), [(1, 2, 3, 1)]]


_MESSAGES = ["outside the 14x10 sensor", "outside the 14x10 sensor", "polarity -1", "before event 4",
             "before the last event pushed", "EVENT_DTYPE", "must be 1-d", "EVENT_DTYPE"]


@pytest.mark.parametrize(("k", "message"), list(enumerate(_MESSAGES)))
def test_bad_pushes_raise_and_change_nothing(k: int, message: str) -> None:
    net = EventNet(_plan(13))
    net.push(_events(5, 1, t0=100))
    before, counters = net.state, net.counters()
    with pytest.raises(ValueError, match=message):
        net.push(_bad_pushes()[k])
    assert _same_state(net.state, before) and net.counters() == counters


def test_reset_restores_the_initial_state() -> None:
    plan = _plan(14)
    fresh = EventNet(plan)
    net = EventNet(plan)
    ev = _events(300, 60, t0=5 * 10**6)
    net.push(ev)
    assert not _same_state(net.state, fresh.state)
    c = net.counters()
    net.reset()
    assert _same_state(net.state, fresh.state)
    assert net.counters() == c  # counters are kept until reset_counters()
    net.push(_events(300, 61))  # earlier times are fine after a reset
    fresh.push(_events(300, 61))
    assert _same(net.scores(), fresh.scores())
    net.reset_counters()
    assert net.counters()["events"] == 0 and net.counters()["macs"] == 0


def test_read_only_and_strided_input() -> None:
    plan = _plan(15)
    ev = _events(400, 62)
    a, b, c = EventNet(plan), EventNet(plan), EventNet(plan)
    a.push(ev[::2].copy())
    ro = ev.copy()
    ro.flags.writeable = False
    b.push(ro[::2])
    buf = np.frombuffer(ev[::2].tobytes(), dtype=EVENT_DTYPE)  # read-only buffer of a network payload
    c.push(buf)
    assert _same(a.scores(), b.scores()) and _same(a.scores(), c.scores())


def test_scores_out_argument() -> None:
    net = EventNet(_plan(16))
    net.push(_events(30, 63))
    out = np.empty(len(CLASSES), np.float32)
    assert net.scores(out) is out and _same(out, net.scores())
    out[0] = 123.0
    assert net.scores()[0] != 123.0  # scores() returns a copy
    for bad in (np.empty(len(CLASSES), np.float64), np.empty(len(CLASSES) + 1, np.float32), [0.0] * 3):
        with pytest.raises(ValueError, match="out must be a float32 array"):
            net.scores(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("theta", [-0.1, math.nan, math.inf, (0.1, 0.2, 0.3)])
def test_bad_theta(theta: Any) -> None:
    with pytest.raises(ValueError, match="theta"):
        EventNet(_plan(17), theta)


def test_properties() -> None:
    net = EventNet(_plan(18, theta=(0.1, 0.25)))
    assert net.sensor == SENSOR and net.classes == CLASSES
    assert net.theta == (float(np.float32(0.1)), 0.25)
    assert EventNet(net.plan, 0.0).theta == (0.0, 0.0)
    assert EventNet(net.plan, -0.0).theta == (0.0, 0.0)


# --- model files -----------------------------------------------------------------------------------------


def _model_file(tmp_path: Path, seed: int = 19, **changes: Any) -> Path:
    w = _weights(seed)
    w.update(changes)
    return save(tmp_path / "m.json", KIND, w, {"sensor": list(SENSOR), "classes": list(CLASSES), "theta": [0.1, 0.2]})


def test_load_evnet_roundtrip(tmp_path: Path) -> None:
    path = _model_file(tmp_path)
    net = load_evnet(path)
    assert net.theta == (float(np.float32(0.1)), float(np.float32(0.2))) and net.sensor == SENSOR
    assert load_evnet(path, 0.0).theta == (0.0, 0.0)
    direct = EventNet(_plan(19, theta=(0.1, 0.2)))
    ev = _events(200, 64)
    net.push(ev)
    direct.push(ev)
    assert _same(net.scores(), direct.scores())


def test_load_evnet_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fc_weight"):
        load_evnet(_model_file(tmp_path, fc_weight=np.zeros((3, 5), np.float32)))
    with pytest.raises(ModelError, match="non-finite"):
        load_evnet(_model_file(tmp_path, fc_bias=np.array([0, np.nan, 0], np.float32)))
    path = _model_file(tmp_path)
    npz = path.with_suffix(".npz")
    raw = bytearray(npz.read_bytes())
    raw[-1] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        load_evnet(path)
    other = save(tmp_path / "o.json", "delta_gru", {"x": np.zeros(1, np.float32)}, {})
    with pytest.raises(ModelError, match="expected 'evnet'"):
        load_evnet(other)
    with pytest.raises(ModelError, match="no model file or registered model id"):
        load_evnet("no-such-model-id")
