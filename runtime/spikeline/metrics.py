"""Latency histograms and counters: fixed memory, vectorised recording, nothing per sample in Python."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

_SUB = 16  # buckets per octave: upper bounds are 2**(1/16) ≈ 4.4 % apart
_OCTAVES = 28  # 1 µs .. 2**28 µs ≈ 4.5 min
_N = _SUB * _OCTAVES
# Upper edge of bucket i, in seconds. Bucket 0 holds everything <= 1 µs.
_UPPER = (2.0 ** ((np.arange(_N) + 1) / _SUB)) * 1e-6


class LatencyHistogram:
    """Log-bucketed histogram of durations in seconds (HDR-style, ≈4 % resolution).

    Percentiles are reported as the upper edge of the bucket holding them (never optimistic),
    clipped to the exact maximum. Count, sum, min and max are exact.
    """

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self) -> None:
        self.counts = np.zeros(_N, dtype=np.int64)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0
        self.min = math.inf

    def record(self, seconds: npt.ArrayLike) -> None:
        v = np.asarray(seconds, dtype=np.float64).ravel()
        if v.size == 0:
            return
        v = np.where(np.isfinite(v), v, 0.0)
        us = np.maximum(v * 1e6, 1.0)
        idx = np.minimum((np.log2(us) * _SUB).astype(np.intp), _N - 1)
        np.add.at(self.counts, idx, 1)
        self.count += int(v.size)
        self.sum += float(v.sum())
        self.max = max(self.max, float(v.max()))
        self.min = min(self.min, float(v.min()))

    def record_one(self, seconds: float) -> None:
        """One value without numpy overhead (per-chunk stage timings)."""
        us = seconds * 1e6 if math.isfinite(seconds) else 0.0
        i = min(int(math.log2(us) * _SUB), _N - 1) if us > 1.0 else 0
        self.counts[i] += 1
        self.count += 1
        self.sum += seconds
        self.max = max(self.max, seconds)
        self.min = min(self.min, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN when empty."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100.0))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(_UPPER[min(i, _N - 1)], self.max))

    def summary_ms(self) -> dict[str, float | int | None]:
        """p50/p99/p99.9/max/mean in milliseconds (None when empty: JSON has no NaN)."""
        if self.count == 0:
            return {"n": 0, "p50": None, "p99": None, "p999": None, "max": None, "mean": None}
        return {
            "n": self.count,
            "p50": round(self.percentile(50) * 1e3, 4),
            "p99": round(self.percentile(99) * 1e3, 4),
            "p999": round(self.percentile(99.9) * 1e3, 4),
            "max": round(self.max * 1e3, 4),
            "mean": round(self.sum / self.count * 1e3, 4),
        }

    def buckets(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(upper edges in seconds, cumulative counts) of the non-empty range, for Prometheus-style export."""
        return _UPPER, np.cumsum(self.counts)


@dataclass
class Window:
    """Histograms and counters since the last report (the live view)."""

    runtime: LatencyHistogram = field(default_factory=LatencyHistogram)
    age: LatencyHistogram = field(default_factory=LatencyHistogram)
    results: int = 0
    samples_in: int = 0


@dataclass
class PipelineMetrics:
    """Everything a pipeline counts. Totals since start plus a window since the last `report()`."""

    pipeline: str
    budget_s: float
    max_age_s: float | None = None
    samples_in: int = 0
    dropped_queue: int = 0  # bounded queue overflow (drop_oldest)
    dropped_stale: int = 0  # source backlog older than the budget, skipped to the newest sample
    source_gaps: int = 0  # samples the source reports lost upstream (e.g. LSL timestamp gaps)
    results: int = 0
    deadline_misses: int = 0  # results whose runtime latency exceeded the budget
    age_misses: int = 0  # results whose age exceeded max_age (when configured)
    stage_errors: int = 0
    runtime: LatencyHistogram = field(default_factory=LatencyHistogram)
    age: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: dict[str, LatencyHistogram] = field(default_factory=dict)
    window: Window = field(default_factory=Window)
    sink_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    _t_window: float = field(default_factory=time.monotonic)

    def count_in(self, n: int) -> None:
        self.samples_in += n
        self.window.samples_in += n

    def record_stage(self, name: str, seconds: float) -> None:
        h = self.stages.get(name)
        if h is None:
            h = self.stages[name] = LatencyHistogram()
        h.record_one(seconds)

    def record_published(self, t_recv: npt.NDArray[np.float64], t_sample: npt.NDArray[np.float64],
                         t_pub: npt.NDArray[np.float64] | float) -> None:
        """Latency of results handed to the transport at t_pub (called by the pipeline's first sink)."""
        runtime = t_pub - t_recv
        age = t_pub - t_sample
        self.runtime.record(runtime)
        self.age.record(age)
        self.window.runtime.record(runtime)
        self.window.age.record(age)
        n = int(runtime.size)
        self.results += n
        self.window.results += n
        self.deadline_misses += int(np.count_nonzero(runtime > self.budget_s))
        if self.max_age_s is not None:
            self.age_misses += int(np.count_nonzero(age > self.max_age_s))

    def report(self, now: float) -> dict[str, Any]:
        """Snapshot for the metrics topic and the console; starts a new window."""
        w, dt = self.window, now - self._t_window
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "budget_ms": round(self.budget_s * 1e3, 3),
            "window_s": round(dt, 3),
            "rate": {
                "samples_per_s": round(w.samples_in / dt, 2) if dt > 0 else None,
                "results_per_s": round(w.results / dt, 2) if dt > 0 else None,
            },
            "latency_ms": {"runtime": w.runtime.summary_ms(), "age": w.age.summary_ms()},
            "latency_ms_total": {"runtime": self.runtime.summary_ms(), "age": self.age.summary_ms()},
            "stage_ms": {k: h.summary_ms() for k, h in self.stages.items()},
            "counters": {
                "samples_in": self.samples_in,
                "results": self.results,
                "deadline_misses": self.deadline_misses,
                "age_misses": self.age_misses,
                "dropped_queue": self.dropped_queue,
                "dropped_stale": self.dropped_stale,
                "source_gaps": self.source_gaps,
                "stage_errors": self.stage_errors,
            },
            "sinks": {k: dict(v) for k, v in self.sink_counters.items()},
        }
        self.window = Window()
        self._t_window = now
        return out
