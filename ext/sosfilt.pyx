# Streaming per-channel cascaded-biquad (SOS) IIR filter: spikeline._ext.sosfilt.
#
# Why the kernel is shaped this way:
# - Direct form II transposed, computed in double precision, with float32 (or float64) I/O.
#   Narrow low-frequency bands (e.g. 8-30 Hz at 250 Hz, or a 0.5 Hz high-pass) put poles very
#   close to z = 1; in float32 the recursion loses most of its precision there (and large DC
#   offsets, normal in EEG, make it worse); float32 I/O still halves the memory traffic. DF2T
#   behaves well in floating point, needs two state words per section and channel, and is the
#   form scipy.signal.sosfilt uses, so our state is interchangeable with its zi.
# - State is (n_streams, n_sections, 2, n_channels), C-contiguous: one stream's state is one
#   contiguous block, and the innermost loop runs over contiguous channels, which the compiler
#   vectorises (the channels are independent; only samples and sections are sequential).
# - Validation happens once per call, then the GIL is released once for the whole chunk (or, in
#   step_streams, for all the streams) and a noexcept nogil loop runs that never allocates: the
#   per-stream scratch row is allocated in the constructor.
# - Arrays are checked with the NumPy C API and handed to the loop as raw pointers (const for the
#   input, so read-only buffers work), not as typed memoryviews: acquiring two memoryviews costs
#   ~0.3 us per call, more than a whole 64-channel one-sample call takes here.
# - setup.py compiles with -ffp-contract=off so the compiler never fuses a*b + c into an FMA.
#   Every operation is then one IEEE double operation in a fixed order, which the numpy
#   reference (spikeline.kernels.reference.SOSFilterRef) reproduces bit for bit.
#
# Threading: calls on distinct streams may run concurrently (each stream has its own state and
# scratch row); calls touching the same stream, and reset/prime/state assignment, must be
# serialised by the caller.

cimport cython
cimport numpy as cnp
from libc.stdint cimport uintptr_t

import numpy as np

# Python-level checks shared with the numpy reference, so both give the same errors.
from spikeline.kernels.reference import check_sos, prime_state, set_state

cnp.import_array()

ctypedef fused real_t:
    float
    double


cdef void _cascade(const real_t* x, real_t* y, Py_ssize_t n_samples, Py_ssize_t n_channels,
                   const double* sos, Py_ssize_t n_sections, double* z, double* w) noexcept nogil:
    """Filter n_samples rows of n_channels through all sections, updating the state z in place.

    x and y are (n_samples, n_channels) C-contiguous and may be the same buffer: row i of x is
    read completely (into the scratch row w) before row i of y is written. z is one stream's
    state, (n_sections, 2, n_channels).
    """
    cdef Py_ssize_t _sample, s, c
    cdef double b0, b1, b2, a1, a2, xv, yv
    cdef double* z0
    cdef double* z1
    for _sample in range(n_samples):
        for c in range(n_channels):
            w[c] = <double>x[c]
        for s in range(n_sections):
            b0 = sos[6 * s]
            b1 = sos[6 * s + 1]
            b2 = sos[6 * s + 2]
            a1 = sos[6 * s + 4]
            a2 = sos[6 * s + 5]
            z0 = z + 2 * s * n_channels
            z1 = z0 + n_channels
            for c in range(n_channels):
                xv = w[c]
                yv = b0 * xv + z0[c]
                z0[c] = (b1 * xv - a1 * yv) + z1[c]
                z1[c] = b2 * xv - a2 * yv
                w[c] = yv
        for c in range(n_channels):
            y[c] = <real_t>w[c]
        x += n_channels
        y += n_channels


