#!/usr/bin/env python3
"""Benchmark spikeline's gateway mode: how many 50 Hz smartwatches one core serves inside a 20 ms budget.

Not a test. For each N, two processes: the pipeline of deploy/examples/smartwatch-gateway.toml (l2mu
har-spar-l2mu, readout window 2 s every 50, then decide; budget 20 ms, queue_s 1) but with a `watch_udp`
source on a free loopback port and a `jsonl` sink writing to /dev/null, pinned to CPU 0 (one event loop: the source reads
its socket on the loop); and tools/watch_sim.py pinned to CPU 1, sending N
watches x 50 Hz replaying SPAR, SLW1 binary frames of K samples (default K = 5, 100 ms per message; K = 1
also for small N). After a warm-up the pipeline's own metrics are windowed for --duration seconds:

- runtime latency (PipelineMetrics.runtime: t_pub - t_recv of each result, t_recv being the kernel's receive
  time of the datagram, so time in the socket buffer counts) p50 / p99 / max, deadline
  misses (> 20 ms), dropped_queue (source backlog or queue overflow), the DeviceTable totals (samples, lost
  = gaps, i.e. datagrams the OS dropped, duplicates, rejected);
- samples/s and results/s processed, the pipeline process's CPU time (getrusage) as % of one core and µs per sample;
- lateness of samples on arrival (t_recv - the device table's mapped sample time, newest sample of each
  frame): how long after it was taken a sample reached the gateway, above the least-delayed one;
- a profile of where the CPU went: the l2mu and decide stages (the pipeline's per-stage histograms),
  ingest (payload decode + device table admit + chunk assembly, timed by wrapping the source's
  functions in the benchmark process), the sink, and the rest (socket reads, the event loop, metrics);
- the garbage collector's pauses (gc.callbacks), after gc.freeze() as the daemon does once its pipelines are up.

The figure: the largest N with zero deadline misses and zero drops (queue and gaps) in the window.

"One pipeline per device": N single-stream pipelines (replay source of the same SPAR recording, a different
series each, real time, looping, K samples per chunk, starts staggered over one chunk period; l2mu +
decide; jsonl to /dev/null) in one process pinned to CPU 0, for increasing N until a pipeline misses. The
replay source has no network ingest, so this side is favoured. Per-sample CPU cost compared with the
gateway's.

    python tools/bench_gateway.py [--quick] [--counts 250,500,1000,2000,3000,4000] [--duration S] [--batch K]
                                  [--k1-counts 250,500] [--per-device 25,50,100,200] [--write-docs]
                                  [--chunk-ms 2 --chunk-counts 250,500,1000]   (what-if: the source's batching)
                                  [--mqtt-counts 500,1000,2000]   (also over MQTT: watch_mqtt + mosquitto)
    python tools/bench_gateway.py --render main.json more.json [--notes notes.md] [--write-docs]

The docs were made from two saved runs (stdout of each) with --render, notes from --notes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "runtime", ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from benchlib import cpu_name, format_table, versions  # noqa: E402

DOCS = ROOT / "docs" / "gateway-benchmark.md"
DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
SPAR = DATA / "spar_applewatch" / "spar_watch.npz"
CLASSES = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
STAGES = [{"type": "l2mu", "model": "har-spar-l2mu", "readout": "window", "window_s": 2, "every": 50},
          {"type": "decide", "classes": CLASSES}]
BUDGET_MS = 20
PIPE_CPU, SIM_CPU = 0, 1


# --- helpers ---------------------------------------------------------------------------------------


def _pin(cpu: int) -> int | None:
    """Pin this process to `cpu` (or the first allowed CPU if it is not available); returns the CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    c = cpu if cpu in allowed else allowed[min(cpu, len(allowed) - 1)]
    os.sched_setaffinity(0, {c})
    return c


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _mosquitto() -> Any:
    """A mosquitto on a free loopback port (set_tcp_nodelay, no persistence), pinned to the simulator's CPU."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        raise SystemExit("mosquitto not found: install it (tools/test.sh does)")
    with tempfile.TemporaryDirectory(prefix="spikeline-bench-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "persistence false\nmax_queued_messages 100000\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(proc.pid, {SIM_CPU})
            t_end = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > t_end or proc.poll() is not None:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


class _Timer:
    """Accumulated perf_counter seconds of wrapped calls."""

    def __init__(self) -> None:
        self.s = 0.0
        self.calls = 0

    def wrap(self, obj: Any, name: str) -> None:
        fn = getattr(obj, name)
        perf = time.perf_counter

        def timed(*a: Any, **k: Any) -> Any:
            t0 = perf()
            try:
                return fn(*a, **k)
            finally:
                self.s += perf() - t0
                self.calls += 1

        setattr(obj, name, timed)


def _hist_window(h: Any) -> dict[str, Any]:
    """The window of a LatencyHistogram since its previous window() call, summarised in ms, with its sum."""
    w = h.window()
    out = w.summary_ms()
    out["sum_s"] = round(w.sum, 6)
    return out


# --- the pipeline process (CPU 0) ------------------------------------------------------------------


async def _gateway_pipeline(port: int, warmup: float, duration: float, max_devices: int,
                            chunk_ms: float | None = None, mqtt: str | None = None) -> dict[str, Any]:
    from spikeline.config import parse
    from spikeline.gateway import DeviceTable
    from spikeline.metrics import LatencyHistogram
    from spikeline.pipeline import Pipeline, State
    from spikeline.sinks.basic import JsonlSink
    from spikeline.sources import watch

    # Profile hooks (benchmark-side wrappers, class level, before the pipeline exists).
    t_add, t_chunk, t_sink = _Timer(), _Timer(), _Timer()
    t_add.wrap(watch._Ingest, "add_batch")  # decode (batched and one by one) + DeviceTable admission
    t_chunk.wrap(watch._Ingest, "chunk")
    t_sink.wrap(JsonlSink, "submit")
    late = LatencyHistogram()
    admit_frame = DeviceTable.admit_frame

    def admit_and_time(self: Any, d: Any, first: int, n: int, t0: int, period: int, arrival: float) -> Any:
        skip = admit_frame(self, d, first, n, t0, period, arrival)
        if skip is not None:  # arrival - the newest sample's mapped time
            c = d.clock
            late.record_one(max(0.0, arrival - min(c.a + c.b * ((t0 + (n - 1) * period) * 1e-6), arrival)))
        return skip

    DeviceTable.admit_frame = admit_and_time  # type: ignore[method-assign,assignment]
    gc_pauses = LatencyHistogram()  # the collector's pauses in the pipeline process
    gc_t0 = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_pauses.record_one(time.perf_counter() - gc_t0[0])

    gc.callbacks.append(on_gc)

    cfg = parse({"pipeline": [{"name": "har-gateway", "budget_ms": BUDGET_MS, "queue_s": 1.0,
                               "source": {**({"type": "watch_udp", "port": port} if mqtt is None else
                                             {"type": "watch_mqtt", "url": mqtt, "topic": "bench/+/imu"}),
                                          "format": "auto", "rate_hz": 50,
                                          "max_devices": max_devices, "idle_timeout_s": 10,
                                          **({"chunk_ms": chunk_ms} if chunk_ms else {})},
                               "stages": STAGES, "sinks": [{"type": "jsonl", "path": os.devnull}]}]})
    p = Pipeline(cfg.pipelines[0], node="bench")
    m = p.metrics
    task = asyncio.create_task(p.run())
    try:
        async with asyncio.timeout(30):
            while p.state != State.RUNNING:
                if p.state == State.FAILED:
                    raise RuntimeError(p.error)
                await asyncio.sleep(0.01)
        gc.freeze()  # as the daemon does once its pipelines are up (Daemon._when_up)
        print(json.dumps({"ready": True}), flush=True)
        async with asyncio.timeout(60):  # the simulator starts: wait for its first samples
            while m.samples_in == 0:  # noqa: ASYNC110 (a counter the pipeline owns: nothing to await)
                await asyncio.sleep(0.01)
        await asyncio.sleep(warmup)

        table = p.source.table  # type: ignore[attr-defined]

        def snap() -> dict[str, Any]:
            return {"t": time.monotonic(), "cpu": _cpu_s(), "samples_in": m.samples_in, "results": m.results,
                    "misses": m.deadline_misses, "dropped_queue": m.dropped_queue, "dropped_stale": m.dropped_stale,
                    "table": table.totals(), "add": t_add.s, "chunk": t_chunk.s,
                    "sink": t_sink.s}

        for h in (m.runtime, m.age, late, gc_pauses, *m.stages.values()):
            h.window()
        a = snap()
        await asyncio.sleep(duration)
        b = snap()
        runtime, age, lateness = _hist_window(m.runtime), _hist_window(m.age), _hist_window(late)
        gcp = _hist_window(gc_pauses)
        stages = {k: _hist_window(h) for k, h in m.stages.items()}
        totals_at_end = {"misses": m.deadline_misses, "dropped_queue": m.dropped_queue, **table.totals()}
    finally:
        p.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    wall = b["t"] - a["t"]
    cpu = b["cpu"] - a["cpu"]
    samples = b["samples_in"] - a["samples_in"]
    tab = {k: b["table"][k] - a["table"][k] for k in ("samples", "lost", "duplicates", "rejected")}
    prof_s = {"l2mu": stages.get("l2mu", {}).get("sum_s", 0.0), "decide": stages.get("decide", {}).get("sum_s", 0.0),
              "ingest": (b["add"] - a["add"]) + (b["chunk"] - a["chunk"]),
              "sink": b["sink"] - a["sink"]}
    prof_s["rest"] = max(0.0, cpu - sum(prof_s.values()))
    return {
        "window_s": round(wall, 3), "cpu_s": round(cpu, 4), "cpu_pct": round(100 * cpu / wall, 1),
        "samples": samples, "samples_per_s": round(samples / wall, 1),
        "results_per_s": round((b["results"] - a["results"]) / wall, 2),
        # every device gives one result per 50 samples (every = 50): what really went through the stages
        "processed_samples_per_s": round((b["results"] - a["results"]) * 50 / wall, 1),
        "us_per_sample": round(cpu / samples * 1e6, 3) if samples else None,
        "deadline_misses": b["misses"] - a["misses"], "dropped_queue": b["dropped_queue"] - a["dropped_queue"],
        "dropped_stale": b["dropped_stale"] - a["dropped_stale"], "table": tab,
        "active_devices": b["table"]["active_devices"],
        "runtime_ms": runtime, "age_ms": age, "lateness_ms": lateness, "stage_ms": stages, "gc_pause_ms": gcp,
        "profile_pct_of_core": {k: round(100 * v / wall, 1) for k, v in prof_s.items()},
        "totals_incl_warmup": totals_at_end, "state": p.state.name, "error": p.error,
    }


async def _per_device_pipelines(n: int, batch: int, warmup: float, duration: float) -> dict[str, Any]:
    from spikeline.config import parse
    from spikeline.pipeline import Pipeline, State
    from spikeline.recordings import load

    n_series = len(load(SPAR))
    cfg = parse({"pipeline": [{"name": f"w{i:04d}", "budget_ms": BUDGET_MS, "queue_s": 1.0,
                               "source": {"type": "replay", "file": str(SPAR), "series": str(i % n_series), "speed": 1.0,
                                          "loop": True, "chunk": batch},
                               "stages": STAGES, "sinks": [{"type": "jsonl", "path": os.devnull}]}
                              for i in range(n)]})
    pipes = [Pipeline(pc, node="bench") for pc in cfg.pipelines]
    period = batch / 50.0
    tasks = []
    for p in pipes:  # staggered over one chunk period, as independent watches would be
        tasks.append(asyncio.create_task(p.run()))
        await asyncio.sleep(period / n)
    try:
        async with asyncio.timeout(120):
            while any(p.state != State.RUNNING for p in pipes):
                failed = [p for p in pipes if p.state == State.FAILED]
                if failed:
                    raise RuntimeError(failed[0].error)
                await asyncio.sleep(0.02)
        await asyncio.sleep(warmup)
        for p in pipes:
            p.metrics.runtime.window()
            for h in p.metrics.stages.values():
                h.window()

        def snap() -> dict[str, float]:
            return {"t": time.monotonic(), "cpu": _cpu_s(),
                    "samples": sum(p.metrics.samples_in for p in pipes), "results": sum(p.metrics.results for p in pipes),
                    "misses": sum(p.metrics.deadline_misses for p in pipes),
                    "dropped": sum(p.metrics.dropped_queue + p.metrics.dropped_stale for p in pipes)}

        a = snap()
        await asyncio.sleep(duration)
        b = snap()
        from spikeline.metrics import LatencyHistogram

        merged = LatencyHistogram()
        stage_s: dict[str, float] = {}
        for p in pipes:
            w = p.metrics.runtime.window()
            merged.counts += w.counts
            merged.count += w.count
            merged.sum += w.sum
            merged.max = max(merged.max, w.max)
            for k, h in p.metrics.stages.items():
                stage_s[k] = stage_s.get(k, 0.0) + h.window().sum
    finally:
        for p in pipes:
            p.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    wall, cpu, samples = b["t"] - a["t"], b["cpu"] - a["cpu"], b["samples"] - a["samples"]
    prof = {k: round(100 * v / wall, 1) for k, v in stage_s.items()}
    prof["rest"] = round(100 * max(0.0, cpu - sum(stage_s.values())) / wall, 1)
    return {"window_s": round(wall, 3), "cpu_s": round(cpu, 4), "cpu_pct": round(100 * cpu / wall, 1),
            "samples": int(samples), "samples_per_s": round(samples / wall, 1),
            "results_per_s": round((b["results"] - a["results"]) / wall, 2),
            "us_per_sample": round(cpu / samples * 1e6, 3) if samples else None,
            "deadline_misses": int(b["misses"] - a["misses"]), "dropped": int(b["dropped"] - a["dropped"]),
            "runtime_ms": merged.summary_ms(), "profile_pct_of_core": prof}


def _worker(spec: dict[str, Any]) -> int:
    """Child process entry: `--worker JSON`. Prints JSON lines on stdout; the last one is the result."""
    role = spec["role"]
    cpu = _pin(spec["cpu"])
    if role == "gateway":
        out = asyncio.run(_gateway_pipeline(spec["port"], spec["warmup"], spec["duration"], spec["max_devices"],
                                            spec.get("chunk_ms"), spec.get("mqtt")))
    elif role == "per_device":
        out = asyncio.run(_per_device_pipelines(spec["n"], spec["batch"], spec["warmup"], spec["duration"]))
    elif role == "sim":
        from watch_sim import SimConfig, Simulator

        sim = Simulator(SimConfig(watches=spec["n"], format="binary", batch=spec["batch"],
                                  duration=spec["seconds"], data=str(SPAR), seed=spec.get("seed", 0),
                                  topic="bench/{device}/imu"))
        print(json.dumps({"ready": True}), flush=True)
        ledger = sim.run(mqtt=spec["mqtt"]) if spec.get("mqtt") else sim.run(udp=f"127.0.0.1:{spec['port']}")
        out = {"summary": ledger.get("summary", {})}
    else:
        raise SystemExit(f"unknown worker role {role!r}")
    out["cpu"] = cpu
    print(json.dumps(out), flush=True)
    return 0


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True, env=env)


def _last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker exited {proc.returncode}: {out[-2000:]}")
    return dict(json.loads(lines[-1]))


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    assert proc.stdout is not None
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited before it was ready ({proc.wait()})")
        if line.startswith("{") and json.loads(line).get("ready"):
            return
    raise RuntimeError("worker not ready in time")


# --- the cases -------------------------------------------------------------------------------------


def run_gateway(n: int, batch: int, duration: float, warmup: float, chunk_ms: float | None = None,
                mqtt: str | None = None) -> dict[str, Any]:
    """One gateway case: the pipeline pinned to CPU 0, the simulator to CPU 1. chunk_ms: the source's batching
    (None: its default, as in the example configuration). mqtt: a broker's URL (watch_mqtt source, the simulator
    publishing there) instead of UDP."""
    port = _free_udp_port()
    pipe = _spawn({"role": "gateway", "cpu": PIPE_CPU, "port": port, "warmup": warmup, "duration": duration,
                   "max_devices": max(4096, n), "chunk_ms": chunk_ms, "mqtt": mqtt})
    sim: subprocess.Popen[str] | None = None
    try:
        _wait_ready(pipe, 60)
        seconds = warmup + duration + 3.0
        sim = _spawn({"role": "sim", "cpu": SIM_CPU, "n": n, "batch": batch, "port": port, "seconds": seconds,
                      "mqtt": mqtt})
        res = _last_json(pipe, warmup + duration + 120)
        sim_out = _last_json(sim, seconds + 120)
    finally:
        for proc in (pipe, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    s = sim_out.get("summary", {})
    res.update({"mode": "gateway", "transport": "mqtt" if mqtt else "udp", "n": n, "batch": batch,
                "chunk_ms": chunk_ms, "offered_samples_per_s": 50 * n,
                "sim": {k: s[k] for k in s if not isinstance(s[k], list | dict)}})
    tab = res["table"]
    res["zero_misses"] = res["deadline_misses"] == 0
    res["zero_drops"] = res["dropped_queue"] == 0 and res["dropped_stale"] == 0 and tab["lost"] == 0
    res["ok"] = res["zero_misses"] and res["zero_drops"] and res["samples"] > 0
    return res


def run_per_device(n: int, batch: int, duration: float, warmup: float) -> dict[str, Any]:
    proc = _spawn({"role": "per_device", "cpu": PIPE_CPU, "n": n, "batch": batch, "warmup": warmup,
                   "duration": duration})
    try:
        res = _last_json(proc, warmup + duration + 300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res.update({"mode": "per_device", "n": n, "batch": batch, "offered_samples_per_s": 50 * n})
    res["ok"] = res["deadline_misses"] == 0 and res["dropped"] == 0 and res["samples"] > 0
    return res


def _limit(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """Why the first failing N failed (from its numbers)."""
    fail = next((r for r in rows if not r["ok"] and (best is None or r["n"] > best["n"])), None)
    if fail is None:
        return "no failing N in the tested range (the figure is at least the largest N tried)"
    prof = fail["profile_pct_of_core"]
    top = sorted(((v, k) for k, v in prof.items()), reverse=True)
    parts = ", ".join(f"{k} {v:.0f}%" for v, k in top)
    served = fail["samples_per_s"] / fail["offered_samples_per_s"] * 100 if fail["offered_samples_per_s"] else 0
    why = []
    if fail["cpu_pct"] >= 90:
        why.append(f"CPU saturated ({fail['cpu_pct']:.0f}% of one core)")
    elif fail["cpu_pct"] >= 70:
        why.append(f"CPU {fail['cpu_pct']:.0f}% of one core on average: bursts of arrivals queue behind the "
                   "compute of earlier chunks")
    else:
        why.append(f"CPU {fail['cpu_pct']:.0f}% of one core (not saturated: latency comes from batching/scheduling)")
    why.append(f"N={fail['n']}: {fail['deadline_misses']} misses, dropped_queue {fail['dropped_queue']}, "
               f"lost {fail['table']['lost']}, served {served:.0f}% of the offered samples, runtime p99 "
               f"{fail['runtime_ms']['p99']} ms")
    why.append(f"CPU by part: {parts}")
    return "; ".join(why)


def run_all(counts: list[int], k1_counts: list[int], per_device: list[int], batch: int, duration: float,
            warmup: float, log: Any = sys.stderr, chunk_ms: float | None = None,
            chunk_counts: list[int] | None = None, mqtt_counts: list[int] | None = None) -> dict[str, Any]:
    gateway: list[dict[str, Any]] = []
    for k, ns in ((batch, counts), (1, k1_counts if batch != 1 else [])):
        for n in ns:
            print(f"== gateway N={n} K={k}", file=log, flush=True)
            r = run_gateway(n, k, duration, warmup)
            gateway.append(r)
            print(f"   misses {r['deadline_misses']} drops q{r['dropped_queue']} lost {r['table']['lost']} "
                  f"cpu {r['cpu_pct']}% {r['samples_per_s']:.0f} samples/s p99 {r['runtime_ms']['p99']} ms",
                  file=log, flush=True)
    for n in (chunk_counts or []) if chunk_ms else []:  # what-if: the source's batching shortened (a setting)
        print(f"== gateway N={n} K={batch} chunk_ms={chunk_ms:g}", file=log, flush=True)
        r = run_gateway(n, batch, duration, warmup, chunk_ms)
        gateway.append(r)
        print(f"   misses {r['deadline_misses']} cpu {r['cpu_pct']}% p99 {r['runtime_ms']['p99']} ms", file=log,
              flush=True)
    if mqtt_counts:
        with _mosquitto() as url:
            for n in mqtt_counts:
                print(f"== gateway N={n} K={batch} over MQTT", file=log, flush=True)
                r = run_gateway(n, batch, duration, warmup, mqtt=url)
                gateway.append(r)
                print(f"   misses {r['deadline_misses']} drops q{r['dropped_queue']} lost {r['table']['lost']} "
                      f"cpu {r['cpu_pct']}% p99 {r['runtime_ms']['p99']} ms", file=log, flush=True)
    per: list[dict[str, Any]] = []
    for n in per_device:
        print(f"== one pipeline per device N={n} K={batch}", file=log, flush=True)
        r = run_per_device(n, batch, duration, warmup)
        per.append(r)
        print(f"   misses {r['deadline_misses']} drops {r['dropped']} cpu {r['cpu_pct']}% "
              f"{r['samples_per_s']:.0f} samples/s p99 {r['runtime_ms']['p99']} ms", file=log, flush=True)
        if not r["ok"]:
            break
    return {"figure": summarise(gateway, per, batch), "gateway": gateway, "per_device": per}


def summarise(gateway: list[dict[str, Any]], per: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """The figure (the largest N tried with zero misses and zero drops, at K = batch and
    the source's default batching), why the next N failed, and one pipeline per device compared."""
    main_rows = [r for r in gateway if r["batch"] == batch and not r.get("chunk_ms")
                 and r.get("transport", "udp") == "udp"]
    ok = [r for r in main_rows if r["ok"]]
    # the figure: the largest N that passed (a smaller N that failed is named in failed_below_figure)
    best = max(ok, key=lambda r: r["n"]) if ok else None
    per_ok = [r for r in per if r["ok"]]
    per_best = max(per_ok, key=lambda r: r["n"]) if per_ok else None
    # the gateway row nearest in N to the largest per-device N that passed (the same load, both ways)
    gw_ref = None
    if main_rows:
        target_n = per_best["n"] if per_best else 0
        gw_ref = min(main_rows, key=lambda r: (abs(r["n"] - target_n), -r["n"]))
    cost_ratio = None
    if per_best and gw_ref and per_best["us_per_sample"] and gw_ref["us_per_sample"]:
        cost_ratio = round(per_best["us_per_sample"] / gw_ref["us_per_sample"], 2)
    figure = {
        "batch": batch, "budget_ms": BUDGET_MS,
        "max_watches_zero_misses_zero_drops": best["n"] if best else 0,
        "samples_per_s_at_figure": best["samples_per_s"] if best else 0,
        "failed_below_figure": [r["n"] for r in main_rows if best and r["n"] < best["n"] and not r["ok"]],
        "limit": _limit(sorted(main_rows, key=lambda r: r["n"]), best),
        "target_watches": 2000, "target_met": bool(best and best["n"] >= 2000),
        "per_device_max_n": per_best["n"] if per_best else 0,
        "per_device_us_per_sample": per_best["us_per_sample"] if per_best else None,
        "gateway_us_per_sample_ref": {"n": gw_ref["n"], "us_per_sample": gw_ref["us_per_sample"]} if gw_ref else None,
        "per_device_cost_ratio": cost_ratio,
    }
    return figure


def machine() -> dict[str, Any]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "pipeline_cpu": PIPE_CPU, "sim_cpu": SIM_CPU,
            "versions": versions("numpy", "spikeline")}


