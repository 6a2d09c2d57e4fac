"""Gateway mode end to end: 100 simulated watches (tools/watch_sim.py, replaying real SPAR recordings) publish
over a real mosquitto into deploy/examples/smartwatch-gateway.toml's pipeline; its per-watch results come back
over mosquitto.

- Every result names its watch, and each watch's results equal the same model run on that watch's samples alone.
- With loss, duplicates, jitter and clock drift injected, the gateway's per-watch counts of lost and duplicated
  samples equal what the simulator's ledger says it did.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT, collect_results
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.pipeline import State

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

pytestmark = [pytest.mark.data, pytest.mark.broker, pytest.mark.slow]


def gateway_config(url: str, node: str) -> tuple[Any, dict[str, Any]]:
    doc = tomllib.loads((ROOT / "deploy" / "examples" / "smartwatch-gateway.toml").read_text())
    doc["mqtt"]["url"] = url
    doc["node"]["name"] = node
    doc["node"]["metrics_interval_s"] = 0.5
    (pipe,) = doc["pipeline"]
    pipe["source"]["topic"] = f"{node}/+/imu"
    pipe["budget_ms"] = 500  # CI machines are shared; the budget is not what this test checks
    pipe["policy"] = "mark_late"  # every sample computed even if a loaded machine delays it
    return parse(doc), pipe


async def run_with_sim(mosquitto: Any, sim_cfg: dict[str, Any], expected: int) -> tuple[Daemon, Any, list[dict]]:
    from watch_sim import SimConfig, Simulator

    node = f"t{uuid.uuid4().hex[:6]}"
    cfg, _ = gateway_config(mosquitto.url, node)
    daemon = Daemon(cfg)
    sim = Simulator(SimConfig(topic=f"{node}/{{device}}/imu", format="binary", **sim_cfg))
    ledger: dict[str, Any] = {}

    async def run() -> None:
        d = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                while not (daemon.pipelines and daemon.pipelines[0].state == State.RUNNING):
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # the source's subscription is in place
            ledger.update(await asyncio.to_thread(sim.run, None, mosquitto.url))
            await asyncio.sleep(1.0)
        finally:
            daemon.request_stop()
            assert await d == 0

    if expected == 0:
        await run()
        return daemon, ledger, []
    rows = await collect_results(mosquitto.url, f"spikeline/{node}/har-gateway/+/result", expected, run, 120)
    return daemon, ledger, rows


@pytest.mark.timeout(300)
async def test_100_watches_each_get_the_offline_results_of_their_own_recording(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    from test_gateway_pipeline import offline
    from watch_sim import load_series

    series = load_series(data_dir / "spar_applewatch" / "spar_watch.npz")
    n, seconds = 100, 4
    want = {f"w{k:02d}": offline(series[k % len(series)][:seconds * 50]) for k in range(n)}
    expected = sum(len(w[0]) for w in want.values())
    daemon, ledger, rows = await run_with_sim(mosquitto, {"watches": n, "duration": seconds, "batch": 5}, expected)
    assert ledger["summary"]["messages_lost"] == 0
    got: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        got.setdefault(r["device"], []).append(r)
    assert sorted(got) == sorted(want)
    for dev, (seqs, labels, scores) in want.items():
        mine = sorted(got[dev], key=lambda r: r["seq"])
        assert [r["seq"] for r in mine] == seqs
        assert [r["label"] for r in mine] == labels
        np.testing.assert_array_equal(np.array([r["values"] for r in mine], np.float32), scores)
    t = daemon.pipelines[0].source.table.totals()  # type: ignore[attr-defined]
    assert (t["samples"], t["lost"], t["duplicates"], t["rejected"]) == (n * seconds * 50, 0, 0, 0)


@pytest.mark.timeout(300)
async def test_injected_loss_and_duplicates_are_counted_exactly_per_watch(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    n, seconds, k = 100, 4, 5
    sim = {"watches": n, "duration": seconds, "batch": k, "loss": 0.05, "dup": 0.05, "jitter_ms": 5.0,
           "drift_ppm": 100.0, "offset_s": 5.0, "seed": 7}
    daemon, ledger, _ = await run_with_sim(mosquitto, sim, 0)
    src = daemon.pipelines[0].source
    tab = src.table  # type: ignore[attr-defined]
    assert src.overflow == 0 and tab.totals()["rejected"] == 0  # type: ignore[attr-defined]
    for w in ledger["watches"]:
        d = tab.by_name[w["device"]]
        sent = [i for a, b in w["sample_ranges"] for i in range(a, b)]
        first, last = min(sent), max(sent)
        # what the gateway can see: samples missing between the first and the last it received
        lost = sum(1 for a, b in w["lost_messages"] for m in range(a, b + 1) for i in range(m * k, (m + 1) * k)
                   if first < i < last)
        dup = sum(min(k, seconds * 50 - m * k) for m in w["duplicated_messages"])
        assert (d.samples, d.lost, d.duplicates) == (len(sent), lost, dup), w["device"]
        # 4 s is too short to estimate a drift (offset only until MIN_DRIFT_WINDOWS windows of minima)
        assert d.clock.b == 1.0


@pytest.mark.timeout(60)
async def test_mqtt_backlog_is_bounded_and_its_overflow_counted(mosquitto) -> None:  # type: ignore[no-untyped-def]
    """watch_mqtt takes each message straight from paho's callback into its batch; more than max_pending within
    one chunk period are discarded and counted, never held without bound."""
    import aiomqtt

    from spikeline.metrics import PipelineMetrics
    from spikeline.mqtt import MqttSettings
    from spikeline.queue import SampleQueue
    from spikeline.sources import SourceContext
    from spikeline.sources.watch import WatchMqttSource
    from spikeline.watch import encode_frame

    node = f"t{uuid.uuid4().hex[:6]}"
    ctx = SourceContext("p", 0.05, 0.3, 1.0, PipelineMetrics("p", 0.05, None))
    ctx.queue = SampleQueue(1 << 20)
    params = {**{k: v.default for k, v in WatchMqttSource.params.items() if not v.required},
              "url": mosquitto.url, "topic": f"{node}/+/imu", "max_pending": 30, "chunk_ms": 1000.0}
    src = WatchMqttSource(params, ctx)
    await src.open()
    chunks: list[Any] = []
    task = asyncio.create_task(src.run(chunks.append))
    try:
        async with aiomqtt.Client("127.0.0.1", MqttSettings.from_url(mosquitto.url).port) as pub:
            await asyncio.sleep(0.3)  # subscribed
            for k in range(100):
                await pub.publish(f"{node}/w{k}/imu", encode_frame(np.zeros((1, 6), np.float32), 0, 0, 20_000))
            await asyncio.sleep(0.5)  # all delivered, within one chunk period
    finally:
        src.stop()
        await asyncio.wait_for(task, 10)
    rows = sum(len(c) for c in chunks)
    assert (rows, src.overflow, src.payloads) == (30, 70, 30)
    assert ctx.metrics.dropped_queue == 70


@pytest.mark.timeout(90)
async def test_watch_mqtt_waits_for_its_broker_and_survives_its_restarts(tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """watch_mqtt with nothing listening at start-up: the failure is logged and counted and retried with backoff,
    the pipeline keeps running; once mosquitto appears the watches' samples flow; mosquitto stopped and started
    5 times: the source reconnects each time and samples flow again."""
    import aiomqtt

    from conftest import Mosquitto, mosquitto_binary, need
    from spikeline.metrics import PipelineMetrics
    from spikeline.queue import SampleQueue
    from spikeline.sources import SourceContext
    from spikeline.sources.watch import WatchMqttSource
    from spikeline.watch import encode_frame

    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    broker = Mosquitto(tmp_path)  # not started yet
    node = f"t{uuid.uuid4().hex[:6]}"
    ctx = SourceContext("p", 0.05, 0.3, 1.0, PipelineMetrics("p", 0.05, None))
    ctx.queue = SampleQueue(1 << 20)
    params = {**{k: v.default for k, v in WatchMqttSource.params.items() if not v.required},
              "url": broker.url, "topic": f"{node}/+/imu"}
    src = WatchMqttSource(params, ctx)
    await src.open()
    rows: list[Any] = []
    task = asyncio.create_task(src.run(rows.append))
    counters = ctx.metrics.source_counters
    sent = 0

    async def send_until_received() -> None:
        nonlocal sent
        before = sum(len(c) for c in rows)
        async with asyncio.timeout(20):
            while True:
                try:
                    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                        while sum(len(c) for c in rows) <= before:
                            await pub.publish(f"{node}/w1/imu", encode_frame(np.zeros((1, 6), np.float32), sent,
                                                                             sent * 20_000, 20_000))
                            sent += 1
                            await asyncio.sleep(0.05)
                        return
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.1)

    try:
        await asyncio.sleep(1.0)
        assert not task.done() and counters["connect_failures"] >= 2 and counters["connects"] == 0
        broker.start()
        await send_until_received()
        for _ in range(5):
            broker.stop()
            await asyncio.sleep(0.3)
            broker.start()
            await send_until_received()
    finally:
        src.stop()
        await asyncio.wait_for(task, 10)
        broker.stop()
    assert counters["connects"] == 6 and counters["connect_failures"] >= 2 + 5
    print(f"\nwatch_mqtt: {counters['connect_failures']} connect failures, {counters['connects']} connects, "
          f"{sum(len(c) for c in rows)} samples of {sent} sent received")
