"""Pure-numpy reference of the event-driven convolutional classifier in ext/evnet.pyx (spikeline._ext.evnet).

The network (trained by tools/train_nmnist.py on event-count images, shipped as `nmnist-evnet`):

    count image (2, H, W)  [p, y, x]: events per pixel and polarity since the last reset
      -> conv1 (C1, K1 x K1, zero padding K1 // 2) -> ReLU -> 2 x 2 average pool
      -> conv2 (C2, K2 x K2, zero padding K2 // 2) -> ReLU -> 2 x 2 average pool (floor)
      -> linear -> class scores

run event by event. The first layer is linear in the events, so an event (x, y, p) adds its
conv1 weight column (C1 x K1 x K1 values) to persistent accumulators acc1 = b1 + conv1(counts): the
convolution of the event-count image, exactly. The 2 x 2 pools become sums (their 1/4 is folded into
the next layer's weights), and the pooled ReLU outputs feed two delta layers (as DeltaDense in
spikeline.kernels.delta): a pooled unit whose value moved by more than theta since it was last sent
sends the change d, and d times its weight column is added to the next layer's accumulators
(acc2 = b2 + W2 x_hat1, scores = acc3 = b3 + W3 x_hat2). Only the pooled units an event can reach are
looked at. At theta = 0 every change is sent and the scores are the PyTorch forward pass on the
count image up to float32 rounding (tests/test_evnet.py states the tolerance).

Weights are precomputed at load time into sparse columns (CSC: `ptr`, `idx`, `w` per layer), together
with, for every input, the sorted list of pooled units it can touch. `build_plan` does this once in
numpy; the compiled kernel and this reference both run the same plan, and perform the same IEEE
float32 operations in the same order, so their scores, states and counters are bit-identical
(setup.py compiles with -ffp-contract=off):

- an event adds w to acc1[j] for its column's entries (a count increment of exactly 1);
- a pooled unit's value is ((r0 + r1) + r2) + r3 with r = acc > 0 ? acc : 0 over its members
  (top-left, top-right, bottom-left, bottom-right);
- d = v - x_hat; sent iff |d| > theta (strict, as DeltaDense: theta = 0 skips exact repeats, and a
  NaN change is never sent); then x_hat = v (assigned, so x_hat never drifts);
- sent units are handled in the order of their touch list (layer 1: increasing index; layer 2: the
  order in which layer-2 pooled units were first touched during the event) and every
  acc[j] = acc[j] + w * d is done in that order (here `np.add.at`, which is unbuffered and sequential).

Events are (t, x, y, p) of spikeline.chunk.EVENT_DTYPE; p is 0 (OFF) or 1 (ON), the input channel.
Times must not decrease within a push nor from one push to the next (until reset()). A push is
checked completely before any event is applied: a bad push changes nothing. The loop over events is
plain Python: correct and slow. It is the fallback when the extension is not built, and the oracle
the compiled kernel is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from spikeline.chunk import EVENT_DTYPE
from spikeline.modelfile import Model, ModelError

__all__ = ["COUNTERS", "KIND", "EventNetRef", "Plan", "build_plan", "check_events", "plan_from_model"]

KIND: Final = "evnet"
F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

# Integer counters, in this order (the compiled kernel keeps the same int64 row).
COUNTERS: Final = ("events", "macs", "macs_dense", "checked1", "sent1", "checked2", "sent2")
_EVENTS, _MACS, _MACS_DENSE, _CHECKED1, _SENT1, _CHECKED2, _SENT2 = range(len(COUNTERS))
_F = np.float32
_ZERO: Final = _F(0.0)
T_NONE: Final = -(2**63)  # "no event yet": any int64 time may follow


@dataclass(frozen=True)
class Plan:
    """The network as sparse columns, ready for event-by-event updates (see the module docstring).

    Layer 1 columns are indexed by the event input i = (p * H + y) * W + x; layer 2 columns by the
    pooled layer-1 unit q1 = (c * H1 + py) * W1 + px; layer 3 columns by q2 = (o * H2 + py) * W2 + px.
    pool*_members[q] are the 4 accumulator indices pooled into q; touch1[i] / touch2[q1] list the
    pooled units an input can change (CSC-style ptr/idx); init_* is the state after reset().
    """

    sensor: tuple[int, int]
    classes: tuple[str, ...]
    theta: tuple[float, float]
    l1_ptr: I32
    l1_idx: I32
    l1_w: F32
    touch1_ptr: I32
    touch1_idx: I32
    pool1_members: I32
    l2_ptr: I32
    l2_idx: I32
    l2_w: F32
    touch2_ptr: I32
    touch2_idx: I32
    pool2_members: I32
    l3_ptr: I32
    l3_idx: I32
    l3_w: F32
    init_acc1: F32
    init_xhat1: F32
    init_acc2: F32
    init_xhat2: F32
    init_acc3: F32
    macs_dense: int  # multiply-adds of one dense forward pass on a count image

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _csc(cols: I64, rows: I64, w: npt.NDArray[Any], n_cols: int) -> tuple[I32, I32, F32]:
    """Columns of a sparse matrix given as (column, row, weight) triples; rows ascending within a column."""
    order = np.lexsort((rows, cols))
    ptr = np.zeros(n_cols + 1, np.int64)
    np.cumsum(np.bincount(cols, minlength=n_cols), out=ptr[1:])
    return (ptr.astype(np.int32), rows[order].astype(np.int32), np.asarray(w, np.float32)[order])


def _touch(col_ptr: I32, col_rows: I32, row_to_pooled: I64, n_cols: int) -> tuple[I32, I32]:
    """For every column, the sorted distinct pooled units its rows belong to (-1 = dropped by the pool)."""
    cols = np.repeat(np.arange(n_cols, dtype=np.int64), np.diff(col_ptr))
    pooled = row_to_pooled[col_rows]
    keep = pooled >= 0
    pairs = np.unique(np.stack([cols[keep], pooled[keep]], axis=1), axis=0)
    ptr = np.zeros(n_cols + 1, np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n_cols), out=ptr[1:])
    return ptr.astype(np.int32), pairs[:, 1].astype(np.int32)


def _pool(channels: int, h: int, w: int) -> tuple[I32, I64, int, int]:
    """2 x 2 pooling (floor) of a (channels, h, w) map: members (n_pooled, 4) and unit -> pooled index."""
    hp, wp = h // 2, w // 2
    c, py, px = np.meshgrid(np.arange(channels), np.arange(hp), np.arange(wp), indexing="ij")
    members = np.stack([(c * h + 2 * py + a) * w + 2 * px + b for a in (0, 1) for b in (0, 1)], axis=-1)
    to_pooled = np.full(channels * h * w, -1, np.int64)
    for k in range(4):
        to_pooled[members[..., k].ravel()] = np.arange(channels * hp * wp)
    return members.reshape(-1, 4).astype(np.int32), to_pooled, hp, wp


def _conv_columns(weight: F32, h: int, w: int, scale: float) -> tuple[I64, I64, F32]:
    """(input unit, output unit, weight * scale) of a stride-1 'same' convolution (cross-correlation)
    on a (C_in, h, w) map with zero padding k // 2: out[o, y', x'] += W[o, c, y - y' + pad, x - x' + pad] in[c, y, x]."""
    c_out, c_in, k, _ = weight.shape
    pad = k // 2
    o, c, y, x, ky, kx = np.meshgrid(np.arange(c_out), np.arange(c_in), np.arange(h), np.arange(w),
                                     np.arange(k), np.arange(k), indexing="ij", sparse=True)
    yo, xo = y - ky + pad, x - kx + pad
    valid = (yo >= 0) & (yo < h) & (xo >= 0) & (xo < w)
    shape = np.broadcast_shapes(o.shape, c.shape, y.shape, x.shape, ky.shape, kx.shape)
    valid = np.broadcast_to(valid, shape)
    inp = np.broadcast_to((c * h + y) * w + x, shape)[valid]
    out = np.broadcast_to((o * h + yo) * w + xo, shape)[valid]
    wv = np.broadcast_to(weight[o, c, ky, kx].astype(np.float64) * scale, shape)[valid]
    return inp.astype(np.int64), out.astype(np.int64), wv.astype(np.float32)


