"""Pure-numpy reference for the L2MU cell kernel in ext/l2mu.pyx (spikeline._ext.l2mu).

`L2MUCellRef` has the compiled class's constructor, methods, properties, validation and error
messages, and performs the same IEEE operations in the same order, so its spikes, membranes and
counters are bit-identical to the compiled kernel's:

- the input module and all five populations are snnTorch `Leaky` neurons (reset by subtraction)
  stepped with ref_neurons' `_lif_update`, the numpy twin of ext/neurons.pxd's `lif_update`;
- every synaptic current is a sum of weight columns (the inputs are 0/1 spikes), accumulated in
  float64 from the same start (0.0, or the bias b_o) over the active inputs in increasing index
  order, then rounded to float32 once. The sum is exact in float64 (see tools/l2mu_torch.py), so
  the rounded current is also what the PyTorch twin computes with its float64 matmuls.

The loop over samples is plain Python with one small numpy operation per gather: correct and
slow. It is the fallback when the extension is not built and the oracle the kernel is tested
against. The constructor checks (`l2mu_params`) and the state checks live here and are what the
compiled class calls too, so both backends accept and refuse exactly the same arguments.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from spikeline.kernels.ref_delta import streams_arg
from spikeline.kernels.ref_neurons import (
    RESET_SUBTRACT,
    _disjoint,
    _heaviside,
    _input,
    _lif_update,
    _output,
    _stream,
    count_arg,
    param_array,
    state_array,
)

__all__ = ["ARRAY_NAMES", "COUNTER_NAMES", "POPULATIONS", "STATE_KEYS", "L2MUCellRef", "L2MUParams",
           "l2mu_params"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

POPULATIONS = ("x", "u", "m", "h", "o")
WEIGHT_NAMES = ("enc_w", "enc_b", "e_x", "e_h", "e_m", "W_x", "W_h", "W_m", "W_o", "b_o", "A_bar", "B_bar")
ARRAY_NAMES = WEIGHT_NAMES + tuple(f"{kind}_{p}" for p in POPULATIONS for kind in ("beta", "threshold"))
# The state: the five membranes and the spikes of the previous step that feed back (s_h, s_m).
STATE_KEYS = ("mem_x", "mem_u", "mem_m", "mem_h", "mem_o", "s_h", "s_m")
# Per-stream counters, in the kernel's column order: steps, spikes per population, then the
# columns gathered and the synaptic operations (additions of one weight) they cost.
COUNTER_NAMES = ("steps", "active_x", "active_u", "active_m", "active_h", "active_o", "columns", "synops")
CONVENTIONS = ("A", "AT")


# --- constructor checks, shared with ext/l2mu.pyx ----------------------------------------------


class L2MUParams(NamedTuple):
    n_inputs: int
    enc: int
    memory: int
    order: int
    hidden: int
    n_outputs: int
    memory_convention: str
    n_streams: int
    sizes: dict[str, int]  # neurons per population x, u, m, h, o
    gain: F32  # (n_x,) enc_w flattened channel-major: neuron c * enc + k
    bias: F32  # (n_x,) enc_b flattened
    ut: F32  # (n_x + hidden + memory * order, memory) = [e_x | e_h | e_m]ᵀ
    mt: F32  # (order + 1, order): rows 0..order-1 the applied matrix's columns (Ā, or Āᵀ), row order B̄
    ht: F32  # (n_x + hidden + memory * order, hidden) = [W_x | W_h | W_m]ᵀ
    ot: F32  # (hidden, n_outputs) = W_oᵀ
    b_o: F32  # (n_outputs,)
    beta: tuple[F32, ...]  # per population x, u, m, h, o; clamped to [0, 1]
    threshold: tuple[F32, ...]
    arrays: dict[str, F32]  # every array as given (float32 copies; beta clamped), by model-file name


def _leading_dims(value: Any, name: str, desc: str) -> tuple[int, int]:
    """The shape of a 2-D ndarray whose dimensions define the cell's sizes."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (float32, shape {desc}), got {type(value).__name__}")
    if value.ndim != 2 or 0 in value.shape:
        raise ValueError(f"{name} must be 2-D with shape {desc}, every size >= 1, got shape {value.shape}")
    return int(value.shape[0]), int(value.shape[1])


