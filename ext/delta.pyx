# Delta-activation layers (Neil et al. 2017 "Delta Networks"; Gao et al. 2018 "DeltaRNN"; EdgeDRNN):
# spikeline._ext.delta: DeltaDense, DeltaGRU, DeltaLSTM. Work is proportional to how much the
# signal changes: only input (and hidden) components that moved by more than a threshold are sent,
# and only their weight columns are added to persistent accumulators.
#
# Why the kernels are shaped this way:
# - Delta coding. Per component, d = x - x_hat (float32). The delta is SENT iff Theta < |d| < inf,
#   i.e. it is zeroed where |d| <= Theta: the strict ">" of Neil et al. 2017 and Gao et al. 2018.
#   With ">", Theta = 0 is lossless AND skips exact repeats for free (an unchanged component costs
#   nothing, and x_hat == x still holds). Where a delta is sent, x_hat = x (assigned, not x_hat + d,
#   so x_hat never drifts). A NaN or infinite delta (NaN or +-inf input, or a difference of finite
#   inputs that overflows float32) is never sent: the component holds its last sent value, and the
#   `held_nonfinite` counter counts it. A dropout (NaN) in one channel thus never poisons the
#   persistent accumulators or the recurrent state. Thresholds are float32 (-0.0 is taken as +0.0).
# - Persistent accumulators. acc starts at the bias and acc += W[:, i] * d_i for each sent delta, so
#   acc == b + W x_hat up to float32 rounding. Weights are stored TRANSPOSED, (n_in, n_out)
#   C-contiguous: the column W[:, i] is a contiguous row, and an update is an axpy over it, done four
#   columns per pass (_axpy4: a quarter of the loads and stores of acc, and per output still the same
#   roundings in the same order as one column at a time).
# - Two paths, chosen per step by the number of sent deltas nnz: a sparse gather over the sent
#   columns (nnz <= dense_min) or a dense pass over all n_in columns that adds d_i = 0 for the unsent
#   ones (nnz > dense_min = floor(dense_above * n_in)). Both perform, for every output j, the float32
#   operations acc[j] = acc[j] + W[i, j] * d_i in increasing i; the dense pass only inserts extra
#   additions of W[i, j] * 0 = +-0, and acc + (+-0) == acc bit for bit for every acc except -0
#   (-0 + +0 = +0). acc is never -0: it starts at b + 0.0f (which maps -0 to +0, as the state setter
#   does), and in round-to-nearest a sum is -0 only if both terms are. With finite weights (the
#   constructor refuses others) the paths are therefore bit-identical and the choice is only about
#   speed: the dense pass saves the index indirection and wins above ~87 % active inputs on x86
#   (tools/bench_delta.py "crossover"), hence DEFAULT_DENSE_ABOVE = 0.875.
# - float32 drift. acc is a running float32 sum over the whole stream: its rounding errors grow like
#   a random walk. Every `refresh_every` samples of a stream (counted on the stream's own sample
#   index t, so the result does not depend on how the stream is chunked) the accumulators are
#   recomputed: acc = b + 0.0f, then the dense pass with d = x_hat. tests/test_delta.py states the
#   bounds (e.g. 2.1e-5 vs 4.9e-5 without refresh over 100k samples of a unit-scale random walk).
#   The recurrent state h itself is not refreshed: a NaN h (possible only after an accumulator
#   overflowed on absurd inputs) stays until reset() or a state assignment.
# - Activations use + - * / only: tanh by a [13/6] rational minimax approximation (the coefficients
#   of Eigen's generic_fast_tanh_float, input clamped to +-7.90531, |x| < 4e-4 -> x), sigmoid(x) =
#   0.5 * tanh(0.5 x) + 0.5. Against float64 over every finite float32: |tanh error| <= 4.1e-7,
#   |sigmoid error| <= 2.3e-7. libm's tanhf/expf and numpy's SIMD (SVML) float32 functions differ
#   in the last bit; with basic operations only, the numpy reference (spikeline.kernels.ref_delta)
#   is bit-identical to this file.
# - Vectorisation without -ffast-math: GCC does not if-convert selects on float compares under its
#   default -ftrapping-math, so the threshold test and the tanh clamp are decided on bit patterns
#   with integer masks (same predicates as the reference's float compares; see _encode and _tanh),
#   and the per-element loops take restrict pointers (spk_f32_in/out). The gate loops and axpys
#   then vectorise (SSE2 baseline; SPIKELINE_MARCH_NATIVE=1 is ~25 % faster, still bit-identical).
# - setup.py compiles with -ffp-contract=off: no fused multiply-adds, every operation is one IEEE
#   float32 operation in the order written here, which the reference reproduces.
# - DeltaGRU is torch.nn.GRUCell (gate order r, z, n; weights in torch's layout on input): gi =
#   W_ih x + b_ih and gh = W_hh h + b_hh are SEPARATE accumulators acc_x (3H) and acc_h (3H),
#   because n = tanh(gi_n + r * gh_n) needs the hidden part of the n gate on its own; r =
#   sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), h' = n + z * (h - n) (= (1 - z) n + z h, in
#   the form torch's kernel computes). DeltaLSTM is torch.nn.LSTMCell (i, f, g, o; c' = f c + i g,
#   h' = o tanh(c')). The hidden delta of a step is h_{t-1} - h_hat; the update uses the true h.
# - Validation happens once per call in a thin def, with the NumPy C API (raw pointers, as in
#   sosfilt.pyx: memoryview acquisition costs more than a small step), then the GIL is released once
#   around a noexcept nogil loop that never allocates: per-stream scratch (deltas, active indices)
#   is allocated in the constructor. step_streams(x, streams=...) advances a subset of the streams
#   (distinct indices, any order: gateway mode) in one such loop; the subset is checked and copied
#   by ref_delta.streams_arg first, and each stream's t (its refresh schedule) and counters advance
#   only when it steps, so a subset call is exactly the per-stream step() calls.
#
# Threading: calls on distinct streams may run concurrently (each stream has its own state, scratch
# and counters); calls on the same stream, and reset/state assignment/reset_counters, must be
# serialised by the caller.

