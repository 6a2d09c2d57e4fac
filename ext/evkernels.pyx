# Event-camera kernels: spikeline._ext.evkernels. RefractoryFilter and BackgroundActivityFilter
# (tonic 1.7's RefractoryPeriod / Denoise), TimeSurface, EventFrames and VoxelGrid (tonic's ToFrame /
# ToVoxelGrid per fixed window), and HDSNN, the heterogeneous-delay spiking layer of Grimaldi &
# Perrinet (Biol. Cybern. 2023). The numpy references in spikeline.kernels.ref_events define the
# semantics (read their docstrings); this file reproduces them event by event.
#
# Why the kernels are shaped this way:
# - Events are read as a C struct (int64 t, uint16 x, uint16 y, int8 p: 16 bytes, the layout of
#   spikeline.chunk.EVENT_DTYPE) through the array's data pointer: no per-call memoryview
#   acquisition, read-only input works, nothing is copied unless the input is strided.
# - Every call first validates the whole chunk in a nogil pre-pass (time order against the previous
#   event or flush, x < width, y < height, p in {0, 1}); the first bad event raises the reference's
#   ValueError before any state changes, so a rejected chunk leaves the kernel as it was.
# - State is absolute sensor time (per-pixel last times, window/step indices from t0), never "time
#   since the chunk started": that is what makes any split of the stream give identical results.
# - Filters write kept events into a caller-supplied or fresh output array (one allocation per call,
#   none per event). The binning kernels know before the loop how many windows a push completes
#   (from its first and last event), so their output is allocated once, zeroed (empty windows are
#   zeros for free). The HD-SNN's output size is not known in advance: its loop is re-entrant,
#   stops when the output rows are full, and the def grows them (doubling) and resumes.
# - HDSNN: the nonzero weights are kept as a sparse list per input polarity (pooled-grid offset,
#   delay, channel offset, weight). An event at step n adds each weight to slot (n + d) mod D of a
#   ring buffer of D x C x Ho x Wo float32 potentials. When time passes the end of a step, that
#   step's slot holds its complete potential (every contribution comes from a step <= it), so it is
#   thresholded, counted per channel and cleared. Slots nobody wrote to are skipped (dirty flags),
#   and after D steps without input every slot is clean, so a long silence costs O(D), not O(steps).
#   float32 sums are exact for integer-valued weights while |V| < 2**24; otherwise their order
#   (event order x weight-list order) differs from the reference's, so V can differ by rounding.
# - VoxelGrid buffers the current window's events (tonic normalises times by the window's first and
#   last event, known only when the window completes) and replays tonic's float64 operations in its
#   order (all left contributions, then all right ones), rounding once to float32.
#
# Threading: one instance must not be used from two threads at once; distinct instances may run
# concurrently (the GIL is released in every loop).

cimport numpy as cnp
from libc.math cimport exp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, INT64_MIN
from libc.string cimport memcpy, memset

import numpy as np

from spikeline.chunk import EVENT_DTYPE, empty_events
from spikeline.kernels.ref_events import (
    MAX_OUTPUT_BYTES,
    _events,
    _int,
    _out_events,
    _polarities,
    _raise_bad_event,
    _sensor,
    _t0,
    _tau,
    _threshold,
    _weights,
)

cnp.import_array()

ctypedef struct event_t:
    int64_t t
    uint16_t x
    uint16_t y
    int8_t p

if EVENT_DTYPE.itemsize != sizeof(event_t) or EVENT_DTYPE.fields["p"][1] != 12:
    raise ImportError("spikeline.chunk.EVENT_DTYPE does not match the C event layout of evkernels")

cdef int64_t T_MIN = -4611686018427387904  # -(2**62), the references' lower bound for times


# --- shared helpers --------------------------------------------------------------------------------

cdef Py_ssize_t _first_bad(const event_t* ev, Py_ssize_t n, int64_t t_prev, int w, int h,
                           int* kind) noexcept nogil:
    """Index of the first event that goes back in time or lies outside the sensor, or -1."""
    cdef Py_ssize_t i
    cdef int64_t prev = t_prev
    for i in range(n):
        if ev[i].t < prev:
            kind[0] = 1
            return i
        if ev[i].x >= w:
            kind[0] = 2
            return i
        if ev[i].y >= h:
            kind[0] = 3
            return i
        if ev[i].p != 0 and ev[i].p != 1:
            kind[0] = 4
            return i
        prev = ev[i].t
    return -1


