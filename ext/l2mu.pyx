# The L2MU cell (an LMU whose parts are LIF populations): spikeline._ext.l2mu.
#
# Per sample, every population an snnTorch `Leaky` (reset by subtraction), ' = previous sample:
#     s_x = lif_x(x * enc_w + enc_b)                    input module, enc neurons per channel
#     s_u = lif_u(e_x s_x + e_h s_h' + e_m s_m')
#     s_m[k, :] = lif_m(A s_m'[k, :] + B_bar s_u[k])    A = A_bar ("A") or A_bar^T ("AT")
#     s_h = lif_h(W_x s_x + W_h s_h' + W_m s_m)
#     s_o = lif_o(W_o s_h + b_o)                        the output spikes
# exactly tools/l2mu_torch.py's forward; the arrays are its export() (spikeline.kernels.l2mu.load_l2mu).
#
# Why the kernel is shaped this way:
# - Spikes make every matrix-vector product a sum of the weight columns of the active inputs: no
#   multiplies, and only the active columns are read. Weights are stored transposed (in, out) so a
#   column is contiguous, stacked per current: ut = [e_x | e_h | e_m]^T over v = [s_x | s_h | s_m],
#   ht = [W_x | W_h | W_m]^T over the same v (with the new s_m), ot = W_o^T, and mt = the applied
#   memory matrix's columns with B_bar appended as one more column (row `order`), so "B_bar s_u[k]"
#   is one more gathered column. Each step builds the list of active indices once per spike
#   vector (the x and h' part is shared by the u and h currents) into a per-stream buffer
#   allocated in the constructor. There is no dense path: with 0/1 inputs and the same (double)
#   arithmetic a dense product does every addition the gather does plus one per inactive input, so
#   the gather never loses; a float32 BLAS product would be faster per column but is a different,
#   order-dependent result (below). DESIGN's 75 % break-even is for delta inputs, whose products are
#   real multiplies. At the HAR size about 30 % of the dense additions are done (counters).
# - Precision. Every current is accumulated in double, from 0.0 (or the bias b_o) over the active
#   columns in increasing index order, and rounded to float32 once; the neurons are float32 and
#   use ext/neurons.pxd's helpers (lif_encoder_row, lif_row), so the LIF maths lives in one place.
#   A double sum of float32 weights selected by 0/1 spikes is exact (when log2(max|w| / min|w|) +
#   log2(fan-in) <= 28 for each neuron), so the rounded current is the correctly rounded exact sum
#   whatever the order of the additions. That is what makes the kernel reproduce the PyTorch twin
#   spike for spike: the twin sums its currents in float64 too (tools/l2mu_torch.py says why), and
#   MKL's summation order no longer matters. In float32 they disagree in the last bit on most
#   currents (measured: ~80 % of currents, ~60 % of membranes after 1000 steps, up to 1e-5), and a
#   membrane that lands within that difference of its threshold flips a spike, after which the runs
#   diverge: rare (no flip seen in 5e5 sample-steps) but a matter of chance, not a guarantee. The numpy
#   reference (spikeline.kernels.ref_l2mu) repeats the same additions in the same order: bit-identical
#   (setup.py's -ffp-contract=off keeps the LIF update unfused).
# - State has a leading stream dimension; one stream's membranes and fed-back spikes are one
#   contiguous float32 row [mem_x | mem_u | mem_m | mem_h | mem_o | s_h | s_m]. step() validates
#   once per call (NumPy C API, const input so read-only buffers work), then releases the GIL once
#   for the whole chunk around a noexcept nogil loop that never allocates; step_streams() does the
#   same for one sample of every stream, or of a subset given as distinct indices in any order
#   (gateway mode: one call advances the devices that have a new sample; ref_delta.streams_arg
#   checks the subset and copies it, so the loop reads it without the GIL).
# - Counters per stream (steps, spikes per population, columns gathered and the additions they
#   cost) are a few integer adds per step, so temporal/spatial sparsity can be reported.
#
# NaN and inf are data: a NaN input makes its channel's input neurons NaN (they never spike) until
# reset() or a new state; everything downstream only ever sees 0/1 spikes.
#
# Threading: calls on distinct streams may run concurrently (each stream has its own state, scratch
# and counters); calls touching the same stream, and reset/state assignment, must be serialised.

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from f32checks cimport _disjoint, _input, _output
from neurons cimport RESET_SUBTRACT, lif_encoder_row, lif_row