def _weight(value: Any, name: str, shape: tuple[int, ...], desc: str) -> F32:
    """A finite float32 array of exactly `shape`, copied (C-contiguous, native byte order)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (float32, shape {desc}), got {type(value).__name__}")
    if value.dtype.kind != "f" or value.dtype.itemsize != 4:
        raise TypeError(f"{name} must have dtype float32, got {value.dtype}; convert it with .astype(np.float32)")
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {desc} = {shape}, got {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    copied: F32 = np.array(value, dtype=np.float32, order="C", copy=True)
    return copied


def l2mu_params(arrays: Mapping[str, Any], memory_convention: Any, n_streams: Any) -> L2MUParams:
    """Checked, normalised L2MUCell constructor arguments and the kernel's stacked, transposed weights.

    The sizes come from enc_w (n_inputs, enc), e_x (memory, ·), A_bar (order, order), W_x (hidden, ·)
    and W_o (n_outputs, ·); every other array must agree with them.
    """
    if not isinstance(memory_convention, str) or memory_convention not in CONVENTIONS:
        raise ValueError('memory_convention must be "A" (Ā applied to each memory row, Voelker) or "AT" '
                         f"(Āᵀ, what the public L2MU training code computes), got {memory_convention!r}")
    n_streams = count_arg(n_streams, "n_streams")
    n_inputs, enc = _leading_dims(arrays["enc_w"], "enc_w", "(n_inputs, enc)")
    memory, _ = _leading_dims(arrays["e_x"], "e_x", "(memory, n_inputs * enc)")
    order, _ = _leading_dims(arrays["A_bar"], "A_bar", "(order, order)")
    hidden, _ = _leading_dims(arrays["W_x"], "W_x", "(hidden, n_inputs * enc)")
    n_outputs, _ = _leading_dims(arrays["W_o"], "W_o", "(n_outputs, hidden)")
    n_x, n_m = n_inputs * enc, memory * order
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "enc_w": ((n_inputs, enc), "(n_inputs, enc)"),
        "enc_b": ((n_inputs, enc), "(n_inputs, enc)"),
        "e_x": ((memory, n_x), "(memory, n_inputs * enc)"),
        "e_h": ((memory, hidden), "(memory, hidden)"),
        "e_m": ((memory, n_m), "(memory, memory * order)"),
        "W_x": ((hidden, n_x), "(hidden, n_inputs * enc)"),
        "W_h": ((hidden, hidden), "(hidden, hidden)"),
        "W_m": ((hidden, n_m), "(hidden, memory * order)"),
        "W_o": ((n_outputs, hidden), "(n_outputs, hidden)"),
        "b_o": ((n_outputs,), "(n_outputs,)"),
        "A_bar": ((order, order), "(order, order)"),
        "B_bar": ((order,), "(order,)"),
    }
    w = {name: _weight(arrays[name], name, shape, desc) for name, (shape, desc) in shapes.items()}
    sizes = {"x": n_x, "u": memory, "m": n_m, "h": hidden, "o": n_outputs}
    grids: dict[str, tuple[int, int] | None] = {"x": (n_inputs, enc), "u": None, "m": (memory, order),
                                                "h": None, "o": None}
    beta = tuple(param_array(arrays[f"beta_{p}"], f"beta_{p}", sizes[p], grids[p], clamp01=True)
                 for p in POPULATIONS)
    threshold = tuple(param_array(arrays[f"threshold_{p}"], f"threshold_{p}", sizes[p], grids[p])
                      for p in POPULATIONS)
    applied = w["A_bar"] if memory_convention == "A" else w["A_bar"].T
    mt: F32 = np.ascontiguousarray(np.concatenate([applied.T, w["B_bar"][np.newaxis]], axis=0))
    ut: F32 = np.ascontiguousarray(np.concatenate([w["e_x"], w["e_h"], w["e_m"]], axis=1).T)
    ht: F32 = np.ascontiguousarray(np.concatenate([w["W_x"], w["W_h"], w["W_m"]], axis=1).T)
    ot: F32 = np.ascontiguousarray(w["W_o"].T)
    given = dict(w)
    for p, b, t in zip(POPULATIONS, beta, threshold, strict=True):
        given[f"beta_{p}"], given[f"threshold_{p}"] = b, t
    return L2MUParams(n_inputs, enc, memory, order, hidden, n_outputs, memory_convention, n_streams, sizes,
                      w["enc_w"].reshape(-1).copy(), w["enc_b"].reshape(-1).copy(), ut, mt, ht, ot,
                      w["b_o"], beta, threshold, given)


def missing_arrays(kwargs: Mapping[str, Any]) -> None:
    """TypeError naming the arrays missing from, or unknown in, the constructor's keyword arguments."""
    missing = [name for name in ARRAY_NAMES if name not in kwargs]
    unknown = sorted(set(kwargs) - set(ARRAY_NAMES))
    if missing:
        raise TypeError(f"L2MUCell needs the arrays {', '.join(missing)} (by keyword, as in an l2mu model file)")
    if unknown:
        raise TypeError(f"L2MUCell got unexpected arguments {', '.join(unknown)} (it takes {', '.join(ARRAY_NAMES)}, "
                        "memory_convention and n_streams)")


