"""One pipeline: source -> bounded queue -> stages -> sinks, with its budget and its metrics.

Stages run inline on the event loop: they are compiled kernels stepping a whole chunk with the GIL
released, costing microseconds; a call_soon wake-up is ~4 µs where a thread hand-off is ~80 µs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from enum import Enum

import numpy as np

from .chunk import Chunk, EventChunk, SampleChunk, StreamMeta
from .config import ComponentConfig, PipelineConfig
from .metrics import PipelineMetrics
from .mqtt import MqttPublisher
from .params import ConfigError
from .queue import SampleQueue
from .sinks import SINKS, Sink, SinkContext
from .sources import SOURCES, Source, SourceContext, SourceError
from .stages import STAGES, Stage, StageError

log = logging.getLogger("spikeline.pipeline")

RECENT_CHUNKS = 16  # result chunks kept for the operator page


class State(Enum):
    CREATED = "created"
    OPENING = "opening"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class Pipeline:
    def __init__(self, cfg: PipelineConfig, node: str, publisher: MqttPublisher | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.metrics = PipelineMetrics(cfg.name, cfg.budget_s, cfg.max_age_ms / 1e3 or None)
        self.state = State.CREATED
        self.error: str = ""
        self.meta_in: StreamMeta | None = None
        self.meta_out: StreamMeta | None = None
        self._source_ctx = ctx = SourceContext(cfg.name, cfg.budget_s, cfg.stale_s, cfg.queue_s, self.metrics,
                                               mqtt=publisher.s if publisher is not None else None)
        self.source: Source = SOURCES[cfg.source.kind](cfg.source.params, ctx)
        self.stages: list[Stage] = [STAGES[s.kind](s.name, s.params) for s in cfg.stages]
        # policy = "degrade": tier k's stages (tier 0 = self.stages as configured); a stage without tiers is the
        # same object in every tier
        n_tiers = 1 + max((len(s.tiers) for s in cfg.stages), default=0)
        self.tiers: list[list[Stage]] = [self.stages] + [
            [STAGES[s.kind](s.name, s.tiers[k - 1]) if s.tiers else base for s, base in zip(cfg.stages, self.stages,
                                                                                          strict=True)]
            for k in range(1, n_tiers)]
        self.tier = 0
        self._tier_since = 0.0  # when the current tier was entered (monotonic)
        self._calm_since: float | None = None  # since when every chunk has finished within recover_at x budget
        self._recent: deque[tuple[float, float]] = deque()  # (end, compute s) of the chunks in the last recover_s
        self._recent_busy = 0.0
        self._row_cost: dict[int, float] = {}  # per tier: smoothed compute time per sample (event)
        self._restarts: deque[float] = deque()  # when the stages were restarted (on_error = restart)
        sctx = SinkContext(node, cfg.name, cfg.budget_s, self.metrics, publisher)
        self.sinks: list[Sink] = [SINKS[s.kind](s.params, sctx, primary=(i == 0)) for i, s in enumerate(cfg.sinks)]
        self.queue: SampleQueue | None = None
        self._stopping = False
        self._cost_s = 0.0  # smoothed wall time of computing one chunk (policy drop_oldest/degrade)
        # the last result chunks handed to the sinks (references, no copy): the operator page's recent decisions
        self.recent: deque[SampleChunk] = deque(maxlen=RECENT_CHUNKS)

    async def open(self) -> None:
        """Connect the source and start every stage on the stream it will really get."""
        self.state = State.OPENING
        meta = await self.source.open()
        self.meta_in = meta
        for j, (st, sc) in enumerate(zip(self.stages, self.cfg.stages, strict=True)):
            if meta.devices is not None and not st.gateway:
                raise ConfigError([f"{sc.path}: stage type {sc.kind!r} keeps one state for its whole stream; it "
                                   "cannot serve a gateway source's many devices"])
            if st.takes_events != meta.is_events:
                raise ConfigError([f"{sc.path}: stage type {sc.kind!r} takes {_what(st.takes_events)}, but its input "
                                   f"{meta.name!r} is {_what(meta.is_events)}"])
            try:
                meta_next = st.start(meta)
                for k, tier in enumerate(self.tiers[1:], 1):  # the cheaper tiers' versions of this stage
                    if tier[j] is not st and _shape(got := tier[j].start(meta)) != _shape(meta_next):
                        raise ConfigError([f"{sc.path}.tiers[{k - 1}]: gives {_shape(got)}, the stage gives "
                                           f"{_shape(meta_next)}: a tier must produce the same stream"])
                meta = meta_next
            except StageError as e:
                where = f"{sc.path}.{e.param}" if e.param else sc.path
                raise ConfigError([f"{where}: {e}"]) from e
        if meta.is_events:
            raise ConfigError([f"{self.cfg.path}: the pipeline ends with event stream {meta.name!r}; sinks take results: "
                               "add a stage that turns events into results (e.g. event_classifier, hdsnn)"])
        self.meta_out = meta
        for sink, kc in zip(self.sinks, self.cfg.sinks, strict=True):
            try:
                sink.start(meta)
            except ValueError as e:  # the sink cannot take this stream (e.g. decisions without classes)
                raise ConfigError([f"{kc.path}: {e}"]) from e
        rate = self.meta_in.nominal_rate
        if self.meta_in.devices is not None:  # a gateway stream: every device's samples share the queue
            rate *= self.meta_in.devices.capacity
        cap = self.cfg.queue_samples or max(64, math.ceil(self.cfg.queue_s * (rate if rate > 0 else 1000.0)))
        self.queue = self._source_ctx.queue = SampleQueue(cap)

    def stage_counters(self) -> dict[str, dict[str, int | float]]:
        """Each started stage's work counters (none before every stage has started). A stage whose counters
        fail is left out and the error logged: metrics must never take the daemon down."""
        if self.meta_out is None:
            return {}
        out: dict[str, dict[str, int | float]] = {}
        for st in self.stages:
            try:
                c = st.counters()
            except Exception as e:
                log.warning("stage %s of pipeline %s: counters failed: %s: %s", st.name, self.name,
                            type(e).__name__, e)
                continue
            if c:
                out[st.name] = c
        return out

    def _put(self, chunk: Chunk) -> None:
        assert self.queue is not None
        self.metrics.count_in(len(chunk))
        if isinstance(chunk, SampleChunk) and len(chunk) and not np.isfinite(chunk.data).all():
            # NaN or infinite samples would poison every stateful stage after them: refused and counted; the
            # finite rows go on in runs, each at its own sample index (the refused ones leave a gap in seq)
            ok = np.isfinite(chunk.data).all(axis=1)
            self.metrics.non_finite += int(np.count_nonzero(~ok))
            if chunk.streams is not None:
                parts = [chunk.select(np.flatnonzero(ok))] if ok.any() else []
            else:
                edges = np.flatnonzero(np.diff(np.r_[False, ok, False].astype(np.int8)))
                parts = [chunk.take(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]
            for part in parts:
                self._enqueue(part)
            return
        self._enqueue(chunk)

    def _enqueue(self, chunk: Chunk) -> None:
        assert self.queue is not None
        before = self.queue.dropped
        self.queue.put(chunk)
        self.metrics.dropped_queue += self.queue.dropped - before

    async def run(self) -> None:
        """Open, then run source and compute until stopped or the source ends. Never raises
        (except cancellation): a failing pipeline reports why and stops without touching the others."""
        try:
            try:
                await self.open()
            except (SourceError, ConfigError) as e:
                self._fail(str(e))
                return
            except Exception as e:
                log.exception("pipeline %s could not start", self.name)
                self._fail(f"{type(e).__name__}: {e}")
                return
            self.state = State.RUNNING
            self._tier_since = time.monotonic()
            log.info("pipeline %s running: %s -> %s -> %s (budget %g ms)", self.name, self.cfg.source.kind,
                     " -> ".join(s.name for s in self.stages) or "(no stages)",
                     ", ".join(c.kind for c in self.cfg.sinks), self.cfg.budget_ms)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._source_task())
                    tg.create_task(self._compute())
                self.state = State.STOPPED
            except* (SourceError, _StageFailed) as eg:
                self._fail("; ".join(str(e) for e in eg.exceptions))
            except* Exception as eg:
                self._fail("; ".join(f"{type(e).__name__}: {e}" for e in eg.exceptions))
                log.error("pipeline %s crashed", self.name, exc_info=eg)
        finally:
            for sink in self.sinks:
                await sink.close()
            await self.source.close()

    def _fail(self, message: str) -> None:
        self.state = State.FAILED
        self.error = message
        log.error("pipeline %s stopped: %s", self.name, message)

    async def _source_task(self) -> None:
        assert self.queue is not None
        try:
            await self.source.run(self._put)
        finally:
            self.queue.close()

    async def _compute(self) -> None:
        assert self.queue is not None
        skip = self.cfg.policy in ("drop_oldest", "degrade") and not self.source.lossless
        perf = time.perf_counter
        degrade = len(self.tiers) > 1
        m = self.metrics
        while (chunk := await self.queue.get()) is not None:
            skipped = m.skipped_late
            if skip and len(chunk):
                chunk = self._skip_late(chunk)
                if chunk is None:
                    if degrade:
                        self._adapt(None, 0.0, 0)
                    continue
            t0 = perf()
            m.computed += len(chunk)
            try:
                self._through(chunk, 0)
            except _StageFailed as e:
                m.computed -= len(chunk)
                m.dropped_error += len(chunk)
                if not self._restart(e):
                    raise
                continue
            dt = perf() - t0
            self._cost_s = dt if self._cost_s == 0.0 else self._cost_s + 0.1 * (dt - self._cost_s)
            if degrade and len(chunk):
                oldest = chunk.t_recv if isinstance(chunk, EventChunk) else float(chunk.t_recv.min())
                self._adapt(None if m.skipped_late > skipped else time.monotonic() - oldest, dt, len(chunk))
        # The input has ended: let each stage hand over what it still holds, in order.
        for i, st in enumerate(self.stages):
            try:
                rest = st.flush()
            except Exception as e:
                self.metrics.stage_errors += 1
                raise RuntimeError(f"stage {st.name!r} ({st.kind}) failed at the end of the input: {e}") from e
            if rest is not None and len(rest):
                self._through(rest, i + 1)

    def _restart(self, e: Exception) -> bool:
        """on_error = restart: reset every stage (all tiers) and go on with the next chunk, unless max_restarts
        happened within the last 60 s. False: stop the pipeline."""
        if self.cfg.on_error != "restart":
            return False
        now = time.monotonic()
        recent = self._restarts
        while recent and recent[0] < now - 60.0:
            recent.popleft()
        if len(recent) >= self.cfg.max_restarts:
            log.error("pipeline %s: %s; %d restarts within 60 s: stopping", self.name, e, len(recent))
            return False
        recent.append(now)
        self.metrics.restarts += 1
        log.error("pipeline %s: %s; stages reset, going on (restart %d)", self.name, e, self.metrics.restarts,
                  exc_info=e.__cause__)
        for st in {id(s): s for tier in self.tiers for s in tier}.values():
            st.reset()
        return True

    def _adapt(self, lag: float | None, busy: float, rows: int) -> None:
        """Policy degrade, after each chunk (`busy` s of compute for `rows` samples): one tier down when the chunk
        finished later than degrade_at x budget after its oldest sample arrived (`lag`), or when input had to be
        skipped as late (lag None); one tier up when every chunk has finished within recover_at x budget for
        recover_s *and* the tier above, at its measured cost per sample, would have kept the core less than half
        busy over the last recover_s (so a load the cheaper tier just manages does not flap). At most one switch
        per switch_min_s."""
        c = self.cfg
        now = time.monotonic()
        if rows:
            per = busy / rows
            old = self._row_cost.get(self.tier)
            self._row_cost[self.tier] = per if old is None else old + 0.1 * (per - old)
        recent = self._recent
        recent.append((now, busy))
        self._recent_busy += busy
        while recent and recent[0][0] < now - c.recover_s:
            self._recent_busy -= recent.popleft()[1]
        high = lag is None or lag > c.degrade_at * c.budget_s
        if lag is not None and lag <= c.recover_at * c.budget_s:
            if self._calm_since is None:
                self._calm_since = now
        else:
            self._calm_since = None
        if now - self._tier_since < c.switch_min_s:
            return
        if high and self.tier < len(self.tiers) - 1:
            self._switch(self.tier + 1, now, "load")
        elif self.tier > 0 and self._calm_since is not None and now - self._calm_since >= c.recover_s:
            up, here = self._row_cost.get(self.tier - 1), self._row_cost.get(self.tier)
            ratio = up / here if up and here else 1.0
            if self._recent_busy * ratio < 0.5 * c.recover_s:
                self._switch(self.tier - 1, now, "recovered")

    def _switch(self, tier: int, now: float, why: str) -> None:
        old, new = self.tiers[self.tier], self.tiers[tier]
        for a, b in zip(old, new, strict=True):
            if a is not b:
                b.reset()  # the tier's own state starts afresh (it was idle since it last ran)
        m = self.metrics
        m.tier_seconds[self.tier] = m.tier_seconds.get(self.tier, 0.0) + (now - self._tier_since)
        m.tier_switches += 1
        log.info("pipeline %s: tier %d -> %d (%s)", self.name, self.tier, tier, why)
        self.tier = tier
        m.tier = tier
        self.stages = new
        self._tier_since = now
        self._calm_since = None

    def _skip_late(self, chunk: Chunk) -> Chunk | None:
        """Policy drop_oldest (and degrade): the rows of a dequeued chunk that can no longer make the budget are
        skipped to the newest and counted (`skipped_late`): a row received at t_recv makes it only if it is
        published before t_recv + budget, and computing the chunk is expected to take about what the last ones
        took (a smoothed cost; twice it and 5 % of the budget as a margin for the machine's jitter). None when
        nothing is left."""
        cutoff = time.monotonic() + 2.0 * self._cost_s - 0.95 * self.cfg.budget_s
        m = self.metrics
        if isinstance(chunk, EventChunk):
            if chunk.t_recv > cutoff:
                return chunk
            m.skipped_late += len(chunk)
            return None
        late = chunk.t_recv <= cutoff
        n_late = int(np.count_nonzero(late))
        if n_late == 0:
            return chunk
        m.skipped_late += n_late
        if n_late == len(chunk):
            return None
        if chunk.streams is not None:  # gateway: rows of many devices; keep each device's newer rows
            return chunk.select(np.flatnonzero(~late))
        first = int(np.argmin(late))  # rows arrive in order: skip the leading run of late ones
        m.skipped_late -= n_late - first
        return chunk.take(first)

    def _through(self, chunk: Chunk, first: int) -> None:
        """Run `chunk` through stages[first:] and hand the result to the sinks."""
        perf = time.perf_counter
        m = self.metrics
        out = chunk
        for st in self.stages[first:]:
            t0 = perf()
            try:
                res = st.process(out)
            except Exception as e:
                m.stage_errors += 1
                what = "events" if chunk.meta.is_events else "samples"
                raise _StageFailed(f"stage {st.name!r} ({st.kind}) failed on {what} "
                                   f"{chunk.seq}..{chunk.seq + len(chunk) - 1}: {type(e).__name__}: {e}") from e
            m.record_stage(st.name, perf() - t0)
            if res is None or (len(res) == 0 and not (isinstance(res, EventChunk) and res.is_tick)):
                return
            out = res
        out.t_done = time.monotonic()
        if isinstance(out, SampleChunk):
            out.budget_s = self.cfg.budget_s
            if len(self.tiers) > 1:
                out.tier = self.tier
        self.recent.append(out)  # type: ignore[arg-type]  # open() checked that the last stage gives samples
        for sink in self.sinks:
            sink.submit(out)  # type: ignore[arg-type]  # open() checked that the last stage gives samples

    def stop(self) -> None:
        """Stop the source; what is queued is still computed and handed to the sinks."""
        if not self._stopping:
            self._stopping = True
            if self.state == State.RUNNING:
                self.state = State.DRAINING
            self.source.stop()


class _StageFailed(RuntimeError):
    """A stage raised on a chunk (the message names the stage and the samples; the cause is the exception)."""


def _shape(meta: StreamMeta) -> tuple[object, ...]:
    """What a tier must keep the same: the stream's kind, channels, classes and rate."""
    return (meta.is_events, meta.channels, meta.classes, meta.nominal_rate)


def _what(events: bool) -> str:
    return "an event stream" if events else "a sample stream"


def describe(pc: PipelineConfig) -> str:
    def comp(c: ComponentConfig) -> str:
        return c.kind if c.name == c.kind else f"{c.name}:{c.kind}"

    return (f"{pc.name}: {comp(pc.source)} -> " + " -> ".join(comp(s) for s in pc.stages)
            + f" -> {', '.join(comp(s) for s in pc.sinks)}  (budget {pc.budget_ms:g} ms)")
