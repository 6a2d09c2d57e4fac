"""The MQTT publisher against a real mosquitto: offline buffer, reconnect, birth and last will, TCP_NODELAY."""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
from typing import Any

import aiomqtt
import numpy as np
import pytest

from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.metrics import PipelineMetrics
from spikeline.mqtt import MqttPublisher, MqttSettings

pytestmark = [pytest.mark.broker]

META = StreamMeta("s", "EEG", ("a",), 100.0)


def chunk(seq: int, n: int) -> SampleChunk:
    t = np.arange(seq, seq + n, dtype=np.float64)
    return SampleChunk(np.arange(seq, seq + n, dtype=np.float32)[:, None].copy(), t, t.copy(), seq, META)


async def collect(client: aiomqtt.Client, n: int, timeout: float) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        async for msg in client.messages:
            got.append(msg)
            if len(got) == n:
                break
    return got


async def test_results_made_while_the_broker_is_down_are_delivered_and_overflow_is_counted(
        mosquitto_factory: Any) -> None:
    broker = mosquitto_factory(persistence=True).start()
    s = MqttSettings.from_url(broker.url)
    # A subscriber with a persistent session: the broker keeps its QoS 1 messages while it is away.
    async with aiomqtt.Client(s.host, s.port, identifier="keeper", clean_session=False) as sub:
        await sub.subscribe("spikeline/t/p/result", qos=1)
    broker.stop()

    settings = MqttSettings.from_url(broker.url, qos=1, offline_buffer=100, reconnect_min_s=0.05,
                                     reconnect_max_s=0.2, protocol="5")
    pub = MqttPublisher(settings, "t")
    metrics = PipelineMetrics("p", budget_s=1.0)
    task = asyncio.create_task(pub.run())
    await asyncio.sleep(0.3)  # several failed connects
    assert pub.stats.connect_failures >= 2 and not pub.connected
    pub.submit("spikeline/t/p/result", chunk(0, 90), {"pipeline": "p"}, metrics)
    pub.submit("spikeline/t/p/result", chunk(90, 60), {"pipeline": "p"}, metrics)
    assert (pub.backlog, pub.stats.dropped_offline) == (100, 50)  # exactly the overflow, oldest first
    assert metrics.sink_counters["mqtt"]["dropped_offline"] == 50

    broker.start()
    async with asyncio.timeout(10):
        while pub.backlog:
            await asyncio.sleep(0.02)
    await pub.stop(2.0)
    await asyncio.wait_for(task, 5)
    assert pub.stats.published == 100 and metrics.results == 100

    async with aiomqtt.Client(s.host, s.port, identifier="keeper", clean_session=False) as sub:
        msgs = await collect(sub, 100, 10)
    seqs = [json.loads(m.payload)["seq"] for m in msgs]
    assert seqs == list(range(50, 150))  # none lost within the bound, in order


async def test_birth_will_and_nodelay(mosquitto: Any) -> None:
    s = MqttSettings.from_url(mosquitto.url)
    pub = MqttPublisher(MqttSettings.from_url(mosquitto.url, protocol="5"), "n1")
    task = asyncio.create_task(pub.run())
    async with aiomqtt.Client(s.host, s.port, identifier="watcher") as sub:
        async with asyncio.timeout(10):
            while not pub.connected:
                await asyncio.sleep(0.01)
        await sub.subscribe("spikeline/n1/status", qos=1)
        (birth,) = await collect(sub, 1, 5)
        assert (birth.payload, birth.retain) == (b"online", True)
        # Nagle is off on the publisher's socket
        sock = pub.socket()
        assert sock is not None and sock.getpeername() == ("127.0.0.1", mosquitto.port)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # QoS 0 results take the fast path (written in the same loop iteration). Afterwards the socket
        # must not stay registered for writing, or the loop would spin on an always-writable socket.
        await sub.subscribe("spikeline/n1/r", qos=0)
        metrics = PipelineMetrics("p", budget_s=1.0)
        for k in range(5):
            pub.submit("spikeline/n1/r", chunk(10 * k, 10), {"pipeline": "p"}, metrics)
            await asyncio.sleep(0.01)
        got = await collect(sub, 50, 5)
        assert [json.loads(m.payload)["seq"] for m in got] == list(range(50))
        await asyncio.sleep(0.05)
        key = asyncio.get_running_loop()._selector.get_key(sock.fileno())  # type: ignore[attr-defined]
        assert not key.events & selectors.EVENT_WRITE, "publisher socket left registered for writing"
        await pub.stop(1.0)
        await asyncio.wait_for(task, 5)
        (bye,) = await collect(sub, 1, 5)
        assert bye.payload == b"offline"