def _pool_sum(acc: F32, members: I32) -> F32:
    """Sum-pooled ReLU, in the kernel's order: ((r0 + r1) + r2) + r3."""
    r = np.where(acc > _ZERO, acc, _ZERO)[members]
    return ((r[:, 0] + r[:, 1]) + r[:, 2]) + r[:, 3]


def _theta(value: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    pair = (value, value) if isinstance(value, int | float) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"theta must be a number or a pair (layer 2, layer 3), got {value!r}")
    out = []
    for v in pair:
        f = float(v)
        if not (math.isfinite(f) and f >= 0.0):
            raise ValueError(f"theta must be finite and >= 0, got {value!r}")
        out.append(float(_F(f + 0.0)))
    return (out[0], out[1])


def build_plan(conv1_weight: F32, conv1_bias: F32, conv2_weight: F32, conv2_bias: F32, fc_weight: F32,
               fc_bias: F32, sensor: tuple[int, int], classes: tuple[str, ...],
               theta: float | tuple[float, float] = 0.0) -> Plan:
    """The sparse event-driven plan of a conv1 -> pool -> conv2 -> pool -> linear network (float32 weights;
    conv1_weight (C1, 2, K1, K1) applies to the count image [p, y, x], already scaled)."""
    width, height = (int(s) for s in sensor)
    c1, cin, k1, k1b = conv1_weight.shape
    c2, c1b, k2, k2b = conv2_weight.shape
    if cin != 2 or k1 != k1b or k2 != k2b or c1b != c1 or k1 % 2 == 0 or k2 % 2 == 0:
        raise ValueError(f"conv weights must be (C1, 2, K1, K1) and (C2, C1, K2, K2) with odd K, "
                         f"got {conv1_weight.shape} and {conv2_weight.shape}")
    # layer 1: event input -> conv1 accumulators
    inp, out, w = _conv_columns(conv1_weight, height, width, 1.0)
    l1_ptr, l1_idx, l1_w = _csc(inp, out, w, 2 * height * width)
    pool1, to_p1, h1, w1 = _pool(c1, height, width)
    touch1_ptr, touch1_idx = _touch(l1_ptr, l1_idx, to_p1, 2 * height * width)
    # layer 2: pooled conv1 (sums) -> conv2 accumulators; the pool's 1/4 folded into the weights
    inp, out, w = _conv_columns(conv2_weight, h1, w1, 0.25)
    l2_ptr, l2_idx, l2_w = _csc(inp, out, w, c1 * h1 * w1)
    pool2, to_p2, h2, w2 = _pool(c2, h1, w1)
    touch2_ptr, touch2_idx = _touch(l2_ptr, l2_idx, to_p2, c1 * h1 * w1)
    # layer 3: pooled conv2 (sums) -> class scores
    n_cls, n_feat = fc_weight.shape
    if n_feat != c2 * h2 * w2 or n_cls != len(classes):
        raise ValueError(f"fc_weight must be ({len(classes)}, {c2 * h2 * w2}), got {fc_weight.shape}")
    cols, rows = np.meshgrid(np.arange(n_feat), np.arange(n_cls), indexing="ij")
    l3_ptr, l3_idx, l3_w = _csc(cols.ravel(), rows.ravel(), fc_weight.T.astype(np.float64).ravel() * 0.25, n_feat)
    # the state of an empty count image
    acc1 = np.repeat(conv1_bias.astype(np.float32), height * width)
    xhat1 = _pool_sum(acc1, pool1)
    acc2 = _dense_init(conv2_bias, h1 * w1, l2_ptr, l2_idx, l2_w, xhat1)
    xhat2 = _pool_sum(acc2, pool2)
    acc3 = _dense_init(fc_bias, 1, l3_ptr, l3_idx, l3_w, xhat2)
    macs = c1 * 2 * k1 * k1 * height * width + c2 * c1 * k2 * k2 * h1 * w1 + n_cls * n_feat
    c = np.ascontiguousarray
    return Plan((width, height), tuple(classes), _theta(theta), c(l1_ptr), c(l1_idx), c(l1_w), c(touch1_ptr),
                c(touch1_idx), c(pool1), c(l2_ptr), c(l2_idx), c(l2_w), c(touch2_ptr), c(touch2_idx), c(pool2),
                c(l3_ptr), c(l3_idx), c(l3_w), acc1, xhat1.astype(np.float32), acc2, xhat2.astype(np.float32),
                acc3, int(macs))


