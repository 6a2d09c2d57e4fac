# Legendre Memory Unit kernels (Voelker, Kajic & Eliasmith 2019): spikeline._ext.lmu.
#
# LegendreMemory: per input channel an independent linear memory m (order,), m <- M m + B_bar u
# every sample. LMUCell: the LMU cell u -> m -> h with one (or memory_d) such memories.
#
# Why the kernels are shaped this way:
# - Convention. M = A_bar by default: m is a column vector and m[t+1] = A_bar m[t] + B_bar u[t],
#   with A_bar, B_bar the zero-order-hold discretisation that scipy.signal.cont2discrete returns.
#   keras-lmu stores A_bar^T and right-multiplies row vectors (m @ A_bar^T): the same update.
#   transpose=True applies A_bar^T instead (m[t+1] = A_bar^T m[t] + B_bar u[t]): what the public
#   L2MU training code computes, because it puts keras-lmu's already-transposed matrix into a
#   torch Linear layer, which multiplies by the transpose of its weight again. A model trained
#   that way only reproduces with transpose=True.
# - Precision. Matrices, weights, inputs, outputs and the state are float32; every sum is
#   accumulated in double and rounded to float32 once, when it is stored. The memory is a slowly
#   decaying integrator (the eigenvalues of A_bar approach the unit circle as theta grows), so its
#   rounding errors persist for about theta samples; accumulating the order-term dot products in
#   float32 adds up to `order` roundings per element and step. Measured against float64 on white
#   noise (same float32 matrices): float32 accumulation is 3x (order 16, theta 100), 6x
#   (64, 1000) and 13x (256, 784) further off than double accumulation, whose error stays at the
#   one unavoidable rounding of the float32 state (3e-7 to 9e-7). Cost: two SIMD lanes instead of
#   four at the baseline x86-64 flags; the loops are short either way.
# - Loop order. Each matrix-vector product runs column by column (axpy form): for each input
#   element j, acc[i] += W^T[j, i] * v[j] over a contiguous row of the transposed matrix. The
#   outputs i are independent accumulators, so the inner loop vectorises without reassociating
#   any sum; every element is still summed in the fixed order j = 0, 1, ... (after its bias), the
#   order the numpy reference (spikeline.kernels.ref_lmu) uses. With setup.py's -ffp-contract=off
#   (no fused multiply-add) the two are bit-identical.
# - LMUCell keeps, per stream, one float32 row v = [x | h | m]: the state h and m live in it and x
#   is copied in at each sample, so u = b_u + [e_x|e_h|e_m] v and z = b_h + [W_x|W_h|W_m] v are
#   each one loop over one stacked, transposed weight matrix. u uses the old m, z the new m and
#   the old h, in that order (the paper's and keras-lmu's order); h = tanh(z) in double (libm).
# - State has a leading stream dimension; validation happens once per call, then the GIL is
#   released once for the whole chunk (or, in step_streams, for all the streams) around a
#   noexcept nogil loop that never allocates: the double scratch rows are allocated per stream in
#   the constructor. Arrays are checked with the NumPy C API and passed as raw pointers (const for
#   the input, so read-only buffers work), as in sosfilt.pyx.
#
# Threading: calls on distinct streams may run concurrently (each stream has its own state and
# scratch); calls touching the same stream, and reset/state assignment, must be serialised.

cimport cython
cimport numpy as cnp
from libc.math cimport tanh
from libc.stdint cimport uintptr_t

import numpy as np

from spikeline.kernels.lmu_matrices import cell_params, check_stream, float32_state, memory_params

cnp.import_array()


cdef inline void _memory_update(const float* mt, const float* b, float* m, double* acc, double u,
                                Py_ssize_t d) noexcept nogil:
    """m <- M m + b u for one memory m (d,), in place; mt[j * d + i] = M[i, j]; acc is d doubles."""
    cdef Py_ssize_t i, j
    cdef double mj
    cdef const float* col
    for i in range(d):
        acc[i] = <double>b[i] * u
    for j in range(d):
        mj = <double>m[j]
        col = mt + j * d
        for i in range(d):
            acc[i] = acc[i] + <double>col[i] * mj
    for i in range(d):
        m[i] = <float>acc[i]


