"""Signal stages: channel selection, IIR filters (compiled SOS kernel), band power, decisions."""

from __future__ import annotations

import math

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..kernels import SOSFilter, design_bandpass, design_notch, design_one_pole
from ..params import Param
from .base import Stage, StageError, channel_indices, need_rate


class Select(Stage):
    kind = "select"
    summary = "keep the named channels, in the given order"
    params = {"channels": Param("str_list", help="channel labels to keep",
                                check=lambda v: None if v else "must name at least one channel")}

    def start(self, meta: StreamMeta) -> StreamMeta:
        self._idx = np.asarray(channel_indices(meta, self.p["channels"], "channels"), dtype=np.intp)
        units = tuple(meta.units[i] for i in self._idx) if meta.units else ()
        self._out = meta.derive(channels=tuple(self.p["channels"]), units=units)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        return chunk.with_data(np.ascontiguousarray(chunk.data[:, self._idx]), self._out)


class _SOSStage(Stage):
    """A stage that runs one streaming SOS filter over every channel."""

    def _sos(self, fs: float) -> np.ndarray:
        raise NotImplementedError

    def start(self, meta: StreamMeta) -> StreamMeta:
        fs = need_rate(meta, self.kind)
        try:
            sos = self._sos(fs)
        except ValueError as e:
            raise StageError(f"{e} (stream {meta.name!r} runs at {fs:g} Hz)") from e
        self._filter = SOSFilter(sos, meta.n_channels)
        self._primed = not self.p["prime"]
        return meta

    def process(self, chunk: SampleChunk) -> SampleChunk:
        if not self._primed and len(chunk):
            # Start from the steady state for the first sample: no start-up transient on DC offsets.
            self._filter.prime(chunk.data[0].astype(np.float64))
            self._primed = True
        return chunk.with_data(self._filter.step(chunk.data))

    def reset(self) -> None:
        self._filter.reset()
        self._primed = not self.p["prime"]


class Bandpass(_SOSStage):
    kind = "bandpass"
    summary = "causal Butterworth band-pass per channel (compiled SOS kernel, state across chunks)"
    params = {
        "low_hz": Param("number", min=0, min_exclusive=True, help="lower cut-off in Hz"),
        "high_hz": Param("number", min=0, min_exclusive=True, help="upper cut-off in Hz"),
        "order": Param("int", 4, min=1, max=12),
        "prime": Param("bool", True, help="start from the steady state of the first sample"),
    }

    def _sos(self, fs: float) -> np.ndarray:
        return design_bandpass(self.p["low_hz"], self.p["high_hz"], fs, self.p["order"])


class Notch(_SOSStage):
    kind = "notch"
    summary = "IIR notch per channel (mains interference)"
    params = {
        "freq_hz": Param("number", 50.0, min=0, min_exclusive=True),
        "q": Param("number", 30.0, min=0, min_exclusive=True),
        "prime": Param("bool", True),
    }

    def _sos(self, fs: float) -> np.ndarray:
        return design_notch(self.p["freq_hz"], fs, self.p["q"])


def _check_bands(v: list[float]) -> str | None:
    if not v or len(v) % 2:
        return "needs pairs of [low, high] edges in Hz, e.g. [8, 12, 12, 16]"
    if any(lo <= 0 or hi <= lo for lo, hi in zip(v[::2], v[1::2], strict=True)):
        return "every band needs 0 < low < high"
    return None


