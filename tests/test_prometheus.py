"""Prometheus text exposition on a local port: the daemon's counters and histograms, well-formed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from spikeline.broker import free_port
from spikeline.config import Config, parse
from spikeline.daemon import Daemon
from spikeline.pipeline import State

pytestmark = [pytest.mark.data]

LINE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="[^"\\]*(?:\\.[^"\\]*)*",?)*)\} (-?[0-9.e+-]+|NaN|[+-]Inf)$')


async def _get(port: int, path: str) -> tuple[str, str]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body


def _samples(body: str) -> dict[str, float]:
    """name{labels} -> value of every sample line (each line must be well formed)."""
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        samples[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return samples


def _har_config(data_dir: Path, tmp_path: Path, node: dict[str, Any], speed: float, series: str) -> Config:
    """The SPAR smartwatch recording replayed through the L2MU HAR model into a JSON-lines file."""
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    return parse({"node": node,
                  "pipeline": [{"name": "har", "budget_ms": 50, "policy": "mark_late",
                                "source": {"type": "replay", "file": spar, "speed": speed, "series": series},
                                "stages": [{"type": "l2mu", "model": "har-spar-l2mu", "readout": "window",
                                            "window_s": 2, "every": 5}],
                                "sinks": [{"type": "jsonl", "path": str(tmp_path / "r.jsonl")}]}]})


async def test_metrics_endpoint(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = _har_config(data_dir, tmp_path, {"name": "promnode", "prometheus_port": port}, speed=10.0, series="0")
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    try:
        async with asyncio.timeout(20):
            while not (d.pipelines[0].state == State.RUNNING and d.pipelines[0].metrics.results >= 20):
                await asyncio.sleep(0.05)
        head, body = await _get(port, "/metrics")
        missing, _ = await _get(port, "/other")
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 10)
    assert head.startswith("HTTP/1.1 200") and "text/plain; version=0.0.4" in head
    assert missing.startswith("HTTP/1.1 404")
    samples = _samples(body)
    types = dict(line.split()[2:4] for line in body.splitlines() if line.startswith("# TYPE "))
    lab = 'node="promnode",pipeline="har"'
    assert samples[f"spikeline_samples_in_total{{{lab}}}"] > 0
    results = samples[f"spikeline_results_total{{{lab}}}"]
    assert results >= 20 and samples[f"spikeline_up{{{lab}}}"] == 1.0
    assert samples[f"spikeline_budget_seconds{{{lab}}}"] == 0.05
    assert types["spikeline_runtime_latency_seconds"] == "histogram" and types["spikeline_results_total"] == "counter"
    buckets = [(k, v) for k, v in samples.items() if k.startswith("spikeline_runtime_latency_seconds_bucket")]
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1][0].endswith('le="+Inf"}')
    assert values[-1] == samples[f"spikeline_runtime_latency_seconds_count{{{lab}}}"] == results
    assert any(k.startswith('spikeline_stage_seconds_count{node="promnode",pipeline="har",stage="l2mu"')
               for k in samples)


async def test_port_in_use_is_logged_and_the_pipelines_still_run(data_dir: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    cfg = parse({"node": {"prometheus_port": port},
                 "pipeline": [{"name": "p", "budget_ms": 50, "source": {"type": "replay", "file": spar, "speed": 0,
                                                                        "series": "0"},
                               "sinks": [{"type": "jsonl", "path": str(tmp_path / "r.jsonl")}]}]})
    try:
        assert await asyncio.wait_for(Daemon(cfg).run(), 30) == 0
    finally:
        blocker.close()
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text


async def test_the_numbers_equal_the_mqtt_metrics_report(data_dir: Path, tmp_path: Path) -> None:
    """Once a pipeline has ended, GET /metrics and the last metrics report (what the MQTT metrics topic
    carries) give the same counters, stage work counters (sparsity) and result count."""
    cfg = _har_config(data_dir, tmp_path, {"name": "same"}, speed=0, series="0:2")
    d = Daemon(cfg)
    assert await asyncio.wait_for(d.run(), 60) == 0
    samples = _samples(d.prometheus_text())
    report = d.last_reports[0]
    lab = 'node="same",pipeline="har"'
    compared = 0
    for key, value in report["counters"].items():
        name = f"spikeline_{key}_total{{{lab}}}"
        if name in samples:
            assert samples[name] == value, key
            compared += 1
    assert compared >= 12 and report["counters"]["results"] > 100
    stage = report["stage_counters"]["l2mu"]
    assert stage and all(samples[f'spikeline_stage_counter{{{lab},stage="l2mu",counter="{k}"}}'] == v
                         for k, v in stage.items())
    assert samples[f"spikeline_runtime_latency_seconds_count{{{lab}}}"] == report["counters"]["results"]
    assert samples['spikeline_reloads_total{node="same",result="applied"}'] == 0