import numpy as np

from spikeline.kernels.ref_delta import streams_arg
from spikeline.kernels.ref_l2mu import (
    COUNTER_NAMES,
    POPULATIONS,
    STATE_KEYS,
    l2mu_params,
    missing_arrays,
    state_arrays,
    stream_arg,
)

cnp.import_array()

cdef enum:
    N_COUNTERS = 8   # COUNTER_NAMES: steps, active x/u/m/h/o, columns, synops


# --- per-call checks (mirrored in spikeline.kernels.ref_neurons, whose messages these are) -------

cdef inline const float* _cdata(object a):
    return <const float*>cnp.PyArray_DATA(<cnp.ndarray>a)


# --- the per-sample maths (no GIL, no allocation) -------------------------------------------------

cdef struct Net:
    # Read-only parameters shared by every stream (pointers into the cell's arrays).
    const float* gain       # (n_x,) enc_w, channel-major
    const float* bias       # (n_x,) enc_b
    const float* ut         # (n_v, n_u)
    const float* mt         # (d + 1, d): the applied matrix's columns, then B_bar
    const float* ht         # (n_v, n_h)
    const float* ot         # (n_h, n_o)
    const float* b_o        # (n_o,)
    const float* beta_x
    const float* beta_u
    const float* beta_m
    const float* beta_h
    const float* beta_o
    const float* thr_x
    const float* thr_u
    const float* thr_m
    const float* thr_h
    const float* thr_o
    Py_ssize_t n_in, enc, n_x, n_u, d, n_m, n_h, n_o, n_v


cdef struct Stream:
    # One stream's state (into its state row), scratch and counters.
    float* mem_x
    float* mem_u
    float* mem_m
    float* mem_h
    float* mem_o
    float* s_h              # the previous sample's hidden spikes, overwritten by this sample's
    float* s_m              # the same for the memory spikes
    float* s_x              # scratch: this sample's input-module spikes
    float* s_u              # scratch: this sample's u spikes
    double* acc             # scratch: max(n_u, d, n_h, n_o) accumulators
    Py_ssize_t* idx         # scratch: n_v active indices into v, then d + 1 for one memory row
    int64_t* counters       # N_COUNTERS


cdef inline void _gather(double* acc, const float* start, const float* wt, Py_ssize_t n_out,
                         const Py_ssize_t* idx, Py_ssize_t n_idx, float* dst) noexcept nogil:
    """dst (n_out,) = float32(start + the columns wt[idx[t]] for t = 0, 1, ...), summed in double.

    start NULL: 0.0. wt[j * n_out + o] is the weight from input j to output o. dst may be a row
    that the index list was built from (the list is complete before the first write).
    """
    cdef Py_ssize_t o, t
    cdef const float* col
    if start == NULL:
        for o in range(n_out):
            acc[o] = 0.0
    else:
        for o in range(n_out):
            acc[o] = <double>start[o]
    for t in range(n_idx):
        col = wt + idx[t] * n_out
        for o in range(n_out):
            acc[o] = acc[o] + <double>col[o]
    for o in range(n_out):
        dst[o] = <float>acc[o]


cdef inline Py_ssize_t _active(const float* spikes, Py_ssize_t n, Py_ssize_t offset,
                               Py_ssize_t* idx) noexcept nogil:
    """Append offset + i for every spike (1.0) in spikes (n,) to idx; returns how many."""
    cdef Py_ssize_t i
    cdef Py_ssize_t c = 0
    for i in range(n):
        if spikes[i] != 0.0:
            idx[c] = offset + i
            c += 1
    return c


