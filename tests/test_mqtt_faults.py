"""Broker faults against a real mosquitto: nothing listening at start-up, and mosquitto stopped and started again
20 times while results are published with QoS 1.

- Nothing listening when spikeline starts: a clear error, retries with exponential backoff bounded by
  reconnect_max_s (measured between connect attempts), and once a broker appears on that port the results
  produced meanwhile (within offline_buffer) are delivered: none lost.
- A daemon's pipeline (a recording replayed at 200 Hz in real time, one result per sample) publishes QoS 1
  while its mosquitto is stopped and started 20 times: every result is delivered (lost = 0), duplicates (QoS 1
  is at least once) counted; the publisher reconnects every time.
- With a small offline_buffer, results made while the broker is away beyond it are dropped oldest-first and
  counted as dropped_offline exactly, 20 times over; the rest arrive.

mosquitto is stopped with SIGTERM and runs with persistence, so the subscriber's persistent session and the
QoS 1 messages queued for it survive the restart: what is measured is spikeline's side. (SIGKILL would also
lose what the broker had acknowledged but not yet saved; that is the broker's durability, not spikeline's.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from conftest import mosquitto_binary, need
from spikeline.broker import free_port
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.metrics import PipelineMetrics
from spikeline.mqtt import MqttPublisher, MqttSettings
from spikeline.pipeline import State
from test_mqtt_security import Broker, NoJitter, chunk, wait_for

pytestmark = [pytest.mark.broker]

RESTARTS = 20


def report(msg: str) -> None:
    print(f"[mqtt-faults] {msg}", file=sys.stderr)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    port = free_port()
    b = Broker(tmp_path, [f"listener {port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true",
                          "max_queued_messages 1000000", "max_inflight_messages 100"],
               [port], persistence=True, name="faults")
    yield b
    b.stop()


def keeper(port: int, **kw: Any) -> aiomqtt.Client:
    """The results' subscriber: a persistent session, so the broker queues QoS 1 results while it is away."""
    return aiomqtt.Client("127.0.0.1", port, identifier="keeper", clean_session=False,
                          max_queued_incoming_messages=1_000_000, **kw)


async def make_session(b: Broker, topic: str) -> None:
    b.start()
    async with keeper(b.port) as sub:
        await sub.subscribe(topic, qos=1)
    await asyncio.to_thread(b.stop)  # saves the session


async def drain(port: int, n: int, timeout: float) -> list[int]:
    """Everything queued for the keeper, until `n` messages or `timeout`."""
    seqs: list[int] = []
    async with keeper(port) as sub:
        try:
            async with asyncio.timeout(timeout):
                async for m in sub.messages:
                    seqs.append(json.loads(m.payload)["seq"])
                    if len(seqs) >= n:
                        break
        except TimeoutError:
            pass
    return seqs