cdef const event_t* _validated(cnp.ndarray ev, int64_t t_prev, int w, int h) except? NULL:
    cdef const event_t* p = <const event_t*>cnp.PyArray_DATA(ev)
    cdef Py_ssize_t n = ev.shape[0]
    cdef int kind = 0
    cdef Py_ssize_t bad
    with nogil:
        bad = _first_bad(p, n, t_prev, w, h, &kind)
    if bad >= 0:
        _raise_bad_event(ev, bad, kind, t_prev, w, h)
    return p


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


# --- denoising filters -----------------------------------------------------------------------------

cdef class RefractoryFilter:
    """Per-pixel refractory period, exactly tonic 1.7's RefractoryPeriod (see RefractoryFilterRef).

    filter(events, out=None) -> the kept events: out[:kept] if out is given, else a view of a new array.
    """

    cdef int _w, _h
    cdef int64_t _r, _t_prev, _seen, _kept
    cdef cnp.ndarray _last
    cdef int64_t* _last_p

    def __cinit__(self, width, height, refractory_us):
        self._w, self._h = _sensor(width, height)
        self._r = _int("refractory_us", refractory_us, 0)
        self._last = np.empty((self._h, self._w), np.int64)
        self._last_p = <int64_t*>cnp.PyArray_DATA(self._last)
        self.reset()

    def reset(self):
        self._last.fill(-self._r)
        self._t_prev = INT64_MIN
        self._seen = 0
        self._kept = 0

    def filter(self, events, out=None):
        ev = _events(events)
        cdef const event_t* e = _validated(ev, self._t_prev, self._w, self._h)
        cdef Py_ssize_t n = ev.shape[0]
        res = _out_events(out, n)
        cdef event_t* o = <event_t*>cnp.PyArray_DATA(res)
        cdef Py_ssize_t i, k = 0
        cdef int64_t* last = self._last_p
        cdef int64_t r = self._r
        cdef Py_ssize_t pix
        cdef int w = self._w
        with nogil:
            for i in range(n):
                pix = <Py_ssize_t>e[i].y * w + e[i].x
                if e[i].t - last[pix] > r:
                    o[k] = e[i]
                    k += 1
                last[pix] = e[i].t
        if n:
            self._t_prev = e[n - 1].t
        self._seen += n
        self._kept += k
        return res[:k]

    @property
    def seen(self):
        return self._seen

    @property
    def kept(self):
        return self._kept

    @property
    def width(self):
        return self._w

    @property
    def height(self):
        return self._h

    @property
    def refractory_us(self):
        return self._r

    @property
    def last_times(self):
        return self._last.copy()


cdef class BackgroundActivityFilter:
    """Background-activity filter, exactly tonic 1.7's Denoise (see BackgroundActivityFilterRef).

    filter(events, out=None) -> the kept events: out[:kept] if out is given, else a view of a new array.
    """

    cdef int _w, _h
    cdef int64_t _f, _t_prev, _seen, _kept
    cdef cnp.ndarray _last
    cdef int64_t* _last_p

    def __cinit__(self, width, height, filter_us):
        self._w, self._h = _sensor(width, height)
        self._f = _int("filter_us", filter_us, 0)
        self._last = np.empty((self._h, self._w), np.int64)
        self._last_p = <int64_t*>cnp.PyArray_DATA(self._last)
        self.reset()

    def reset(self):
        self._last.fill(0)
        self._t_prev = INT64_MIN
        self._seen = 0
        self._kept = 0

    def filter(self, events, out=None):
        ev = _events(events)
        cdef const event_t* e = _validated(ev, self._t_prev, self._w, self._h)
        cdef Py_ssize_t n = ev.shape[0]
        res = _out_events(out, n)
        cdef event_t* o = <event_t*>cnp.PyArray_DATA(res)
        cdef Py_ssize_t i, k = 0
        cdef int64_t* last = self._last_p
        cdef int64_t f = self._f
        cdef int64_t t
        cdef Py_ssize_t pix
        cdef int w = self._w, h = self._h
        cdef int x, y
        with nogil:
            for i in range(n):
                x = e[i].x
                y = e[i].y
                t = e[i].t
                pix = <Py_ssize_t>y * w + x
                last[pix] = t
                if ((x > 0 and t - last[pix - 1] < f) or (x < w - 1 and t - last[pix + 1] < f)
                        or (y > 0 and t - last[pix - w] < f) or (y < h - 1 and t - last[pix + w] < f)):
                    o[k] = e[i]
                    k += 1
        if n:
            self._t_prev = e[n - 1].t
        self._seen += n
        self._kept += k
        return res[:k]

    @property
    def seen(self):
        return self._seen

    @property
    def kept(self):
        return self._kept

    @property
    def width(self):
        return self._w

    @property
    def height(self):
        return self._h

    @property
    def filter_us(self):
        return self._f

    @property
    def last_times(self):
        return self._last.copy()


