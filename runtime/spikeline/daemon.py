"""The daemon: many pipelines and one MQTT connection in one asyncio event loop.

Shutdown (SIGINT/SIGTERM, or every pipeline ending) drains with a deadline, like uvicorn: sources stop,
queued samples are computed and published until `drain_s`, what is left is counted, then the
`offline` status is published and the connection closed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from . import lslcfg
from .config import Config
from .mqtt import MqttPublisher
from .pipeline import Pipeline, State

log = logging.getLogger("spikeline.daemon")

MetricsCallback = Callable[[list[dict[str, Any]]], None]


class Daemon:
    def __init__(self, cfg: Config, on_metrics: MetricsCallback | None = None) -> None:
        self.cfg = cfg
        self.lsl_config = lslcfg.configure(cfg.lsl_config)
        self.publisher = MqttPublisher(cfg.mqtt, cfg.node) if cfg.mqtt else None
        self.pipelines = [Pipeline(pc, cfg.node, self.publisher) for pc in cfg.pipelines]
        self.on_metrics = on_metrics
        self.last_reports: list[dict[str, Any]] = []
        self._stop: asyncio.Event | None = None

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> int:
        """Run until stopped or every pipeline has ended. 0 when no pipeline failed, else 1."""
        self._stop = asyncio.Event()
        servers: list[asyncio.Server] = []
        if self.cfg.prometheus_port:
            from . import prometheus

            await self._listen(servers, "Prometheus metrics", self.cfg.prometheus_host, self.cfg.prometheus_port,
                               prometheus.serve(self.cfg.prometheus_host, self.cfg.prometheus_port,
                                                self.prometheus_text))
        if self.cfg.web_port:
            from . import web

            await self._listen(servers, "operator page", self.cfg.web_host, self.cfg.web_port,
                               web.serve(self.cfg.web_host, self.cfg.web_port, self))
        try:
            return await self._run()
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    @staticmethod
    async def _listen(servers: list[asyncio.Server], what: str, host: str, port: int,
                      start: Coroutine[Any, Any, asyncio.Server]) -> None:
        try:
            servers.append(await start)
        except OSError as e:  # the port is taken: the pipelines still run, the reason is logged
            log.error("%s: cannot listen on %s:%d: %s", what, host, port, e)

    def prometheus_text(self) -> str:
        from .prometheus import exposition

        return exposition(self.cfg.node, self.pipelines, self.publisher)

    async def _run(self) -> int:
        assert self._stop is not None
        async with asyncio.TaskGroup() as tg:
            pub_task = tg.create_task(self.publisher.run(), name="mqtt") if self.publisher else None
            tasks = [tg.create_task(p.run(), name=f"pipeline-{p.name}") for p in self.pipelines]
            metrics_task = tg.create_task(self._metrics_loop(), name="metrics")
            freeze = tg.create_task(self._freeze_when_up(), name="gc-freeze")
            stop_wait = tg.create_task(self._stop.wait())
            running: set[asyncio.Future[Any]] = set(tasks)
            while running and not stop_wait.done():
                _, running = await asyncio.wait(running | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                running.discard(stop_wait)
            await self._drain(tasks)
            freeze.cancel()
            gc.unfreeze()
            metrics_task.cancel()
            stop_wait.cancel()
            self._report()
            if self.publisher is not None and pub_task is not None:
                await self.publisher.stop(max(0.0, self.cfg.drain_s))
                try:
                    await asyncio.wait_for(pub_task, timeout=2.0)
                except TimeoutError:
                    log.warning("MQTT connection did not close within 2 s")
        failed = [p for p in self.pipelines if p.state == State.FAILED]
        for p in failed:
            log.error("pipeline %s failed: %s", p.name, p.error)
        return 1 if failed else 0

    async def _freeze_when_up(self) -> None:
        """Once every pipeline is up, move everything allocated so far (modules, models, configuration) out of
        the garbage collector's reach (gc.freeze): a full collection then scans only what the pipelines
        allocate while running, instead of pausing the loop for tens of ms (measured: a 36 ms pause at
        2000 watches in tools/bench_gateway.py). Undone at shutdown."""
        while any(p.state in (State.CREATED, State.OPENING) for p in self.pipelines):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # (pipeline states have no event to await)
        gc.freeze()  # no collection first: data may already be flowing, and a full one is the pause avoided
        log.debug("gc: %d objects frozen", gc.get_freeze_count())

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        for p in self.pipelines:
            p.stop()
        _, pending = await asyncio.wait(tasks, timeout=self.cfg.drain_s) if tasks else (set(), set())
        for t in pending:
            log.warning("%s did not drain within %.1f s; cancelling", t.get_name(), self.cfg.drain_s)
            t.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.metrics_interval_s)
            self._report()

    def _report(self) -> None:
        now = time.monotonic()
        reports = []
        for p in self.pipelines:
            r = p.metrics.report(now)
            r["state"] = p.state.value
            if p.error:
                r["error"] = p.error
            stage_counters = p.stage_counters()
            if stage_counters:
                r["stage_counters"] = stage_counters
            r["queue"] = ({"samples": len(p.queue), "capacity": p.queue.capacity, "high_water": p.queue.high_water}
                          if p.queue else None)
            if self.publisher is not None:
                s = self.publisher.stats
                r["mqtt"] = {"connected": s.connected, "protocol": s.protocol, "published": s.published,
                             "backlog": self.publisher.backlog, "dropped_offline": s.dropped_offline,
                             "dropped_shutdown": s.dropped_shutdown, "connects": s.connects,
                             "connect_failures": s.connect_failures, "last_error": s.last_error}
                topic = f"spikeline/{self.cfg.node}/{p.name}/metrics"
                self.publisher.publish_control(topic, json.dumps(r, separators=(",", ":")).encode())
            reports.append(r)
        self.last_reports = reports
        if self.on_metrics is not None:
            self.on_metrics(reports)