def stream_arg(stream: Any, n_streams: int) -> int:
    """stream as an index in [0, n_streams), or -1 for every stream (reset, reset_counters)."""
    stream = operator.index(stream)
    if stream < -1 or stream >= n_streams:
        raise ValueError(f"stream must be -1 (all streams) or in [0, {n_streams}), got {stream}")
    return int(stream)


def state_arrays(value: Any, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, F32]:
    """A new state, checked as a whole before anything is assigned: a mapping with exactly STATE_KEYS,
    finite float32 membranes, and spikes that are 0.0 or 1.0."""
    if not isinstance(value, Mapping):
        raise TypeError(f"state must be a mapping with the keys {', '.join(STATE_KEYS)}, got {type(value).__name__}")
    keys = set(value)
    if keys != set(STATE_KEYS):
        missing, extra = sorted(set(STATE_KEYS) - keys), sorted(keys - set(STATE_KEYS), key=str)
        raise ValueError(f"state must have exactly the keys {', '.join(STATE_KEYS)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unexpected {', '.join(map(str, extra))}" if extra else ""))
    checked = {key: state_array(value[key], f"state[{key!r}]", shapes[key]) for key in STATE_KEYS}
    for key in ("s_h", "s_m"):
        if not ((checked[key] == 0.0) | (checked[key] == 1.0)).all():
            raise ValueError(f"state[{key!r}] must hold spikes: every value 0.0 or 1.0")
    return checked


# --- the kernel ----------------------------------------------------------------------------------


def _gather(start: F64, wt: F64, active: npt.NDArray[np.intp]) -> F32:
    """start + the rows wt[active], added one at a time in the order given (float64), rounded once.

    np.add.accumulate adds the stacked rows left to right, one IEEE addition each: the C loop's
    `acc[o] = acc[o] + <double>col[o]` over the active columns.
    """
    terms = np.empty((active.size + 1, wt.shape[1]), dtype=np.float64)
    terms[0] = start
    terms[1:] = wt[active]
    total: F32 = np.add.accumulate(terms, axis=0)[-1].astype(np.float32)
    return total