class FilterBank(Stage):
    kind = "filterbank"
    summary = "causal Butterworth band-pass bank: every channel in every band (band-major output channels)"
    params = {
        "bands_hz": Param("number_list", help="band edges as pairs: [low1, high1, low2, high2, ...]",
                          check=_check_bands),
        "order": Param("int", 4, min=1, max=12),
        "prime": Param("bool", True, help="start from the steady state of the first sample"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        fs = need_rate(meta, "filterbank")
        v = self.p["bands_hz"]
        self._bands = list(zip(v[::2], v[1::2], strict=True))
        try:
            self._filters = [SOSFilter(design_bandpass(lo, hi, fs, self.p["order"]), meta.n_channels)
                             for lo, hi in self._bands]
        except ValueError as e:
            raise StageError(f"{e} (stream {meta.name!r} runs at {fs:g} Hz)", "bands_hz") from e
        self._primed = not self.p["prime"]
        channels = tuple(f"{c}@{lo:g}-{hi:g}" for lo, hi in self._bands for c in meta.channels)
        self._out = meta.derive(channels=channels, units=meta.units * len(self._bands))
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        x = chunk.data
        if not self._primed and len(chunk):
            for f in self._filters:
                f.prime(x[0].astype(np.float64))
            self._primed = True
        c = x.shape[1]
        out = np.empty((len(chunk), c * len(self._filters)), x.dtype)
        for b, f in enumerate(self._filters):
            out[:, b * c:(b + 1) * c] = f.step(x)
        return chunk.with_data(out, self._out)

    def reset(self) -> None:
        for f in self._filters:
            f.reset()
        self._primed = not self.p["prime"]


class BandPower(Stage):
    kind = "bandpower"
    summary = "smoothed power per channel (x² through a one-pole low-pass), emitted every N samples"
    params = {
        "window_s": Param("number", 0.5, min=0, min_exclusive=True, help="time constant of the smoother"),
        "every": Param("int", 1, min=1, help="emit one row per N input samples"),
        "log10": Param("bool", False, help="emit log10(power) instead of power"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        fs = need_rate(meta, self.kind)
        a = 1.0 - math.exp(-1.0 / (self.p["window_s"] * fs))
        # One-pole smoother y[n] = a x[n] + (1 - a) y[n-1] as one SOS section on the same compiled kernel.
        self._filter = SOSFilter(design_one_pole(1.0 - a, a), meta.n_channels)
        every = self.p["every"]
        units = tuple(f"{u}²" if u else "" for u in meta.units)
        self._out = meta.derive(nominal_rate=fs / every, units=units)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk | None:
        sq = np.square(chunk.data)
        self._filter.step(sq, out=sq)
        every = self.p["every"]
        if every > 1:
            # Decimate on the source sample index, so the output does not depend on how input is chunked.
            first = (every - 1 - chunk.seq) % every
            if first >= len(chunk):
                return None
            chunk = chunk.with_data(sq).take(first, None, every)
            sq = chunk.data
        if self.p["log10"]:
            np.log10(np.maximum(sq, np.finfo(np.float32).tiny), out=sq)
        return chunk.with_data(sq, self._out)

    def reset(self) -> None:
        self._filter.reset()


class Laterality(Stage):
    kind = "laterality"
    summary = "left/rest/right decision from the band power of two hemispheric channels (e.g. mu over C3/C4)"
    params = {
        "left": Param("str", "C3", help="channel over the left hemisphere"),
        "right": Param("str", "C4", help="channel over the right hemisphere"),
        "threshold": Param("number", 0.15, min=0, max=1, help="|index| above which a side is declared"),
    }
    CLASSES = ("left", "rest", "right")

    def start(self, meta: StreamMeta) -> StreamMeta:
        self._l, self._r = channel_indices(meta, [self.p["left"], self.p["right"]], "left/right")
        self._out = meta.derive(channels=("laterality",), units=("",), classes=self.CLASSES)
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        # Imagined movement of one hand desynchronises the mu rhythm over the opposite hemisphere:
        # left-hand imagery lowers power on the right channel, so (P_left - P_right) / sum > 0 means "left".
        pl = chunk.data[:, self._l].astype(np.float64)
        pr = chunk.data[:, self._r].astype(np.float64)
        total = pl + pr
        index = np.divide(pl - pr, total, out=np.zeros_like(total), where=total > 0)
        th = self.p["threshold"]
        label = np.where(index > th, 0, np.where(index < -th, 2, 1)).astype(np.int16)
        return chunk.with_data(index.astype(np.float32)[:, None], self._out, label=label)


class Decide(Stage):
    kind = "decide"
    gateway = True  # per row; smoothing and hysteresis keep one state: refused for gateway streams
    summary = "class decision from per-class scores: optional smoothing, argmax, hysteresis"
    params = {
        "classes": Param("str_list", help="one label per input channel, in channel order",
                         check=lambda v: None if len(v) >= 2 and len(set(v)) == len(v)
                         else "needs at least two distinct class labels"),
        "smooth_s": Param("number", 0.0, min=0, help="time constant of a one-pole smoother on the scores (0: off)"),
        "hysteresis": Param("number", 0.0, min=0,
                            help="switch class only when the new best score beats the current one by this margin"),
    }

    def start(self, meta: StreamMeta) -> StreamMeta:
        if meta.devices is not None and (self.p["smooth_s"] > 0 or self.p["hysteresis"] > 0):
            raise StageError("smoothing and hysteresis keep one state, not one per device: not available in "
                             "gateway mode", "smooth_s" if self.p["smooth_s"] > 0 else "hysteresis")
        k = len(self.p["classes"])
        if meta.n_channels != k:
            raise StageError(f"{k} classes but the stream {meta.name!r} has {meta.n_channels} score channels",
                             "classes")
        self._filter = None
        if self.p["smooth_s"] > 0:
            fs = need_rate(meta, "smoothing")
            a = 1.0 - math.exp(-1.0 / (self.p["smooth_s"] * fs))
            self._filter = SOSFilter(design_one_pole(1.0 - a, a), k)
        self._current = -1
        self._out = meta.derive(classes=tuple(self.p["classes"]))
        return self._out

    def process(self, chunk: SampleChunk) -> SampleChunk:
        scores = chunk.data if self._filter is None else self._filter.step(chunk.data)
        best = np.argmax(scores, axis=1).astype(np.int16)
        margin = self.p["hysteresis"]
        if margin > 0:
            # Sequential by nature (each row depends on the class held before it), but only over the
            # rows of the score stream, whose rate is the decision rate.
            label = np.empty_like(best)
            cur = self._current
            for i, b in enumerate(best.tolist()):
                if cur < 0 or scores[i, b] > scores[i, cur] + margin:
                    cur = b
                label[i] = cur
            self._current = cur
        else:
            label = best
        return chunk.with_data(np.ascontiguousarray(scores), self._out, label=label)

    def reset(self) -> None:
        if self._filter is not None:
            self._filter.reset()
        self._current = -1
