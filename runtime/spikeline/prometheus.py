"""Prometheus text exposition (format 0.0.4) of a daemon's metrics on a local HTTP port.

`[node] prometheus_port = 9464` (0: off) serves `GET /metrics` on `prometheus_host` (127.0.0.1 by default) from
the event loop (asyncio streams; a request is a few hundred microseconds of formatting). The numbers are the
same as on the MQTT metrics topic: per pipeline the sample and result counters, every drop counter, deadline
misses, the runtime latency histogram, per-stage compute histograms, the MQTT connection's counters.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .httpd import read_request
from .metrics import _UPPER, LatencyHistogram

log = logging.getLogger("spikeline.prometheus")

# histogram bucket edges, seconds (a subset of LatencyHistogram's ≈4 % buckets: counts are exact at these edges
# up to that resolution; a value is counted under `le` only when its whole bucket is)
LE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

COUNTERS = {  # PipelineMetrics attribute -> help
    "samples_in": "samples (events) handed over by the source",
    "computed": "samples (events) that went through the stages",
    "results": "results handed to the sinks' transport",
    "deadline_misses": "results whose runtime latency exceeded the budget",
    "age_misses": "results whose age exceeded max_age",
    "dropped_queue": "samples dropped by the bounded queue",
    "dropped_stale": "samples older than stale_ms on arrival, skipped",
    "skipped_late": "queued samples that could no longer make the budget, skipped",
    "non_finite": "samples refused for a NaN or infinite value",
    "dropped_error": "samples of chunks whose stage raised",
    "dropped_rate": "events dropped by the event-rate cap",
    "rejected_input": "input the source refused",
    "source_gaps": "samples missing upstream",
    "stage_errors": "stage exceptions",
    "restarts": "stage restarts (on_error = restart)",
    "tier_switches": "degrade tier switches",
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def _histogram(out: list[str], name: str, labels: str, h: LatencyHistogram) -> None:
    cum = np.cumsum(h.counts)
    for le in LE:
        k = int(np.searchsorted(_UPPER, le, side="right"))  # buckets wholly at or below le
        out.append(f'{name}_bucket{{{labels},le="{le}"}} {int(cum[k - 1]) if k else 0}')
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {h.count}')
    out.append(f"{name}_sum{{{labels}}} {_num(h.sum)}")
    out.append(f"{name}_count{{{labels}}} {h.count}")


def exposition(node: str, pipelines: list[Any], publisher: Any | None,
               reloads: dict[str, int] | None = None) -> str:
    """The text for GET /metrics; `reloads`: {"applied": n, "rejected": m} (SIGHUP reloads)."""
    out: list[str] = []
    base = f'node="{_esc(node)}"'
    for attr, text in COUNTERS.items():
        name = f"spikeline_{attr}_total"
        out += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
        for p in pipelines:
            out.append(f'{name}{{{base},pipeline="{_esc(p.name)}"}} {int(getattr(p.metrics, attr))}')
    for name, text in (("spikeline_up", "1 while the pipeline runs"), ("spikeline_tier", "degrade tier in use"),
                       ("spikeline_budget_seconds", "latency budget"),
                       ("spikeline_queue_samples", "samples waiting in the bounded queue")):
        out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for p in pipelines:
            labels = f'{base},pipeline="{_esc(p.name)}"'
            value = {"spikeline_up": float(p.state.value == "running"), "spikeline_tier": float(p.metrics.tier),
                     "spikeline_budget_seconds": p.metrics.budget_s,
                     "spikeline_queue_samples": float(len(p.queue)) if p.queue is not None else 0.0}[name]
            out.append(f"{name}{{{labels}}} {_num(value)}")
    name = "spikeline_runtime_latency_seconds"
    out += [f"# HELP {name} t_pub - t_recv of each result", f"# TYPE {name} histogram"]
    for p in pipelines:
        _histogram(out, name, f'{base},pipeline="{_esc(p.name)}"', p.metrics.runtime)
    name = "spikeline_stage_seconds"
    out += [f"# HELP {name} compute time per chunk, per stage", f"# TYPE {name} histogram"]
    for p in pipelines:
        for stage, h in p.metrics.stages.items():
            _histogram(out, name, f'{base},pipeline="{_esc(p.name)}",stage="{_esc(stage)}"', h)
    name = "spikeline_stage_counter"
    out += [f"# HELP {name} each stage's work counters, as in stage_counters on the MQTT metrics topic (spikes, "
            "activity; delta layers' x_sent/h_sent/macs and their _fraction of a dense pass: the sparsity)",
            f"# TYPE {name} gauge"]
    for p in pipelines:
        for stage, counters in p.stage_counters().items():
            for key, value in counters.items():
                out.append(f'{name}{{{base},pipeline="{_esc(p.name)}",stage="{_esc(stage)}",counter="{_esc(key)}"}} '
                           f"{_num(float(value))}")
    if reloads is not None:
        name = "spikeline_reloads_total"
        out += [f"# HELP {name} configuration reloads (SIGHUP), applied or rejected", f"# TYPE {name} counter"]
        out += [f'{name}{{{base},result="{k}"}} {int(v)}' for k, v in reloads.items()]
    if publisher is not None:
        s = publisher.stats
        for attr, kind, text in (("published", "counter", "results published"),
                                 ("dropped_offline", "counter", "results dropped: offline buffer full"),
                                 ("connects", "counter", "connections made to the broker"),
                                 ("connect_failures", "counter", "failed connection attempts"),
                                 ("connected", "gauge", "1 while connected to the broker")):
            name = f"spikeline_mqtt_{attr}" + ("_total" if kind == "counter" else "")
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{base}}} {int(getattr(s, attr))}"]
    return "\n".join(out) + "\n"


async def serve(host: str, port: int, text: Callable[[], str]) -> asyncio.Server:
    """An HTTP/1.0-style server: GET /metrics gives `text()`, anything else 404; one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            if request is not None and request[0] in ("GET", "HEAD") and request[1] == "/metrics":
                body = text().encode()
                head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                writer.write(head.encode() + (body if request[0] == "GET" else b""))
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as e:
            log.debug("prometheus: request dropped: %s", e)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return server