# --- time surface ----------------------------------------------------------------------------------

cdef class TimeSurface:
    """Per-pixel, per-polarity last event time; sample(t) = exp(-(t - t_last) / tau) (see TimeSurfaceRef)."""

    cdef int _w, _h, _p
    cdef double _tau
    cdef int64_t _t_prev, _seen
    cdef cnp.ndarray _last
    cdef int64_t* _last_p

    def __cinit__(self, width, height, tau_us, polarities=2):
        self._w, self._h = _sensor(width, height)
        self._tau = _tau(tau_us)
        self._p = _polarities(polarities)
        self._last = np.empty((self._p, self._h, self._w), np.int64)
        self._last_p = <int64_t*>cnp.PyArray_DATA(self._last)
        self.reset()

    def reset(self):
        self._last.fill(INT64_MIN)
        self._t_prev = INT64_MIN
        self._seen = 0

    def update(self, events):
        ev = _events(events)
        cdef const event_t* e = _validated(ev, self._t_prev, self._w, self._h)
        cdef Py_ssize_t n = ev.shape[0]
        cdef Py_ssize_t i
        cdef int64_t* last = self._last_p
        cdef Py_ssize_t hw = <Py_ssize_t>self._h * self._w
        cdef int w = self._w
        cdef int pol = self._p == 2
        with nogil:
            for i in range(n):
                last[(e[i].p & pol) * hw + <Py_ssize_t>e[i].y * w + e[i].x] = e[i].t
        if n:
            self._t_prev = e[n - 1].t
        self._seen += n

    def sample(self, t_us, out=None):
        cdef int64_t t = _int("t_us", t_us, T_MIN)
        if self._t_prev != INT64_MIN and t < self._t_prev:
            raise ValueError(f"sample time {t} us is before the last event recorded ({self._t_prev} us)")
        shape = (self._p, self._h, self._w)
        if out is None:
            out = np.empty(shape, np.float32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous float32 array of shape {shape}")
        cdef float* o = <float*>cnp.PyArray_DATA(out)
        cdef const int64_t* last = self._last_p
        cdef Py_ssize_t i, m = <Py_ssize_t>self._p * self._h * self._w
        cdef double tau = self._tau
        cdef int64_t v
        with nogil:
            for i in range(m):
                v = last[i]
                if v == INT64_MIN:
                    o[i] = 0.0
                else:
                    o[i] = <float>exp(-(<double>(t - v)) / tau)
        return out

    @property
    def seen(self):
        return self._seen

    @property
    def width(self):
        return self._w

    @property
    def height(self):
        return self._h

    @property
    def polarities(self):
        return self._p

    @property
    def tau_us(self):
        return self._tau

    @property
    def last_times(self):
        return self._last.copy()


# --- fixed time windows ----------------------------------------------------------------------------

cdef class _Windows:
    """Window bookkeeping of EventFrames and VoxelGrid (see spikeline.kernels.ref_events._WindowsRef)."""

    cdef int _w, _h
    cdef int64_t _window, _t0, _k, _t_prev, _seen, _windows
    cdef bint _has_t0, _has_k, _t0_given
    cdef int64_t _t0_arg
    cdef Py_ssize_t _frame_size
    cdef tuple _frame_shape

    cdef _reset_windows(self):
        self._has_t0 = self._t0_given
        self._t0 = self._t0_arg
        self._has_k = False  # the first window returned is the first event's
        self._k = 0
        self._t_prev = INT64_MIN
        self._seen = 0
        self._windows = 0

    cdef _check_count(self, int64_t n):
        size = int(n) * int(self._frame_size) * 4  # Python ints: no overflow
        if size > MAX_OUTPUT_BYTES:
            raise ValueError(f"this call would complete {n} windows ({size} bytes of output, more than "
                             f"MAX_OUTPUT_BYTES = {MAX_OUTPUT_BYTES}); push smaller chunks or flush_until() "
                             "in steps")

    cdef int64_t _prepare(self, cnp.ndarray ev) except -1:
        """Validate; set t0 and the current window; the number of windows this push completes."""
        cdef const event_t* e = _validated(ev, self._t_prev, self._w, self._h)
        cdef Py_ssize_t n = ev.shape[0]
        if n == 0:
            return 0
        cdef int64_t t0 = self._t0 if self._has_t0 else e[0].t
        if e[0].t < t0:
            raise ValueError(f"events[0]: time {e[0].t} us is before the windows' start t0_us = {t0}")
        cdef int64_t k_cur = self._k if self._has_k else (e[0].t - t0) // self._window
        cdef int64_t cnt = (e[n - 1].t - t0) // self._window - k_cur
        self._check_count(cnt)
        self._t0, self._has_t0 = t0, True
        self._k, self._has_k = k_cur, True
        return cnt

    cdef int64_t _flush_count(self, int64_t t):
        if not self._has_k:
            return 0
        cdef int64_t cnt = _floordiv(t - self._t0, self._window) - self._k
        return cnt if cnt > 0 else 0

    cdef _t_ends(self, int64_t n):
        return self._t0 + (self._k + 1 + np.arange(n, dtype=np.int64)) * self._window

    @property
    def seen(self):
        return self._seen

    @property
    def windows(self):
        return self._windows

    @property
    def width(self):
        return self._w

    @property
    def height(self):
        return self._h

    @property
    def window_us(self):
        return self._window

    @property
    def t0_us(self):
        return self._t0 if self._has_t0 else None


cdef class EventFrames(_Windows):
    """Event counts per polarity per fixed time window, float32 (see EventFramesRef)."""

    cdef int _p
    cdef cnp.ndarray _acc
    cdef float* _acc_p

    def __cinit__(self, width, height, window_us, polarities=2, t0_us=0):
        self._w, self._h = _sensor(width, height)
        self._window = _int("window_us", window_us, 1)
        self._p = _polarities(polarities)
        t0 = _t0(t0_us)
        self._t0_given = t0 is not None
        self._t0_arg = 0 if t0 is None else t0
        self._frame_shape = (self._p, self._h, self._w)
        self._frame_size = <Py_ssize_t>self._p * self._h * self._w
        self._acc = np.zeros(self._frame_shape, np.float32)
        self._acc_p = <float*>cnp.PyArray_DATA(self._acc)
        self.reset()

    def reset(self):
        self._acc.fill(0)
        self._reset_windows()

    def push(self, events):
        ev = _events(events)
        cdef int64_t cnt = self._prepare(ev)
        frames = np.zeros((cnt, *self._frame_shape), np.float32)
        cdef Py_ssize_t n = ev.shape[0]
        if n == 0:
            return frames, np.zeros(0, np.int64)
        t_end = self._t_ends(cnt)
        cdef const event_t* e = <const event_t*>cnp.PyArray_DATA(ev)
        cdef float* fr = <float*>cnp.PyArray_DATA(frames)
        cdef float* acc = self._acc_p
        cdef float* target
        cdef Py_ssize_t fs = self._frame_size, i
        cdef Py_ssize_t hw = <Py_ssize_t>self._h * self._w
        cdef int w = self._w
        cdef int pol = self._p == 2
        cdef int64_t t0 = self._t0, win = self._window, k0 = self._k
        cdef int64_t rel = 0
        cdef int64_t t_end_cur = t0 + (k0 + 1) * win
        with nogil:
            if cnt > 0:
                memcpy(fr, acc, fs * sizeof(float))
                memset(acc, 0, fs * sizeof(float))
                target = fr
            else:
                target = acc
            for i in range(n):
                if e[i].t >= t_end_cur:
                    rel = (e[i].t - t0) // win - k0
                    t_end_cur = t0 + (k0 + rel + 1) * win
                    target = fr + rel * fs if rel < cnt else acc
                target[(e[i].p & pol) * hw + <Py_ssize_t>e[i].y * w + e[i].x] += 1.0
        self._k += cnt
        self._t_prev = e[n - 1].t
        self._seen += n
        self._windows += cnt
        return frames, t_end

    def flush_until(self, t_us):
        cdef int64_t t = _int("t_us", t_us, T_MIN)
        cdef int64_t cnt = self._flush_count(t)
        self._check_count(cnt)
        frames = np.zeros((cnt, *self._frame_shape), np.float32)
        if self._t_prev < t:
            self._t_prev = t
        if cnt == 0:
            return frames, np.zeros(0, np.int64)
        t_end = self._t_ends(cnt)
        frames[0] = self._acc
        self._acc.fill(0)
        self._k += cnt
        self._windows += cnt
        return frames, t_end

    @property
    def polarities(self):
        return self._p


cdef void _voxel(const event_t* ev, Py_ssize_t n, int bins, int w, int h, double* grid,
                 float* out) noexcept nogil:
    """tonic's to_voxel_grid_numpy of n buffered events into out (float32, zeroed); grid is float64
    scratch of bins*h*w zeros, left zeroed again."""
    if n == 0:
        return
    cdef int64_t t_first = ev[0].t
    cdef int64_t span = ev[n - 1].t - t_first
    cdef Py_ssize_t hw = <Py_ssize_t>w * h
    cdef Py_ssize_t i, idx
    cdef double ts, dts, pol
    cdef int64_t ti
    cdef int side
    for side in range(2):
        for i in range(n):
            if span == 0:
                ts = 0.0
            else:
                ts = (bins * (<double>ev[i].t - <double>t_first)) / <double>span
            ti = <int64_t>ts
            dts = ts - <double>ti
            pol = -1.0 if ev[i].p == 0 else 1.0
            if side == 0:
                if ti < bins:
                    grid[ev[i].x + <Py_ssize_t>ev[i].y * w + ti * hw] += pol * (1.0 - dts)
            elif ti + 1 < bins:
                grid[ev[i].x + <Py_ssize_t>ev[i].y * w + (ti + 1) * hw] += pol * dts
    # round the touched voxels once, then clear the scratch (two passes: a voxel may be touched twice)
    for side in range(2):
        for i in range(n):
            if span == 0:
                ti = 0
            else:
                ti = <int64_t>((bins * (<double>ev[i].t - <double>t_first)) / <double>span)
            ti += side
            if ti < bins:
                idx = ev[i].x + <Py_ssize_t>ev[i].y * w + ti * hw
                out[idx] = <float>grid[idx]
    for side in range(2):
        for i in range(n):
            if span == 0:
                ti = 0
            else:
                ti = <int64_t>((bins * (<double>ev[i].t - <double>t_first)) / <double>span)
            ti += side
            if ti < bins:
                grid[ev[i].x + <Py_ssize_t>ev[i].y * w + ti * hw] = 0.0


cdef class VoxelGrid(_Windows):
    """Per fixed time window, tonic's ToVoxelGrid of the window's events, float32 (see VoxelGridRef)."""

    cdef int _bins
    cdef cnp.ndarray _buf, _grid
    cdef Py_ssize_t _nbuf

    def __cinit__(self, width, height, window_us, n_bins, t0_us=0):
        self._w, self._h = _sensor(width, height)
        self._window = _int("window_us", window_us, 1)
        self._bins = _int("n_bins", n_bins, 1)
        t0 = _t0(t0_us)
        self._t0_given = t0 is not None
        self._t0_arg = 0 if t0 is None else t0
        self._frame_shape = (self._bins, self._h, self._w)
        self._frame_size = <Py_ssize_t>self._bins * self._h * self._w
        self._grid = np.zeros(self._frame_size, np.float64)
        self._buf = empty_events(1024)
        self.reset()

    def reset(self):
        self._nbuf = 0
        self._reset_windows()

    def push(self, events):
        ev = _events(events)
        cdef int64_t cnt = self._prepare(ev)
        grids = np.zeros((cnt, *self._frame_shape), np.float32)
        cdef Py_ssize_t n = ev.shape[0]
        if n == 0:
            return grids, np.zeros(0, np.int64)
        t_end = self._t_ends(cnt)
        if self._nbuf + n > self._buf.shape[0]:
            grown = empty_events(max(2 * self._buf.shape[0], self._nbuf + n))
            grown[:self._nbuf] = self._buf[:self._nbuf]
            self._buf = grown
        cdef const event_t* e = <const event_t*>cnp.PyArray_DATA(ev)
        cdef event_t* buf = <event_t*>cnp.PyArray_DATA(self._buf)
        cdef double* grid = <double*>cnp.PyArray_DATA(self._grid)
        cdef float* out = <float*>cnp.PyArray_DATA(grids)
        cdef Py_ssize_t fs = self._frame_size, i
        cdef Py_ssize_t nbuf = self._nbuf
        cdef int bins = self._bins, w = self._w, h = self._h
        cdef int64_t t0 = self._t0, win = self._window, k0 = self._k
        cdef int64_t rel = 0, new_rel
        cdef int64_t t_end_cur = t0 + (k0 + 1) * win
        with nogil:
            for i in range(n):
                if e[i].t >= t_end_cur:
                    new_rel = (e[i].t - t0) // win - k0
                    _voxel(buf, nbuf, bins, w, h, grid, out + rel * fs)
                    nbuf = 0
                    rel = new_rel
                    t_end_cur = t0 + (k0 + rel + 1) * win
                buf[nbuf] = e[i]
                nbuf += 1
        self._nbuf = nbuf
        self._k += cnt
        self._t_prev = e[n - 1].t
        self._seen += n
        self._windows += cnt
        return grids, t_end

    def flush_until(self, t_us):
        cdef int64_t t = _int("t_us", t_us, T_MIN)
        cdef int64_t cnt = self._flush_count(t)
        self._check_count(cnt)
        grids = np.zeros((cnt, *self._frame_shape), np.float32)
        if self._t_prev < t:
            self._t_prev = t
        if cnt == 0:
            return grids, np.zeros(0, np.int64)
        t_end = self._t_ends(cnt)
        cdef const event_t* buf = <const event_t*>cnp.PyArray_DATA(self._buf)
        cdef double* grid = <double*>cnp.PyArray_DATA(self._grid)
        cdef float* out = <float*>cnp.PyArray_DATA(grids)
        with nogil:
            _voxel(buf, self._nbuf, self._bins, self._w, self._h, grid, out)
        self._nbuf = 0
        self._k += cnt
        self._windows += cnt
        return grids, t_end

    @property
    def n_bins(self):
        return self._bins


# --- heterogeneous-delay spiking layer ---------------------------------------------------------------

cdef class HDSNN:
    """Heterogeneous-delay spiking layer on a ring buffer of potentials (see HDSNNRef for the maths)."""

    cdef int _w, _h, _s, _c, _p, _k, _d, _ho, _wo
    cdef int64_t _dt, _t0, _t0_arg
    cdef bint _has_t0, _t0_given, _has_n, _binary
    cdef float _th
    cdef int64_t _n, _t_end, _clean_from, _t_prev
    cdef int64_t _events, _synops, _steps, _spikes
    cdef Py_ssize_t _chw, _rows, _cap
    cdef object _wt
    # sparse weights: entries [start[p], start[p+1]) belong to input polarity p
    cdef cnp.ndarray _e_oy, _e_ox, _e_d, _e_coff, _e_w, _start
    cdef cnp.ndarray _ring, _dirty, _slotoff, _slotidx, _spike_map, _out_t, _out_c, _cnt, _cell_step
    cdef int64_t* _cell_step_p
    cdef int32_t* _oy_p
    cdef int32_t* _ox_p
    cdef int32_t* _d_p
    cdef int64_t* _coff_p
    cdef float* _w_p
    cdef int64_t* _start_p
    cdef float* _ring_p
    cdef uint8_t* _dirty_p
    cdef int64_t* _slotoff_p
    cdef int64_t* _slotidx_p
    cdef int64_t* _map_p
    cdef int32_t* _cnt_p

    def __cinit__(self, width, height, weights, dt_us, threshold, stride=1, t0_us=0, binary=False):
        self._w, self._h = _sensor(width, height)
        wt = _weights(weights)
        self._wt = wt
        self._dt = _int("dt_us", dt_us, 1)
        self._th = _threshold(threshold)
        self._s = _int("stride", stride, 1)
        self._binary = bool(binary)
        t0 = _t0(t0_us)
        self._t0_given = t0 is not None
        self._t0_arg = 0 if t0 is None else t0
        self._c, self._p, self._k, _, self._d = wt.shape
        self._ho = (self._h + self._s - 1) // self._s
        self._wo = (self._w + self._s - 1) // self._s
        self._chw = <Py_ssize_t>self._c * self._ho * self._wo
        c_i, p_i, dy_i, dx_i, d_i = np.nonzero(wt)
        order = np.lexsort((dx_i, dy_i, c_i, d_i, p_i))  # by polarity, then delay, channel, dy, dx
        c_i, p_i, dy_i, dx_i, d_i = c_i[order], p_i[order], dy_i[order], dx_i[order], d_i[order]
        self._e_oy = (dy_i - self._k // 2).astype(np.int32)
        self._e_ox = (dx_i - self._k // 2).astype(np.int32)
        self._e_d = d_i.astype(np.int32)
        self._e_coff = (c_i.astype(np.int64) * self._ho * self._wo)
        self._e_w = wt[c_i, p_i, dy_i, dx_i, d_i].astype(np.float32)
        self._start = np.searchsorted(p_i, np.arange(self._p + 1)).astype(np.int64)
        self._oy_p = <int32_t*>cnp.PyArray_DATA(self._e_oy)
        self._ox_p = <int32_t*>cnp.PyArray_DATA(self._e_ox)
        self._d_p = <int32_t*>cnp.PyArray_DATA(self._e_d)
        self._coff_p = <int64_t*>cnp.PyArray_DATA(self._e_coff)
        self._w_p = <float*>cnp.PyArray_DATA(self._e_w)
        self._start_p = <int64_t*>cnp.PyArray_DATA(self._start)
        self._ring = np.zeros(self._d * self._chw, np.float32)
        self._ring_p = <float*>cnp.PyArray_DATA(self._ring)
        self._dirty = np.zeros(self._d, np.uint8)
        self._dirty_p = <uint8_t*>cnp.PyArray_DATA(self._dirty)
        self._slotoff = np.zeros(self._d, np.int64)
        self._slotoff_p = <int64_t*>cnp.PyArray_DATA(self._slotoff)
        self._slotidx = np.zeros(self._d, np.int64)
        self._slotidx_p = <int64_t*>cnp.PyArray_DATA(self._slotidx)
        self._spike_map = np.zeros((self._c, self._ho, self._wo), np.int64)
        self._map_p = <int64_t*>cnp.PyArray_DATA(self._spike_map)
        self._cell_step = np.zeros(self._p * self._ho * self._wo, np.int64)
        self._cell_step_p = <int64_t*>cnp.PyArray_DATA(self._cell_step)
        self._cnt = np.zeros(self._c, np.int32)
        self._cnt_p = <int32_t*>cnp.PyArray_DATA(self._cnt)
        self._cap = 64
        self._out_t = np.zeros(self._cap, np.int64)
        self._out_c = np.zeros((self._cap, self._c), np.int32)
        self.reset()

    def reset(self):
        self._ring.fill(0)
        self._dirty.fill(0)
        self._spike_map.fill(0)
        self._cell_step.fill(INT64_MIN)
        self._has_t0 = self._t0_given
        self._t0 = self._t0_arg
        self._has_n = False
        self._n = 0
        self._t_end = 0
        self._clean_from = 0
        self._t_prev = INT64_MIN
        self._events = self._synops = self._steps = self._spikes = 0
        self._rows = 0

    cdef void _set_slots(self) noexcept nogil:
        cdef int d
        cdef int64_t base = self._n % self._d
        for d in range(self._d):
            self._slotidx_p[d] = (base + d) % self._d
            self._slotoff_p[d] = self._slotidx_p[d] * self._chw

    cdef bint _advance(self, int64_t target) noexcept nogil:
        """Complete every step before target. Returns True if it stopped because the output rows are full."""
        cdef Py_ssize_t slot, c, j, hw = <Py_ssize_t>self._ho * self._wo
        cdef float* v
        cdef int64_t* mp
        cdef int32_t cnt, total
        cdef float th = self._th
        while self._n < target:
            if self._n >= self._clean_from:  # no input in the last D steps: every slot is clean
                self._steps += target - self._n
                self._n = target
                break
            slot = self._n % self._d
            if self._dirty_p[slot]:
                if self._rows == self._cap:
                    return True
                v = self._ring_p + slot * self._chw
                total = 0
                for c in range(self._c):
                    cnt = 0
                    mp = self._map_p + c * hw
                    for j in range(hw):
                        if v[c * hw + j] >= th:
                            cnt += 1
                            mp[j] += 1
                    self._cnt_p[c] = cnt
                    total += cnt
                memset(v, 0, self._chw * sizeof(float))
                self._dirty_p[slot] = 0
                if total > 0:
                    self._spikes += total
                    self._out_t_p()[self._rows] = self._t0 + (self._n + 1) * self._dt
                    memcpy(self._out_c_p() + self._rows * self._c, self._cnt_p, self._c * sizeof(int32_t))
                    self._rows += 1
            self._n += 1
            self._steps += 1
        self._t_end = self._t0 + (self._n + 1) * self._dt
        self._set_slots()
        return False

    cdef inline int64_t* _out_t_p(self) noexcept nogil:
        return <int64_t*>cnp.PyArray_DATA(self._out_t)

    cdef inline int32_t* _out_c_p(self) noexcept nogil:
        return <int32_t*>cnp.PyArray_DATA(self._out_c)

    cdef Py_ssize_t _run(self, const event_t* e, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
        """Process events [start, n); returns the index it stopped at (n when done)."""
        cdef Py_ssize_t i, k, k1
        cdef int a, b, p, ii, jj
        cdef int64_t syn = 0
        cdef int pol = self._p == 2
        cdef int s = self._s, ho = self._ho, wo = self._wo
        cdef const int32_t* oy = self._oy_p
        cdef const int32_t* ox = self._ox_p
        cdef const int32_t* dd = self._d_p
        cdef const int64_t* coff = self._coff_p
        cdef const float* wv = self._w_p
        cdef const int64_t* starts = self._start_p
        cdef float* ring = self._ring_p
        cdef uint8_t* dirty = self._dirty_p
        cdef const int64_t* slotoff = self._slotoff_p
        cdef const int64_t* slotidx = self._slotidx_p
        cdef int64_t t_end = self._t_end
        cdef bint binary = self._binary
        cdef int64_t* cell_step = self._cell_step_p
        cdef Py_ssize_t cell
        for i in range(start, n):
            if not self._has_n:
                self._n = (e[i].t - self._t0) // self._dt
                self._has_n = True
                self._t_end = self._t0 + (self._n + 1) * self._dt
                self._set_slots()
                t_end = self._t_end
            elif e[i].t >= t_end:
                if self._advance((e[i].t - self._t0) // self._dt):
                    self._synops += syn
                    return i
                t_end = self._t_end
            a = e[i].y // s
            b = e[i].x // s
            p = e[i].p & pol
            if binary:  # OR-pooling: only a cell's first event in a step acts
                cell = (<Py_ssize_t>p * ho + a) * wo + b
                if cell_step[cell] == self._n:
                    self._events += 1
                    continue
                cell_step[cell] = self._n
            k1 = starts[p + 1]
            for k in range(starts[p], k1):
                ii = a - oy[k]
                jj = b - ox[k]
                if <unsigned int>ii < <unsigned int>ho and <unsigned int>jj < <unsigned int>wo:
                    ring[slotoff[dd[k]] + coff[k] + <Py_ssize_t>ii * wo + jj] += wv[k]
                    dirty[slotidx[dd[k]]] = 1
                    syn += 1
            self._clean_from = self._n + self._d
            self._events += 1
        self._synops += syn
        return n

    cdef _grow(self):
        self._cap *= 2
        t = np.zeros(self._cap, np.int64)
        c = np.zeros((self._cap, self._c), np.int32)
        t[:self._rows] = self._out_t[:self._rows]
        c[:self._rows] = self._out_c[:self._rows]
        self._out_t, self._out_c = t, c

    cdef _take(self):
        r = self._rows
        self._rows = 0
        return self._out_t[:r].copy(), self._out_c[:r].copy()

    def push(self, events):
        ev = _events(events)
        cdef const event_t* e = _validated(ev, self._t_prev, self._w, self._h)
        cdef Py_ssize_t n = ev.shape[0], pos = 0
        if n == 0:
            return self._take()
        cdef int64_t t0 = self._t0 if self._has_t0 else e[0].t
        if e[0].t < t0:
            raise ValueError(f"events[0]: time {e[0].t} us is before the steps' start t0_us = {t0}")
        self._t0, self._has_t0 = t0, True
        while True:
            with nogil:
                pos = self._run(e, pos, n)
            if pos == n:
                break
            self._grow()
        self._t_prev = e[n - 1].t
        return self._take()

    def flush_until(self, t_us):
        cdef int64_t t = _int("t_us", t_us, T_MIN)
        cdef int64_t target
        cdef bint full = False
        if self._has_t0 and self._has_n:
            target = _floordiv(t - self._t0, self._dt)
            while True:
                with nogil:
                    full = self._advance(target)
                if not full:
                    break
                self._grow()
        if self._t_prev < t:
            self._t_prev = t
        return self._take()

    @property
    def counters(self):
        return {"events": self._events, "synops": self._synops, "steps": self._steps, "spikes": self._spikes}

    @property
    def spike_map(self):
        return self._spike_map.copy()

    @property
    def output_shape(self):
        return (self._c, self._ho, self._wo)

    @property
    def weights(self):
        return self._wt.copy()

    @property
    def dt_us(self):
        return self._dt

    @property
    def threshold(self):
        return float(self._th)

    @property
    def stride(self):
        return self._s

    @property
    def binary(self):
        return bool(self._binary)

    @property
    def t0_us(self):
        return self._t0 if self._has_t0 else None

    @property
    def width(self):
        return self._w

    @property
    def height(self):
        return self._h