class L2MUCellRef:
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

    def __init__(self, *, memory_convention: str = "A", n_streams: int = 1, **arrays: npt.ArrayLike) -> None:
        missing_arrays(arrays)
        p = l2mu_params(arrays, memory_convention, n_streams)
        self._p = p
        s = p.n_streams
        self._beta, self._threshold = p.beta, p.threshold
        self._ut = p.ut.astype(np.float64)
        self._mt = p.mt.astype(np.float64)
        self._ht = p.ht.astype(np.float64)
        self._ot = p.ot.astype(np.float64)
        self._b_o = p.b_o.astype(np.float64)
        self._zero_u = np.zeros(p.memory, np.float64)
        self._zero_d = np.zeros(p.order, np.float64)
        self._zero_h = np.zeros(p.hidden, np.float64)
        self._shapes = {f"mem_{q}": (s, p.sizes[q]) for q in POPULATIONS}
        self._shapes.update(s_h=(s, p.hidden), s_m=(s, p.sizes["m"]))
        self._state: dict[str, F32] = {k: np.zeros(shape, np.float32) for k, shape in self._shapes.items()}
        self._counters: I64 = np.zeros((s, len(COUNTER_NAMES)), np.int64)
        self._desc_step = f"(n_samples, {p.n_inputs})"
        self._desc_streams = f"(n_streams={s}, n_inputs={p.n_inputs})"
        n_v = p.sizes["x"] + p.hidden + p.sizes["m"]
        self._dense_columns = 2 * n_v + p.memory * (p.order + 1) + p.hidden
        self._dense_synops = n_v * (p.memory + p.hidden) + p.memory * (p.order + 1) * p.order + p.hidden * p.n_outputs

    # --- one sample ---

    def _lif(self, pop: int, mem: F32, current: F32) -> F32:
        """One Leaky step of population `pop` (index into POPULATIONS): mem in place, spikes returned."""
        mem[...] = _lif_update(mem, current, self._beta[pop], self._threshold[pop], RESET_SUBTRACT)
        return _heaviside(mem, self._threshold[pop])

    def _sample(self, k: int, x: F32, y: F32, hidden: F32 | None) -> None:
        p = self._p
        st = {key: arr[k] for key, arr in self._state.items()}
        n_x, n_h, d = p.sizes["x"], p.hidden, p.order
        cur_x = p.gain * np.repeat(x, p.enc)  # lif_encoder_row: gain * x, then + bias
        s_x = self._lif(0, st["mem_x"], cur_x + p.bias)
        act_x = np.flatnonzero(s_x)
        act_xh = np.concatenate([act_x, n_x + np.flatnonzero(st["s_h"])])
        act_u = np.concatenate([act_xh, n_x + n_h + np.flatnonzero(st["s_m"])])
        s_u = self._lif(1, st["mem_u"], _gather(self._zero_u, self._ut, act_u))
        cur_m = np.empty(p.sizes["m"], np.float32)
        columns, synops = act_u.size, act_u.size * p.memory
        for row in range(p.memory):  # memory row k: the active columns of A, then B_bar if s_u[k]
            act_row = np.flatnonzero(st["s_m"][row * d:(row + 1) * d])
            if s_u[row] != 0.0:
                act_row = np.append(act_row, d)
            cur_m[row * d:(row + 1) * d] = _gather(self._zero_d, self._mt, act_row)
            columns, synops = columns + act_row.size, synops + act_row.size * d
        st["s_m"][...] = self._lif(2, st["mem_m"], cur_m)
        act_h = np.concatenate([act_xh, n_x + n_h + np.flatnonzero(st["s_m"])])
        st["s_h"][...] = self._lif(3, st["mem_h"], _gather(self._zero_h, self._ht, act_h))
        act_hn = np.flatnonzero(st["s_h"])  # the new hidden spikes feed the output
        y[...] = self._lif(4, st["mem_o"], _gather(self._b_o, self._ot, act_hn))
        if hidden is not None:
            hidden[...] = st["s_h"]
        columns += act_h.size + act_hn.size
        synops += act_h.size * n_h + act_hn.size * p.n_outputs
        counters = self._counters[k]
        counters += (1, act_x.size, np.count_nonzero(s_u), np.count_nonzero(st["s_m"]), act_hn.size,
                     np.count_nonzero(y), columns, synops)

    # --- calls ---

    def _outputs(self, x: F32, out: F32 | None, hidden_out: F32 | None) -> tuple[F32, F32 | None]:
        result = _output(out, "out", x, self._p.n_outputs, False)
        if hidden_out is not None:
            hidden_out = _output(hidden_out, "hidden_out", x, self._p.hidden, False)
            _disjoint(result, "out", hidden_out, "hidden_out")
        return result, hidden_out

    def step(self, x: F32, out: F32 | None = None, stream: int = 0, hidden_out: F32 | None = None) -> F32:
        """Run stream `stream` over x (n_samples, n_inputs); returns the output spikes (n_samples, n_outputs).

        hidden_out, if given, receives the hidden spikes s_h (n_samples, hidden). Neither output may
        overlap x or the other.
        """
        x = _input(x, self._p.n_inputs, -1, self._desc_step)
        result, hidden_out = self._outputs(x, out, hidden_out)
        k = _stream(stream, self._p.n_streams)
        with np.errstate(all="ignore"):
            for i in range(x.shape[0]):
                self._sample(k, x[i], result[i], None if hidden_out is None else hidden_out[i])
        return result

    def step_streams(self, x: F32, out: F32 | None = None, hidden_out: F32 | None = None,
                     streams: npt.ArrayLike | None = None) -> F32:
        """Advance every stream by one sample: x (n_streams, n_inputs), row k for stream k.

        streams (distinct indices, any order, m >= 0 of them): advance only those streams (state
        and counters); x, out and hidden_out are (m, ...), row j for stream streams[j]. The same as
        step(x[j:j+1], stream=streams[j]) for each j; every argument is checked before any state
        changes (an index out of range or repeated is a ValueError).
        """
        if streams is None:
            x = _input(x, self._p.n_inputs, self._p.n_streams, self._desc_streams)
            sel: range | list[int] = range(self._p.n_streams)
        else:
            idx = streams_arg(streams, self._p.n_streams)
            x = _input(x, self._p.n_inputs, idx.size, f"(len(streams)={idx.size}, n_inputs={self._p.n_inputs})")
            sel = idx.tolist()
        result, hidden_out = self._outputs(x, out, hidden_out)
        with np.errstate(all="ignore"):
            for j, k in enumerate(sel):
                self._sample(k, x[j], result[j], None if hidden_out is None else hidden_out[j])
        return result

    def reset(self, stream: int = -1) -> None:
        """Zero the membranes and the fed-back spikes of one stream, or of every stream (-1)."""
        k = stream_arg(stream, self._p.n_streams)
        for arr in self._state.values():
            if k == -1:
                arr.fill(0.0)
            else:
                arr[k] = 0.0

    def reset_counters(self, stream: int = -1) -> None:
        """Zero the counters of one stream, or of every stream (-1). reset() leaves them alone."""
        k = stream_arg(stream, self._p.n_streams)
        if k == -1:
            self._counters.fill(0)
        else:
            self._counters[k] = 0

    @property
    def state(self) -> dict[str, F32]:
        """Copies of the state by name, float32, each with a leading stream dimension:
        mem_x, mem_u, mem_m, mem_h, mem_o (the membranes, (n_streams, size of the population)) and
        s_h (n_streams, hidden), s_m (n_streams, memory * order): the previous sample's hidden and
        memory spikes, which the next sample's currents read. s_m is memory-major (row k, column i
        at k * order + i), as are mem_m and the model's beta_m."""
        return {key: arr.copy() for key, arr in self._state.items()}

    @state.setter
    def state(self, value: Mapping[str, npt.ArrayLike]) -> None:
        checked = state_arrays(value, self._shapes)
        for key, arr in checked.items():
            self._state[key][...] = arr

    @property
    def counters(self) -> dict[str, I64]:
        """Copies of the per-stream counters, int64 (n_streams,) each, since construction or reset_counters().

        steps: samples stepped. active_x ... active_o: spikes emitted by each population. columns:
        weight columns gathered (each active input of each current, B_bar included), synops: the
        additions they cost (a column of the u current is `memory` long, of h `hidden`, ...). A dense
        product would read `dense_columns` columns and do `dense_synops` additions per step: the
        ratio is the work the spike sparsity saves.
        """
        return {name: self._counters[:, i].copy() for i, name in enumerate(COUNTER_NAMES)}

    @property
    def dense_columns(self) -> int:
        """Weight columns per step of the dense products (u, memory rows with B_bar, h, o)."""
        return self._dense_columns

    @property
    def dense_synops(self) -> int:
        """Additions per step of the dense products."""
        return self._dense_synops

    @property
    def n_inputs(self) -> int:
        return self._p.n_inputs

    @property
    def enc(self) -> int:
        return self._p.enc

    @property
    def memory(self) -> int:
        return self._p.memory

    @property
    def order(self) -> int:
        return self._p.order

    @property
    def hidden(self) -> int:
        return self._p.hidden

    @property
    def n_outputs(self) -> int:
        return self._p.n_outputs

    @property
    def n_streams(self) -> int:
        return self._p.n_streams

    @property
    def memory_convention(self) -> str:
        return self._p.memory_convention

    @property
    def sizes(self) -> dict[str, int]:
        """Neurons per population: x (n_inputs * enc), u (memory), m (memory * order), h, o."""
        return dict(self._p.sizes)

    @property
    def arrays(self) -> dict[str, F32]:
        """Copies of the arrays the cell was built from, by model-file name.

        float32; beta clamped to [0, 1]; scalar beta/threshold expanded to one per neuron.
        """
        return {k: v.copy() for k, v in self._p.arrays.items()}
