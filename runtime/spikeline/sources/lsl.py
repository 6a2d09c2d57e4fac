"""Lab Streaming Layer inlet.

A dedicated reader thread does the blocking pulls (never the event loop) straight into a preallocated
numpy buffer (`dest_obj`, no per-sample Python objects), maps timestamps to this host's monotonic clock,
applies the stale-data guard and hands each chunk to the loop with `call_soon_threadsafe`.

liblsl's inlet buffer would otherwise hold minutes of backlog (`max_buflen` = 360 s by default); it is sized
from the pipeline's budget here, and a backlog older than the budget is skipped to the newest samples
and counted (`dropped_stale`) rather than drained late.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..lslcfg import import_pylsl
from ..params import Param
from .base import Source, SourceError

log = logging.getLogger("spikeline.lsl")


def _meta_from_info(info: Any) -> StreamMeta:
    n = info.channel_count()
    labels: list[str] = []
    units: list[str] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label") or f"ch{len(labels)}")
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    if len(labels) != n:  # no (or incomplete) channel description: number them
        labels = [f"ch{i}" for i in range(n)]
        units = [""] * n
    return StreamMeta(name=info.name(), type=info.type(), channels=tuple(labels),
                      nominal_rate=float(info.nominal_srate()), units=tuple(units),
                      source_id=info.source_id())


def monotonic_minus_lsl_clock(local_clock: Callable[[], float]) -> float:
    """Offset from liblsl's clock to time.monotonic(), bracketed so the error is below a microsecond."""
    best = (math.inf, 0.0)
    for _ in range(16):
        a = time.monotonic()
        lc = local_clock()
        b = time.monotonic()
        best = min(best, (b - a, (a + b) / 2 - lc))
    return best[1]