cdef void _sample(const Net* net, Stream* s, const float* x, float* y, float* hidden) noexcept nogil:
    """One sample x (n_in,) of one stream -> output spikes y (n_o,), and s_h into hidden if not NULL."""
    cdef Py_ssize_t k, n_xh, n_v, n_row, act_x, act_m, act_h
    cdef Py_ssize_t d = net.d
    cdef Py_ssize_t off_h = net.n_x
    cdef Py_ssize_t off_m = net.n_x + net.n_h
    cdef Py_ssize_t* idx = s.idx
    cdef Py_ssize_t* ridx = s.idx + net.n_v
    cdef float* row
    cdef int64_t columns, synops, act_u = 0, act_o = 0

    # input module; then the active inputs of the u current: x, h' and m' (stacked indices into v)
    lif_encoder_row(s.mem_x, x, s.s_x, net.gain, net.bias, net.beta_x, net.thr_x, net.n_in, net.enc,
                    RESET_SUBTRACT)
    act_x = _active(s.s_x, net.n_x, 0, idx)
    n_xh = act_x + _active(s.s_h, net.n_h, off_h, idx + act_x)
    n_v = n_xh + _active(s.s_m, net.n_m, off_m, idx + n_xh)
    _gather(s.acc, NULL, net.ut, net.n_u, idx, n_v, s.s_u)
    lif_row(s.mem_u, s.s_u, s.s_u, net.beta_u, net.thr_u, net.n_u, RESET_SUBTRACT)
    columns = n_v
    synops = n_v * net.n_u

    # memory rows: row k's active columns of the applied matrix, then B_bar (column d) if s_u[k];
    # the current overwrites s_m' row k once its index list is built, then lif_row spikes in place
    for k in range(net.n_u):
        row = s.s_m + k * d
        n_row = _active(row, d, 0, ridx)
        if s.s_u[k] != 0.0:
            ridx[n_row] = d
            n_row += 1
            act_u += 1
        _gather(s.acc, NULL, net.mt, d, ridx, n_row, row)
        columns += n_row
        synops += n_row * d
    lif_row(s.mem_m, s.s_m, s.s_m, net.beta_m, net.thr_m, net.n_m, RESET_SUBTRACT)

    # hidden: x and h' actives as for u, then the new memory spikes
    act_m = _active(s.s_m, net.n_m, off_m, idx + n_xh)
    n_v = n_xh + act_m
    _gather(s.acc, NULL, net.ht, net.n_h, idx, n_v, s.s_h)
    lif_row(s.mem_h, s.s_h, s.s_h, net.beta_h, net.thr_h, net.n_h, RESET_SUBTRACT)
    columns += n_v
    synops += n_v * net.n_h

    # output, straight into y
    act_h = _active(s.s_h, net.n_h, 0, idx)
    _gather(s.acc, net.b_o, net.ot, net.n_o, idx, act_h, y)
    lif_row(s.mem_o, y, y, net.beta_o, net.thr_o, net.n_o, RESET_SUBTRACT)
    columns += act_h
    synops += act_h * net.n_o
    for k in range(net.n_o):
        act_o += <int64_t>(y[k] != 0.0)
    if hidden != NULL:
        memcpy(hidden, s.s_h, net.n_h * sizeof(float))

    s.counters[0] += 1
    s.counters[1] += act_x
    s.counters[2] += act_u
    s.counters[3] += act_m
    s.counters[4] += act_h
    s.counters[5] += act_o
    s.counters[6] += columns
    s.counters[7] += synops


cdef void _chunk(const Net* net, Stream* s, const float* x, float* y, float* hidden,
                 Py_ssize_t n_samples) noexcept nogil:
    cdef Py_ssize_t _t
    for _t in range(n_samples):
        _sample(net, s, x, y, hidden)
        x += net.n_in
        y += net.n_o
        if hidden != NULL:
            hidden += net.n_h


# --- the kernel ----------------------------------------------------------------------------------