def _dense_init(bias: F32, repeat: int, ptr: I32, idx: I32, w: F32, x: F32) -> F32:
    """b + W x in float64, rounded once to float32 (the initial accumulators; shared by both backends)."""
    acc = np.repeat(bias.astype(np.float64), repeat)
    cols = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    np.add.at(acc, idx, w.astype(np.float64) * x.astype(np.float64)[cols])
    return acc.astype(np.float32)


ARRAYS: Final = ("conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias", "fc_weight", "fc_bias")


def plan_from_model(model: Model, theta: float | tuple[float, float] | None = None) -> Plan:
    """Check an `evnet` model file's arrays and metadata and build its plan (theta: the model's unless given)."""
    meta = model.meta
    where = f"model {model.path or KIND}"
    try:
        sensor = (int(meta["sensor"][0]), int(meta["sensor"][1]))
        classes = tuple(str(c) for c in meta["classes"])
        model_theta = meta.get("theta", [0.0, 0.0])
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ModelError(f"{where}: meta needs 'sensor' [width, height] and 'classes' ({e!r})") from e
    w1 = model.array("conv1_weight", (None, 2, None, None))
    c1 = w1.shape[0]
    b1 = model.array("conv1_bias", (c1,))
    w2 = model.array("conv2_weight", (None, c1, None, None))
    c2 = w2.shape[0]
    b2 = model.array("conv2_bias", (c2,))
    n_feat = c2 * (sensor[1] // 4) * (sensor[0] // 4)
    fw = model.array("fc_weight", (len(classes), n_feat))
    fb = model.array("fc_bias", (len(classes),))
    for name in ARRAYS:
        if not np.all(np.isfinite(model.arrays[name])):
            raise ModelError(f"{where}: array {name!r} has non-finite values")
    try:
        return build_plan(w1, b1, w2, b2, fw, fb, sensor, classes, model_theta if theta is None else theta)
    except ValueError as e:
        raise ModelError(f"{where}: {e}") from e


def check_events(events: Any, sensor: tuple[int, int], last_t: int) -> npt.NDArray[np.void]:
    """The events as a 1-d EVENT_DTYPE array (C-contiguous; copied only if not), or ValueError saying what is wrong."""
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE:
        got = events.dtype if isinstance(events, np.ndarray) else type(events).__name__
        raise ValueError(f"events must be a spikeline.chunk.EVENT_DTYPE array, got {got}")
    if events.ndim != 1:
        raise ValueError(f"events must be 1-d, got shape {events.shape}")
    ev = np.ascontiguousarray(events)
    if ev.size == 0:
        return ev
    width, height = sensor
    bad = np.flatnonzero((ev["x"] >= width) | (ev["y"] >= height))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"event {k} at (x={ev['x'][k]}, y={ev['y'][k]}) is outside the {width}x{height} sensor")
    bad = np.flatnonzero((ev["p"] != 0) & (ev["p"] != 1))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"event {k} has polarity {ev['p'][k]}, expected 0 (OFF) or 1 (ON)")
    t = ev["t"]
    if t[0] < last_t:
        raise ValueError(f"event 0 has t={t[0]} us, before the last event pushed (t={last_t} us); "
                         "times must not decrease (reset() starts a new stream)")
    bad = np.flatnonzero(t[1:] < t[:-1])
    if bad.size:
        k = int(bad[0]) + 1
        raise ValueError(f"event {k} has t={t[k]} us, before event {k - 1} (t={t[k - 1]} us); times must not decrease")
    return ev