class LslSource(Source):
    kind = "lsl"
    summary = "LSL inlet resolved by name / type / source_id"
    params = {
        "name": Param("str", "", help="stream name"),
        "stream_type": Param("str", "", help='stream type, e.g. "EEG"'),
        "source_id": Param("str", "", help="stream source_id (lets liblsl recover a restarted outlet)"),
        "resolve_timeout_s": Param("number", 10.0, min=0.1),
        "max_chunk": Param("int", 0, min=0, help="most samples per pull (0: 0.1 s of signal, >= 32)"),
        "time_correction_every_s": Param("number", 5.0, min=0.5),
        "silent_after_s": Param("number", 0.5, min=0.05, help="no sample this long: an outage (logged, counted)"),
        "lost_timeout_s": Param("number", 30.0, min=0,
                                help="no sample this long: the stream is gone, the pipeline stops with a report "
                                     "(0: wait for it forever)"),
    }

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        if not (p["name"] or p["stream_type"] or p["source_id"]):
            raise SourceError("an LSL source needs at least one of name, stream_type, source_id")
        self._stop = threading.Event()
        self._pylsl = import_pylsl()
        self._info: Any = None
        self._meta: StreamMeta | None = None
        self._inlet: Any = None
        self._reader: threading.Thread | None = None

    def _predicate(self) -> str:
        parts = []
        for key, prop in (("name", "name"), ("stream_type", "type"), ("source_id", "source_id")):
            v = self.p[key]
            if v:
                if "'" in v:
                    raise SourceError(f"{key} must not contain a single quote: {v!r}")
                parts.append(f"{prop}='{v}'")
        return " and ".join(parts)

    def _resolve(self) -> Any:
        pred = self._predicate()
        found = self._pylsl.resolve_bypred(pred, 1, self.p["resolve_timeout_s"])
        if not found:
            visible = self._pylsl.resolve_streams(wait_time=0.5)
            names = ", ".join(f"{s.name()!r} ({s.type()}, {s.channel_count()} ch)" for s in visible[:10]) or "none"
            raise SourceError(f"no LSL stream matching {pred} within {self.p['resolve_timeout_s']:g} s; "
                              f"streams visible on this host: {names}")
        return found[0]

    async def open(self) -> StreamMeta:
        info = await asyncio.to_thread(self._resolve)
        if info.channel_format() == self._pylsl.cf_string:
            raise SourceError(f"LSL stream {info.name()!r} carries strings (markers), not numeric samples")
        self._buflen_s = max(1, math.ceil(2 * self.ctx.queue_s))  # what liblsl may hold for us
        self._inlet = self._pylsl.StreamInlet(info, max_buflen=self._buflen_s, recover=True, as_numpy=True)
        full = await asyncio.to_thread(self._inlet.info, 5.0)
        self._info = full
        self._meta = _meta_from_info(full)
        self._same_host = full.hostname() == socket.gethostname()
        log.info("LSL: %s (%s, %d ch, %g Hz, source_id=%r, host=%s)", self._meta.name, self._meta.type,
                 self._meta.n_channels, self._meta.nominal_rate, self._meta.source_id, full.hostname())
        return self._meta

    async def run(self, put: Callable[[SampleChunk], None]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finished(exc: BaseException | None) -> None:
            if not done.done():
                done.set_exception(exc) if exc else done.set_result(None)

        def reader() -> None:
            try:
                self._read(lambda c: loop.call_soon_threadsafe(put, c))
            except BaseException as e:
                loop.call_soon_threadsafe(finished, e)
            else:
                loop.call_soon_threadsafe(finished, None)

        t = threading.Thread(target=reader, name=f"lsl-{self.ctx.pipeline}", daemon=True)
        self._reader = t
        t.start()
        try:
            await done
        finally:
            self._stop.set()
            await asyncio.to_thread(t.join, 2.0)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Destroy the inlet now, not whenever the pipeline object is collected: its connection, its recovery
        watchdog and its buffer go with the pipeline (a reload that restarts it leaves nothing connected behind).
        Destroyed directly, without close_stream() first: closing alone breaks the connection and starts
        liblsl's stream recovery, whose cancellation can race with the destruction (sccn/liblsl#220). Not while
        the reader thread still pulls from it (it did not stop within its 2 s): then it stays referenced."""
        if self._inlet is None or (self._reader is not None and self._reader.is_alive()):
            return
        last = [self._inlet]  # the last reference: dropped in a worker thread, where liblsl's teardown may block
        self._inlet = None
        await asyncio.to_thread(last.clear)

    def _read(self, emit: Callable[[SampleChunk], object]) -> None:
        """The reader thread: pull, stamp, guard, emit. No Python per sample."""
        assert self._meta is not None
        pylsl, inlet, meta, m = self._pylsl, self._inlet, self._meta, self.ctx.metrics
        rate = meta.nominal_rate
        max_chunk = self.p["max_chunk"] or max(32, math.ceil(rate * 0.1))
        buf = np.empty((max_chunk, meta.n_channels), dtype=inlet.np_dtype)
        inlet.open_stream(timeout=5.0)
        offset = monotonic_minus_lsl_clock(pylsl.local_clock)
        correction, next_correction = 0.0, 0.0
        seq = 0
        last_t: float | None = None
        stale_s = self.ctx.stale_s
        last_data = time.monotonic()
        outage = False  # in an outage since silent_after_s without a sample
        counters = m.source_counters
        counters.setdefault("outages", 0)
        counters.setdefault("outage_samples", 0)  # samples missing across outages (in source_gaps too)
        counters.setdefault("bad_timestamps", 0)  # samples whose time was impossible: re-stamped on arrival
        counters.setdefault("time_reversals", 0)  # times a sample's timestamp went backwards
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._same_host and now >= next_correction:
                # Same host: one steady clock, the correction is 0 by definition (its estimate is noise).
                try:
                    correction = inlet.time_correction(timeout=1.0)
                except pylsl.TimeoutError:
                    log.warning("LSL %s: time_correction timed out; keeping %.6f s", meta.name, correction)
                next_correction = now + self.p["time_correction_every_s"]
            try:
                _, ts = inlet.pull_chunk(timeout=0.1, max_samples=max_chunk, dest_obj=buf,
                                         min_samples=1, as_numpy=True)
            except pylsl.LostError as e:
                raise SourceError(f"LSL stream {meta.name!r} was lost and cannot be recovered "
                                  "(give the outlet a source_id so liblsl can reconnect)") from e
            n = len(ts)
            if n == 0:
                idle = time.monotonic() - last_data
                if not outage and idle >= self.p["silent_after_s"]:
                    outage = True
                    counters["outages"] += 1
                    log.warning("LSL %s: no sample for %.1f s (outlet gone or stalled); waiting for it to return",
                                meta.name, idle)
                if self.p["lost_timeout_s"] > 0 and idle >= self.p["lost_timeout_s"]:
                    raise SourceError(f"LSL stream {meta.name!r} (source_id {meta.source_id!r}): no sample for "
                                      f"{idle:.1f} s; giving up (lost_timeout_s = {self.p['lost_timeout_s']:g})")
                continue
            t_recv = time.monotonic()
            t = np.asarray(ts, dtype=np.float64) + (correction + offset)
            # Timestamps that cannot be true (the outlet's clock was reset or jumped, a broken device): far older
            # than any backlog (a minute, or ten times what liblsl may buffer), in the future, or not numbers. Those
            # samples are re-stamped from their arrival (one nominal period apart) and counted, so the session goes
            # on; an ordinary backlog is the stale guard's; a small step backwards is counted.
            bad = ~np.isfinite(t) | (t < t_recv - max(60.0, 10.0 * self._buflen_s)) | (t > t_recv + 0.5)
            if bad.any():
                k = int(np.count_nonzero(bad))
                if counters["bad_timestamps"] == 0 or k == n:
                    log.warning("LSL %s: %d sample(s) with impossible timestamps (e.g. %r); re-stamped on arrival",
                                meta.name, k, float(ts[int(np.argmax(bad))]))
                counters["bad_timestamps"] += k
                arrival = t_recv - (n - 1 - np.arange(n)) / rate if rate > 0 else np.full(n, t_recv)
                t = np.where(bad, arrival, t)
            dt = np.diff(t, prepend=t[0] if last_t is None else last_t)  # time since each previous sample
            if (dt < 0).any():
                counters["time_reversals"] += int(np.count_nonzero(dt < 0))
            if outage:
                outage = False
                lost = 0
                if rate > 0 and last_t is not None:  # the outage's samples: the rows after it skip their indices
                    lost = max(0, round((float(t[0]) - last_t) * rate) - 1)
                    seq += lost
                    counters["outage_samples"] += lost
                log.warning("LSL %s: samples again after %.1f s (%d samples missing)", meta.name,
                            t_recv - last_data, lost)
            last_data = t_recv
            if rate > 0:
                # Upstream losses (liblsl's own buffer overflowing, an outage) show as timestamp gaps.
                steps = dt * rate
                m.source_gaps += int(np.sum(np.maximum(np.rint(steps[steps > 1.5]) - 1, 0)))
            last_t = float(t[-1])
            # Stale-data guard: a backlog older than `stale_s` is skipped to the newest sample. When all of
            # this pull is stale and more is already waiting, all of it goes (the newest is further on).
            first = int(np.searchsorted(t, t_recv - stale_s, side="left")) if stale_s > 0 else 0
            if first == n and inlet.samples_available() > 0:
                m.dropped_stale += n
                seq += n
                continue
            first = min(first, n - 1)
            m.dropped_stale += first
            data = buf[first:n].astype(np.float32)  # a fresh array: the buffer is reused next pull
            emit(SampleChunk(data=data, t=t[first:], t_recv=np.full(n - first, t_recv), seq=seq + first,
                             meta=meta))
            seq += n
