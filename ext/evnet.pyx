# Event-driven convolutional classifier (spikeline._ext.evnet.EventNet): conv1 -> ReLU -> 2x2 pool
# -> conv2 -> ReLU -> 2x2 pool -> linear on the event-count image, updated event by event.
#
# Why the kernel is shaped this way (the numpy reference spikeline.kernels.ref_evnet explains the
# network and builds the plan both backends run):
# - The first layer is linear in the events: an event (x, y, p) adds its conv1 column (C1 x K1 x K1
#   weights, fewer at the border) to persistent accumulators, which therefore hold conv1 of the
#   event-count image exactly (up to float32 rounding of the running sums).
# - Pools are sums (their 1/4 is folded into the next layer's weights). Only the pooled units the
#   event can reach (the plan's touch list) are recomputed; each is a delta unit as in DeltaDense:
#   its change d since it was last sent is sent iff |d| > theta (strict: theta = 0 is lossless and
#   skips exact repeats; a NaN change is never sent), then x_hat = value (assigned, never drifts),
#   and d times its weight column (stored as a contiguous CSC column) is added to the next layer's
#   accumulators. Layer-2 pooled units touched by the sent columns are collected once each, in order
#   of first touch (a stamp per unit, no clearing), and handled the same way into the class scores.
# - Bit-identical to the reference: the same plan, the same IEEE float32 operations in the same order
#   (setup.py: -ffp-contract=off, no fused multiply-adds; relu and pool sums written out in order).
# - A push is validated completely before any event is applied (dtype and shape in Python, then a
#   nogil scan for coordinates, polarity and time order), so a bad push changes nothing; the error
#   text comes from the reference's check_events, so both backends say the same.
# - The GIL is released once per push around a noexcept nogil loop that never allocates: the touch
#   list and stamps are allocated in the constructor.
# - No leak: the scores integrate every event since reset(); the caller resets per sample/window.
#
# Threading: one stream per object; calls on one object must be serialised by the caller.

cimport numpy as cnp
from libc.math cimport fabsf
from libc.stdint cimport int8_t, int32_t, int64_t, uint16_t

import numpy as np

from spikeline.chunk import EVENT_DTYPE
from spikeline.kernels.ref_evnet import COUNTERS, T_NONE, Plan, _check_out, _theta, check_events, counter_dict

cnp.import_array()

ctypedef struct Event:
    int64_t t
    uint16_t x
    uint16_t y
    int8_t p

if sizeof(Event) != EVENT_DTYPE.itemsize:
    raise ImportError(f"spikeline._ext.evnet: C event struct is {sizeof(Event)} bytes, EVENT_DTYPE "
                      f"{EVENT_DTYPE.itemsize}")

cdef enum:
    C_EVENTS = 0
    C_MACS = 1
    C_MACS_DENSE = 2
    C_CHECKED1 = 3
    C_SENT1 = 4
    C_CHECKED2 = 5
    C_SENT2 = 6
    N_COUNTERS = 7

assert tuple(COUNTERS) == ("events", "macs", "macs_dense", "checked1", "sent1", "checked2", "sent2")

cdef struct Net:
    int width
    int height
    float theta1
    float theta2
    int64_t macs_dense
    const int32_t* l1_ptr
    const int32_t* l1_idx
    const float* l1_w
    const int32_t* touch1_ptr
    const int32_t* touch1_idx
    const int32_t* pool1
    const int32_t* l2_ptr
    const int32_t* l2_idx
    const float* l2_w
    const int32_t* touch2_ptr
    const int32_t* touch2_idx
    const int32_t* pool2
    const int32_t* l3_ptr
    const int32_t* l3_idx
    const float* l3_w
    float* acc1
    float* xhat1
    float* acc2
    float* xhat2
    float* acc3
    int64_t* mark2
    int32_t* list2
    int64_t* cnt
    int64_t stamp


cdef inline float _relu(float a) noexcept nogil:
    return a if a > 0.0 else <float>0.0


cdef inline float _pool(const float* acc, const int32_t* m) noexcept nogil:
    cdef float s = _relu(acc[m[0]]) + _relu(acc[m[1]])
    s = s + _relu(acc[m[2]])
    return s + _relu(acc[m[3]])


cdef inline void _axpy(float* acc, const int32_t* idx, const float* w, int32_t a, int32_t b,
                       float d) noexcept nogil:
    cdef int32_t e
    for e in range(a, b):
        acc[idx[e]] = acc[idx[e]] + w[e] * d