def counter_dict(row: I64) -> dict[str, float]:
    """The counters as a dict, with the derived ratios (shared by both backends)."""
    d: dict[str, float] = {name: int(row[i]) for i, name in enumerate(COUNTERS)}
    checked, sent = d["checked1"] + d["checked2"], d["sent1"] + d["sent2"]
    d["ops_fraction"] = d["macs"] / d["macs_dense"] if d["macs_dense"] else 0.0
    d["delta_sparsity"] = 1.0 - sent / checked if checked else 0.0
    d["macs_per_event"] = d["macs"] / d["events"] if d["events"] else 0.0
    return d


class EventNetRef:
    """Event-driven classifier state for one event stream (numpy reference of spikeline._ext.evnet.EventNet).

    Not thread-safe: one stream, calls serialised by the caller.
    """

    def __init__(self, plan: Plan, theta: float | tuple[float, float] | None = None) -> None:
        self._plan = plan
        th = _theta(plan.theta if theta is None else theta)
        self._theta = th
        self._t1, self._t2 = _F(th[0]), _F(th[1])
        self._counters = np.zeros(len(COUNTERS), np.int64)
        self._acc1 = plan.init_acc1.copy()
        self._xhat1 = plan.init_xhat1.copy()
        self._acc2 = plan.init_acc2.copy()
        self._xhat2 = plan.init_xhat2.copy()
        self._acc3 = plan.init_acc3.copy()
        self._last_t = T_NONE

    # --- the public interface (spikeline.kernels.evnet) ---------------------------------------------

    @property
    def sensor(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self._plan.sensor

    @property
    def classes(self) -> tuple[str, ...]:
        return self._plan.classes

    @property
    def theta(self) -> tuple[float, float]:
        """Delta thresholds of the two delta layers (pooled conv1 -> conv2, pooled conv2 -> scores)."""
        return self._theta

    @property
    def plan(self) -> Plan:
        return self._plan

    def push(self, events: npt.NDArray[np.void]) -> None:
        """Apply events (EVENT_DTYPE, time order). ValueError, and nothing applied, for a bad push."""
        ev = check_events(events, self._plan.sensor, self._last_t)
        if ev.size == 0:
            return
        pl = self._plan
        width, height = pl.sensor
        inputs = (ev["p"].astype(np.int64) * height + ev["y"]) * width + ev["x"]
        c = self._counters
        for i in inputs.tolist():
            self._event(pl, i, c)
        c[_EVENTS] += ev.size
        c[_MACS_DENSE] += ev.size * pl.macs_dense
        self._last_t = int(ev["t"][-1])

    def _event(self, pl: Plan, i: int, c: I64) -> None:
        a, b = pl.l1_ptr[i], pl.l1_ptr[i + 1]
        self._acc1[pl.l1_idx[a:b]] += pl.l1_w[a:b]
        c[_MACS] += b - a
        # layer 2: pooled conv1 units this event can change, in increasing order
        q1 = pl.touch1_idx[pl.touch1_ptr[i]:pl.touch1_ptr[i + 1]]
        v1 = _pool_sum(self._acc1, pl.pool1_members[q1])
        d = v1 - self._xhat1[q1]
        c[_CHECKED1] += q1.size
        sent = np.flatnonzero(np.abs(d) > self._t1)
        if sent.size == 0:
            return
        c[_SENT1] += sent.size
        q1s, ds = q1[sent], d[sent]
        self._xhat1[q1s] = v1[sent]
        idx, w, dd = _gather(pl.l2_ptr, pl.l2_idx, pl.l2_w, q1s, ds)
        np.add.at(self._acc2, idx, w * dd)
        c[_MACS] += idx.size
        # layer 3: pooled conv2 units touched, in order of first touch
        cand = np.concatenate([pl.touch2_idx[pl.touch2_ptr[q]:pl.touch2_ptr[q + 1]] for q in q1s.tolist()])
        _, first = np.unique(cand, return_index=True)
        q2 = cand[np.sort(first)]
        v2 = _pool_sum(self._acc2, pl.pool2_members[q2])
        d2 = v2 - self._xhat2[q2]
        c[_CHECKED2] += q2.size
        sent2 = np.flatnonzero(np.abs(d2) > self._t2)
        if sent2.size == 0:
            return
        c[_SENT2] += sent2.size
        q2s = q2[sent2]
        self._xhat2[q2s] = v2[sent2]
        idx, w, dd = _gather(pl.l3_ptr, pl.l3_idx, pl.l3_w, q2s, d2[sent2])
        np.add.at(self._acc3, idx, w * dd)
        c[_MACS] += idx.size

    def scores(self, out: F32 | None = None) -> F32:
        """Current class scores (float32, n_classes) for everything pushed since the last reset."""
        if out is None:
            return self._acc3.copy()
        _check_out(out, self._plan.n_classes)
        out[...] = self._acc3
        return out

    def reset(self) -> None:
        """Back to the empty count image (a new stream may start at any time); counters are kept."""
        pl = self._plan
        self._acc1[...] = pl.init_acc1
        self._xhat1[...] = pl.init_xhat1
        self._acc2[...] = pl.init_acc2
        self._xhat2[...] = pl.init_xhat2
        self._acc3[...] = pl.init_acc3
        self._last_t = T_NONE

    def counters(self) -> dict[str, float]:
        """events, macs (multiply-adds done), macs_dense (a dense forward per event), checked/sent per delta
        layer, ops_fraction = macs / macs_dense, delta_sparsity = 1 - sent / checked, macs_per_event."""
        return counter_dict(self._counters)

    def reset_counters(self) -> None:
        self._counters[...] = 0

    @property
    def state(self) -> dict[str, Any]:
        """Copies of the accumulators, the last sent values and the last event time."""
        return {"acc1": self._acc1.copy(), "xhat1": self._xhat1.copy(), "acc2": self._acc2.copy(),
                "xhat2": self._xhat2.copy(), "acc3": self._acc3.copy(), "last_t": self._last_t}


def _gather(ptr: I32, idx: I32, w: F32, cols: I32, d: F32) -> tuple[I32, F32, F32]:
    """The entries of columns `cols` in order, each with its column's delta."""
    starts, ends = ptr[cols].astype(np.int64), ptr[cols + 1].astype(np.int64)
    lens = ends - starts
    pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    return idx[pos], w[pos], np.repeat(d, lens)


def _check_out(out: Any, n: int) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (n,):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a float32 array of shape ({n},), got {got}")
    if not out.flags.writeable:
        raise ValueError("out must be writable")
