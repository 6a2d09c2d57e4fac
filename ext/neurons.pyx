# Spiking neuron populations and spike encoders: spikeline._ext.neurons.
#
# Semantics:
# - LIFPopulation and CubaLIFPopulation are snnTorch 1.0.0's `Leaky` and `Synaptic` with their
#   defaults (reset_delay=True, no inhibition, no state quantisation, graded_spikes_factor=1):
#   the reset of step t is decided from the membrane of step t-1, spikes use a strict `>`, and
#   beta/alpha are clamped to [0, 1] (snnTorch clamps on every step; we clamp once, in float32,
#   with the same result). The exact operations are in neurons.pxd; tests/test_neurons.py checks
#   spikes and membranes against snnTorch step by step. reset_mechanism "none" is not provided.
# - DeltaModulator: per channel a reference level ref, d = x - ref; d > threshold emits an UP
#   spike and moves ref up by threshold, d < -threshold a DOWN spike and ref down by threshold; at
#   most one spike per channel and sample. This is the asynchronous delta modulator (ADM) of
#   M. Corradi and G. Indiveri, "A neuromorphic event-based neural recording system for smart
#   brain-machine-interfaces", IEEE Trans. Biomed. Circuits Syst. 9(5), 2015 (UP/DOWN events on
#   changes larger than a threshold), sampled once per input sample, with one difference: the
#   circuit resets its reference to the input after an event, we move it by exactly one threshold,
#   as a linear delta modulator's staircase does (N. S. Jayant and P. Noll, "Digital Coding of
#   Waveforms", 1984, ch. 8). A receiver then reconstructs ref exactly as ref0 + threshold *
#   (cumulative UP - cumulative DOWN), and the encoding error stays within threshold wherever the
#   signal moves by at most threshold per sample (faster signals are followed one step per sample:
#   slope overload). It is NOT snntorch.spikegen.delta, which compares consecutive samples
#   ((x[t] - x[t-1]) >= threshold) and so never spikes on a slow ramp. The reference starts
#   uninitialised (NaN in `state`) and is set from the channel's first finite sample, which emits
#   nothing: no spurious burst from the signal's DC level at start-up.
# - LIFEncoder: the L2MU "encoding-free" input module, each channel driving n_neurons_per_channel
#   LIF neurons through its own gain and bias: current_j = gain_j * x_c + bias_j.
#
# Why the kernels are shaped this way:
# - float32 state and I/O: the neuron maths is float32 in snnTorch, which trained models come
#   from, and bit-for-bit agreement with it (and with the numpy references) is what the tests pin.
#   Every step is one float32 operation in snnTorch's order (neurons.pxd); setup.py's
#   -ffp-contract=off forbids fused multiply-adds, which would round differently.
# - State is (n_streams, n_neurons) C-contiguous (CuBa-LIF: two such arrays): one stream's state is
#   one contiguous row, the inner loop runs over contiguous, independent neurons (vectorisable);
#   step_streams advances every stream by one sample in one call (a gateway serving many devices).
# - The per-sample maths is in neurons.pxd as `cdef inline ... noexcept nogil` helpers, so the
#   L2MU cell (ext/l2mu.pyx) steps its LIF/CuBa-LIF populations with the very same code.
# - Validation happens once per call in a thin def (dtype, shape, contiguity, alignment, overlap,
#   with the NumPy C API: cheaper than acquiring typed memoryviews, which matters for one-sample
#   calls), then the GIL is released once for the whole chunk and a noexcept nogil loop runs that
#   never allocates. The input is read through a const pointer: read-only buffers (np.frombuffer
#   of a network payload) work. Outputs are caller-supplied (or allocated once, before the loop).
# - Constructor parameters and state assignment are validated by the same Python functions the
#   numpy references use (spikeline.kernels.ref_neurons): identical rules and messages, run once.
#
# NaN and inf are data, not errors: a NaN current makes that neuron's membrane NaN, which never
# spikes (NaN > threshold is false) and stays NaN until reset() or a new state; the other neurons
# and streams are unaffected. The delta modulator ignores a NaN sample (no spike, ref unchanged).
#
# Build notes: neurons.pxd is cimported by its plain name (see the comment at its top), because
# with the sources in ext/ Cython cannot resolve spikeline._ext.neurons to ext/neurons.pxd.
#
# Threading: calls on distinct streams may run concurrently (each stream has its own state rows);
# calls touching the same stream, and reset/state assignment, must be serialised by the caller.