# --- output ----------------------------------------------------------------------------------------


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _default_chunk_ms() -> float:
    from spikeline.sources.watch import WatchUdpSource

    return float(WatchUdpSource.params["chunk_ms"].default)


def tables(report: dict[str, Any], markdown: bool = False) -> str:
    g = report["results"]["gateway"]
    default_chunk = report.get("settings_detail", {}).get("default_chunk_ms", 10.0)
    rows = [["N", "transport", "K", "chunk ms", "zero misses", "misses", "p50 ms", "p99 ms", "max ms", "CPU %", "µs/sample", "in/s",
             "processed/s", "offered/s", "results/s", "drops (queue/lost)", "late p50 ms", "late p99 ms", "l2mu %", "decide %",
             "ingest %", "sink %", "rest %", "gc max ms"]]
    for r in g:
        p = r["profile_pct_of_core"]
        rows.append([str(r["n"]), r.get("transport", "udp"), str(r["batch"]), _f(r.get("chunk_ms"), "{:g}") if r.get("chunk_ms") else f"{default_chunk:g} (default)",
                     "yes" if r["zero_misses"] else "no", str(r["deadline_misses"]),
                     _f(r["runtime_ms"]["p50"]), _f(r["runtime_ms"]["p99"]), _f(r["runtime_ms"]["max"]),
                     _f(r["cpu_pct"], "{:.1f}"), _f(r["us_per_sample"], "{:.1f}"), f"{r['samples_per_s']:,.0f}",
                     f"{r.get('processed_samples_per_s', r['results_per_s'] * 50):,.0f}", f"{r['offered_samples_per_s']:,}", f"{r['results_per_s']:,.1f}",
                     f"{r['dropped_queue']}/{r['table']['lost']}", _f(r["lateness_ms"]["p50"]),
                     _f(r["lateness_ms"]["p99"]), *(_f(p.get(k), "{:.1f}") for k in
                                                    ("l2mu", "decide", "ingest", "sink", "rest")),
                     _f(r.get("gc_pause_ms", {}).get("max"))])
    out = ["Gateway mode (one pipeline, watch_udp or watch_mqtt, pinned to one core):", format_table(rows, markdown=markdown), ""]
    per = report["results"]["per_device"]
    if per:
        rows = [["N pipelines", "K", "zero misses", "misses", "p50 ms", "p99 ms", "max ms", "CPU %", "µs/sample",
                 "samples/s", "drops", "l2mu %", "decide %", "rest %"]]
        for r in per:
            p = r["profile_pct_of_core"]
            rows.append([str(r["n"]), str(r["batch"]), "yes" if r["deadline_misses"] == 0 else "no",
                         str(r["deadline_misses"]), _f(r["runtime_ms"]["p50"]), _f(r["runtime_ms"]["p99"]),
                         _f(r["runtime_ms"]["max"]), _f(r["cpu_pct"], "{:.1f}"), _f(r["us_per_sample"], "{:.1f}"),
                         f"{r['samples_per_s']:,.0f}", str(r["dropped"]),
                         *(_f(p.get(k), "{:.1f}") for k in ("l2mu", "decide", "rest"))])
        out += ["One pipeline per device (replay sources, same process, one core):",
                format_table(rows, markdown=markdown), ""]
    f = report["results"]["figure"]
    out += [f"Figure: {f['max_watches_zero_misses_zero_drops']} watches (K={f['batch']}, "
            f"{f['samples_per_s_at_figure']:,.0f} samples/s) with zero misses (budget {f['budget_ms']} ms) and "
            f"zero drops; target {f['target_watches']}: {'met' if f['target_met'] else 'NOT met'}."
            + (f" Smaller N that missed: {f['failed_below_figure']}." if f.get("failed_below_figure") else ""),
            f"Limit: {f['limit']}",
            f"One pipeline per device: largest N {f['per_device_max_n']}, {_f(f['per_device_us_per_sample'], '{:.1f}')} "
            f"µs/sample vs gateway {_f((f['gateway_us_per_sample_ref'] or {}).get('us_per_sample'), '{:.1f}')} µs/sample "
            f"at N={(f['gateway_us_per_sample_ref'] or {}).get('n')}: ratio {f['per_device_cost_ratio']}x"]
    return "\n".join(out)


