# Per-sample maths of the spiking kernels: LIF and CuBa-LIF neurons, the delta modulator and the
# LIF encoder. ext/neurons.pyx steps chunks with these; ext/l2mu.pyx (the L2MU cell) is to cimport
# the same helpers so the neuron maths lives in one place.
#
# How to cimport (sources live in ext/, modules are built as spikeline._ext.<name>):
#
#     from neurons cimport lif_row, cuba_row, RESET_SUBTRACT, RESET_ZERO
#
# Cython resolves that name in the directory of the .pyx being compiled, so it works with setup.py
# as it is, and cythonize recompiles the cimporting module when this file changes. The qualified
# forms `from spikeline._ext.neurons cimport ...` and `from .neurons cimport ...` do NOT resolve:
# Cython looks for spikeline/_ext/neurons.pxd under the include path, sys.path and the .pyx's root
# package directory (ext/ itself, which has no __init__.py), and there is no such file. For the
# same reason neurons.pyx does not pick this file up as its own declarations and cimports it by
# the plain name too. The plain name is safe because this file declares only inline functions and
# an enum: nothing that makes Cython import a module called `neurons` at run time. A cdef class or
# a non-inline cdef function added here would need the qualified name (see the build notes in
# ext/neurons.pyx).
#
# Every helper performs IEEE float32 operations one at a time, each result stored in a float
# (so C never evaluates a step in double), in the order snnTorch 1.0.0 does them; setup.py builds
# with -ffp-contract=off, so no multiply-add is fused. spikeline.kernels.ref_neurons repeats the
# same operations with numpy, bit for bit.
#
# Strict `>` everywhere: snnTorch spikes when (mem - threshold) > 0, which equals mem > threshold
# for all floats as long as subnormals are not flushed to zero (a difference of two distinct floats
# is never rounded to 0). NaN compares false, so a NaN membrane never spikes and never resets.

cdef enum:
    RESET_SUBTRACT = 0   # snnTorch reset_mechanism="subtract"
    RESET_ZERO = 1       # snnTorch reset_mechanism="zero"


cdef inline float heaviside(float mem, float threshold) noexcept nogil:
    """1.0 if mem > threshold else 0.0 (strict; NaN gives 0.0)."""
    return <float>(mem > threshold)


cdef inline float lif_update(float mem, float current, float beta, float threshold,
                             int reset) noexcept nogil:
    """The next membrane of one snnTorch `Leaky` neuron from the previous membrane `mem`.

    The reset is decided from the previous membrane (snnTorch's default reset_delay=True):
      subtract: (beta * mem + current) - r * threshold
      zero:     beta * ((1 - r) * mem) + current
    with r = heaviside(mem, threshold) and beta already clamped to [0, 1].
    """
    cdef float r = heaviside(mem, threshold)
    cdef float keep, decayed, integrated, drop
    if reset == RESET_ZERO:
        keep = <float>1.0 - r
        mem = keep * mem
        decayed = beta * mem
        return decayed + current
    decayed = beta * mem
    integrated = decayed + current
    drop = r * threshold
    return integrated - drop


cdef inline float cuba_syn_update(float syn, float current, float alpha) noexcept nogil:
    """The next synaptic current of one snnTorch `Synaptic` (CuBa-LIF) neuron: alpha * syn + current."""
    cdef float s = alpha * syn
    return s + current


cdef inline float cuba_mem_update(float mem, float syn, float beta, float threshold,
                                  int reset) noexcept nogil:
    """The next membrane of one snnTorch `Synaptic` neuron; syn is the NEW synaptic current.

      m = beta * mem + syn
      subtract: m - r * threshold
      zero:     m - m * r          (the whole new membrane, input included; syn is not reset)
    with r = heaviside(mem, threshold) from the previous membrane and beta in [0, 1].
    """
    cdef float r = heaviside(mem, threshold)
    cdef float decayed = beta * mem
    cdef float m = decayed + syn
    cdef float drop
    if reset == RESET_ZERO:
        drop = m * r
    else:
        drop = r * threshold
    return m - drop