cimport cython
cimport numpy as cnp
from libc.string cimport memcpy

from f32checks cimport _disjoint, _input, _output
from neurons cimport cuba_row, delta_row, lif_encoder_row, lif_row

import numpy as np

from spikeline.kernels.ref_neurons import count_arg, param_array, reset_code, reset_name, state_array

cnp.import_array()


# --- per-call checks (mirrored in spikeline.kernels.ref_neurons; array checks in f32checks.pxd) ---

cdef int _check_stream(Py_ssize_t stream, Py_ssize_t n_streams) except -1:
    if stream < 0 or stream >= n_streams:
        raise ValueError(f"stream must be in [0, {n_streams}), got {stream}")
    return 0


cdef inline float* _data_or_null(cnp.ndarray a):
    return NULL if a is None else <float*>cnp.PyArray_DATA(a)


cdef inline const float* _cdata(cnp.ndarray a):
    return <const float*>cnp.PyArray_DATA(a)


# --- the loops (no GIL, no allocation) ---------------------------------------------------------

cdef void _lif_chunk(const float* x, float* spikes, float* mem_out, Py_ssize_t n_samples,
                     Py_ssize_t n, float* mem, const float* beta, const float* threshold,
                     int reset) noexcept nogil:
    """n_samples rows of n currents through one stream's LIF state mem (n,)."""
    cdef Py_ssize_t _sample
    for _sample in range(n_samples):
        lif_row(mem, x, spikes, beta, threshold, n, reset)
        if mem_out != NULL:
            memcpy(mem_out, mem, n * sizeof(float))
            mem_out += n
        x += n
        spikes += n


cdef void _cuba_chunk(const float* x, float* spikes, float* mem_out, float* syn_out,
                      Py_ssize_t n_samples, Py_ssize_t n, float* syn, float* mem,
                      const float* alpha, const float* beta, const float* threshold,
                      int reset) noexcept nogil:
    """n_samples rows of n currents through one stream's CuBa-LIF state (syn, mem)."""
    cdef Py_ssize_t _sample
    for _sample in range(n_samples):
        cuba_row(syn, mem, x, spikes, alpha, beta, threshold, n, reset)
        if mem_out != NULL:
            memcpy(mem_out, mem, n * sizeof(float))
            mem_out += n
        if syn_out != NULL:
            memcpy(syn_out, syn, n * sizeof(float))
            syn_out += n
        x += n
        spikes += n


cdef void _delta_chunk(const float* x, float* out, Py_ssize_t n_samples, Py_ssize_t n,
                       float* ref, const float* threshold) noexcept nogil:
    """n_samples rows of n channels through one stream's references; out rows are [UP | DOWN]."""
    cdef Py_ssize_t _sample
    for _sample in range(n_samples):
        delta_row(ref, x, out, out + n, threshold, n)
        x += n
        out += 2 * n


cdef void _encoder_chunk(const float* x, float* spikes, float* mem_out, Py_ssize_t n_samples,
                         Py_ssize_t n_channels, Py_ssize_t per_channel, float* mem,
                         const float* gain, const float* bias, const float* beta,
                         const float* threshold, int reset) noexcept nogil:
    """n_samples rows of n_channels through one stream's encoder membranes."""
    cdef Py_ssize_t _sample
    cdef Py_ssize_t n = n_channels * per_channel
    for _sample in range(n_samples):
        lif_encoder_row(mem, x, spikes, gain, bias, beta, threshold, n_channels, per_channel, reset)
        if mem_out != NULL:
            memcpy(mem_out, mem, n * sizeof(float))
            mem_out += n
        x += n_channels
        spikes += n


# --- the kernels -------------------------------------------------------------------------------

