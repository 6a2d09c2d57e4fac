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
    clipped to the exact maximum. Count, sum and max are exact. `window()` gives the histogram of what
    was recorded since the previous call, from one set of counts (no second histogram to feed).
    """

    __slots__ = ("_mark", "count", "counts", "max", "sum", "window_max")

    def __init__(self) -> None:
        self.counts = np.zeros(_N, dtype=np.int64)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0
        self.window_max = 0.0
        self._mark: tuple[npt.NDArray[np.int64], int, float] = (self.counts.copy(), 0, 0.0)

    def record(self, seconds: npt.ArrayLike) -> None:
        v = np.asarray(seconds, dtype=np.float64).ravel()
        if v.size <= 8:  # the common case (a result or a few): scalar maths beats numpy's call overhead
            for x in v.tolist():
                self.record_one(x)
            return
        v = np.where(np.isfinite(v), v, 0.0)
        idx = np.minimum((np.log2(np.maximum(v * 1e6, 1.0)) * _SUB).astype(np.intp), _N - 1)
        self.counts += np.bincount(idx, minlength=_N)
        self.count += int(v.size)
        self.sum += float(v.sum())
        vmax = float(v.max())
        self.max = max(self.max, vmax)
        self.window_max = max(self.window_max, vmax)

    def record_one(self, seconds: float) -> None:
        """One value without numpy overhead."""
        if not math.isfinite(seconds):
            seconds = 0.0
        us = seconds * 1e6
        i = min(int(math.log2(us) * _SUB), _N - 1) if us > 1.0 else 0
        self.counts[i] += 1
        self.count += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds > self.window_max:
            self.window_max = seconds

    def window(self) -> LatencyHistogram:
        """What was recorded since the last call (or since creation); starts a new window."""
        counts, count, total = self._mark
        w = LatencyHistogram()
        w.counts = self.counts - counts
        w.count = self.count - count
        w.sum = self.sum - total
        w.max = w.window_max = self.window_max
        self._mark = (self.counts.copy(), self.count, self.sum)
        self.window_max = 0.0
        return w

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


@dataclass
class PipelineMetrics:
    """Everything a pipeline counts: totals since start, and rates/percentiles since the last `report()`."""

    pipeline: str
    budget_s: float
    max_age_s: float | None = None
    samples_in: int = 0
    dropped_queue: int = 0  # bounded queue overflow (drop_oldest)
    dropped_stale: int = 0  # source backlog older than the budget, skipped to the newest sample
    skipped_late: int = 0  # queued input that could no longer make the budget, skipped (policy drop_oldest/degrade)
    computed: int = 0  # samples (events) that went through the stages
    non_finite: int = 0  # samples refused at the pipeline's input for a NaN or infinite value
    restarts: int = 0  # on_error = restart: times the stages were reset after one raised
    dropped_error: int = 0  # samples (events) of the chunks whose stage raised
    tier: int = 0  # policy degrade: the tier computing now (0 = as configured)
    tier_switches: int = 0
    tier_seconds: dict[int, float] = field(default_factory=dict)  # time spent in each tier, up to the last switch
    source_gaps: int = 0  # samples the source reports lost upstream (e.g. LSL timestamp gaps)
    dropped_rate: int = 0  # events an event source's rate controller dropped (cap on events/s)
    rejected_input: int = 0  # input the source refused: malformed packets/events, out-of-order events
    results: int = 0
    deadline_misses: int = 0  # results whose runtime latency exceeded the budget
    age_misses: int = 0  # results whose age exceeded max_age (when configured)
    stage_errors: int = 0
    runtime: LatencyHistogram = field(default_factory=LatencyHistogram)
    age: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: dict[str, LatencyHistogram] = field(default_factory=dict)
    sink_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    source_counters: dict[str, int] = field(default_factory=dict)  # source-specific detail (packets, ...)
    devices: dict[str, Any] = field(default_factory=dict)  # gateway mode: the devices with the most trouble
    _t_window: float = field(default_factory=time.monotonic)
    _window_counts: tuple[int, int] = (0, 0)  # samples_in, results at the start of the window

    def count_in(self, n: int) -> None:
        self.samples_in += n

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
        self.results += int(np.size(runtime))
        self.deadline_misses += int(np.count_nonzero(runtime > self.budget_s))
        if self.max_age_s is not None:
            self.age_misses += int(np.count_nonzero(age > self.max_age_s))

    def report(self, now: float) -> dict[str, Any]:
        """Snapshot for the metrics topic and the console; starts a new window."""
        dt = now - self._t_window
        samples0, results0 = self._window_counts
        n_in, n_out = self.samples_in - samples0, self.results - results0
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "budget_ms": round(self.budget_s * 1e3, 3),
            "window_s": round(dt, 3),
            "rate": {
                "samples_per_s": round(n_in / dt, 2) if dt > 0 else None,
                "results_per_s": round(n_out / dt, 2) if dt > 0 else None,
            },
            "latency_ms": {"runtime": self.runtime.window().summary_ms(), "age": self.age.window().summary_ms()},
            "latency_ms_total": {"runtime": self.runtime.summary_ms(), "age": self.age.summary_ms()},
            "stage_ms": {k: h.summary_ms() for k, h in self.stages.items()},
            "counters": {
                "samples_in": self.samples_in,
                "results": self.results,
                "deadline_misses": self.deadline_misses,
                "age_misses": self.age_misses,
                "dropped_queue": self.dropped_queue,
                "dropped_stale": self.dropped_stale,
                "skipped_late": self.skipped_late,
                "computed": self.computed,
                "non_finite": self.non_finite,
                "tier": self.tier,
                "tier_switches": self.tier_switches,
                "source_gaps": self.source_gaps,
                "dropped_rate": self.dropped_rate,
                "rejected_input": self.rejected_input,
                "stage_errors": self.stage_errors,
                "restarts": self.restarts,
                "dropped_error": self.dropped_error,
            },
            "source": dict(self.source_counters),
            **({"tier_seconds": {str(k): round(v, 3) for k, v in sorted(self.tier_seconds.items())}}
               if self.tier_seconds else {}),
            **({"devices": dict(self.devices)} if self.devices else {}),
            "sinks": {k: dict(v) for k, v in self.sink_counters.items()},
        }
        self._window_counts = (self.samples_in, self.results)
        self._t_window = now
        return out