@cython.final
cdef class SOSFilter:
    """Streaming cascaded-biquad IIR filter over n_channels, with n_streams independent states.

    sos is (n_sections, 6) rows of [b0 b1 b2 a0 a1 a2] with a0 == 1, as returned by
    scipy.signal.butter(..., output="sos"). Each stream (e.g. one device) keeps its own state.
    """

    cdef cnp.ndarray _sos        # (n_sections, 6) float64, C-contiguous, never reallocated
    cdef cnp.ndarray _state      # (n_streams, n_sections, 2, n_channels) float64, C-contiguous
    cdef cnp.ndarray _work       # (n_streams, n_channels) float64 scratch: one row per stream
    cdef const double* _sos_p
    cdef double* _state_p
    cdef double* _work_p
    cdef Py_ssize_t _n_sections, _n_channels, _n_streams, _stream_stride

    # __cinit__ rather than __init__: the C pointers are set exactly once, before any method can
    # run, and cannot be swapped by a second __init__ call while another thread is in the loop.
    def __cinit__(self, sos, int n_channels, int n_streams=1):
        arr = check_sos(sos, n_channels, n_streams)
        self._n_sections = arr.shape[0]
        self._n_channels = n_channels
        self._n_streams = n_streams
        self._stream_stride = 2 * self._n_sections * n_channels
        self._sos = arr
        self._state = np.zeros((n_streams, self._n_sections, 2, n_channels), dtype=np.float64)
        self._work = np.zeros((n_streams, n_channels), dtype=np.float64)
        self._sos_p = <const double*>cnp.PyArray_DATA(self._sos)
        self._state_p = <double*>cnp.PyArray_DATA(self._state)
        self._work_p = <double*>cnp.PyArray_DATA(self._work)

    cdef cnp.ndarray _checked_out(self, object x, object out, Py_ssize_t n_rows, str shape_desc):
        """Validate x (and out) for one call; return out, allocated if None. n_rows < 0: any."""
        if not cnp.PyArray_Check(x):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef int type_num = cnp.PyArray_TYPE(xa)
        if (type_num != cnp.NPY_FLOAT and type_num != cnp.NPY_DOUBLE) or not cnp.PyArray_ISNOTSWAPPED(xa):
            raise TypeError(f"x must have dtype float32 or float64 in native byte order, got {x.dtype}")
        if cnp.PyArray_NDIM(xa) != 2:
            raise ValueError(f"x must be 2-D with shape {shape_desc}, got shape {x.shape}")
        if cnp.PyArray_DIM(xa, 1) != self._n_channels or (n_rows >= 0 and cnp.PyArray_DIM(xa, 0) != n_rows):
            raise ValueError(f"x must have shape {shape_desc}, got {x.shape}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(xa):
            raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
        if not cnp.PyArray_ISALIGNED(xa):
            raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
        if out is None:
            return cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(xa), type_num, 0)
        if not cnp.PyArray_Check(out):
            raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
        cdef cnp.ndarray oa = <cnp.ndarray>out
        if cnp.PyArray_TYPE(oa) != type_num or not cnp.PyArray_ISNOTSWAPPED(oa):
            raise TypeError(f"out must have the same dtype as x ({x.dtype}), got {out.dtype}")
        if (cnp.PyArray_NDIM(oa) != 2 or cnp.PyArray_DIM(oa, 0) != cnp.PyArray_DIM(xa, 0)
                or cnp.PyArray_DIM(oa, 1) != cnp.PyArray_DIM(xa, 1)):
            raise ValueError(f"out must have the same shape as x {x.shape}, got {out.shape}")
        if not (cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_ISALIGNED(oa)
                and cnp.PyArray_ISWRITEABLE(oa)):
            raise ValueError("out must be C-contiguous, aligned and writeable")
        # Both are contiguous with the same byte size: equal starts is in-place (safe, x row i is
        # read before out row i is written), any other overlap would read overwritten samples.
        cdef uintptr_t xs = <uintptr_t>cnp.PyArray_DATA(xa)
        cdef uintptr_t os = <uintptr_t>cnp.PyArray_DATA(oa)
        cdef uintptr_t nbytes = <uintptr_t>cnp.PyArray_NBYTES(xa)
        if xs != os and xs < os + nbytes and os < xs + nbytes:
            raise ValueError("out must be x itself (in-place) or must not overlap x")
        return oa

    def step(self, x, out=None, int stream=0):
        """Filter a chunk x (n_samples, n_channels) of stream `stream`; returns out (same dtype)."""
        cdef cnp.ndarray oa = self._checked_out(x, out, -1, f"(n_samples, {self._n_channels})")
        if stream < 0 or stream >= self._n_streams:
            raise ValueError(f"stream must be in [0, {self._n_streams}), got {stream}")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t n = cnp.PyArray_DIM(xa, 0)
        cdef Py_ssize_t nch = self._n_channels
        cdef Py_ssize_t nsec = self._n_sections
        cdef const double* sos = self._sos_p
        cdef double* z = self._state_p + stream * self._stream_stride
        cdef double* w = self._work_p + stream * nch
        cdef void* xp = cnp.PyArray_DATA(xa)
        cdef void* yp = cnp.PyArray_DATA(oa)
        if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
            with nogil:
                _cascade(<const float*>xp, <float*>yp, n, nch, sos, nsec, z, w)
        else:
            with nogil:
                _cascade(<const double*>xp, <double*>yp, n, nch, sos, nsec, z, w)
        return oa

    def step_streams(self, x, out=None):
        """Advance every stream by one sample: x is (n_streams, n_channels), row k for stream k."""
        cdef cnp.ndarray oa = self._checked_out(
            x, out, self._n_streams, f"(n_streams={self._n_streams}, n_channels={self._n_channels})")
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef Py_ssize_t k
        cdef Py_ssize_t nstr = self._n_streams
        cdef Py_ssize_t nch = self._n_channels
        cdef Py_ssize_t nsec = self._n_sections
        cdef Py_ssize_t stride = self._stream_stride
        cdef const double* sos = self._sos_p
        cdef double* z = self._state_p
        cdef double* w = self._work_p
        cdef void* xp = cnp.PyArray_DATA(xa)
        cdef void* yp = cnp.PyArray_DATA(oa)
        if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
            with nogil:
                for k in range(nstr):
                    _cascade(<const float*>xp + k * nch, <float*>yp + k * nch, 1, nch, sos, nsec,
                             z + k * stride, w + k * nch)
        else:
            with nogil:
                for k in range(nstr):
                    _cascade(<const double*>xp + k * nch, <double*>yp + k * nch, 1, nch, sos, nsec,
                             z + k * stride, w + k * nch)
        return oa

    def reset(self):
        """Zero the state of every stream."""
        self._state.fill(0.0)

    def prime(self, x0, int stream=-1):
        """Set the state to the steady state for a constant input x0 (n_channels,); -1: all streams."""
        prime_state(self._state, self._sos, x0, stream)

    @property
    def state(self):
        """A copy of the state, (n_streams, n_sections, 2, n_channels) float64."""
        return self._state.copy()

    @state.setter
    def state(self, value):
        set_state(self._state, value)

    @property
    def n_channels(self):
        return self._n_channels

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def n_sections(self):
        return self._n_sections

    @property
    def sos(self):
        """A copy of the (n_sections, 6) float64 coefficients."""
        return self._sos.copy()
