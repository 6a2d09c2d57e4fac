"""Synthetic multi-channel EEG for the demo, tests and benchmarks, and an LSL outlet that plays it.

Background: 1/f-like noise (AR(1) per channel). Mu rhythm: 10 Hz over the sensorimotor channels, which
desynchronises over the hemisphere opposite the imagined hand. The script cycles rest -> left -> rest ->
right every `epoch_s`, so a laterality decoder has something real to find.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .lslcfg import import_pylsl

# 10-20 / 10-10 labels; the first entries are the ones a small montage keeps.
MONTAGE = (
    "C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "Pz",
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "T8", "P7", "P3", "P4", "P8", "O1", "O2", "Oz",
    "FC5", "FC1", "FC2", "FC6", "C5", "C1", "C2", "C6", "CP5", "CP1", "CPz", "CP2", "CP6", "AF3", "AF4",
    "AFz", "F5", "F1", "F2", "F6", "FT7", "FT8", "TP7", "TP8", "P5", "P1", "P2", "P6", "PO7", "PO3",
    "POz", "PO4", "PO8", "F9", "F10", "TP9", "TP10", "Iz", "FCz", "Fpz",
)
SCRIPT = ("rest", "left", "rest", "right")


def channel_labels(n: int) -> tuple[str, ...]:
    if n <= len(MONTAGE):
        return MONTAGE[:n]
    return MONTAGE + tuple(f"E{i}" for i in range(len(MONTAGE), n))


@dataclass
class SyntheticEEG:
    n_channels: int = 8
    rate: float = 250.0
    epoch_s: float = 4.0
    mu_uv: float = 8.0
    noise_uv: float = 10.0
    seed: int = 0
    labels: tuple[str, ...] = field(init=False)
    _rng: np.random.Generator = field(init=False, repr=False)
    _ar: npt.NDArray[np.float64] = field(init=False, repr=False)
    _n: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.labels = channel_labels(self.n_channels)
        self._rng = np.random.default_rng(self.seed)
        self._ar = np.zeros(self.n_channels)

    def state_at(self, sample: int) -> str:
        return SCRIPT[int(sample / (self.epoch_s * self.rate)) % len(SCRIPT)]

    def next(self, n: int) -> npt.NDArray[np.float32]:
        """The next n samples (n, channels) in µV."""
        idx = self._n + np.arange(n)
        t = idx / self.rate
        white = self._rng.standard_normal((n, self.n_channels)) * self.noise_uv
        out = np.empty((n, self.n_channels))
        ar = self._ar
        for i in range(n):  # AR(1) pink-ish background; small n per call, generator only
            ar = 0.95 * ar + 0.31 * white[i]
            out[i] = ar
        self._ar = ar
        mu = np.sin(2 * np.pi * 10.0 * t) * self.mu_uv
        epoch = (idx / (self.epoch_s * self.rate)).astype(np.int64) % len(SCRIPT)
        left_gain = np.where(epoch == 3, 0.2, 1.0)  # right-hand imagery: mu drops over C3 (left hemisphere)
        right_gain = np.where(epoch == 1, 0.2, 1.0)  # left-hand imagery: mu drops over C4
        gains = np.ones((n, self.n_channels))
        for ch, g in (("C3", left_gain), ("FC3", left_gain), ("CP3", left_gain),
                      ("C4", right_gain), ("FC4", right_gain), ("CP4", right_gain)):
            if ch in self.labels:
                gains[:, self.labels.index(ch)] = g
        out += mu[:, None] * gains
        self._n += n
        return out.astype(np.float32)


class LslEEGOutlet:
    """Plays SyntheticEEG on an LSL outlet in real time from a background thread.

    `chunk` samples are pushed at a time, stamped by liblsl at push time (as amplifier software does),
    so the receive latency a pipeline measures is the real push-to-receive path.
    """

    def __init__(self, name: str = "spikeline-synth-eeg", n_channels: int = 8, rate: float = 250.0,
                 chunk: int = 1, source_id: str | None = None, seed: int = 0, epoch_s: float = 4.0) -> None:
        pylsl = import_pylsl()
        self.gen = SyntheticEEG(n_channels=n_channels, rate=rate, seed=seed, epoch_s=epoch_s)
        info = pylsl.StreamInfo(name, "EEG", n_channels, rate, pylsl.cf_float32, source_id or f"{name}-sid")
        chans = info.desc().append_child("channels")
        for label in self.gen.labels:
            c = chans.append_child("channel")
            c.append_child_value("label", label)
            c.append_child_value("unit", "microvolts")
            c.append_child_value("type", "EEG")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=chunk)
        self.name, self.rate, self.chunk = name, rate, chunk
        self.pushed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LslEEGOutlet:
        self._thread = threading.Thread(target=self._run, name=f"outlet-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = self.chunk / self.rate
        next_t = time.perf_counter()
        while not self._stop.is_set():
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            self.push(self.chunk)

    def push(self, n: int) -> None:
        data = self.gen.next(n)
        if n == 1:
            self.outlet.push_sample(data[0])
        else:
            self.outlet.push_chunk(data)
        self.pushed += n

    def have_consumers(self, timeout: float) -> bool:
        return bool(self.outlet.wait_for_consumers(timeout))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def close(self) -> None:
        """Stop pushing and destroy the outlet (its consumers see it go). Idempotent."""
        self.stop()
        self.__dict__.pop("outlet", None)