@cython.final
cdef class L2MUCell:
    """The L2MU cell: an LMU whose input module, u, memory, hidden and output parts are LIF populations.

    Per sample x (n_inputs,), every population an snnTorch `Leaky` (reset by subtraction, strict
    threshold), ' marking the previous sample's spikes:

        s_x = lif_x(x * enc_w + enc_b)                     n_inputs * enc neurons, channel-major
        s_u = lif_u(e_x s_x + e_h s_h' + e_m s_m')         memory neurons
        s_m[k, :] = lif_m(A s_m'[k, :] + B_bar s_u[k])     memory * order neurons, row k of s_m
        s_h = lif_h(W_x s_x + W_h s_h' + W_m s_m)          hidden neurons (the new s_m)
        s_o = lif_o(W_o s_h + b_o)                         n_outputs neurons: the output spikes

    with A = A_bar (memory_convention "A") or A_barᵀ ("AT"). This is tools/l2mu_torch.py's forward,
    and the arrays are its export(): pass a model file's arrays by keyword, or use
    spikeline.kernels.l2mu.load_l2mu. Every current is summed in float64 and rounded to float32 once.
    """

    cdef object _p                 # spikeline.kernels.ref_l2mu.L2MUParams: the checked arrays, kept alive
    cdef cnp.ndarray _state        # (n_streams, n_state) float32: [mem_x|mem_u|mem_m|mem_h|mem_o|s_h|s_m]
    cdef cnp.ndarray _scratch      # (n_streams, n_x + n_u) float32: s_x, s_u
    cdef cnp.ndarray _acc          # (n_streams, n_acc) float64
    cdef cnp.ndarray _idx          # (n_streams, n_v + d + 1) intp
    cdef cnp.ndarray _counters     # (n_streams, N_COUNTERS) int64
    cdef float* _state_p
    cdef float* _scratch_p
    cdef double* _acc_p
    cdef Py_ssize_t* _idx_p
    cdef int64_t* _counters_p
    cdef Net _net
    cdef Py_ssize_t _n_streams, _n_state, _n_acc, _n_idx
    cdef dict _offsets             # state key -> (start, stop) in a state row
    cdef str _desc_step, _desc_streams
    cdef Py_ssize_t _dense_columns, _dense_synops

    def __cinit__(self, *, memory_convention="A", n_streams=1, **arrays):
        missing_arrays(arrays)
        p = l2mu_params(arrays, memory_convention, n_streams)
        self._p = p
        cdef Net* net = &self._net
        net.n_in, net.enc, net.n_x = p.n_inputs, p.enc, p.sizes["x"]
        net.n_u, net.d, net.n_m = p.memory, p.order, p.sizes["m"]
        net.n_h, net.n_o = p.hidden, p.n_outputs
        net.n_v = net.n_x + net.n_h + net.n_m
        net.gain, net.bias = _cdata(p.gain), _cdata(p.bias)
        net.ut, net.mt, net.ht = _cdata(p.ut), _cdata(p.mt), _cdata(p.ht)
        net.ot, net.b_o = _cdata(p.ot), _cdata(p.b_o)
        net.beta_x, net.thr_x = _cdata(p.beta[0]), _cdata(p.threshold[0])
        net.beta_u, net.thr_u = _cdata(p.beta[1]), _cdata(p.threshold[1])
        net.beta_m, net.thr_m = _cdata(p.beta[2]), _cdata(p.threshold[2])
        net.beta_h, net.thr_h = _cdata(p.beta[3]), _cdata(p.threshold[3])
        net.beta_o, net.thr_o = _cdata(p.beta[4]), _cdata(p.threshold[4])
        self._n_streams = p.n_streams
        self._offsets = {}
        start = 0
        for key, size in zip(STATE_KEYS, [p.sizes[q] for q in POPULATIONS] + [p.hidden, p.sizes["m"]]):
            self._offsets[key] = (start, start + size)
            start += size
        self._n_state = start
        self._n_acc = max(net.n_u, net.d, net.n_h, net.n_o)
        self._n_idx = net.n_v + net.d + 1
        self._state = np.zeros((p.n_streams, self._n_state), np.float32)
        self._scratch = np.zeros((p.n_streams, net.n_x + net.n_u), np.float32)
        self._acc = np.zeros((p.n_streams, self._n_acc), np.float64)
        self._idx = np.zeros((p.n_streams, self._n_idx), np.intp)
        self._counters = np.zeros((p.n_streams, N_COUNTERS), np.int64)
        self._state_p = <float*>cnp.PyArray_DATA(self._state)
        self._scratch_p = <float*>cnp.PyArray_DATA(self._scratch)
        self._acc_p = <double*>cnp.PyArray_DATA(self._acc)
        self._idx_p = <Py_ssize_t*>cnp.PyArray_DATA(self._idx)
        self._counters_p = <int64_t*>cnp.PyArray_DATA(self._counters)
        assert len(COUNTER_NAMES) == N_COUNTERS
        self._desc_step = f"(n_samples, {p.n_inputs})"
        self._desc_streams = f"(n_streams={p.n_streams}, n_inputs={p.n_inputs})"
        self._dense_columns = 2 * net.n_v + net.n_u * (net.d + 1) + net.n_h
        self._dense_synops = (net.n_v * (net.n_u + net.n_h) + net.n_u * (net.d + 1) * net.d
                              + net.n_h * net.n_o)

    cdef Stream _stream(self, Py_ssize_t k) noexcept nogil:
        """Pointers into stream k's rows (k already checked)."""
        cdef Stream s
        cdef float* st = self._state_p + k * self._n_state
        cdef float* sc = self._scratch_p + k * (self._net.n_x + self._net.n_u)
        s.mem_x = st
        s.mem_u = s.mem_x + self._net.n_x
        s.mem_m = s.mem_u + self._net.n_u
        s.mem_h = s.mem_m + self._net.n_m
        s.mem_o = s.mem_h + self._net.n_h
        s.s_h = s.mem_o + self._net.n_o
        s.s_m = s.s_h + self._net.n_h
        s.s_x = sc
        s.s_u = sc + self._net.n_x
        s.acc = self._acc_p + k * self._n_acc
        s.idx = self._idx_p + k * self._n_idx
        s.counters = self._counters_p + k * N_COUNTERS
        return s

    cdef tuple _outputs(self, cnp.ndarray xa, object out, object hidden_out):
        cdef cnp.ndarray oa = _output(out, "out", xa, self._net.n_o, False)
        cdef cnp.ndarray ha = None
        if hidden_out is not None:
            ha = _output(hidden_out, "hidden_out", xa, self._net.n_h, False)
            _disjoint(oa, "out", ha, "hidden_out")
        return oa, ha

    def step(self, x, out=None, Py_ssize_t stream=0, hidden_out=None):
        """Run stream `stream` over x (n_samples, n_inputs); returns the output spikes (n_samples, n_outputs).

        hidden_out, if given, receives the hidden spikes s_h (n_samples, hidden). Neither output may
        overlap x or the other.
        """
        cdef cnp.ndarray xa = _input(x, self._net.n_in, -1, self._desc_step)
        cdef cnp.ndarray oa, ha
        oa, ha = self._outputs(xa, out, hidden_out)
        if stream < 0 or stream >= self._n_streams:
            raise ValueError(f"stream must be in [0, {self._n_streams}), got {stream}")
        cdef Stream s = self._stream(stream)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* hp = NULL if ha is None else <float*>cnp.PyArray_DATA(ha)
        cdef Py_ssize_t n = cnp.PyArray_DIM(xa, 0)
        with nogil:
            _chunk(&self._net, &s, xp, yp, hp, n)
        return oa

    def step_streams(self, x, out=None, hidden_out=None, streams=None):
        """Advance every stream by one sample: x (n_streams, n_inputs), row k for stream k.

        streams (distinct indices, any order, m >= 0 of them): advance only those streams (state
        and counters); x, out and hidden_out are (m, ...), row j for stream streams[j]. The same as
        step(x[j:j+1], stream=streams[j]) for each j; every argument is checked before any state
        changes (an index out of range or repeated is a ValueError).
        """
        cdef cnp.ndarray xa, oa, ha, sa
        cdef Py_ssize_t m = self._n_streams
        cdef const Py_ssize_t* sp = NULL
        if streams is None:
            xa = _input(x, self._net.n_in, self._n_streams, self._desc_streams)
        else:
            # a fresh intp copy (the loop below reads it without the GIL), checked in range and distinct
            sa = streams_arg(streams, self._n_streams)
            m = cnp.PyArray_DIM(sa, 0)
            xa = _input(x, self._net.n_in, m, f"(len(streams)={m}, n_inputs={self._net.n_in})")
            sp = <const Py_ssize_t*>cnp.PyArray_DATA(sa)
        oa, ha = self._outputs(xa, out, hidden_out)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(xa)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef float* hp = NULL if ha is None else <float*>cnp.PyArray_DATA(ha)
        cdef Py_ssize_t j
        cdef Stream s
        with nogil:
            for j in range(m):
                s = self._stream(j if sp == NULL else sp[j])
                _sample(&self._net, &s, xp + j * self._net.n_in, yp + j * self._net.n_o,
                        NULL if hp == NULL else hp + j * self._net.n_h)
        return oa

    def reset(self, stream=-1):
        """Zero the membranes and the fed-back spikes of one stream, or of every stream (-1)."""
        k = stream_arg(stream, self._n_streams)
        if k == -1:
            self._state.fill(0.0)
        else:
            self._state[k] = 0.0

    def reset_counters(self, stream=-1):
        """Zero the counters of one stream, or of every stream (-1). reset() leaves them alone."""
        k = stream_arg(stream, self._n_streams)
        if k == -1:
            self._counters.fill(0)
        else:
            self._counters[k] = 0

    @property
    def state(self):
        """Copies of the state by name, float32, each with a leading stream dimension:
        mem_x, mem_u, mem_m, mem_h, mem_o (the membranes, (n_streams, size of the population)) and
        s_h (n_streams, hidden), s_m (n_streams, memory * order): the previous sample's hidden and
        memory spikes, which the next sample's currents read. s_m is memory-major (row k, column i
        at k * order + i), as are mem_m and the model's beta_m."""
        return {key: self._state[:, a:b].copy() for key, (a, b) in self._offsets.items()}

    @state.setter
    def state(self, value):
        shapes = {key: (self._n_streams, b - a) for key, (a, b) in self._offsets.items()}
        checked = state_arrays(value, shapes)
        for key, (a, b) in self._offsets.items():
            self._state[:, a:b] = checked[key]

    @property
    def counters(self):
        """Copies of the per-stream counters, int64 (n_streams,) each, since construction or reset_counters().

        steps: samples stepped. active_x ... active_o: spikes emitted by each population. columns:
        weight columns gathered (each active input of each current, B_bar included), synops: the
        additions they cost (a column of the u current is `memory` long, of h `hidden`, ...). A dense
        product would read `dense_columns` columns and do `dense_synops` additions per step: the
        ratio is the work the spike sparsity saves.
        """
        return {name: self._counters[:, i].copy() for i, name in enumerate(COUNTER_NAMES)}

    @property
    def dense_columns(self):
        """Weight columns per step of the dense products (u, memory rows with B_bar, h, o)."""
        return self._dense_columns

    @property
    def dense_synops(self):
        """Additions per step of the dense products."""
        return self._dense_synops

    @property
    def n_inputs(self):
        return self._p.n_inputs

    @property
    def enc(self):
        return self._p.enc

    @property
    def memory(self):
        return self._p.memory

    @property
    def order(self):
        return self._p.order

    @property
    def hidden(self):
        return self._p.hidden

    @property
    def n_outputs(self):
        return self._p.n_outputs

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def memory_convention(self):
        return self._p.memory_convention

    @property
    def sizes(self):
        """Neurons per population: x (n_inputs * enc), u (memory), m (memory * order), h, o."""
        return dict(self._p.sizes)

    @property
    def arrays(self):
        """Copies of the arrays the cell was built from, by model-file name.

        float32; beta clamped to [0, 1]; scalar beta/threshold expanded to one per neuron.
        """
        return {k: v.copy() for k, v in self._p.arrays.items()}
