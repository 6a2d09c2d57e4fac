"""Shared by the kernel benchmarks in tools/: timing calls, naming the CPU."""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt


def time_calls(call: Callable[[int], object], budget_s: float, min_calls: int, max_calls: int) -> npt.NDArray[np.int64]:
    """Nanoseconds per call: at least min_calls, then until budget_s has passed (at most max_calls)."""
    for i in range(min(min_calls, 20)):  # warm-up: caches, branch predictors, lazy imports
        call(i)
    times: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        i = 0
        while len(times) < max_calls and (len(times) < min_calls or clock() < deadline):
            t0 = clock()
            call(i)
            times.append(clock() - t0)
            i += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return np.array(times, dtype=np.int64)


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (x86 "model name", Raspberry Pi "Model"), else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.machine()