async def test_broker_unreachable_at_start_up_then_appears(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = "spikeline/t/p/result"
    await make_session(broker, topic)  # then nothing listens on the port
    s = MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", qos=1, offline_buffer=1000,
                              reconnect_min_s=0.05, reconnect_max_s=0.4)  # protocol "auto"
    rng = NoJitter()
    pub = MqttPublisher(s, "t", rng=rng)
    attempts: list[float] = []
    make_client = pub._client

    def counted(protocol: Any) -> Any:
        attempts.append(time.monotonic())
        return make_client(protocol)

    monkeypatch.setattr(pub, "_client", counted)
    metrics = PipelineMetrics("p", budget_s=1.0)
    task = asyncio.create_task(pub.run())
    produced = 0
    try:
        while pub.stats.connect_failures < 8:  # 0.05 + 0.1 + 0.2 + 5 x 0.4 s: about 2.3 s
            pub.submit(topic, chunk(produced, 5), {"pipeline": "p"}, metrics)
            produced += 5
            await asyncio.sleep(0.05)
            assert not task.done(), "the connection loop must keep retrying"
        failures = pub.stats.connect_failures
        err = pub.stats.last_error
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert not pub.connected and pub.backlog == produced and pub.stats.dropped_offline == 0
        await asyncio.to_thread(broker.start)
        t_up = time.monotonic()
        await wait_for(lambda: pub.connected and pub.backlog == 0, 5, "reconnect and the backlog sent")
        t_sent = time.monotonic()
    finally:
        await pub.stop(2.0)
        await asyncio.wait_for(task, 5)
    seqs = await drain(broker.port, produced, 10)
    lost = len(set(range(produced)) - set(seqs))
    report(f"nothing listening at start-up: {failures} failed connects, error: {err}")
    report("delays between connect attempts (s): " + ", ".join(f"{g:.3f}" for g in gaps[:failures]) +
           f" (bounds {', '.join(f'{b:g}' for b in rng.bounds[:failures])}; reconnect_max_s {s.reconnect_max_s:g})")
    report(f"broker up: connected and {produced} buffered results sent {t_sent - t_up:.2f} s later; delivered "
           f"{len(seqs)}, lost {lost}, dropped_offline {pub.stats.dropped_offline}")
    assert err == f"mqtt://127.0.0.1:{broker.port}: cannot reach the broker: Connection refused"
    # not a protocol problem: protocol "auto" does not alternate, each failure is one attempt
    assert len(attempts) == failures + 1 == pub.stats.connect_failures + 1
    assert rng.bounds[:failures] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4][:failures]
    for gap, bound in zip(gaps, rng.bounds, strict=False):
        assert bound - 0.005 <= gap <= bound + 0.25, (gaps, rng.bounds)
    assert max(gaps) <= s.reconnect_max_s + 0.25
    assert sorted(seqs) == list(range(produced)) and lost == 0
    assert pub.stats.published == produced == metrics.results and pub.stats.connects == 1


def _csv(path: Path, n: int) -> Path:
    path.write_text("a\n" + "".join(f"{k % 11}\n" for k in range(n)))
    return path


async def test_mosquitto_restarted_20_times_while_a_pipeline_publishes_qos1(broker: Broker, tmp_path: Path) -> None:
    node = "f"
    topic = f"spikeline/{node}/p/result"
    await make_session(broker, topic)
    broker.start()
    csv = _csv(tmp_path / "rec.csv", 100_000)
    cfg = parse({"node": {"name": node, "metrics_interval_s": 0.5, "drain_s": 5},
                 "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "qos": 1, "offline_buffer": 10_000,
                          "reconnect_min_s": 0.02, "reconnect_max_s": 0.2},
                 "pipeline": [{"name": "p", "budget_ms": 500, "policy": "mark_late",
                               "source": {"type": "replay", "file": str(csv), "rate_hz": 200, "speed": 1,
                                          "chunk_ms": 10},
                               "sinks": [{"type": "mqtt", "expiry_s": 0}]}]})
    d = Daemon(cfg)
    got: list[int] = []
    stop_sub = asyncio.Event()
    sub_sessions = 0

    async def subscribe() -> None:
        nonlocal sub_sessions
        while not stop_sub.is_set():
            try:
                async with keeper(broker.port) as sub:
                    sub_sessions += 1
                    async for m in sub.messages:
                        got.append(json.loads(m.payload)["seq"])
            except aiomqtt.MqttError:
                await asyncio.sleep(0.02)

    sub_task = asyncio.create_task(subscribe())
    task = asyncio.create_task(d.run())
    pub = d.publisher
    assert pub is not None
    down_backlog: list[int] = []
    t0 = time.monotonic()
    try:
        await wait_for(lambda: d.pipelines[0].state == State.RUNNING and pub.connected, 15, "the daemon to be up")
        for _ in range(RESTARTS):
            await asyncio.sleep(0.25)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(0.25)  # results pile up in the offline buffer meanwhile
            down_backlog.append(pub.backlog)
            await asyncio.to_thread(broker.start)
            assert not task.done()
        await wait_for(lambda: pub.connected and pub.backlog == 0, 10, "the last reconnect")
    finally:
        d.request_stop()
        rc = await asyncio.wait_for(task, 15)
    produced = pub.stats.published + pub.stats.dropped_offline + pub.stats.dropped_shutdown
    try:
        await wait_for(lambda: len(set(got)) >= pub.stats.published, 15, "every published result at the subscriber")
    finally:
        stop_sub.set()
        sub_task.cancel()
        await asyncio.gather(sub_task, return_exceptions=True)
    distinct = set(got)
    lost = len(set(range(produced)) - distinct)
    dups = sum(c - 1 for c in Counter(got).values())
    report(f"{RESTARTS} mosquitto restarts (SIGTERM, persistence on) in {time.monotonic() - t0:.1f} s while a "
           f"200 Hz pipeline published QoS 1: {produced} results, {len(distinct)} delivered, lost {lost}, "
           f"duplicates {dups} (at least once), dropped_offline {pub.stats.dropped_offline}, dropped_shutdown "
           f"{pub.stats.dropped_shutdown}; publisher connects {pub.stats.connects}, failed connects "
           f"{pub.stats.connect_failures}; backlog while down: min {min(down_backlog)} max {max(down_backlog)}; "
           f"subscriber sessions {sub_sessions}")
    assert rc == 0
    assert pub.stats.connects == RESTARTS + 1
    assert min(down_backlog) > 0, "results were produced while the broker was away"
    assert pub.stats.dropped_offline == pub.stats.dropped_shutdown == 0
    assert distinct == set(range(produced)) and lost == 0
    assert produced >= RESTARTS * 0.5 * 200 * 0.8  # the pipeline ran throughout