def write_docs(report: dict[str, Any]) -> None:
    m = report["machine"]
    text = "\n".join([
        "# Gateway benchmark: smartwatches per core", "",
        "Written by `tools/bench_gateway.py --write-docs` (see its docstring for what is measured and how).", "",
        "```", report["command"], "```", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; pipeline pinned to CPU "
        f"{m['pipeline_cpu']}, simulator to CPU {m['sim_cpu']}. Run {report['date']}, {report['settings']}.", "",
        tables(report, markdown=True), "", "## Notes", "", *report.get("notes", []), "",
        "## Details", "", "```json", json.dumps(report["results"]["figure"], indent=1), "```", ""])
    DOCS.write_text(text, encoding="utf-8")


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s windows, fewer counts")
    ap.add_argument("--counts", default=None, help="watches per gateway run (default 250,500,1000,2000,3000,4000)")
    ap.add_argument("--k1-counts", default=None, help="N also run with K=1 (default 250,500; quick: none)")
    ap.add_argument("--per-device", default=None, help="N for one pipeline per device (default 25,50,100,200)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per case (20; quick 5)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before measuring (5; quick 2)")
    ap.add_argument("--batch", type=int, default=5, help="samples per message K (default 5)")
    ap.add_argument("--chunk-ms", type=float, default=None,
                    help="also run the watch_udp source with this chunk_ms (a what-if on the batching; default off)")
    ap.add_argument("--chunk-counts", default="250,500,1000", help="N for the --chunk-ms runs")
    ap.add_argument("--mqtt-counts", default="",
                    help="N also run over MQTT: watch_mqtt source, a mosquitto started here on CPU 1 with the simulator")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.relative_to(ROOT)}")
    ap.add_argument("--render", nargs="+", default=None, metavar="JSON",
                    help="no run: print (and with --write-docs write) the tables of saved reports; the gateway rows "
                         "of the 2nd and later files are added to the first's")
    ap.add_argument("--notes", default=None, help="a Markdown file whose text goes under Notes in the docs")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    notes = Path(args.notes).read_text(encoding="utf-8").splitlines() if args.notes else []
    if args.render:
        docs = [json.loads(Path(f).read_text(encoding="utf-8").split("\n\n", 1)[0]) for f in args.render]
        report = docs[0]
        res = report["results"]
        for d in docs[1:]:
            res["gateway"] += d["results"]["gateway"]
            res["per_device"] += d["results"]["per_device"]
            report["command"] += "\npython tools/bench_gateway.py " + d["command"].split("bench_gateway.py ", 1)[-1]
        res["gateway"].sort(key=lambda r: (r.get("transport", "udp"), r.get("chunk_ms") or 0, -r["batch"], r["n"]))
        res["per_device"].sort(key=lambda r: r["n"])
        res["figure"] = summarise(res["gateway"], res["per_device"], res["figure"]["batch"])
        report["notes"] = notes
        print(tables(report))
        if args.write_docs:
            write_docs(report)
            print(f"wrote {DOCS}", file=sys.stderr)
        return 0
    if not SPAR.is_file():
        print(f"recording not found: {SPAR} (set SPIKELINE_DATA)", file=sys.stderr)
        return 2
    counts = _ints(args.counts) if args.counts is not None else ([250, 1000, 2000] if args.quick else
                                                      [250, 500, 1000, 2000, 3000, 4000])
    k1 = _ints(args.k1_counts) if args.k1_counts is not None else ([] if args.quick else [250, 500])
    per = _ints(args.per_device) if args.per_device is not None else ([25, 100] if args.quick else [25, 50, 100, 200])
    duration = args.duration or (5.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    results = run_all(counts, k1, per, args.batch, duration, warmup, chunk_ms=args.chunk_ms,
                      chunk_counts=_ints(args.chunk_counts), mqtt_counts=_ints(args.mqtt_counts))
    report = {"benchmark": "gateway", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": shlex.join(["python", "tools/bench_gateway.py", *(argv if argv is not None else sys.argv[1:])]),
              "settings": f"K={args.batch}, {duration:g} s measured after {warmup:g} s warm-up, budget {BUDGET_MS} ms",
              "settings_detail": {"default_chunk_ms": _default_chunk_ms()},
              "machine": machine(), "results": results, "notes": notes}
    print(json.dumps(report, indent=1))
    print()
    print(tables(report))
    if args.write_docs:
        write_docs(report)
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