cdef void _event(Net* s, Py_ssize_t i) noexcept nogil:
    cdef int32_t a = s.l1_ptr[i]
    cdef int32_t b = s.l1_ptr[i + 1]
    cdef int32_t e, e2, q, q2, n2 = 0, m
    cdef float v, d
    cdef int64_t* cnt = s.cnt
    for e in range(a, b):
        s.acc1[s.l1_idx[e]] = s.acc1[s.l1_idx[e]] + s.l1_w[e]
    cnt[C_MACS] += b - a
    s.stamp += 1
    for e in range(s.touch1_ptr[i], s.touch1_ptr[i + 1]):
        q = s.touch1_idx[e]
        v = _pool(s.acc1, s.pool1 + 4 * <Py_ssize_t>q)
        d = v - s.xhat1[q]
        cnt[C_CHECKED1] += 1
        if fabsf(d) > s.theta1:
            cnt[C_SENT1] += 1
            s.xhat1[q] = v
            _axpy(s.acc2, s.l2_idx, s.l2_w, s.l2_ptr[q], s.l2_ptr[q + 1], d)
            cnt[C_MACS] += s.l2_ptr[q + 1] - s.l2_ptr[q]
            for e2 in range(s.touch2_ptr[q], s.touch2_ptr[q + 1]):
                q2 = s.touch2_idx[e2]
                if s.mark2[q2] != s.stamp:
                    s.mark2[q2] = s.stamp
                    s.list2[n2] = q2
                    n2 += 1
    for m in range(n2):
        q2 = s.list2[m]
        v = _pool(s.acc2, s.pool2 + 4 * <Py_ssize_t>q2)
        d = v - s.xhat2[q2]
        cnt[C_CHECKED2] += 1
        if fabsf(d) > s.theta2:
            cnt[C_SENT2] += 1
            s.xhat2[q2] = v
            _axpy(s.acc3, s.l3_idx, s.l3_w, s.l3_ptr[q2], s.l3_ptr[q2 + 1], d)
            cnt[C_MACS] += s.l3_ptr[q2 + 1] - s.l3_ptr[q2]


cdef Py_ssize_t _first_bad(const Event* ev, Py_ssize_t n, int width, int height,
                           int64_t last_t) noexcept nogil:
    """Index of the first event outside the sensor, with a bad polarity or going back in time; -1 if none."""
    cdef Py_ssize_t k
    cdef int64_t prev = last_t
    for k in range(n):
        if ev[k].x >= width or ev[k].y >= height or (ev[k].p != 0 and ev[k].p != 1) or ev[k].t < prev:
            return k
        prev = ev[k].t
    return -1