cdef inline void lif_row(float* mem, const float* current, float* spikes, const float* beta,
                         const float* threshold, Py_ssize_t n, int reset) noexcept nogil:
    """One sample through n LIF neurons: mem updated in place, spikes[i] = 1.0 or 0.0.

    spikes may be current itself (element i is read before it is written).
    """
    cdef Py_ssize_t i
    cdef float m
    for i in range(n):
        m = lif_update(mem[i], current[i], beta[i], threshold[i], reset)
        mem[i] = m
        spikes[i] = heaviside(m, threshold[i])


cdef inline void cuba_row(float* syn, float* mem, const float* current, float* spikes,
                          const float* alpha, const float* beta, const float* threshold,
                          Py_ssize_t n, int reset) noexcept nogil:
    """One sample through n CuBa-LIF neurons: syn and mem updated in place, spikes 1.0 or 0.0.

    Two passes (every syn, then every mem): each loop then touches few enough arrays for the
    compiler to vectorise it (a fused loop needs too many runtime aliasing checks). The neurons
    are independent, so the result is the same as updating them one at a time.
    """
    cdef Py_ssize_t i
    cdef float m
    for i in range(n):
        syn[i] = cuba_syn_update(syn[i], current[i], alpha[i])
    for i in range(n):
        m = cuba_mem_update(mem[i], syn[i], beta[i], threshold[i], reset)
        mem[i] = m
        spikes[i] = heaviside(m, threshold[i])


cdef inline void lif_encoder_row(float* mem, const float* x, float* spikes, const float* gain,
                                 const float* bias, const float* beta, const float* threshold,
                                 Py_ssize_t n_channels, Py_ssize_t per_channel,
                                 int reset) noexcept nogil:
    """One sample of n_channels through the LIF encoder (n_channels * per_channel neurons).

    Neuron j = c * per_channel + k receives the current gain[j] * x[c] + bias[j].
    """
    cdef Py_ssize_t c, _k, j
    cdef float xv, cur, m
    j = 0
    for c in range(n_channels):
        xv = x[c]
        for _k in range(per_channel):
            cur = gain[j] * xv
            cur = cur + bias[j]
            m = lif_update(mem[j], cur, beta[j], threshold[j], reset)
            mem[j] = m
            spikes[j] = heaviside(m, threshold[j])
            j += 1


cdef inline void delta_row(float* ref, const float* x, float* up, float* down,
                           const float* threshold, Py_ssize_t n) noexcept nogil:
    """One sample of n channels through the delta modulator (at most one spike per channel).

    A NaN reference means "not initialised": the first finite sample becomes the reference (and
    then, being equal to it, emits nothing). Otherwise d = x - ref; d > threshold: UP and
    ref += threshold; d < -threshold: DOWN and ref -= threshold. A NaN sample compares false both
    ways: no spike, ref unchanged. The move is computed as (ref + threshold * up) -
    threshold * down with up, down in {0.0, 1.0}: the same value as ref +- threshold (only a
    -0.0 reference may become +0.0).
    """
    cdef Py_ssize_t c
    cdef float xv, r, th, nth, d, fup, fdown, step_up, step_down, nr, zero
    cdef bint fresh, is_up, is_down
    # Two branch-free passes, so that GCC vectorises both (spikes are data-dependent: branches
    # would mispredict). Arithmetic rather than a select for the move: GCC does not if-convert a
    # select on an ordered float comparison under its default -ftrapping-math.
    for c in range(n):
        xv = x[c]
        r = ref[c]
        zero = xv - xv                  # 0.0 for finite xv, NaN for NaN or +-inf
        fresh = (r != r) & (zero == <float>0.0)
        ref[c] = xv if fresh else r
    for c in range(n):
        xv = x[c]
        r = ref[c]
        th = threshold[c]
        nth = -th
        d = xv - r                      # NaN if xv or r is NaN: no spike either way
        is_up = d > th
        is_down = d < nth
        fup = <float>is_up
        fdown = <float>is_down
        up[c] = fup
        down[c] = fdown
        step_up = th * fup
        step_down = th * fdown
        nr = r + step_up
        ref[c] = nr - step_down