@cython.final
cdef class LIFPopulation:
    """n_neurons leaky integrate-and-fire neurons with snnTorch `Leaky` semantics, n_streams states.

    Per sample, with r = (mem > threshold) from the previous membrane:
      subtract: mem = beta * mem + x - r * threshold
      zero:     mem = beta * ((1 - r) * mem) + x
    and spike = (mem > threshold). beta (clamped to [0, 1]) and threshold are scalars or
    per-neuron. x are input currents (n_samples, n_neurons) float32; out the spikes, 0.0 or 1.0.
    A NaN current makes that neuron's membrane NaN for good (it never spikes) until reset() or a
    new state; the other neurons are unaffected.
    """

    cdef cnp.ndarray _beta, _threshold    # (n_neurons,) float32, never reallocated
    cdef cnp.ndarray _mem                 # (n_streams, n_neurons) float32, never reallocated
    cdef const float* _beta_p
    cdef const float* _thr_p
    cdef float* _mem_p
    cdef Py_ssize_t _n, _n_streams
    cdef int _reset
    cdef str _desc_step, _desc_streams

    # __cinit__ rather than __init__: the C pointers are set exactly once, before any method runs.
    def __cinit__(self, n_neurons, beta, threshold=1.0, reset="subtract", n_streams=1):
        cdef Py_ssize_t n = count_arg(n_neurons, "n_neurons")
        self._beta = param_array(beta, "beta", n, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._mem = np.zeros((self._n_streams, n), dtype=np.float32)
        self._beta_p = _cdata(self._beta)
        self._thr_p = _cdata(self._threshold)
        self._mem_p = <float*>cnp.PyArray_DATA(self._mem)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_neurons={n})"

    def step(self, x, out=None, Py_ssize_t stream=0, mem_out=None):
        """Step stream `stream` through x (n_samples, n_neurons); returns the spikes in out.

        mem_out, if given, receives the membrane after each sample (same shape). out and mem_out
        may each be x itself (in-place) but must not overlap each other.
        """
        cdef cnp.ndarray xa = _input(x, self._n, -1, self._desc_step)
        cdef cnp.ndarray oa = _output(out, "out", xa, self._n, True)
        cdef cnp.ndarray ma = None
        if mem_out is not None:
            ma = _output(mem_out, "mem_out", xa, self._n, True)
            _disjoint(oa, "out", ma, "mem_out")
        _check_stream(stream, self._n_streams)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef Py_ssize_t n_samples = cnp.PyArray_DIM(xa, 0)
        cdef Py_ssize_t n = self._n
        cdef float* mem = self._mem_p + stream * n
        with nogil:
            _lif_chunk(xp, yp, mp, n_samples, n, mem, self._beta_p, self._thr_p, self._reset)
        return oa

    def step_streams(self, x, out=None, mem_out=None):
        """Advance every stream by one sample: x is (n_streams, n_neurons), row k for stream k."""
        cdef cnp.ndarray xa = _input(x, self._n, self._n_streams, self._desc_streams)
        cdef cnp.ndarray oa = _output(out, "out", xa, self._n, True)
        cdef cnp.ndarray ma = None
        if mem_out is not None:
            ma = _output(mem_out, "mem_out", xa, self._n, True)
            _disjoint(oa, "out", ma, "mem_out")
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t k
        with nogil:
            for k in range(self._n_streams):
                lif_row(self._mem_p + k * n, xp + k * n, yp + k * n, self._beta_p, self._thr_p, n,
                        self._reset)
            if mp != NULL:
                memcpy(mp, self._mem_p, self._n_streams * n * sizeof(float))
        return oa

    def reset(self):
        """Zero the membrane of every stream."""
        self._mem.fill(0.0)

    @property
    def state(self):
        """A copy of the membranes, (n_streams, n_neurons) float32."""
        return self._mem.copy()

    @state.setter
    def state(self, value):
        self._mem[...] = state_array(value, "state", (self._n_streams, self._n))

    @property
    def n_neurons(self):
        return self._n

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def beta(self):
        """A copy of the per-neuron decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self):
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self):
        return reset_name(self._reset)


@cython.final
cdef class CubaLIFPopulation:
    """n_neurons current-based LIF neurons with snnTorch `Synaptic` semantics, n_streams states.

    Per sample, with r = (mem > threshold) from the previous membrane:
      syn = alpha * syn + x
      m = beta * mem + syn
      subtract: mem = m - r * threshold;  zero: mem = m - m * r  (syn is never reset)
    and spike = (mem > threshold). alpha and beta are clamped to [0, 1]. The state is the pair
    (syn, mem), each (n_streams, n_neurons). A NaN current makes that neuron's syn and mem NaN
    until reset() or a new state.
    """

    cdef cnp.ndarray _alpha, _beta, _threshold   # (n_neurons,) float32
    cdef cnp.ndarray _syn, _mem                  # (n_streams, n_neurons) float32
    cdef const float* _alpha_p
    cdef const float* _beta_p
    cdef const float* _thr_p
    cdef float* _syn_p
    cdef float* _mem_p
    cdef Py_ssize_t _n, _n_streams
    cdef int _reset
    cdef str _desc_step, _desc_streams

    def __cinit__(self, n_neurons, alpha, beta, threshold=1.0, reset="subtract", n_streams=1):
        cdef Py_ssize_t n = count_arg(n_neurons, "n_neurons")
        self._alpha = param_array(alpha, "alpha", n, clamp01=True)
        self._beta = param_array(beta, "beta", n, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._syn = np.zeros((self._n_streams, n), dtype=np.float32)
        self._mem = np.zeros((self._n_streams, n), dtype=np.float32)
        self._alpha_p = _cdata(self._alpha)
        self._beta_p = _cdata(self._beta)
        self._thr_p = _cdata(self._threshold)
        self._syn_p = <float*>cnp.PyArray_DATA(self._syn)
        self._mem_p = <float*>cnp.PyArray_DATA(self._mem)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_neurons={n})"

    cdef tuple _outputs(self, cnp.ndarray xa, object out, object mem_out, object syn_out):
        cdef cnp.ndarray oa = _output(out, "out", xa, self._n, True)
        cdef cnp.ndarray ma = None
        cdef cnp.ndarray sa = None
        if mem_out is not None:
            ma = _output(mem_out, "mem_out", xa, self._n, True)
            _disjoint(oa, "out", ma, "mem_out")
        if syn_out is not None:
            sa = _output(syn_out, "syn_out", xa, self._n, True)
            _disjoint(oa, "out", sa, "syn_out")
            if ma is not None:
                _disjoint(ma, "mem_out", sa, "syn_out")
        return oa, ma, sa

    def step(self, x, out=None, Py_ssize_t stream=0, mem_out=None, syn_out=None):
        """Step stream `stream` through x (n_samples, n_neurons); returns the spikes in out.

        mem_out / syn_out, if given, receive the membrane / synaptic current after each sample.
        Each output may be x itself (in-place) but the outputs must not overlap each other.
        """
        cdef cnp.ndarray xa = _input(x, self._n, -1, self._desc_step)
        cdef cnp.ndarray oa, ma, sa
        oa, ma, sa = self._outputs(xa, out, mem_out, syn_out)
        _check_stream(stream, self._n_streams)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef float* sp = _data_or_null(sa)
        cdef Py_ssize_t n_samples = cnp.PyArray_DIM(xa, 0)
        cdef Py_ssize_t n = self._n
        cdef float* syn = self._syn_p + stream * n
        cdef float* mem = self._mem_p + stream * n
        with nogil:
            _cuba_chunk(xp, yp, mp, sp, n_samples, n, syn, mem, self._alpha_p, self._beta_p,
                        self._thr_p, self._reset)
        return oa

    def step_streams(self, x, out=None, mem_out=None, syn_out=None):
        """Advance every stream by one sample: x is (n_streams, n_neurons), row k for stream k."""
        cdef cnp.ndarray xa = _input(x, self._n, self._n_streams, self._desc_streams)
        cdef cnp.ndarray oa, ma, sa
        oa, ma, sa = self._outputs(xa, out, mem_out, syn_out)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef float* sp = _data_or_null(sa)
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t k
        with nogil:
            for k in range(self._n_streams):
                cuba_row(self._syn_p + k * n, self._mem_p + k * n, xp + k * n, yp + k * n,
                         self._alpha_p, self._beta_p, self._thr_p, n, self._reset)
            if mp != NULL:
                memcpy(mp, self._mem_p, self._n_streams * n * sizeof(float))
            if sp != NULL:
                memcpy(sp, self._syn_p, self._n_streams * n * sizeof(float))
        return oa

    def reset(self):
        """Zero the synaptic current and membrane of every stream."""
        self._syn.fill(0.0)
        self._mem.fill(0.0)

    @property
    def state(self):
        """Copies of (syn, mem), each (n_streams, n_neurons) float32."""
        return self._syn.copy(), self._mem.copy()

    @state.setter
    def state(self, value):
        shape = (self._n_streams, self._n)
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(
                f"state must be a (syn, mem) pair of arrays of shape {shape}, got {type(value).__name__}")
        syn = state_array(value[0], "state[0] (syn)", shape)
        mem = state_array(value[1], "state[1] (mem)", shape)
        self._syn[...] = syn
        self._mem[...] = mem

    @property
    def n_neurons(self):
        return self._n

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def alpha(self):
        """A copy of the per-neuron synaptic decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._alpha.copy()

    @property
    def beta(self):
        """A copy of the per-neuron membrane decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self):
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self):
        return reset_name(self._reset)


@cython.final
cdef class DeltaModulator:
    """Delta-modulation spike encoder over n_channels, n_streams independent states.

    Per channel a reference level ref; per sample, d = x - ref:
      d > threshold:  UP spike,   ref += threshold
      d < -threshold: DOWN spike, ref -= threshold
    at most one spike per channel and sample (a signal moving faster than threshold per sample
    is followed with lag: slope overload). Output (n_samples, 2 * n_channels) float32: UP in the
    first n_channels columns, DOWN in the last. ref starts "not initialised" (NaN in the state):
    a channel's first finite sample becomes its reference and emits nothing. A NaN sample emits
    nothing and leaves ref alone; +inf / -inf after initialisation emit UP / DOWN.
    """

    cdef cnp.ndarray _threshold   # (n_channels,) float32, > 0
    cdef cnp.ndarray _ref         # (n_streams, n_channels) float32; NaN: not initialised
    cdef const float* _thr_p
    cdef float* _ref_p
    cdef Py_ssize_t _n, _n_streams
    cdef str _desc_step, _desc_streams

    def __cinit__(self, n_channels, threshold, n_streams=1):
        cdef Py_ssize_t n = count_arg(n_channels, "n_channels")
        self._threshold = param_array(threshold, "threshold", n, positive=True)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._n = n
        self._ref = np.full((self._n_streams, n), np.nan, dtype=np.float32)
        self._thr_p = _cdata(self._threshold)
        self._ref_p = <float*>cnp.PyArray_DATA(self._ref)
        self._desc_step = f"(n_samples, {n})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_channels={n})"

    def step(self, x, out=None, Py_ssize_t stream=0):
        """Encode x (n_samples, n_channels) of stream `stream`; returns out (n_samples, 2 * n_channels)."""
        cdef cnp.ndarray xa = _input(x, self._n, -1, self._desc_step)
        cdef cnp.ndarray oa = _output(out, "out", xa, 2 * self._n, False)
        _check_stream(stream, self._n_streams)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef Py_ssize_t n_samples = cnp.PyArray_DIM(xa, 0)
        cdef Py_ssize_t n = self._n
        cdef float* ref = self._ref_p + stream * n
        with nogil:
            _delta_chunk(xp, yp, n_samples, n, ref, self._thr_p)
        return oa

    def step_streams(self, x, out=None):
        """Advance every stream by one sample: x (n_streams, n_channels) -> (n_streams, 2 * n_channels)."""
        cdef cnp.ndarray xa = _input(x, self._n, self._n_streams, self._desc_streams)
        cdef cnp.ndarray oa = _output(out, "out", xa, 2 * self._n, False)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t k
        with nogil:
            for k in range(self._n_streams):
                delta_row(self._ref_p + k * n, xp + k * n, yp + 2 * k * n, yp + (2 * k + 1) * n,
                          self._thr_p, n)
        return oa

    def reset(self):
        """Forget every reference: each channel re-initialises from its next finite sample."""
        self._ref.fill(np.nan)

    @property
    def state(self):
        """A copy of the references, (n_streams, n_channels) float32; NaN: not initialised yet."""
        return self._ref.copy()

    @state.setter
    def state(self, value):
        self._ref[...] = state_array(value, "state", (self._n_streams, self._n), allow_nan=True)

    @property
    def n_channels(self):
        return self._n

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def threshold(self):
        """A copy of the per-channel threshold, (n_channels,) float32."""
        return self._threshold.copy()


@cython.final
cdef class LIFEncoder:
    """The L2MU "encoding-free" input module: a per-channel linear map feeding LIF neurons.

    Each of n_channels drives n_neurons_per_channel LIF neurons; neuron j = c * per_channel + k
    gets the current gain[j] * x[c] + bias[j] and follows LIFPopulation's update. gain, bias,
    beta (clamped to [0, 1]) and threshold are scalars, (n_neurons,) or (n_channels,
    n_neurons_per_channel). Output (n_samples, n_neurons) spikes, channel-major. A NaN sample
    makes that channel's neurons NaN until reset() or a new state.
    """

    cdef cnp.ndarray _gain, _bias, _beta, _threshold   # (n_neurons,) float32
    cdef cnp.ndarray _mem                              # (n_streams, n_neurons) float32
    cdef const float* _gain_p
    cdef const float* _bias_p
    cdef const float* _beta_p
    cdef const float* _thr_p
    cdef float* _mem_p
    cdef Py_ssize_t _nc, _per, _n, _n_streams
    cdef int _reset
    cdef str _desc_step, _desc_streams

    def __cinit__(self, n_channels, n_neurons_per_channel, gain, bias, beta, threshold=1.0,
                  reset="subtract", n_streams=1):
        cdef Py_ssize_t nc = count_arg(n_channels, "n_channels")
        cdef Py_ssize_t per = count_arg(n_neurons_per_channel, "n_neurons_per_channel")
        cdef Py_ssize_t n = nc * per
        grid = (nc, per)
        self._gain = param_array(gain, "gain", n, grid)
        self._bias = param_array(bias, "bias", n, grid)
        self._beta = param_array(beta, "beta", n, grid, clamp01=True)
        self._threshold = param_array(threshold, "threshold", n, grid)
        self._reset = reset_code(reset)
        self._n_streams = count_arg(n_streams, "n_streams")
        self._nc = nc
        self._per = per
        self._n = n
        self._mem = np.zeros((self._n_streams, n), dtype=np.float32)
        self._gain_p = _cdata(self._gain)
        self._bias_p = _cdata(self._bias)
        self._beta_p = _cdata(self._beta)
        self._thr_p = _cdata(self._threshold)
        self._mem_p = <float*>cnp.PyArray_DATA(self._mem)
        self._desc_step = f"(n_samples, {nc})"
        self._desc_streams = f"(n_streams={self._n_streams}, n_channels={nc})"

    def step(self, x, out=None, Py_ssize_t stream=0, mem_out=None):
        """Encode x (n_samples, n_channels) of stream `stream`; returns out (n_samples, n_neurons).

        mem_out, if given, receives the membranes after each sample. Neither output may overlap x.
        """
        cdef cnp.ndarray xa = _input(x, self._nc, -1, self._desc_step)
        cdef cnp.ndarray oa = _output(out, "out", xa, self._n, False)
        cdef cnp.ndarray ma = None
        if mem_out is not None:
            ma = _output(mem_out, "mem_out", xa, self._n, False)
            _disjoint(oa, "out", ma, "mem_out")
        _check_stream(stream, self._n_streams)
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef Py_ssize_t n_samples = cnp.PyArray_DIM(xa, 0)
        cdef float* mem = self._mem_p + stream * self._n
        with nogil:
            _encoder_chunk(xp, yp, mp, n_samples, self._nc, self._per, mem, self._gain_p,
                           self._bias_p, self._beta_p, self._thr_p, self._reset)
        return oa

    def step_streams(self, x, out=None, mem_out=None):
        """Advance every stream by one sample: x (n_streams, n_channels) -> (n_streams, n_neurons)."""
        cdef cnp.ndarray xa = _input(x, self._nc, self._n_streams, self._desc_streams)
        cdef cnp.ndarray oa = _output(out, "out", xa, self._n, False)
        cdef cnp.ndarray ma = None
        if mem_out is not None:
            ma = _output(mem_out, "mem_out", xa, self._n, False)
            _disjoint(oa, "out", ma, "mem_out")
        cdef const float* xp = _cdata(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* mp = _data_or_null(ma)
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t nc = self._nc
        cdef Py_ssize_t k
        with nogil:
            for k in range(self._n_streams):
                lif_encoder_row(self._mem_p + k * n, xp + k * nc, yp + k * n, self._gain_p,
                                self._bias_p, self._beta_p, self._thr_p, nc, self._per, self._reset)
            if mp != NULL:
                memcpy(mp, self._mem_p, self._n_streams * n * sizeof(float))
        return oa

    def reset(self):
        """Zero the membrane of every stream."""
        self._mem.fill(0.0)

    @property
    def state(self):
        """A copy of the membranes, (n_streams, n_neurons) float32."""
        return self._mem.copy()

    @state.setter
    def state(self, value):
        self._mem[...] = state_array(value, "state", (self._n_streams, self._n))

    @property
    def n_channels(self):
        return self._nc

    @property
    def n_neurons_per_channel(self):
        return self._per

    @property
    def n_neurons(self):
        return self._n

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def gain(self):
        """A copy of the per-neuron gain, (n_neurons,) float32, channel-major."""
        return self._gain.copy()

    @property
    def bias(self):
        """A copy of the per-neuron bias, (n_neurons,) float32, channel-major."""
        return self._bias.copy()

    @property
    def beta(self):
        """A copy of the per-neuron decay, (n_neurons,) float32, clamped to [0, 1]."""
        return self._beta.copy()

    @property
    def threshold(self):
        """A copy of the per-neuron threshold, (n_neurons,) float32."""
        return self._threshold.copy()

    @property
    def reset_mechanism(self):
        return reset_name(self._reset)
