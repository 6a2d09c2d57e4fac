"""Neuromorphic and recurrent kernel stages: each wraps one compiled kernel that steps its state per sample."""

from __future__ import annotations

import math

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..kernels import SOSFilter, design_one_pole
from ..kernels.delta import DeltaDense as DeltaDenseKernel
from ..kernels.delta import DeltaGRU as DeltaGRUKernel
from ..kernels.lmu import LegendreMemory
from ..kernels.neurons import CubaLIFPopulation, DeltaModulator, LIFEncoder, LIFPopulation
from ..modelfile import Model, ModelError, load
from ..params import Param
from .base import Stage, StageError, need_rate


class LMU(Stage):
    kind = "lmu"
    summary = "Legendre memory per channel (LMU, Voelker 2019): the last theta of each channel as d coefficients"
    params = {
        "order": Param("int", 6, min=1, max=256, help="Legendre order d: coefficients per channel"),
        "theta_s": Param("number", 1.0, min=0, min_exclusive=True, help="memory window in seconds"),
        "transpose": Param("bool", False, help="apply Āᵀ instead of Ā (models trained with the public L2MU code)"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        theta = self.p["theta_s"] * need_rate(meta, "lmu")
        if theta < 1:
            raise StageError(f"theta_s = {self.p['theta_s']:g} s is less than one sample at {meta.nominal_rate:g} Hz",
                             "theta_s")
        d = self.p["order"]
        self._kernel = LegendreMemory(meta.n_channels, d, theta, transpose=self.p["transpose"])
        channels = tuple(f"{c}.m{i}" for c in meta.channels for i in range(d))
        self._out = meta.derive(channels=channels, units=("",) * len(channels))
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        out = np.empty((len(chunk), self._out.n_channels), np.float32)
        return chunk.with_data(self._kernel.step(chunk.data, out=out), self._out)

    def reset(self) -> None:
        self._kernel.reset()


class _SpikeStage(Stage):
    """A stage whose output is spikes: counts them for the metrics (activity = spikes / outputs)."""

    _out: StreamMeta

    def start(self, meta: StreamMeta) -> StreamMeta:
        self._steps = self._spikes = 0
        return meta

    def _count(self, spikes: np.ndarray) -> None:
        self._steps += int(spikes.shape[0])
        self._spikes += int(np.count_nonzero(spikes))

    def counters(self) -> dict[str, int | float]:
        n = self._steps * self._out.n_channels
        return {"samples": self._steps, "spikes": self._spikes,
                "activity": round(self._spikes / n, 6) if n else 0.0}


class Encode(_SpikeStage):
    kind = "encode"
    summary = 'spike encoding: "delta" (UP/DOWN delta modulation) or "lif" (per-channel gains into LIF neurons)'
    params = {
        "method": Param("str", "delta", choices=("delta", "lif")),
        "delta_threshold": Param("number", 0.1, min=0, min_exclusive=True,
                                 help="delta: signal change per UP/DOWN spike, in the signal's units"),
        "neurons": Param("int", 8, min=1, max=1024, help="lif: neurons per channel"),
        "gain_range": Param("number_list", [0.5, 2.0], help="lif: gains spread evenly over each channel's neurons",
                            check=lambda v: None if len(v) == 2 else "expected [low, high]"),
        "bias": Param("number", 0.0, help="lif: constant input current"),
        "beta": Param("number", 0.9, min=0, max=1),
        "lif_threshold": Param("number", 1.0, min=0, min_exclusive=True),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        super().start(meta)
        c = meta.n_channels
        self._kernel: DeltaModulator | LIFEncoder
        if self.p["method"] == "delta":
            self._kernel = DeltaModulator(c, np.full(c, self.p["delta_threshold"], np.float32))
            names = tuple(f"{ch}+" for ch in meta.channels) + tuple(f"{ch}-" for ch in meta.channels)
        else:
            k = self.p["neurons"]
            lo, hi = self.p["gain_range"]
            gains = np.tile(np.linspace(lo, hi, k, dtype=np.float32), (c, 1))
            self._kernel = LIFEncoder(c, k, gains, np.full((c, k), self.p["bias"], np.float32),
                                      self.p["beta"], self.p["lif_threshold"])
            names = tuple(f"{ch}.n{j}" for ch in meta.channels for j in range(k))
        self._out = meta.derive(channels=names, units=("",) * len(names))
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        out = np.empty((len(chunk), self._out.n_channels), np.float32)
        spikes = self._kernel.step(chunk.data, out=out)
        self._count(spikes)
        return chunk.with_data(spikes, self._out)

    def reset(self) -> None:
        self._kernel.reset()


class LIF(_SpikeStage):
    kind = "lif"
    summary = "one LIF (or current-based LIF) neuron per channel, driven by the channel as input current"
    params = {
        "beta": Param("number", 0.9, min=0, max=1, help="membrane decay per sample"),
        "alpha": Param("number", 0.0, min=0, max=1, help="synaptic decay per sample; > 0 makes it CuBa-LIF"),
        "threshold": Param("number", 1.0, min=0, min_exclusive=True),
        "reset": Param("str", "subtract", choices=("subtract", "zero")),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        super().start(meta)
        n, p = meta.n_channels, self.p
        if p["alpha"] > 0:
            self._kernel: LIFPopulation | CubaLIFPopulation = CubaLIFPopulation(
                n, p["alpha"], p["beta"], p["threshold"], p["reset"])
        else:
            self._kernel = LIFPopulation(n, p["beta"], p["threshold"], p["reset"])
        self._out = meta.derive(units=("",) * n)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        spikes = self._kernel.step(chunk.data, out=np.empty_like(chunk.data))
        self._count(spikes)
        return chunk.with_data(spikes, self._out)

    def reset(self) -> None:
        self._kernel.reset()


class _DeltaStage(Stage):
    """A delta layer whose weights come from a model file; publishes its temporal sparsity."""

    _kernel: DeltaDenseKernel | DeltaGRUKernel

    def _load(self, kind: str) -> Model:
        try:
            return load(self.p["model"], kind=kind)
        except ModelError as e:
            raise StageError(str(e), "model") from e

    def counters(self) -> dict[str, int | float]:
        c: dict[str, int | float] = dict(self._kernel.counters)
        for sent, possible in (("x_sent", "x_possible"), ("h_sent", "h_possible"), ("macs", "macs_dense")):
            if possible in c:
                c[f"{sent}_fraction"] = round(c[sent] / c[possible], 6) if c[possible] else 0.0
        return c

    def reset(self) -> None:
        self._kernel.reset()


class DeltaDenseStage(_DeltaStage):
    kind = "delta_dense"
    summary = "y = act(W x + b), computed from the input deltas above theta (model file kind delta_dense)"
    params = {
        "model": Param("str", help="model file (.json) with arrays weight (out, in) and bias (out,)"),
        "theta": Param("number", 0.0, min=0, help="input changes at or below this are not sent"),
        "activation": Param("str", "none", choices=("none", "relu", "tanh", "sigmoid")),
        "refresh_every": Param("int", 1024, min=0, help="exact recomputation period in samples (0: never)"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        model = self._load("delta_dense")
        a = model.arrays
        w = a.get("weight")
        if w is None or w.ndim != 2 or w.shape[1] != meta.n_channels:
            got = None if w is None else w.shape
            raise StageError(f"model weight must be (out, {meta.n_channels}) for stream {meta.name!r}, got {got}",
                             "model")
        self._kernel = DeltaDenseKernel(w, a.get("bias"), self.p["theta"], refresh_every=self.p["refresh_every"],
                                        activation=self.p["activation"])
        labels = model.meta.get("outputs") or [f"y{i}" for i in range(w.shape[0])]
        classes = tuple(model.meta.get("classes", ()))
        self._out = meta.derive(channels=tuple(labels), units=("",) * len(labels), classes=classes)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        out = np.empty((len(chunk), self._out.n_channels), np.float32)
        return chunk.with_data(self._kernel.step(chunk.data, out=out), self._out)


def gru_readout(h: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Class scores W h + b of hidden-state rows h (n, H), float32 out.

    Summed in float64 in a fixed order (column by column), so a row's scores do not depend on how
    many rows are computed together: a stream split into any chunks gives the scores of one offline
    pass bit for bit (a BLAS product may change its summation order with the number of rows)."""
    w = weight.astype(np.float64)
    acc = np.broadcast_to(bias.astype(np.float64), (h.shape[0], w.shape[0])).copy()
    h64 = h.astype(np.float64)
    for j in range(w.shape[1]):
        acc += h64[:, j, None] * w[:, j]
    return acc.astype(np.float32)


def _schedule_rows(t0: int, n: int, every: int, first: int) -> int:
    """Index in a chunk of samples t0 .. t0+n-1 (counted since reset) of the first row to emit, or n."""
    start = first - t0 if t0 <= first else (first - t0) % every
    return min(start, n)


class DeltaGRUStage(_DeltaStage):
    kind = "delta_gru"
    summary = ("GRU (torch.nn.GRUCell gates) on input and hidden deltas above theta (model file kind delta_gru); "
               "outputs h, or class scores when the model file has a readout")
    params = {
        "model": Param("str", help="model file (.json) or registry id with weight_ih (3H, I), weight_hh (3H, H), "
                                   "bias_ih, bias_hh; optional readout_weight (K, H), readout_bias (K,)"),
        "theta_x": Param("number", None, min=0,
                         help="input changes at or below this are not sent (default: the model file's, else 0)"),
        "theta_h": Param("number", None, min=0,
                         help="hidden-state changes at or below this are not sent (default: the model file's, else 0)"),
        "refresh_every": Param("int", 1024, min=0, help="exact recomputation period in samples (0: never)"),
        "every": Param("int", None, min=1, help="emit one row per N samples (default: the model file's "
                                                "decision schedule, else every sample)"),
        "first": Param("int", None, min=0, help="sample index, counted from the start or a reset, of the first row "
                                                "emitted (default: the model file's, else every - 1)"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        model = self._load("delta_gru")
        a, m = model.arrays, model.meta
        w_ih, w_hh = a.get("weight_ih"), a.get("weight_hh")
        if w_ih is None or w_hh is None or w_ih.ndim != 2 or w_ih.shape[1] != meta.n_channels:
            got = None if w_ih is None else w_ih.shape
            raise StageError(f"model weight_ih must be (3H, {meta.n_channels}) for stream {meta.name!r}, got {got}",
                             "model")
        h = self._hidden = int(w_hh.shape[1])
        theta_x = self.p["theta_x"] if self.p["theta_x"] is not None else float(m.get("theta_x", 0.0))
        theta_h = self.p["theta_h"] if self.p["theta_h"] is not None else float(m.get("theta_h", 0.0))
        try:
            self._kernel = DeltaGRUKernel(meta.n_channels, h, w_ih, w_hh, a.get("bias_ih"), a.get("bias_hh"),
                                          theta_x, theta_h, refresh_every=self.p["refresh_every"])
        except ValueError as e:
            raise StageError(f"model {self.p['model']}: {e}", "model") from e
        rate = (m.get("input") or {}).get("rate_hz")
        if rate and meta.nominal_rate and abs(float(rate) - meta.nominal_rate) > 1e-6 * meta.nominal_rate:
            raise StageError(f"the model was trained at {rate} Hz, stream {meta.name!r} runs at "
                             f"{meta.nominal_rate:g} Hz", "model")
        schedule = m.get("decision") or {}
        self._every = self.p["every"] or int(schedule.get("every", 1))
        first = self.p["first"] if self.p["first"] is not None else schedule.get("first")
        self._first = self._every - 1 if first is None else int(first)
        self._readout: tuple[np.ndarray, np.ndarray] | None = None
        if "readout_weight" in a:
            try:
                w_o = model.array("readout_weight", (None, h))
                b_o = model.array("readout_bias", (w_o.shape[0],))
            except ModelError as e:
                raise StageError(str(e), "model") from e
            self._readout = (w_o, b_o)
            classes = tuple(m.get("classes", ()))
            names = classes if len(classes) == w_o.shape[0] else tuple(f"y{i}" for i in range(w_o.shape[0]))
            self._out = meta.derive(channels=names, units=("",) * len(names),
                                    nominal_rate=meta.nominal_rate / self._every,
                                    classes=classes if len(classes) == len(names) else ())
        else:
            self._out = meta.derive(channels=tuple(f"h{i}" for i in range(h)), units=("",) * h,
                                    nominal_rate=meta.nominal_rate / self._every)
        self._t = 0
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk | None:
        n = len(chunk)
        h = self._kernel.step(chunk.data, out=np.empty((n, self._hidden), np.float32))
        t0, self._t = self._t, self._t + n
        every = self._every
        if every == 1 and self._first == 0 and self._readout is None:
            return chunk.with_data(h, self._out)
        start = _schedule_rows(t0, n, every, self._first)
        if start >= n:
            return None
        rows = h[start::every]
        data = rows if self._readout is None else gru_readout(rows, *self._readout)
        return chunk.take(start, None, every).with_data(np.ascontiguousarray(data), self._out)

    def reset(self) -> None:
        super().reset()
        self._t = 0


class SNN(Stage):
    kind = "snn"
    summary = "feed-forward spiking network from a NIR graph (Affine/Linear -> LIF/CubaLIF chains, e.g. snnTorch)"
    params = {
        "nir": Param("str", help="NIR file (.nir) exported by snnTorch, Norse, Rockpool, Lava, ..."),
        "dt": Param("number", 1e-4, min=0, min_exclusive=True,
                    help="time step the graph's time constants are relative to (snnTorch exports use 1e-4)"),
        "reset": Param("str", "subtract", choices=("subtract", "zero")),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        from ..nir_io import Dense, NIRError, from_nir

        try:
            layers = from_nir(self.p["nir"], dt=self.p["dt"], reset=self.p["reset"])
        except (NIRError, ImportError) as e:
            raise StageError(str(e), "nir") from e
        if not layers:
            raise StageError("the NIR graph has no layers", "nir")
        first = layers[0]
        n_in = first.weight.shape[1] if isinstance(first, Dense) else first.size
        if n_in != meta.n_channels:
            raise StageError(f"the network takes {n_in} inputs, stream {meta.name!r} has {meta.n_channels}", "nir")
        self._steps: list[tuple[object, np.ndarray | None]] = []
        width = n_in
        for layer in layers:
            if isinstance(layer, Dense):
                # Spikes in, so the input deltas are the spikes' edges: a sparse column gather per step.
                self._steps.append((DeltaDenseKernel(layer.weight, layer.bias, 0.0), None))
                width = layer.weight.shape[0]
            else:
                pop: LIFPopulation | CubaLIFPopulation = (
                    LIFPopulation(layer.size, layer.beta, layer.threshold, layer.reset) if layer.alpha is None
                    else CubaLIFPopulation(layer.size, layer.alpha, layer.beta, layer.threshold, layer.reset))
                gain = None if np.all(layer.gain == 1.0) else layer.gain
                self._steps.append((pop, gain))
                width = layer.size
        self._out = meta.derive(channels=tuple(f"s{i}" for i in range(width)), units=("",) * width)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        x = chunk.data
        for kernel, gain in self._steps:
            if gain is not None:
                x = x * gain
            x = kernel.step(x)  # type: ignore[attr-defined]
        return chunk.with_data(np.ascontiguousarray(x, dtype=np.float32), self._out)

    def reset(self) -> None:
        for kernel, _ in self._steps:
            kernel.reset()  # type: ignore[attr-defined]

    def counters(self) -> dict[str, int | float]:
        dense = [k.counters for k, _ in self._steps if isinstance(k, DeltaDenseKernel)]
        macs, full = sum(c["macs"] for c in dense), sum(c["macs_dense"] for c in dense)
        return {"macs": macs, "macs_dense": full, "macs_fraction": round(macs / full, 6) if full else 0.0}


class L2MUStage(Stage):
    gateway = True
    kind = "l2mu"
    summary = "spiking Legendre Memory Unit (L2MU) model; output: spike counts per class over a window, or leaky"
    params = {
        "model": Param("str", help='model file (.json) of kind "l2mu" (tools/l2mu_torch.py exports them)'),
        "readout": Param("str", "window", choices=("window", "leaky"),
                         help="window: output spikes counted over the last window_s; leaky: a decaying count"),
        "window_s": Param("number", 1.0, min=0, min_exclusive=True, help="window (or decay time constant) in seconds"),
        "every": Param("int", 1, min=1, help="emit one row per N input samples"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        from ..kernels.l2mu import load_l2mu

        need_rate(meta, "l2mu")
        devices = meta.devices
        try:
            model = load(self.p["model"], kind="l2mu")
            self._cell = load_l2mu(model, n_streams=1 if devices is None else devices.capacity)
        except ModelError as e:
            raise StageError(str(e), "model") from e
        if self._cell.n_inputs != meta.n_channels:
            raise StageError(f"the model takes {self._cell.n_inputs} inputs, stream {meta.name!r} has "
                             f"{meta.n_channels}", "model")
        rate = model.meta.get("config", {}).get("rate_hz") or model.meta.get("input", {}).get("rate_hz")
        if rate and abs(float(rate) - meta.nominal_rate) > 1e-6 * meta.nominal_rate:
            raise StageError(f"the model was trained at {rate} Hz, stream {meta.name!r} runs at "
                             f"{meta.nominal_rate:g} Hz", "model")
        n_out = self._cell.n_outputs
        samples = self.p["window_s"] * meta.nominal_rate
        self._lam = math.exp(-1.0 / samples)
        if devices is not None:  # per-device readout state, one row per slot
            cap = devices.capacity
            self._window = max(1, round(samples))
            self._ring = np.zeros((cap, self._window if self.p["readout"] == "window" else 1, n_out), np.float64)
            self._acc = np.zeros((cap, n_out), np.float64)
            self._pos = np.zeros(cap, np.int64)
            devices.on_retire(self.reset_stream)
        elif self.p["readout"] == "window":
            self._window = max(1, round(samples))
            self._history = np.zeros((self._window, n_out), np.float64)
        else:
            # leaky count y[n] = lam * y[n-1] + s[n], one SOS section on the compiled filter
            self._leaky = SOSFilter(design_one_pole(self._lam), n_out)
        classes = tuple(model.meta.get("classes", ()))
        names = classes if len(classes) == n_out else tuple(f"o{i}" for i in range(n_out))
        self._out = meta.derive(channels=names, units=("spikes",) * n_out,
                                nominal_rate=meta.nominal_rate / self.p["every"],
                                classes=classes if len(classes) == n_out else ())
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk | None:
        if chunk.streams is not None:
            return self._process_devices(chunk)
        spikes = self._cell.step(chunk.data)
        if self.p["readout"] == "window":
            # counts over the last `window` samples for every row: differences of a running sum
            w = self._window
            both = np.concatenate([self._history, spikes])
            cs = np.concatenate([np.zeros((1, both.shape[1])), np.cumsum(both, axis=0)])
            scores = (cs[w + 1:] - cs[1:-w]).astype(np.float32)
            self._history = both[-w:]
        else:
            scores = self._leaky.step(spikes)
        out = chunk.with_data(np.ascontiguousarray(scores), self._out)
        every = self.p["every"]
        if every > 1:
            first = (every - 1 - chunk.seq) % every
            if first >= len(chunk):
                return None
            out = out.take(first, None, every)
        return out

    def _process_devices(self, chunk: SampleChunk) -> SampleChunk | None:
        """Gateway mode: rows from many devices. Each device's rows are stepped in order; every kernel call
        advances all the devices that have a row in this round (round r = each device's r-th row here)."""
        streams, seqs = chunk.streams, chunk.row_seq
        assert streams is not None and seqs is not None
        n = len(chunk)
        order = np.argsort(streams, kind="stable")
        s_sorted = streams[order]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        scores = np.empty((n, self._cell.n_outputs), np.float32)
        window = self.p["readout"] == "window"
        for r in range(int(rank.max()) + 1 if n else 0):
            rows = np.flatnonzero(rank == r)
            sl = streams[rows].astype(np.intp)
            spikes = self._cell.step_streams(chunk.data[rows], streams=sl).astype(np.float64)
            if window:  # counts over the last `window` samples: a running sum over a per-device ring
                pos = self._pos[sl]
                self._acc[sl] += spikes - self._ring[sl, pos]
                self._ring[sl, pos] = spikes
                self._pos[sl] = (pos + 1) % self._window
            else:  # the leaky count, as the single-stream SOS section computes it: y = x + lam * y
                self._acc[sl] = spikes + self._lam * self._acc[sl]
            scores[rows] = self._acc[sl]
        every = self.p["every"]
        keep = np.flatnonzero(seqs % every == every - 1) if every > 1 else np.arange(n)
        if len(keep) == 0:
            return None
        return chunk.with_data(scores, self._out).select(keep)

    def reset_stream(self, slot: int) -> None:
        """Forget one device (gateway mode): its slot is free for another."""
        self._cell.reset(slot)
        self._acc[slot] = 0
        self._ring[slot] = 0
        self._pos[slot] = 0

    def reset(self) -> None:
        self._cell.reset()
        if hasattr(self, "_acc"):
            self._acc[:] = 0
            self._ring[:] = 0
            self._pos[:] = 0
        elif self.p["readout"] == "window":
            self._history[:] = 0
        else:
            self._leaky.reset()

    def counters(self) -> dict[str, int | float]:
        c: dict[str, int | float] = {k: int(np.sum(v)) for k, v in self._cell.counters.items()}
        steps = c.get("steps", 0)
        if steps:
            c["synops_fraction"] = round(c["synops"] / (steps * self._cell.dense_synops), 6)
        return c