async def test_offline_buffer_overflow_counted_exactly_over_20_restarts(broker: Broker) -> None:
    topic = "spikeline/t/p/result"
    await make_session(broker, topic)
    broker.start()
    buffer, first, second = 40, 25, 35  # per outage: 60 results made, 40 kept, the oldest 20 dropped
    s = MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", qos=1, offline_buffer=buffer,
                              reconnect_min_s=0.02, reconnect_max_s=0.1)
    pub = MqttPublisher(s, "t")
    metrics = PipelineMetrics("p", budget_s=1.0)
    task = asyncio.create_task(pub.run())
    expected: list[int] = []
    dropped_each: list[int] = []
    seq = 0
    t0 = time.monotonic()
    try:
        await wait_for(lambda: pub.connected, 10, "connect")
        for _ in range(RESTARTS):
            await asyncio.to_thread(broker.stop)
            # the publisher sees the connection end by itself (no publish needed to find out)
            await wait_for(lambda: not pub.connected, 5, "the publisher to notice the broker is gone")
            before = pub.stats.dropped_offline
            pub.submit(topic, chunk(seq, first), {"pipeline": "p"}, metrics)
            pub.submit(topic, chunk(seq + first, second), {"pipeline": "p"}, metrics)
            dropped_each.append(pub.stats.dropped_offline - before)
            assert pub.backlog == buffer
            expected += range(seq + first + second - buffer, seq + first + second)  # the newest `buffer`
            seq += first + second
            await asyncio.to_thread(broker.start)
            await wait_for(lambda: pub.connected and pub.backlog == 0, 5, "reconnect and the backlog sent")
    finally:
        await pub.stop(2.0)
        await asyncio.wait_for(task, 5)
    seqs = await drain(broker.port, len(expected), 10)
    expected_drops = RESTARTS * (first + second - buffer)
    lost = len(set(expected) - set(seqs))
    report(f"offline_buffer {buffer}, {first + second} results made during each of {RESTARTS} outages: "
           f"dropped_offline {pub.stats.dropped_offline} (expected {expected_drops}; per outage {set(dropped_each)}),"
           f" metrics {metrics.sink_counters['mqtt']['dropped_offline']}; delivered {len(seqs)} of {len(expected)} "
           f"kept, lost {lost}, not-kept ones delivered {len(set(seqs) - set(expected))}; "
           f"{time.monotonic() - t0:.1f} s")
    assert dropped_each == [first + second - buffer] * RESTARTS
    assert pub.stats.dropped_offline == expected_drops == metrics.sink_counters["mqtt"]["dropped_offline"]
    assert sorted(set(seqs)) == expected and lost == 0  # exactly the kept ones, oldest dropped
    assert pub.stats.published == len(expected) == metrics.results and pub.stats.connects == RESTARTS + 1
