"""MQTT 5 message expiry derived from the budget: the broker drops a result rather than deliver it stale.

A persistent-session subscriber (QoS 1) goes away while a daemon publishes QoS 1 results with a 20 ms budget
(expiry max(1, ceil(budget)) = 1 s). Results that waited in mosquitto longer than that are never delivered when
the subscriber returns; results it is online for arrive with the expiry property set.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.pipeline import State

pytestmark = [pytest.mark.broker, pytest.mark.data]


async def test_expired_results_are_dropped_by_the_broker(data_dir: Path, mosquitto: Any) -> None:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    node = f"x{uuid.uuid4().hex[:6]}"
    topic = f"spikeline/{node}/p/result"
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    cfg = parse({"node": {"name": node}, "mqtt": {"url": mosquitto.url, "qos": 1, "protocol": "5"},
                 "pipeline": [{"name": "p", "budget_ms": 20, "policy": "mark_late",
                               "source": {"type": "replay", "file": spar, "speed": 1.0, "series": "0"},
                               "sinks": [{"type": "mqtt"}]}]})
    sid = f"sub-{uuid.uuid4().hex[:6]}"
    port = cfg.mqtt.port if cfg.mqtt else 0

    def connect_props() -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300  # the broker keeps the session (and queues QoS 1) while it is away
        return props

    def client() -> Any:
        return aiomqtt.Client("127.0.0.1", port, identifier=sid, protocol=aiomqtt.ProtocolVersion.V5,
                              clean_start=False, properties=connect_props(), max_queued_incoming_messages=100_000)

    async with client() as sub:
        await sub.subscribe(topic, qos=1)
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    live: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while not (d.pipelines[0].state == State.RUNNING and d.pipelines[0].metrics.results >= 50):
                await asyncio.sleep(0.05)
        published_away = d.publisher.stats.published if d.publisher else 0
        await asyncio.sleep(2.5)  # the queued results outlive their 1 s expiry in the broker
        async with client() as sub:  # back: the session resumes
            seen_before = d.publisher.stats.published if d.publisher else 0

            async def take() -> None:
                async for msg in sub.messages:
                    live.append(msg)

            reader = asyncio.create_task(take())
            await asyncio.sleep(1.0)
            reader.cancel()
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 20)
    assert published_away >= 50
    seqs = sorted(json.loads(m.payload)["seq"] for m in live)
    assert live, "results published while the subscriber is online must arrive"
    # one result per sample at 50 Hz, seq = index. mosquitto counts expiry in whole seconds (a 1 s expiry lives
    # 1-2 s): what was published more than 2.2 s before the subscriber came back must not be delivered.
    oldest_allowed = seen_before - int(2.2 * 50)
    assert seqs[0] >= oldest_allowed, (seqs[:5], seen_before)
    expired = seqs[0]  # results 0 .. seqs[0]-1 were published and never delivered
    assert expired >= published_away
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the fresh ones all came, in order
    with_expiry = [m for m in live if getattr(m.properties, "MessageExpiryInterval", None) == 1]
    assert len(with_expiry) >= len(live) // 3  # sent live: the full 1 s (queued ones carry what remains, or none)
    print(f"\nexpiry: {expired} results expired in the broker while the subscriber was away (never delivered); "
          f"{len(live)} delivered, the oldest {seen_before - seqs[0]} results old at the return")