cimport cython
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint32_t, uintptr_t
from libc.string cimport memcpy


import numpy as np

# Python-level checks shared with the numpy reference, so both backends give the same errors.
from spikeline.kernels.ref_delta import (
    _bias,
    _counter_dict,
    _dense_min,
    _matrix,
    _positive,
    _set_state,
    _threshold,
    streams_arg,
)

cnp.import_array()

# Double literals, converted to float once (as np.float32(<python float>) does in the reference).
cdef extern from *:
    """
    static const float SPK_ZERO = 0.0;
    static const float SPK_HALF = 0.5;
    static const float SPK_TANH_CLAMP = 7.90531110763549805;
    static const float SPK_TANH_TINY = 0.0004;
    static const float SPK_TANH_A1 = 4.89352455891786e-03;
    static const float SPK_TANH_A3 = 6.37261928875436e-04;
    static const float SPK_TANH_A5 = 1.48572235717979e-05;
    static const float SPK_TANH_A7 = 5.12229709037114e-08;
    static const float SPK_TANH_A9 = -8.60467152213735e-11;
    static const float SPK_TANH_A11 = 2.00018790482477e-13;
    static const float SPK_TANH_A13 = -2.76076847742355e-16;
    static const float SPK_TANH_B0 = 4.89352518554385e-03;
    static const float SPK_TANH_B2 = 2.26843463243900e-03;
    static const float SPK_TANH_B4 = 1.18534705686654e-04;
    static const float SPK_TANH_B6 = 1.19825839466702e-06;
    /* Bit patterns of SPK_TANH_CLAMP, SPK_TANH_TINY and +inf (checked when the module is imported). */
    static const uint32_t SPK_TANH_CLAMP_BITS = 0x40fcf84fu;
    static const uint32_t SPK_TANH_TINY_BITS = 0x39d1b717u;
    static const uint32_t SPK_INF_BITS = 0x7f800000u;
    static const uint32_t SPK_SIGN_BIT = 0x80000000u;
    /* Restrict-qualified pointers for the per-element loops: the accumulators, the state rows and
       the output row never overlap (the state is private, out may not overlap x), and without the
       promise GCC gives up on the multi-array gate loops instead of vectorising them. */
    typedef float *__restrict spk_f32_out;
    typedef const float *__restrict spk_f32_in;
    """
    const float SPK_ZERO
    const float SPK_HALF
    const float SPK_TANH_CLAMP
    const float SPK_TANH_TINY
    const float SPK_TANH_A1
    const float SPK_TANH_A3
    const float SPK_TANH_A5
    const float SPK_TANH_A7
    const float SPK_TANH_A9
    const float SPK_TANH_A11
    const float SPK_TANH_A13
    const float SPK_TANH_B0
    const float SPK_TANH_B2
    const float SPK_TANH_B4
    const float SPK_TANH_B6
    const uint32_t SPK_TANH_CLAMP_BITS
    const uint32_t SPK_TANH_TINY_BITS
    const uint32_t SPK_INF_BITS
    const uint32_t SPK_SIGN_BIT
    ctypedef float* spk_f32_out
    ctypedef const float* spk_f32_in

# Defaults: DEFAULT_DENSE_ABOVE from tools/bench_delta.py's crossover, DEFAULT_REFRESH_EVERY from
# the drift measured in tests/test_delta.py (a refresh costs one dense pass per 1024 samples).
DEFAULT_REFRESH_EVERY = 1024
DEFAULT_DENSE_ABOVE = 0.875

ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")

# Per-stream counters: one int64 row per stream, these columns.
cdef enum:
    C_STEPS = 0
    C_X_SENT = 1
    C_X_POSSIBLE = 2
    C_H_SENT = 3
    C_H_POSSIBLE = 4
    C_HELD = 5
    C_MACS = 6
    C_MACS_DENSE = 7
    C_REFRESHES = 8
    C_DENSE_PASSES = 9
    N_COUNTERS = 10

_COUNTER_COLUMNS = {"steps": 0, "x_sent": 1, "x_possible": 2, "h_sent": 3, "h_possible": 4,
                    "held_nonfinite": 5, "macs": 6, "macs_dense": 7, "refreshes": 8, "dense_passes": 9}
_DENSE_COUNTERS = ("steps", "x_sent", "x_possible", "held_nonfinite", "macs", "macs_dense", "refreshes",
                   "dense_passes")
_RNN_COUNTERS = tuple(_COUNTER_COLUMNS)


# --- per-element maths ---------------------------------------------------------------------------

cdef inline uint32_t _bits(float x) noexcept nogil:
    cdef uint32_t u
    memcpy(&u, &x, 4)
    return u


cdef inline float _from_bits(uint32_t u) noexcept nogil:
    cdef float x
    memcpy(&x, &u, 4)
    return x


cdef inline float _tanh(float x) noexcept nogil:
    # The clamp to +-C and the |x| < tiny shortcut are decided on the bit pattern and blended with
    # integer masks. The plain form (float compares and selects, as in the numpy reference) is the
    # same function, but GCC does not if-convert float selects under its default -ftrapping-math,
    # which leaves every gate loop scalar (about 4x slower). For non-NaN x, |x| > C exactly when
    # bits(|x|) > bits(C) (non-negative IEEE floats are ordered like their bit patterns); NaN bit
    # patterns lie above +inf, so a NaN is neither clamped nor tiny and comes out as NaN.
    cdef uint32_t u = _bits(x)
    cdef uint32_t a = u & ~SPK_SIGN_BIT
    cdef uint32_t m = 0u - <uint32_t>((a > SPK_TANH_CLAMP_BITS) & (a <= SPK_INF_BITS))
    cdef float c = _from_bits(((SPK_TANH_CLAMP_BITS | (u & SPK_SIGN_BIT)) & m) | (u & ~m))
    cdef float x2, p, q
    x2 = c * c
    p = x2 * SPK_TANH_A13 + SPK_TANH_A11
    p = x2 * p + SPK_TANH_A9
    p = x2 * p + SPK_TANH_A7
    p = x2 * p + SPK_TANH_A5
    p = x2 * p + SPK_TANH_A3
    p = x2 * p + SPK_TANH_A1
    p = c * p
    q = x2 * SPK_TANH_B6 + SPK_TANH_B4
    q = x2 * q + SPK_TANH_B2
    q = x2 * q + SPK_TANH_B0
    m = 0u - <uint32_t>(a < SPK_TANH_TINY_BITS)
    return _from_bits((u & m) | (_bits(p / q) & ~m))