cdef inline void _affine(const float* wt, const float* bias, const float* v, double* acc,
                         Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """acc (n_out,) = bias + W v, summed in the order bias, v[0], v[1], ...; wt[j * n_out + o] = W[o, j]."""
    cdef Py_ssize_t j, o
    cdef double vj
    cdef const float* row
    for o in range(n_out):
        acc[o] = <double>bias[o]
    for j in range(n_in):
        vj = <double>v[j]
        row = wt + j * n_out
        for o in range(n_out):
            acc[o] = acc[o] + <double>row[o] * vj


cdef void _memory_chunk(const float* x, float* y, Py_ssize_t n_samples, Py_ssize_t n_channels,
                        const float* mt, const float* b, float* state, double* acc,
                        Py_ssize_t d) noexcept nogil:
    """n_samples rows x (n_channels,) -> y (n_channels * d,) rows; state is one stream's (n_channels, d)."""
    cdef Py_ssize_t _sample, c, i
    cdef float* m
    for _sample in range(n_samples):
        for c in range(n_channels):
            m = state + c * d
            _memory_update(mt, b, m, acc, <double>x[c], d)
            for i in range(d):
                y[c * d + i] = m[i]
        x += n_channels
        y += n_channels * d


cdef void _cell_chunk(const float* x, float* y, Py_ssize_t n_samples, float* v, double* work,
                      const float* ut, const float* b_u, const float* ht, const float* b_h,
                      const float* mt, const float* b_bar, Py_ssize_t n_in, Py_ssize_t n_h,
                      Py_ssize_t memory_d, Py_ssize_t d) noexcept nogil:
    """n_samples rows x (n_in,) -> y (n_h,) rows. v = [x | h | m] is one stream's row, work its
    scratch: u (memory_d), z (n_h), acc (d) doubles."""
    cdef Py_ssize_t _sample, i, k, o
    cdef Py_ssize_t n_v = n_in + n_h + memory_d * d
    cdef double* u = work
    cdef double* z = work + memory_d
    cdef double* acc = z + n_h
    cdef float* h = v + n_in
    cdef float* m = h + n_h
    for _sample in range(n_samples):
        for i in range(n_in):
            v[i] = x[i]
        _affine(ut, b_u, v, u, n_v, memory_d)          # u from x, old h, old m
        for k in range(memory_d):
            _memory_update(mt, b_bar, m + k * d, acc, u[k], d)
        _affine(ht, b_h, v, z, n_v, n_h)               # z from x, old h, new m
        for o in range(n_h):
            h[o] = <float>tanh(z[o])
            y[o] = h[o]
        x += n_in
        y += n_h


cdef cnp.ndarray _checked_io(object x, object out, Py_ssize_t n_rows, Py_ssize_t in_width,
                             Py_ssize_t out_width, str shape_desc):
    """Validate x (n, in_width) and out (n, out_width), float32; return out, allocated if None.

    n_rows < 0: any number of rows. Messages are mirrored by spikeline.kernels.ref_lmu._checked_io.
    """
    if not cnp.PyArray_Check(x):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(xa):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}; "
                        "convert it with x.astype(np.float32)")
    if cnp.PyArray_NDIM(xa) != 2:
        raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
    if cnp.PyArray_DIM(xa, 1) != in_width or (n_rows >= 0 and cnp.PyArray_DIM(xa, 0) != n_rows):
        raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(xa):
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not cnp.PyArray_ISALIGNED(xa):
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    cdef cnp.npy_intp dims[2]
    dims[0] = cnp.PyArray_DIM(xa, 0)
    dims[1] = out_width
    if out is None:
        return cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT, 0)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    cdef cnp.ndarray oa = <cnp.ndarray>out
    if cnp.PyArray_TYPE(oa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(oa):
        raise TypeError(f"out must have dtype float32 in native byte order, got {out.dtype}")
    if cnp.PyArray_NDIM(oa) != 2 or cnp.PyArray_DIM(oa, 0) != dims[0] or cnp.PyArray_DIM(oa, 1) != dims[1]:
        raise ValueError(f"out must have shape {(dims[0], dims[1])}, got {out.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_ISALIGNED(oa) and cnp.PyArray_ISWRITEABLE(oa)):
        raise ValueError("out must be C-contiguous, aligned and writeable")
    # Both are contiguous: their byte ranges tell whether they share memory. Each input row is
    # read while earlier output rows are written, so no overlap at all is allowed.
    cdef uintptr_t xs = <uintptr_t>cnp.PyArray_DATA(xa)
    cdef uintptr_t os = <uintptr_t>cnp.PyArray_DATA(oa)
    if xs < os + <uintptr_t>cnp.PyArray_NBYTES(oa) and os < xs + <uintptr_t>cnp.PyArray_NBYTES(xa):
        raise ValueError("out must not overlap x")
    return oa


@cython.final
cdef class LegendreMemory:
    """Per-channel Legendre memories: n_channels independent LMU memories of `order` coefficients.

    Every sample, each channel's memory m (order,) is updated m <- A_bar m + B_bar u with u that
    channel's input (transpose=True: m <- A_bar^T m + B_bar u, the public L2MU training code's
    convention). theta is the window length in samples (dt = 1). x (n, n_channels) float32 gives
    out (n, n_channels * order) float32, channel-major: channel c's memory is in columns
    c * order:(c + 1) * order. Each of n_streams streams keeps its own state.
    """

    cdef cnp.ndarray _a_bar       # (order, order) float32 A_bar (not transposed, whatever `transpose`)
    cdef cnp.ndarray _b_bar       # (order,) float32
    cdef cnp.ndarray _mt          # (order, order) float32, the applied matrix transposed
    cdef cnp.ndarray _state       # (n_streams, n_channels, order) float32
    cdef cnp.ndarray _work        # (n_streams, order) float64 scratch
    cdef const float* _mt_p
    cdef const float* _b_p
    cdef float* _state_p
    cdef double* _work_p
    cdef Py_ssize_t _n_channels, _order, _n_streams
    cdef double _theta
    cdef bint _transpose

    # __cinit__: the C pointers are set exactly once, before any method can run.
    def __cinit__(self, n_channels, order, theta, transpose=False, n_streams=1):
        p = memory_params(n_channels, order, theta, transpose, n_streams)
        self._n_channels = p.n_channels
        self._order = p.order
        self._theta = p.theta
        self._transpose = p.transpose
        self._n_streams = p.n_streams
        self._a_bar = p.a_bar
        self._b_bar = p.b_bar
        self._mt = p.mt
        self._state = np.zeros((p.n_streams, p.n_channels, p.order), dtype=np.float32)
        self._work = np.zeros((p.n_streams, p.order), dtype=np.float64)
        self._mt_p = <const float*>cnp.PyArray_DATA(self._mt)
        self._b_p = <const float*>cnp.PyArray_DATA(self._b_bar)
        self._state_p = <float*>cnp.PyArray_DATA(self._state)
        self._work_p = <double*>cnp.PyArray_DATA(self._work)

    def step(self, x, out=None, Py_ssize_t stream=0):
        """Update stream `stream` with a chunk x (n, n_channels); returns out (n, n_channels * order)."""
        cdef cnp.ndarray oa = _checked_io(x, out, -1, self._n_channels, self._n_channels * self._order,
                                          f"(n_samples, {self._n_channels})")
        if stream < 0 or stream >= self._n_streams:
            raise ValueError(f"stream must be in [0, {self._n_streams}), got {stream}")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t n = cnp.PyArray_DIM(xa, 0)
        cdef Py_ssize_t nch = self._n_channels
        cdef Py_ssize_t d = self._order
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* state = self._state_p + stream * nch * d
        cdef double* acc = self._work_p + stream * d
        with nogil:
            _memory_chunk(xp, yp, n, nch, self._mt_p, self._b_p, state, acc, d)
        return oa

    def step_streams(self, x, out=None):
        """Advance every stream by one sample: x (n_streams, n_channels), row k for stream k."""
        cdef cnp.ndarray oa = _checked_io(
            x, out, self._n_streams, self._n_channels, self._n_channels * self._order,
            f"(n_streams={self._n_streams}, n_channels={self._n_channels})")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t k
        cdef Py_ssize_t nstr = self._n_streams
        cdef Py_ssize_t nch = self._n_channels
        cdef Py_ssize_t d = self._order
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        with nogil:
            for k in range(nstr):
                _memory_chunk(xp + k * nch, yp + k * nch * d, 1, nch, self._mt_p, self._b_p,
                              self._state_p + k * nch * d, self._work_p + k * d, d)
        return oa

    def reset(self, stream=-1):
        """Zero the memories of one stream, or of every stream (stream=-1)."""
        k = check_stream(stream, self._n_streams, allow_all=True)
        if k == -1:
            self._state.fill(0.0)
        else:
            self._state[k] = 0.0

    @property
    def state(self):
        """A copy of the memories, (n_streams, n_channels, order) float32."""
        return self._state.copy()

    @state.setter
    def state(self, value):
        self._state[...] = float32_state(value, "state", (self._n_streams, self._n_channels, self._order))

    @property
    def n_channels(self):
        return self._n_channels

    @property
    def order(self):
        return self._order

    @property
    def theta(self):
        return self._theta

    @property
    def transpose(self):
        return bool(self._transpose)

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def A_bar(self):
        """A copy of A_bar (order, order) as used, rounded to float32 (A_bar itself even if transpose)."""
        return self._a_bar.copy()

    @property
    def B_bar(self):
        """A copy of B_bar (order,) as used, rounded to float32."""
        return self._b_bar.copy()


@cython.final
cdef class LMUCell:
    """The LMU cell of Voelker et al. (2019), with memory_d memories of `order` coefficients.

    Per sample, with x (n_inputs,), the hidden state h (n_hidden,) and the memories m
    (memory_d, order) flattened memory-major to (memory_d * order,):
        u = e_x x + e_h h + e_m m + b_u                 (memory_d,), old h and old m
        m_k <- A_bar m_k + B_bar u_k, k < memory_d      (transpose=True: A_bar^T)
        h = tanh(W_x x + W_h h + W_m m + b_h)           new m, old h
    and h is the output. Weights are float32 in (out, in) orientation, like torch.nn.Linear.weight
    (keras-lmu's kernels are the transposes). e_h, e_m, W_x, W_h and the biases may be None: no
    such connection. keras-lmu's LMUCell with hidden_to_memory, memory_to_memory,
    input_to_hidden, use_bias and a tanh SimpleRNNCell is this cell. theta is in samples.
    """

    cdef cnp.ndarray _a_bar, _b_bar, _mt, _ut, _ht, _b_u, _b_h
    cdef cnp.ndarray _e_x, _e_h, _e_m, _w_x, _w_h, _w_m
    cdef cnp.ndarray _v            # (n_streams, n_inputs + n_hidden + memory_d * order) float32: [x | h | m]
    cdef cnp.ndarray _work         # (n_streams, memory_d + n_hidden + order) float64 scratch
    cdef const float* _mt_p
    cdef const float* _bbar_p
    cdef const float* _ut_p
    cdef const float* _ht_p
    cdef const float* _bu_p
    cdef const float* _bh_p
    cdef float* _v_p
    cdef double* _work_p
    cdef Py_ssize_t _n_in, _n_h, _order, _memory_d, _n_streams, _n_v, _n_work
    cdef double _theta
    cdef bint _transpose

    def __cinit__(self, n_inputs, n_hidden, order, theta, *, e_x, e_h=None, e_m=None, W_x=None,
                  W_h=None, W_m, b_u=None, b_h=None, memory_d=1, transpose=False, n_streams=1):
        p = cell_params(n_inputs, n_hidden, order, theta, e_x, e_h, e_m, W_x, W_h, W_m, b_u, b_h,
                        memory_d, transpose, n_streams)
        self._n_in = p.n_inputs
        self._n_h = p.n_hidden
        self._order = p.order
        self._theta = p.theta
        self._memory_d = p.memory_d
        self._transpose = p.transpose
        self._n_streams = p.n_streams
        self._n_v = p.n_inputs + p.n_hidden + p.memory_d * p.order
        self._n_work = p.memory_d + p.n_hidden + p.order
        self._a_bar, self._b_bar, self._mt = p.a_bar, p.b_bar, p.mt
        self._e_x, self._e_h, self._e_m = p.e_x, p.e_h, p.e_m
        self._w_x, self._w_h, self._w_m = p.W_x, p.W_h, p.W_m
        self._b_u, self._b_h, self._ut, self._ht = p.b_u, p.b_h, p.ut, p.ht
        self._v = np.zeros((p.n_streams, self._n_v), dtype=np.float32)
        self._work = np.zeros((p.n_streams, self._n_work), dtype=np.float64)
        self._mt_p = <const float*>cnp.PyArray_DATA(self._mt)
        self._bbar_p = <const float*>cnp.PyArray_DATA(self._b_bar)
        self._ut_p = <const float*>cnp.PyArray_DATA(self._ut)
        self._ht_p = <const float*>cnp.PyArray_DATA(self._ht)
        self._bu_p = <const float*>cnp.PyArray_DATA(self._b_u)
        self._bh_p = <const float*>cnp.PyArray_DATA(self._b_h)
        self._v_p = <float*>cnp.PyArray_DATA(self._v)
        self._work_p = <double*>cnp.PyArray_DATA(self._work)

    def step(self, x, out=None, Py_ssize_t stream=0):
        """Run stream `stream` over a chunk x (n, n_inputs); returns h for every sample, out (n, n_hidden)."""
        cdef cnp.ndarray oa = _checked_io(x, out, -1, self._n_in, self._n_h, f"(n_samples, {self._n_in})")
        if stream < 0 or stream >= self._n_streams:
            raise ValueError(f"stream must be in [0, {self._n_streams}), got {stream}")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t n = cnp.PyArray_DIM(xa, 0)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* v = self._v_p + stream * self._n_v
        cdef double* work = self._work_p + stream * self._n_work
        with nogil:
            _cell_chunk(xp, yp, n, v, work, self._ut_p, self._bu_p, self._ht_p, self._bh_p, self._mt_p,
                        self._bbar_p, self._n_in, self._n_h, self._memory_d, self._order)
        return oa

    def step_streams(self, x, out=None):
        """Advance every stream by one sample: x (n_streams, n_inputs), row k for stream k."""
        cdef cnp.ndarray oa = _checked_io(x, out, self._n_streams, self._n_in, self._n_h,
                                          f"(n_streams={self._n_streams}, n_inputs={self._n_in})")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t k
        cdef Py_ssize_t nstr = self._n_streams
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        with nogil:
            for k in range(nstr):
                _cell_chunk(xp + k * self._n_in, yp + k * self._n_h, 1, self._v_p + k * self._n_v,
                            self._work_p + k * self._n_work, self._ut_p, self._bu_p, self._ht_p,
                            self._bh_p, self._mt_p, self._bbar_p, self._n_in, self._n_h,
                            self._memory_d, self._order)
        return oa

    def reset(self, stream=-1):
        """Zero h and m of one stream, or of every stream (stream=-1)."""
        k = check_stream(stream, self._n_streams, allow_all=True)
        if k == -1:
            self._v.fill(0.0)
        else:
            self._v[k] = 0.0

    @property
    def state(self):
        """Copies (h, m): h (n_streams, n_hidden) and m (n_streams, memory_d, order), float32."""
        h = self._v[:, self._n_in:self._n_in + self._n_h].copy()
        m = self._v[:, self._n_in + self._n_h:].reshape(self._n_streams, self._memory_d, self._order)
        return h, m.copy()

    @state.setter
    def state(self, value):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"state must be a pair (h, m), got {type(value).__name__}")
        if len(value) != 2:
            raise ValueError(f"state must be a pair (h, m), got {len(value)} items")
        h = float32_state(value[0], "state h", (self._n_streams, self._n_h))
        m = float32_state(value[1], "state m", (self._n_streams, self._memory_d, self._order))
        self._v[:, self._n_in:self._n_in + self._n_h] = h
        self._v[:, self._n_in + self._n_h:] = m.reshape(self._n_streams, self._memory_d * self._order)

    @property
    def n_inputs(self):
        return self._n_in

    @property
    def n_hidden(self):
        return self._n_h

    @property
    def order(self):
        return self._order

    @property
    def theta(self):
        return self._theta

    @property
    def memory_d(self):
        return self._memory_d

    @property
    def transpose(self):
        return bool(self._transpose)

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def A_bar(self):
        """A copy of A_bar (order, order) as used, rounded to float32 (A_bar itself even if transpose)."""
        return self._a_bar.copy()

    @property
    def B_bar(self):
        """A copy of B_bar (order,) as used, rounded to float32."""
        return self._b_bar.copy()

    @property
    def weights(self):
        """Copies of the weights by name (e_x, e_h, e_m, W_x, W_h, W_m, b_u, b_h), float32, as passed."""
        return {"e_x": self._e_x.copy(), "e_h": self._e_h.copy(), "e_m": self._e_m.copy(),
                "W_x": self._w_x.copy(), "W_h": self._w_h.copy(), "W_m": self._w_m.copy(),
                "b_u": self._b_u.copy(), "b_h": self._b_h.copy()}
