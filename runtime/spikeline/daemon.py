"""The daemon: many pipelines and one MQTT connection in one asyncio event loop.

Shutdown (SIGINT/SIGTERM, or every pipeline ending) drains with a deadline, like uvicorn: sources stop,
queued samples are computed and published until `drain_s`, what is left is counted, then the
`offline` status is published and the connection closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from . import lslcfg, systemd
from .config import Config, PipelineConfig
from .mqtt import MqttPublisher
from .params import ConfigError
from .pipeline import Pipeline, State

log = logging.getLogger("spikeline.daemon")

MetricsCallback = Callable[[list[dict[str, Any]]], None]

# Config fields a reload does not apply (the connection, the LSL set-up and the listening ports are made at start)
_RESTART_KEYS = ("node", "mqtt", "lsl_config", "prometheus_port", "prometheus_host", "web_port", "web_host")


def _same(a: PipelineConfig, b: PipelineConfig) -> bool:
    """Equal settings, wherever the pipeline sits in the file (`path` names its position)."""
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "path"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return bool(strip(dataclasses.asdict(a)) == strip(dataclasses.asdict(b)))


class Daemon:
    def __init__(self, cfg: Config, on_metrics: MetricsCallback | None = None,
                 notifier: systemd.Notifier | None = None) -> None:
        self.cfg = cfg
        self.lsl_config = lslcfg.configure(cfg.lsl_config)
        self.publisher = MqttPublisher(cfg.mqtt, cfg.node) if cfg.mqtt else None
        self.pipelines = [Pipeline(pc, cfg.node, self.publisher) for pc in cfg.pipelines]
        self.on_metrics = on_metrics
        self.notifier = notifier if notifier is not None else systemd.Notifier()
        self.last_reports: list[dict[str, Any]] = []
        self.reloads = 0  # reloads applied
        self.reloads_rejected = 0  # reloads refused (the running configuration stayed)
        self.last_reload: dict[str, Any] | None = None
        self._stop: asyncio.Event | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[Pipeline, asyncio.Task[None]] = {}
        self._hup = asyncio.Event()
        self._wake = asyncio.Event()  # the set of pipeline tasks changed
        self._reloading = False

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
            self.notifier.close()

    @staticmethod
    async def _listen(servers: list[asyncio.Server], what: str, host: str, port: int,
                      start: Coroutine[Any, Any, asyncio.Server]) -> None:
        try:
            servers.append(await start)
        except OSError as e:  # the port is taken: the pipelines still run, the reason is logged
            log.error("%s: cannot listen on %s:%d: %s", what, host, port, e)

    def prometheus_text(self) -> str:
        from .prometheus import exposition

        return exposition(self.cfg.node, self.pipelines, self.publisher,
                          {"applied": self.reloads, "rejected": self.reloads_rejected})

    async def _run(self) -> int:
        assert self._stop is not None
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            pub_task = tg.create_task(self.publisher.run(), name="mqtt") if self.publisher else None
            for p in self.pipelines:
                self._start(p)
            helpers = [tg.create_task(self._metrics_loop(), name="metrics"),
                       tg.create_task(self._when_up(freeze=True), name="ready"),
                       tg.create_task(self._reload_loop(), name="reload")]
            if self.notifier.watchdog_s:
                helpers.append(tg.create_task(self._watchdog(self.notifier.watchdog_s), name="watchdog"))
            stop_wait = tg.create_task(self._stop.wait())
            while not stop_wait.done():
                running = {t for t in self._tasks.values() if not t.done()}
                if not running and not self._reloading:
                    break  # every pipeline has ended
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())  # a reload started new pipelines
                await asyncio.wait(running | {stop_wait, wake}, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
            self.notifier.stopping()
            helpers[2].cancel()  # no reload once draining (the watchdog pings on: the loop must not stall now either)
            await self._drain()
            gc.unfreeze()
            stop_wait.cancel()
            self._report()
            if self.publisher is not None and pub_task is not None:
                await self.publisher.stop(max(0.0, self.cfg.drain_s))
                try:
                    await asyncio.wait_for(pub_task, timeout=2.0)
                except TimeoutError:
                    log.warning("MQTT connection did not close within 2 s")
            for t in helpers:
                t.cancel()
        self._tg = None
        failed = [p for p in self.pipelines if p.state == State.FAILED]
        for p in failed:
            log.error("pipeline %s failed: %s", p.name, p.error)
        return 1 if failed else 0

    def _start(self, p: Pipeline) -> None:
        assert self._tg is not None
        self._tasks[p] = self._tg.create_task(p.run(), name=f"pipeline-{p.name}")

    async def _when_up(self, freeze: bool) -> None:
        """Once every pipeline has opened (running, or failed to start): tell systemd READY=1, and (at start-up)
        move everything allocated so far (modules, models, configuration) out of the garbage collector's reach
        (gc.freeze): a full collection then scans only what the pipelines allocate while running, instead of
        pausing the loop for tens of ms (measured: a 36 ms pause at 2000 watches in tools/bench_gateway.py).
        Undone at shutdown."""
        while any(p.state in (State.CREATED, State.OPENING) for p in self.pipelines):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # (pipeline states have no event to await)
        if freeze:
            gc.freeze()  # no collection first: data may already be flowing, and a full one is the pause avoided
            log.debug("gc: %d objects frozen", gc.get_freeze_count())
        self.notifier.ready(self.status_line())
        log.info("ready: %s", self.status_line())

    async def _watchdog(self, timeout_s: float) -> None:
        """WATCHDOG=1 at half the timeout, from the event loop itself: if the loop stalls (a stage or a callback
        blocking it), the pings stop and systemd restarts the service."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(timeout_s / 2)

    def status_line(self) -> str:
        """One line for `systemctl status`: pipelines by state, results, budget misses, drops."""
        states: dict[str, int] = {}
        for p in self.pipelines:
            states[p.state.value] = states.get(p.state.value, 0) + 1
        ms = [p.metrics for p in self.pipelines]
        dropped = sum(m.dropped_queue + m.skipped_late + m.dropped_stale + m.non_finite + m.dropped_error for m in ms)
        return (", ".join(f"{n} {s}" for s, n in states.items()) + f"; {sum(m.results for m in ms)} results, "
                f"{sum(m.deadline_misses for m in ms)} budget misses, {dropped} samples dropped")

    def request_reload(self) -> None:
        """SIGHUP: read the config file again and apply it (see reload()). Several requests during one reload
        give one more reload after it."""
        if self._stop is not None and not self._stop.is_set():
            self._hup.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._hup.wait()
            self._hup.clear()
            await self.reload()

    async def reload(self) -> dict[str, Any]:
        """Read the config file again. A file that does not validate, or whose pipelines cannot be built, is
        rejected and everything keeps running as it was. Otherwise, pipeline by name: an unchanged pipeline keeps
        running untouched (its state, counters and sequence numbers); a changed one, or one that has failed, is
        drained and started anew from the new settings; new ones start, removed ones drain and stop. `[node] metrics_interval_s` and
        `drain_s` apply at once; the node's name, `[mqtt]`, `[lsl]` and the HTTP ports need a restart (logged)."""
        self._reloading = True
        self.notifier.reloading()
        try:
            out = await self._reload()
        finally:
            self._reloading = False
            self._wake.set()
        self.last_reload = out
        if out["ok"]:
            self.reloads += 1
        else:
            self.reloads_rejected += 1
            self.notifier.ready(self.status_line())
        return out

    async def _reload(self) -> dict[str, Any]:
        from . import config

        origin = self.cfg.origin
        out: dict[str, Any] = {"ok": False, "file": origin, "problems": [], "kept": [], "restarted": [],
                               "added": [], "removed": [], "not_applied": []}
        try:
            if origin.startswith("<"):
                raise ConfigError([f"the configuration came from {origin}, not a file: nothing to reload"])
            new = await asyncio.to_thread(config.load, origin)
        except ConfigError as e:
            out["problems"] = list(e.problems)
        else:
            out["not_applied"] = [k for k in _RESTART_KEYS if getattr(new, k) != getattr(self.cfg, k)]
            if "mqtt" in out["not_applied"] and self.publisher is None:
                out["problems"].append("[mqtt]: the MQTT connection starts with the daemon; restart it to add one")
        old = {p.name: p for p in self.pipelines}
        fresh: dict[str, Pipeline] = {}
        if not out["problems"]:
            for pc in new.pipelines:
                if pc.name in old and _same(old[pc.name].cfg, pc) and old[pc.name].state != State.FAILED:
                    continue  # unchanged and not failed: it runs on untouched
                try:  # builds the source, stages (models loaded) and sinks from the new settings
                    fresh[pc.name] = Pipeline(pc, self.cfg.node, self.publisher)
                except Exception as e:
                    out["problems"].append(f"{pc.path}: {type(e).__name__}: {e}")
        if out["problems"]:
            log.error("reload of %s rejected, the running configuration stays:\n  %s", origin,
                      "\n  ".join(out["problems"]))
            return out
        names = [pc.name for pc in new.pipelines]
        out["kept"] = [n for n in names if n not in fresh]
        out["restarted"] = [n for n in names if n in fresh and n in old]
        out["added"] = [n for n in names if n not in old]
        out["removed"] = [n for n in old if n not in names]
        ending = [old[n] for n in out["restarted"] + out["removed"]]
        await self._drain(ending)
        for p in ending:
            self._tasks.pop(p, None)
            log.info("reload: pipeline %s ended (%d results)", p.name, p.metrics.results)
        self.pipelines = [fresh.get(n) or old[n] for n in names]
        self.cfg = dataclasses.replace(self.cfg, pipelines=new.pipelines, metrics_interval_s=new.metrics_interval_s,
                                       drain_s=new.drain_s)
        for n in out["restarted"] + out["added"]:
            self._start(fresh[n])
        self._wake.set()
        if out["not_applied"]:
            log.warning("reload: changes to %s apply at the next restart", ", ".join(out["not_applied"]))
        log.info("reload of %s: kept %s; restarted %s; added %s; removed %s", origin,
                 *(", ".join(out[k]) or "none" for k in ("kept", "restarted", "added", "removed")))
        out["ok"] = True
        await self._when_up(freeze=False)
        return out

    async def _drain(self, pipelines: list[Pipeline] | None = None) -> None:
        """Stop these pipelines (default: all) and let them compute what is queued, up to drain_s each."""
        ps = self.pipelines if pipelines is None else pipelines
        for p in ps:
            p.stop()
        tasks = [t for p in ps if (t := self._tasks.get(p)) is not None]
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