cdef inline float _sigmoid(float x) noexcept nogil:
    return SPK_HALF * _tanh(SPK_HALF * x) + SPK_HALF


if (_bits(SPK_TANH_CLAMP) != SPK_TANH_CLAMP_BITS or _bits(SPK_TANH_TINY) != SPK_TANH_TINY_BITS
        or _bits(np.float32(np.inf)) != SPK_INF_BITS):
    raise ImportError("spikeline._ext.delta: the tanh constants' bit patterns do not match their values")


cdef void _activate(spk_f32_in acc, spk_f32_out y, Py_ssize_t n, int act) noexcept nogil:
    """y = act(acc): 0 none, 1 relu (x < 0 -> 0, NaN passes), 2 tanh, 3 sigmoid."""
    cdef Py_ssize_t j
    cdef float v
    if act == 0:
        for j in range(n):
            y[j] = acc[j]
    elif act == 1:
        for j in range(n):
            v = acc[j]
            y[j] = SPK_ZERO if v < SPK_ZERO else v
    elif act == 2:
        for j in range(n):
            y[j] = _tanh(acc[j])
    else:
        for j in range(n):
            y[j] = _sigmoid(acc[j])


# --- delta coding and accumulation -----------------------------------------------------------------

ctypedef struct Layer:
    const float* wt        # (n_in, n_out) C-contiguous: W transposed, column W[:, i] is row i
    const float* bias      # (n_out,), no negative zeros
    Py_ssize_t n_in
    Py_ssize_t n_out
    Py_ssize_t dense_min   # the dense pass runs when nnz > dense_min
    float theta


cdef inline Py_ssize_t _encode(const float* x, float* xhat, float* d, int32_t* idx, Py_ssize_t n,
                               float theta, int64_t* held) noexcept nogil:
    """Delta-code x against xhat; return nnz. d[i] = sent delta or +0, idx[:nnz] = sent i (increasing).

    Sent iff theta < |d| < inf, decided on bit patterns without branches (a data-dependent branch
    per component mispredicts at intermediate sparsity): for |d| >= 0 and theta >= +0, |d| > theta
    exactly when bits(|d|) > bits(theta), and |d| < inf exactly when bits(|d|) < bits(inf) (NaN
    patterns lie above inf). The index is stored unconditionally and nnz advances by the mask.
    """
    cdef Py_ssize_t i
    cdef Py_ssize_t nnz = 0
    cdef uint32_t tb = _bits(theta)
    cdef uint32_t db, a, send, m
    cdef int64_t nonfinite = 0
    for i in range(n):
        db = _bits(x[i] - xhat[i])
        a = db & ~SPK_SIGN_BIT
        send = <uint32_t>((a > tb) & (a < SPK_INF_BITS))
        m = 0u - send
        xhat[i] = _from_bits((_bits(x[i]) & m) | (_bits(xhat[i]) & ~m))
        d[i] = _from_bits(db & m)
        idx[nnz] = <int32_t>i
        nnz += send
        nonfinite += a >= SPK_INF_BITS
    held[0] += nonfinite
    return nnz