cdef void _run(Net* s, const Event* ev, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        _event(s, (<Py_ssize_t>ev[k].p * s.height + ev[k].y) * s.width + ev[k].x)
    s.cnt[C_EVENTS] += n
    s.cnt[C_MACS_DENSE] += n * s.macs_dense


def _plan_array(a, dtype, name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"plan array {name} must be C-contiguous {np.dtype(dtype)}")
    return a


cdef class EventNet:
    """Event-driven classifier state for one event stream (see spikeline.kernels.evnet).

    EventNet(plan, theta=None): plan from spikeline.kernels.ref_evnet.build_plan / plan_from_model;
    theta (a number or a pair for the two delta layers) overrides the plan's.
    """

    cdef object _plan
    cdef tuple _theta
    cdef list _keep
    cdef cnp.ndarray _acc1, _xhat1, _acc2, _xhat2, _acc3, _mark2, _list2, _cnt
    cdef Net _s
    cdef int64_t _last_t
    cdef Py_ssize_t _n_classes

    def __cinit__(self, plan, theta=None):
        if not isinstance(plan, Plan):
            raise TypeError(f"plan must be a spikeline.kernels.ref_evnet.Plan, got {type(plan).__name__}")
        th = _theta(plan.theta if theta is None else theta)
        self._plan = plan
        self._theta = th
        i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
        names = {"l1_ptr": i32, "l1_idx": i32, "l1_w": f32, "touch1_ptr": i32, "touch1_idx": i32,
                 "pool1_members": i32, "l2_ptr": i32, "l2_idx": i32, "l2_w": f32, "touch2_ptr": i32,
                 "touch2_idx": i32, "pool2_members": i32, "l3_ptr": i32, "l3_idx": i32, "l3_w": f32}
        arr = {k: _plan_array(getattr(plan, k), dt, k) for k, dt in names.items()}
        self._keep = list(arr.values())
        width, height = plan.sensor
        self._s.width = width
        self._s.height = height
        self._s.theta1 = th[0]
        self._s.theta2 = th[1]
        self._s.macs_dense = plan.macs_dense
        self._s.l1_ptr = <const int32_t*>cnp.PyArray_DATA(arr["l1_ptr"])
        self._s.l1_idx = <const int32_t*>cnp.PyArray_DATA(arr["l1_idx"])
        self._s.l1_w = <const float*>cnp.PyArray_DATA(arr["l1_w"])
        self._s.touch1_ptr = <const int32_t*>cnp.PyArray_DATA(arr["touch1_ptr"])
        self._s.touch1_idx = <const int32_t*>cnp.PyArray_DATA(arr["touch1_idx"])
        self._s.pool1 = <const int32_t*>cnp.PyArray_DATA(arr["pool1_members"])
        self._s.l2_ptr = <const int32_t*>cnp.PyArray_DATA(arr["l2_ptr"])
        self._s.l2_idx = <const int32_t*>cnp.PyArray_DATA(arr["l2_idx"])
        self._s.l2_w = <const float*>cnp.PyArray_DATA(arr["l2_w"])
        self._s.touch2_ptr = <const int32_t*>cnp.PyArray_DATA(arr["touch2_ptr"])
        self._s.touch2_idx = <const int32_t*>cnp.PyArray_DATA(arr["touch2_idx"])
        self._s.pool2 = <const int32_t*>cnp.PyArray_DATA(arr["pool2_members"])
        self._s.l3_ptr = <const int32_t*>cnp.PyArray_DATA(arr["l3_ptr"])
        self._s.l3_idx = <const int32_t*>cnp.PyArray_DATA(arr["l3_idx"])
        self._s.l3_w = <const float*>cnp.PyArray_DATA(arr["l3_w"])
        self._acc1 = np.array(plan.init_acc1, dtype=np.float32)
        self._xhat1 = np.array(plan.init_xhat1, dtype=np.float32)
        self._acc2 = np.array(plan.init_acc2, dtype=np.float32)
        self._xhat2 = np.array(plan.init_xhat2, dtype=np.float32)
        self._acc3 = np.array(plan.init_acc3, dtype=np.float32)
        n_p2 = arr["pool2_members"].shape[0]
        if (self._acc1.shape[0] * 1 != arr["pool1_members"].shape[0] * 4
                or self._xhat1.shape[0] != arr["pool1_members"].shape[0]
                or self._xhat2.shape[0] != n_p2 or arr["l1_ptr"].shape[0] != 2 * width * height + 1
                or arr["l2_ptr"].shape[0] != self._xhat1.shape[0] + 1 or arr["l3_ptr"].shape[0] != n_p2 + 1):
            raise ValueError("inconsistent plan: array sizes do not match each other")
        self._n_classes = self._acc3.shape[0]
        self._mark2 = np.full(n_p2, -1, dtype=np.int64)
        self._list2 = np.zeros(n_p2, dtype=np.int32)
        self._cnt = np.zeros(N_COUNTERS, dtype=np.int64)
        self._s.acc1 = <float*>cnp.PyArray_DATA(self._acc1)
        self._s.xhat1 = <float*>cnp.PyArray_DATA(self._xhat1)
        self._s.acc2 = <float*>cnp.PyArray_DATA(self._acc2)
        self._s.xhat2 = <float*>cnp.PyArray_DATA(self._xhat2)
        self._s.acc3 = <float*>cnp.PyArray_DATA(self._acc3)
        self._s.mark2 = <int64_t*>cnp.PyArray_DATA(self._mark2)
        self._s.list2 = <int32_t*>cnp.PyArray_DATA(self._list2)
        self._s.cnt = <int64_t*>cnp.PyArray_DATA(self._cnt)
        self._s.stamp = 0
        self._last_t = T_NONE

    @property
    def sensor(self):
        """(width, height) in pixels."""
        return self._plan.sensor

    @property
    def classes(self):
        return self._plan.classes

    @property
    def theta(self):
        """Delta thresholds of the two delta layers (pooled conv1 -> conv2, pooled conv2 -> scores)."""
        return self._theta

    @property
    def plan(self):
        return self._plan

    def push(self, events):
        """Apply events (EVENT_DTYPE, time order). ValueError, and nothing applied, for a bad push."""
        if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
            check_events(events, self._plan.sensor, self._last_t)  # raises the reference's message
        cdef cnp.ndarray ev = np.ascontiguousarray(events)
        cdef Py_ssize_t n = ev.shape[0]
        if n == 0:
            return
        cdef const Event* p = <const Event*>cnp.PyArray_DATA(ev)
        cdef Py_ssize_t bad
        with nogil:
            bad = _first_bad(p, n, self._s.width, self._s.height, self._last_t)
        if bad >= 0:
            check_events(ev, self._plan.sensor, self._last_t)
            raise AssertionError(f"event {bad} failed the compiled check but not the reference's")
        with nogil:
            _run(&self._s, p, n)
        self._last_t = p[n - 1].t

    def scores(self, out=None):
        """Current class scores (float32, n_classes) for everything pushed since the last reset."""
        if out is None:
            return self._acc3.copy()
        _check_out(out, self._n_classes)
        out[...] = self._acc3
        return out

    def reset(self):
        """Back to the empty count image (a new stream may start at any time); counters are kept."""
        pl = self._plan
        self._acc1[...] = pl.init_acc1
        self._xhat1[...] = pl.init_xhat1
        self._acc2[...] = pl.init_acc2
        self._xhat2[...] = pl.init_xhat2
        self._acc3[...] = pl.init_acc3
        self._last_t = T_NONE

    def counters(self):
        """events, macs (multiply-adds done), macs_dense (a dense forward per event), checked/sent per delta
        layer, ops_fraction = macs / macs_dense, delta_sparsity = 1 - sent / checked, macs_per_event."""
        return counter_dict(self._cnt)

    def reset_counters(self):
        self._cnt[...] = 0

    @property
    def state(self):
        """Copies of the accumulators, the last sent values and the last event time."""
        return {"acc1": self._acc1.copy(), "xhat1": self._xhat1.copy(), "acc2": self._acc2.copy(),
                "xhat2": self._xhat2.copy(), "acc3": self._acc3.copy(), "last_t": self._last_t}