cdef inline void _axpy(spk_f32_out acc, spk_f32_in w, float dv, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        acc[j] = acc[j] + w[j] * dv


cdef inline void _axpy4(spk_f32_out acc, spk_f32_in w0, spk_f32_in w1, spk_f32_in w2, spk_f32_in w3, float d0,
                        float d1, float d2, float d3, Py_ssize_t n) noexcept nogil:
    """Four columns in one pass: per output, the same four roundings in the same order as four
    _axpy calls, with a quarter of the loads and stores of acc."""
    cdef Py_ssize_t j
    for j in range(n):
        acc[j] = (((acc[j] + w0[j] * d0) + w1[j] * d1) + w2[j] * d2) + w3[j] * d3


cdef void _accumulate_dense(float* acc, const float* wt, const float* d, Py_ssize_t n_in,
                            Py_ssize_t n_out) noexcept nogil:
    """acc[j] += wt[i, j] * d[i] for every i in increasing order (zeros included)."""
    cdef Py_ssize_t i = 0
    while i + 4 <= n_in:
        _axpy4(acc, wt + i * n_out, wt + (i + 1) * n_out, wt + (i + 2) * n_out, wt + (i + 3) * n_out,
               d[i], d[i + 1], d[i + 2], d[i + 3], n_out)
        i += 4
    while i < n_in:
        _axpy(acc, wt + i * n_out, d[i], n_out)
        i += 1


cdef void _accumulate_sparse(float* acc, const float* wt, const float* d, const int32_t* idx,
                             Py_ssize_t nnz, Py_ssize_t n_out) noexcept nogil:
    """acc[j] += wt[i, j] * d[i] for i = idx[0], idx[1], ... (increasing)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t i0, i1, i2, i3
    while k + 4 <= nnz:
        i0 = idx[k]
        i1 = idx[k + 1]
        i2 = idx[k + 2]
        i3 = idx[k + 3]
        _axpy4(acc, wt + i0 * n_out, wt + i1 * n_out, wt + i2 * n_out, wt + i3 * n_out,
               d[i0], d[i1], d[i2], d[i3], n_out)
        k += 4
    while k < nnz:
        i0 = idx[k]
        _axpy(acc, wt + i0 * n_out, d[i0], n_out)
        k += 1


cdef inline int64_t _update(const Layer* L, float* acc, const float* d, const int32_t* idx, Py_ssize_t nnz,
                            int64_t* cnt) noexcept nogil:
    """Add the sent deltas to acc by the cheaper path; return the multiply-accumulates done."""
    if nnz == 0:
        return 0
    if nnz > L.dense_min:
        _accumulate_dense(acc, L.wt, d, L.n_in, L.n_out)
        cnt[C_DENSE_PASSES] += 1
        return L.n_in * L.n_out
    _accumulate_sparse(acc, L.wt, d, idx, nnz, L.n_out)
    return nnz * L.n_out


cdef inline int64_t _refresh(const Layer* L, float* acc, const float* xhat) noexcept nogil:
    """acc = b + W x_hat, recomputed from scratch in the fixed order; return the MACs."""
    cdef Py_ssize_t j
    for j in range(L.n_out):
        acc[j] = L.bias[j] + SPK_ZERO
    _accumulate_dense(acc, L.wt, xhat, L.n_in, L.n_out)
    return L.n_in * L.n_out


cdef inline bint _is_refresh(int64_t* t, Py_ssize_t refresh_every) noexcept nogil:
    """Advance the stream's sample index; True when this sample refreshes the accumulators."""
    t[0] += 1
    return refresh_every > 0 and t[0] % refresh_every == 0


# --- per-stream loops ------------------------------------------------------------------------------

cdef void _dense_run(const Layer* L, int act, Py_ssize_t refresh_every, const float* x, float* y,
                     Py_ssize_t n, float* xhat, float* acc, int64_t* t, int64_t* cnt, float* d,
                     int32_t* idx) noexcept nogil:
    """n samples of one DeltaDense stream: x (n, n_in) -> y (n, n_out)."""
    cdef Py_ssize_t _sample, nnz
    cdef Py_ssize_t n_in = L.n_in
    cdef Py_ssize_t n_out = L.n_out
    for _sample in range(n):
        nnz = _encode(x, xhat, d, idx, n_in, L.theta, &cnt[C_HELD])
        cnt[C_X_SENT] += nnz
        if _is_refresh(t, refresh_every):
            cnt[C_MACS] += _refresh(L, acc, xhat)
            cnt[C_REFRESHES] += 1
        else:
            cnt[C_MACS] += _update(L, acc, d, idx, nnz, cnt)
        _activate(acc, y, n_out, act)
        x += n_in
        y += n_out
    cnt[C_STEPS] += n
    cnt[C_X_POSSIBLE] += n * n_in
    cnt[C_MACS_DENSE] += n * n_in * n_out


ctypedef struct RNNStream:
    float* xhat     # (n_in,)
    float* h        # (H,)
    float* hhat     # (H,)
    float* c        # (H,), LSTM only
    float* acc_x    # (G*H,) = b_ih + W_ih x_hat
    float* acc_h    # (G*H,) = b_hh + W_hh h_hat
    int64_t* t
    int64_t* cnt
    float* dx       # scratch (n_in,)
    int32_t* ix     # scratch (n_in,)
    float* dh       # scratch (H,)
    int32_t* ih     # scratch (H,)


cdef inline void _rnn_stream_at(const RNNStream* base, RNNStream* st, Py_ssize_t k, Py_ssize_t n_in,
                                Py_ssize_t H, Py_ssize_t GH) noexcept nogil:
    """st = stream k's rows, from stream 0's (base)."""
    st.xhat = base.xhat + k * n_in
    st.h = base.h + k * H
    st.hhat = base.hhat + k * H
    st.c = base.c + k * H
    st.acc_x = base.acc_x + k * GH
    st.acc_h = base.acc_h + k * GH
    st.t = base.t + k
    st.cnt = base.cnt + k * N_COUNTERS
    st.dx = base.dx + k * n_in
    st.ix = base.ix + k * n_in
    st.dh = base.dh + k * H
    st.ih = base.ih + k * H


cdef void _gru_gates(spk_f32_in ax, spk_f32_in ah, spk_f32_out h, spk_f32_out y, Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef float r, z, nv, hv
    for j in range(H):
        r = _sigmoid(ax[j] + ah[j])
        z = _sigmoid(ax[H + j] + ah[H + j])
        nv = _tanh(ax[2 * H + j] + r * ah[2 * H + j])
        hv = nv + z * (h[j] - nv)
        h[j] = hv
        y[j] = hv


cdef void _lstm_gates(spk_f32_in ax, spk_f32_in ah, spk_f32_out h, spk_f32_out c, spk_f32_out y,
                      Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef float ig, fg, gg, og, cv, hv
    for j in range(H):
        ig = _sigmoid(ax[j] + ah[j])
        fg = _sigmoid(ax[H + j] + ah[H + j])
        gg = _tanh(ax[2 * H + j] + ah[2 * H + j])
        og = _sigmoid(ax[3 * H + j] + ah[3 * H + j])
        cv = fg * c[j] + ig * gg
        hv = og * _tanh(cv)
        c[j] = cv
        h[j] = hv
        y[j] = hv


cdef void _rnn_run(bint lstm, const Layer* Lx, const Layer* Lh, Py_ssize_t refresh_every, const float* x,
                   float* y, Py_ssize_t n, RNNStream* st) noexcept nogil:
    """n samples of one DeltaGRU/DeltaLSTM stream: x (n, n_in) -> y (n, H)."""
    cdef Py_ssize_t _sample, nx, nh
    cdef Py_ssize_t n_in = Lx.n_in
    cdef Py_ssize_t H = Lh.n_in
    cdef int64_t* cnt = st.cnt
    for _sample in range(n):
        nx = _encode(x, st.xhat, st.dx, st.ix, n_in, Lx.theta, &cnt[C_HELD])
        nh = _encode(st.h, st.hhat, st.dh, st.ih, H, Lh.theta, &cnt[C_HELD])
        cnt[C_X_SENT] += nx
        cnt[C_H_SENT] += nh
        if _is_refresh(st.t, refresh_every):
            cnt[C_MACS] += _refresh(Lx, st.acc_x, st.xhat) + _refresh(Lh, st.acc_h, st.hhat)
            cnt[C_REFRESHES] += 1
        else:
            cnt[C_MACS] += (_update(Lx, st.acc_x, st.dx, st.ix, nx, cnt)
                            + _update(Lh, st.acc_h, st.dh, st.ih, nh, cnt))
        if lstm:
            _lstm_gates(st.acc_x, st.acc_h, st.h, st.c, y, H)
        else:
            _gru_gates(st.acc_x, st.acc_h, st.h, y, H)
        x += n_in
        y += H
    cnt[C_STEPS] += n
    cnt[C_X_POSSIBLE] += n * n_in
    cnt[C_H_POSSIBLE] += n * H
    cnt[C_MACS_DENSE] += n * (n_in + H) * Lx.n_out


# --- validation helpers (Python level, once per call) ---------------------------------------------

cdef cnp.ndarray _checked_out(object x, object out, Py_ssize_t n_rows, Py_ssize_t n_in, Py_ssize_t n_out,
                              str x_desc, str out_desc):
    """Validate x (n_rows or any rows, n_in) float32 and out; return out, allocated if None."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    if cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(xa):
        raise TypeError(f"x must have dtype float32 in native byte order, got {x.dtype}")
    if cnp.PyArray_NDIM(xa) != 2:
        raise ValueError(f"x must be 2-D with shape {x_desc}, got shape {x.shape}")
    if cnp.PyArray_DIM(xa, 1) != n_in or (n_rows >= 0 and cnp.PyArray_DIM(xa, 0) != n_rows):
        raise ValueError(f"x must have shape {x_desc}, got {x.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(xa):
        raise ValueError("x must be C-contiguous; pass np.ascontiguousarray(x)")
    if not cnp.PyArray_ISALIGNED(xa):
        raise ValueError("x must be aligned; pass a copy, e.g. x.copy()")
    cdef cnp.npy_intp dims[2]
    dims[0] = cnp.PyArray_DIM(xa, 0)
    dims[1] = n_out
    if out is None:
        return cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT, 0)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    cdef cnp.ndarray oa = <cnp.ndarray>out
    if cnp.PyArray_TYPE(oa) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(oa):
        raise TypeError(f"out must have dtype float32 in native byte order, got {out.dtype}")
    if cnp.PyArray_NDIM(oa) != 2 or cnp.PyArray_DIM(oa, 0) != dims[0] or cnp.PyArray_DIM(oa, 1) != n_out:
        raise ValueError(f"out must have shape {out_desc} = ({dims[0]}, {n_out}), got {out.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_ISALIGNED(oa) and cnp.PyArray_ISWRITEABLE(oa)):
        raise ValueError("out must be C-contiguous, aligned and writeable")
    # Row s of x is read completely before row s of out is written, so out may be x itself when the
    # rows have the same length; any other overlap would read overwritten samples.
    cdef uintptr_t xs = <uintptr_t>cnp.PyArray_DATA(xa)
    cdef uintptr_t os = <uintptr_t>cnp.PyArray_DATA(oa)
    cdef uintptr_t xn = <uintptr_t>cnp.PyArray_NBYTES(xa)
    cdef uintptr_t on = <uintptr_t>cnp.PyArray_NBYTES(oa)
    if not (xs == os and n_in == n_out) and xs < os + on and os < xs + xn:
        raise ValueError("out must be x itself (in-place, same shape) or must not overlap x")
    return oa


cdef Py_ssize_t _checked_stream(Py_ssize_t stream, Py_ssize_t n_streams) except -1:
    if stream < 0 or stream >= n_streams:
        raise ValueError(f"stream must be in [0, {n_streams}), got {stream}")
    return stream


# --- DeltaDense -------------------------------------------------------------------------------------

@cython.final
cdef class DeltaDense:
    """y = act(W x + b), computed incrementally from the input deltas, for n_streams streams.

    weight is (out_features, in_features) as in torch.nn.Linear (stored transposed), bias
    (out_features,) or None. theta: a delta is sent iff theta < |x - x_hat| < inf. refresh_every:
    recompute the accumulator exactly every that many samples of a stream (0: never). dense_above:
    take the dense pass when more than this fraction of the inputs sent a delta.
    activation: "none", "relu", "tanh" or "sigmoid".
    """

    cdef cnp.ndarray _wt, _b, _xhat, _acc, _t, _cnt, _d, _idx
    cdef Layer _layer
    cdef float* _xhat_p
    cdef float* _acc_p
    cdef int64_t* _t_p
    cdef int64_t* _cnt_p
    cdef float* _d_p
    cdef int32_t* _idx_p
    cdef Py_ssize_t _n_streams, _refresh_every, _n_in, _n_out
    cdef int _act
    cdef double _dense_above
    cdef str _x_desc, _out_desc, _xs_desc, _outs_desc

    # __cinit__, not __init__: the C pointers are set exactly once, before any method can run.
    def __cinit__(self, weight, bias=None, theta=0.0, n_streams=1, refresh_every=DEFAULT_REFRESH_EVERY,
                  dense_above=DEFAULT_DENSE_ABOVE, activation="none"):
        w = np.asarray(weight)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weight must have shape (out_features, in_features), both >= 1, got {w.shape}")
        n_out, n_in = w.shape
        w = _matrix(w, "weight", (n_out, n_in))
        b = _bias(bias, "bias", n_out)
        cdef float th = _threshold(theta, "theta")
        cdef Py_ssize_t ns = _positive(n_streams, "n_streams", 1)
        cdef Py_ssize_t re = _positive(refresh_every, "refresh_every", 0)
        cdef Py_ssize_t dmin = _dense_min(dense_above, n_in)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self._n_in, self._n_out, self._n_streams, self._refresh_every = n_in, n_out, ns, re
        self._act = ACTIVATIONS.index(activation)
        self._dense_above = float(dense_above)
        self._wt = np.ascontiguousarray(w.T)
        self._b = b
        self._xhat = np.zeros((ns, n_in), dtype=np.float32)
        self._acc = np.zeros((ns, n_out), dtype=np.float32)
        self._t = np.zeros(ns, dtype=np.int64)
        self._cnt = np.zeros((ns, N_COUNTERS), dtype=np.int64)
        self._d = np.zeros((ns, n_in), dtype=np.float32)
        self._idx = np.zeros((ns, n_in), dtype=np.int32)
        self._acc[...] = self._b
        self._layer.wt = <const float*>cnp.PyArray_DATA(self._wt)
        self._layer.bias = <const float*>cnp.PyArray_DATA(self._b)
        self._layer.n_in = n_in
        self._layer.n_out = n_out
        self._layer.dense_min = dmin
        self._layer.theta = th
        self._xhat_p = <float*>cnp.PyArray_DATA(self._xhat)
        self._acc_p = <float*>cnp.PyArray_DATA(self._acc)
        self._t_p = <int64_t*>cnp.PyArray_DATA(self._t)
        self._cnt_p = <int64_t*>cnp.PyArray_DATA(self._cnt)
        self._d_p = <float*>cnp.PyArray_DATA(self._d)
        self._idx_p = <int32_t*>cnp.PyArray_DATA(self._idx)
        self._x_desc = f"(n_samples, in_features={n_in})"
        self._out_desc = f"(n_samples, out_features={n_out})"
        self._xs_desc = f"(n_streams={ns}, in_features={n_in})"
        self._outs_desc = f"(n_streams={ns}, out_features={n_out})"

    def step(self, x, out=None, Py_ssize_t stream=0):
        """Process a chunk x (n_samples, in_features) float32 of one stream; returns y (n_samples,
        out_features)."""
        cdef cnp.ndarray oa = _checked_out(x, out, -1, self._n_in, self._n_out, self._x_desc, self._out_desc)
        cdef Py_ssize_t k = _checked_stream(stream, self._n_streams)
        cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef Py_ssize_t n_in = self._n_in
        cdef Py_ssize_t n_out = self._n_out
        with nogil:
            _dense_run(&self._layer, self._act, self._refresh_every, xp, yp, n,
                       self._xhat_p + k * n_in, self._acc_p + k * n_out, self._t_p + k,
                       self._cnt_p + k * N_COUNTERS, self._d_p + k * n_in, self._idx_p + k * n_in)
        return oa

    def step_streams(self, x, out=None, streams=None):
        """Advance every stream by one sample: x is (n_streams, in_features), row k for stream k.

        streams (distinct indices, any order, m >= 0 of them): advance only those; x and the result
        are (m, ...), row j for stream streams[j]. The same as step(x[j:j+1], stream=streams[j])
        for each j (streams are independent); every argument is checked before any state changes.
        """
        cdef cnp.ndarray oa, sa
        cdef Py_ssize_t m = self._n_streams
        cdef const Py_ssize_t* sp = NULL
        if streams is None:
            oa = _checked_out(x, out, self._n_streams, self._n_in, self._n_out, self._xs_desc,
                              self._outs_desc)
        else:
            sa = streams_arg(streams, self._n_streams)  # a fresh intp copy, in range and distinct
            m = cnp.PyArray_DIM(sa, 0)
            oa = _checked_out(x, out, m, self._n_in, self._n_out,
                              f"(len(streams)={m}, in_features={self._n_in})",
                              f"(len(streams)={m}, out_features={self._n_out})")
            sp = <const Py_ssize_t*>cnp.PyArray_DATA(sa)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef Py_ssize_t j, k
        cdef Py_ssize_t n_in = self._n_in
        cdef Py_ssize_t n_out = self._n_out
        with nogil:
            for j in range(m):
                k = j if sp == NULL else sp[j]
                _dense_run(&self._layer, self._act, self._refresh_every, xp + j * n_in, yp + j * n_out, 1,
                           self._xhat_p + k * n_in, self._acc_p + k * n_out, self._t_p + k,
                           self._cnt_p + k * N_COUNTERS, self._d_p + k * n_in, self._idx_p + k * n_in)
        return oa

    def reset(self):
        """Every stream back to the start: x_hat = 0, acc = bias, t = 0 (counters are kept)."""
        self._xhat.fill(0.0)
        self._acc[...] = self._b
        self._t.fill(0)

    @property
    def state(self):
        """A copy of the state: {"x_hat": (n_streams, in_features) float32, "acc": (n_streams,
        out_features) float32 (= bias + W x_hat up to rounding), "t": (n_streams,) int64 samples since
        reset}. Assign a dict with exactly these keys to restore it."""
        return {"x_hat": self._xhat.copy(), "acc": self._acc.copy(), "t": self._t.copy()}

    @state.setter
    def state(self, value):
        _set_state({"x_hat": self._xhat, "acc": self._acc, "t": self._t}, value)

    @property
    def counters(self):
        """Counters summed over the streams (see stream_counters)."""
        return _counter_dict(self._cnt, _DENSE_COUNTERS)

    def stream_counters(self, Py_ssize_t stream):
        """One stream's counters: steps, x_sent / x_possible (input deltas), held_nonfinite, macs
        (multiply-accumulates done, refreshes included) / macs_dense (a dense layer's), refreshes,
        dense_passes (updates that took the dense path)."""
        return _counter_dict(self._cnt[_checked_stream(stream, self._n_streams)], _DENSE_COUNTERS)

    def reset_counters(self):
        self._cnt.fill(0)

    @property
    def in_features(self):
        return self._n_in

    @property
    def out_features(self):
        return self._n_out

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def theta(self):
        return float(self._layer.theta)

    @property
    def refresh_every(self):
        return self._refresh_every

    @property
    def dense_above(self):
        return self._dense_above

    @property
    def activation(self):
        return ACTIVATIONS[self._act]

    @property
    def weight(self):
        """A copy of the (out_features, in_features) float32 weights."""
        return self._wt.T.copy()

    @property
    def bias(self):
        """A copy of the (out_features,) float32 bias."""
        return self._b.copy()


# --- DeltaGRU / DeltaLSTM ---------------------------------------------------------------------------

cdef class _DeltaRNN:
    """Shared machinery of DeltaGRU (G = 3 gates) and DeltaLSTM (G = 4); not public."""

    cdef cnp.ndarray _wih_t, _whh_t, _bih, _bhh
    cdef cnp.ndarray _xhat, _h, _hhat, _c, _acc_x, _acc_h, _t, _cnt, _dx, _ix, _dh, _ih
    cdef Layer _lx, _lh
    cdef bint _lstm
    cdef Py_ssize_t _n_streams, _refresh_every, _n_in, _hidden, _gates
    cdef double _dense_above
    cdef str _x_desc, _out_desc, _xs_desc, _outs_desc

    def __cinit__(self, *args, **kwargs):
        # Runs before the subclass's __cinit__, which sets everything up. The base alone would
        # have NULL pointers: refuse it.
        if type(self) is _DeltaRNN:
            raise TypeError("_DeltaRNN is an internal base class; use DeltaGRU or DeltaLSTM")

    cdef _setup(self, bint lstm, object input_size, object hidden_size, object weight_ih, object weight_hh,
                object bias_ih, object bias_hh, object theta_x, object theta_h, object n_streams,
                object refresh_every, object dense_above):
        cdef Py_ssize_t n_in = _positive(input_size, "input_size", 1)
        cdef Py_ssize_t H = _positive(hidden_size, "hidden_size", 1)
        cdef Py_ssize_t G = 4 if lstm else 3
        wih = _matrix(weight_ih, "weight_ih", (G * H, n_in))
        whh = _matrix(weight_hh, "weight_hh", (G * H, H))
        bih = _bias(bias_ih, "bias_ih", G * H)
        bhh = _bias(bias_hh, "bias_hh", G * H)
        cdef float thx = _threshold(theta_x, "theta_x")
        cdef float thh = _threshold(theta_h, "theta_h")
        cdef Py_ssize_t ns = _positive(n_streams, "n_streams", 1)
        cdef Py_ssize_t re = _positive(refresh_every, "refresh_every", 0)
        cdef Py_ssize_t dmin_x = _dense_min(dense_above, n_in)
        cdef Py_ssize_t dmin_h = _dense_min(dense_above, H)
        self._lstm = lstm
        self._n_in, self._hidden, self._gates, self._n_streams, self._refresh_every = n_in, H, G, ns, re
        self._dense_above = float(dense_above)
        self._wih_t = np.ascontiguousarray(wih.T)
        self._whh_t = np.ascontiguousarray(whh.T)
        self._bih = bih
        self._bhh = bhh
        self._xhat = np.zeros((ns, n_in), dtype=np.float32)
        self._h = np.zeros((ns, H), dtype=np.float32)
        self._hhat = np.zeros((ns, H), dtype=np.float32)
        self._c = np.zeros((ns, H), dtype=np.float32)
        self._acc_x = np.zeros((ns, G * H), dtype=np.float32)
        self._acc_h = np.zeros((ns, G * H), dtype=np.float32)
        self._acc_x[...] = bih
        self._acc_h[...] = bhh
        self._t = np.zeros(ns, dtype=np.int64)
        self._cnt = np.zeros((ns, N_COUNTERS), dtype=np.int64)
        self._dx = np.zeros((ns, n_in), dtype=np.float32)
        self._ix = np.zeros((ns, n_in), dtype=np.int32)
        self._dh = np.zeros((ns, H), dtype=np.float32)
        self._ih = np.zeros((ns, H), dtype=np.int32)
        self._lx.wt = <const float*>cnp.PyArray_DATA(self._wih_t)
        self._lx.bias = <const float*>cnp.PyArray_DATA(self._bih)
        self._lx.n_in = n_in
        self._lx.n_out = G * H
        self._lx.dense_min = dmin_x
        self._lx.theta = thx
        self._lh.wt = <const float*>cnp.PyArray_DATA(self._whh_t)
        self._lh.bias = <const float*>cnp.PyArray_DATA(self._bhh)
        self._lh.n_in = H
        self._lh.n_out = G * H
        self._lh.dense_min = dmin_h
        self._lh.theta = thh
        self._x_desc = f"(n_samples, input_size={n_in})"
        self._out_desc = f"(n_samples, hidden_size={H})"
        self._xs_desc = f"(n_streams={ns}, input_size={n_in})"
        self._outs_desc = f"(n_streams={ns}, hidden_size={H})"

    cdef RNNStream _stream(self, Py_ssize_t k) noexcept:
        cdef RNNStream st
        cdef Py_ssize_t n_in = self._n_in
        cdef Py_ssize_t H = self._hidden
        st.xhat = <float*>cnp.PyArray_DATA(self._xhat) + k * n_in
        st.h = <float*>cnp.PyArray_DATA(self._h) + k * H
        st.hhat = <float*>cnp.PyArray_DATA(self._hhat) + k * H
        st.c = <float*>cnp.PyArray_DATA(self._c) + k * H
        st.acc_x = <float*>cnp.PyArray_DATA(self._acc_x) + k * self._gates * H
        st.acc_h = <float*>cnp.PyArray_DATA(self._acc_h) + k * self._gates * H
        st.t = <int64_t*>cnp.PyArray_DATA(self._t) + k
        st.cnt = <int64_t*>cnp.PyArray_DATA(self._cnt) + k * N_COUNTERS
        st.dx = <float*>cnp.PyArray_DATA(self._dx) + k * n_in
        st.ix = <int32_t*>cnp.PyArray_DATA(self._ix) + k * n_in
        st.dh = <float*>cnp.PyArray_DATA(self._dh) + k * H
        st.ih = <int32_t*>cnp.PyArray_DATA(self._ih) + k * H
        return st

    def step(self, x, out=None, Py_ssize_t stream=0):
        """Process a chunk x (n_samples, input_size) float32 of one stream; returns h (n_samples,
        hidden_size)."""
        cdef cnp.ndarray oa = _checked_out(x, out, -1, self._n_in, self._hidden, self._x_desc, self._out_desc)
        cdef RNNStream st = self._stream(_checked_stream(stream, self._n_streams))
        cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        with nogil:
            _rnn_run(self._lstm, &self._lx, &self._lh, self._refresh_every, xp, yp, n, &st)
        return oa

    def step_streams(self, x, out=None, streams=None):
        """Advance every stream by one sample: x is (n_streams, input_size), row k for stream k; returns h.

        streams (distinct indices, any order, m >= 0 of them): advance only those; x and h are
        (m, ...), row j for stream streams[j]. The same as step(x[j:j+1], stream=streams[j]) for each
        j: each stream's sample index t (its refresh schedule) and counters advance only when it
        steps. Every argument is checked before any state changes.
        """
        cdef cnp.ndarray oa, sa
        cdef Py_ssize_t m = self._n_streams
        cdef const Py_ssize_t* sp = NULL
        if streams is None:
            oa = _checked_out(x, out, self._n_streams, self._n_in, self._hidden, self._xs_desc,
                              self._outs_desc)
        else:
            sa = streams_arg(streams, self._n_streams)  # a fresh intp copy, in range and distinct
            m = cnp.PyArray_DIM(sa, 0)
            oa = _checked_out(x, out, m, self._n_in, self._hidden,
                              f"(len(streams)={m}, input_size={self._n_in})",
                              f"(len(streams)={m}, hidden_size={self._hidden})")
            sp = <const Py_ssize_t*>cnp.PyArray_DATA(sa)
        cdef const float* xp = <const float*>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float* yp = <float*>cnp.PyArray_DATA(oa)
        cdef RNNStream base = self._stream(0)
        cdef RNNStream st
        cdef Py_ssize_t j
        cdef Py_ssize_t n_in = self._n_in
        cdef Py_ssize_t H = self._hidden
        cdef Py_ssize_t GH = self._gates * H
        with nogil:
            for j in range(m):
                _rnn_stream_at(&base, &st, j if sp == NULL else sp[j], n_in, H, GH)
                _rnn_run(self._lstm, &self._lx, &self._lh, self._refresh_every, xp + j * n_in, yp + j * H, 1,
                         &st)
        return oa

    def reset(self):
        """Every stream back to the start: x_hat, h, h_hat (and c) = 0, acc = biases, t = 0 (counters
        are kept)."""
        self._xhat.fill(0.0)
        self._h.fill(0.0)
        self._hhat.fill(0.0)
        self._c.fill(0.0)
        self._acc_x[...] = self._bih
        self._acc_h[...] = self._bhh
        self._t.fill(0)

    cdef dict _live(self):
        live = {"x_hat": self._xhat, "h": self._h, "h_hat": self._hhat}
        if self._lstm:
            live["c"] = self._c
        live["acc_x"] = self._acc_x
        live["acc_h"] = self._acc_h
        live["t"] = self._t
        return live

    @property
    def state(self):
        """A copy of the state, a dict of arrays with a leading stream dimension: "x_hat" (n_streams,
        input_size), "h" and "h_hat" (n_streams, hidden_size), DeltaLSTM also "c" (n_streams,
        hidden_size), "acc_x" = b_ih + W_ih x_hat and "acc_h" = b_hh + W_hh h_hat (n_streams,
        G * hidden_size; up to rounding), all float32, and "t" (n_streams,) int64 samples since reset.
        Assign a dict with exactly these keys to restore it."""
        return {name: arr.copy() for name, arr in self._live().items()}

    @state.setter
    def state(self, value):
        _set_state(self._live(), value)

    @property
    def counters(self):
        """Counters summed over the streams (see stream_counters)."""
        return _counter_dict(self._cnt, _RNN_COUNTERS)

    def stream_counters(self, Py_ssize_t stream):
        """One stream's counters: steps, x_sent / x_possible (input deltas), h_sent / h_possible
        (hidden deltas), held_nonfinite, macs (multiply-accumulates done, refreshes included) /
        macs_dense (a dense cell's), refreshes, dense_passes (matrix updates that took the dense path)."""
        return _counter_dict(self._cnt[_checked_stream(stream, self._n_streams)], _RNN_COUNTERS)

    def reset_counters(self):
        self._cnt.fill(0)

    @property
    def input_size(self):
        return self._n_in

    @property
    def hidden_size(self):
        return self._hidden

    @property
    def n_streams(self):
        return self._n_streams

    @property
    def theta_x(self):
        return float(self._lx.theta)

    @property
    def theta_h(self):
        return float(self._lh.theta)

    @property
    def refresh_every(self):
        return self._refresh_every

    @property
    def dense_above(self):
        return self._dense_above

    @property
    def weight_ih(self):
        """A copy of the (G * hidden_size, input_size) float32 input weights, torch layout."""
        return self._wih_t.T.copy()

    @property
    def weight_hh(self):
        """A copy of the (G * hidden_size, hidden_size) float32 hidden weights, torch layout."""
        return self._whh_t.T.copy()

    @property
    def bias_ih(self):
        return self._bih.copy()

    @property
    def bias_hh(self):
        return self._bhh.copy()


@cython.final
cdef class DeltaGRU(_DeltaRNN):
    """torch.nn.GRUCell (gates r, z, n) with delta-coded input (theta_x) and hidden state (theta_h).

    weight_ih (3H, input_size), weight_hh (3H, H), bias_ih / bias_hh (3H,) or None: torch's layout
    and gate order (cell.weight_ih.detach().numpy() etc.). n_streams independent hidden states.
    """

    # __cinit__ (run after the base's, which has none): the C pointers are set exactly once.
    def __cinit__(self, input_size, hidden_size, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                  theta_x=0.0, theta_h=0.0, n_streams=1, refresh_every=DEFAULT_REFRESH_EVERY,
                  dense_above=DEFAULT_DENSE_ABOVE):
        self._setup(False, input_size, hidden_size, weight_ih, weight_hh, bias_ih, bias_hh, theta_x, theta_h,
                    n_streams, refresh_every, dense_above)


@cython.final
cdef class DeltaLSTM(_DeltaRNN):
    """torch.nn.LSTMCell (gates i, f, g, o) with delta-coded input (theta_x) and hidden state (theta_h).

    weight_ih (4H, input_size), weight_hh (4H, H), bias_ih / bias_hh (4H,) or None: torch's layout
    and gate order. The cell state c is updated exactly every step (it is not delta-coded).
    """

    # __cinit__ (run after the base's, which has none): the C pointers are set exactly once.
    def __cinit__(self, input_size, hidden_size, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                  theta_x=0.0, theta_h=0.0, n_streams=1, refresh_every=DEFAULT_REFRESH_EVERY,
                  dense_above=DEFAULT_DENSE_ABOVE):
        self._setup(True, input_size, hidden_size, weight_ih, weight_hh, bias_ih, bias_hh, theta_x, theta_h,
                    n_streams, refresh_every, dense_above)
