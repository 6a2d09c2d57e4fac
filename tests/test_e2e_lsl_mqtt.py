"""Real LSL outlet -> spikeline -> real broker -> a subscriber: every sample accounted for."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import aiomqtt
import numpy as np
import pytest
import scipy.signal

from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.kernels import design_bandpass
from spikeline.mqtt import MqttSettings
from spikeline.synth import LslEEGOutlet, SyntheticEEG

pytestmark = [pytest.mark.lsl, pytest.mark.slow]

RATE, CHANNELS, N = 500.0, 8, 1500


def _config(url: str, protocol: str, stream: str, budget_ms: float = 50.0) -> dict[str, Any]:
    return {
        "node": {"name": "test", "metrics_interval_s": 0.5, "drain_s": 3.0},
        "mqtt": {"url": url, "protocol": protocol, "qos": 1},
        "pipeline": [{
            "name": "eeg",
            "budget_ms": budget_ms,
            "policy": "mark_late",  # every sample computed: what these tests count
            "source": {"type": "lsl", "name": stream, "resolve_timeout_s": 10.0},
            "stages": [{"type": "bandpass", "low_hz": 1.0, "high_hz": 40.0, "order": 4}],
            "sinks": [{"type": "mqtt"}],
        }],
    }


def _push_paced(outlet: LslEEGOutlet, n: int, rate: float) -> None:
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        outlet.push(1)


async def _run_path(url: str, protocol: str) -> tuple[list[dict[str, Any]], Daemon]:
    stream = f"test-eeg-{uuid.uuid4().hex[:8]}"
    outlet = LslEEGOutlet(stream, n_channels=CHANNELS, rate=RATE, seed=7)
    cfg = parse(_config(url, protocol, stream))
    daemon = Daemon(cfg)
    s = MqttSettings.from_url(url)
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    received: list[dict[str, Any]] = []
    try:
        async with aiomqtt.Client(s.host, s.port, protocol=version, identifier=f"sub-{stream}",
                                  max_queued_incoming_messages=N * 2) as sub:
            await sub.subscribe("spikeline/test/eeg/result", qos=1)
            run = asyncio.create_task(daemon.run())
            assert await asyncio.to_thread(outlet.have_consumers, 15.0), "spikeline never connected to the outlet"
            pusher = threading.Thread(target=_push_paced, args=(outlet, N, RATE))
            pusher.start()
            try:
                async with asyncio.timeout(30):
                    async for msg in sub.messages:
                        assert isinstance(msg.payload, bytes)
                        received.append(json.loads(msg.payload))
                        if len(received) == N:
                            break
            finally:
                await asyncio.to_thread(pusher.join)
                daemon.request_stop()
                assert await run == 0
    finally:
        outlet.close()
    return received, daemon


def _check(received: list[dict[str, Any]], daemon: Daemon) -> None:
    assert len(received) == N
    assert [r["seq"] for r in received] == list(range(N)), "results missing, duplicated or out of order"
    for r in received:
        assert r["t_sample"] <= r["t_recv"] <= r["t_done"] <= r["t_pub"], r
        assert r["latency_ms"]["runtime"] == pytest.approx((r["t_pub"] - r["t_recv"]) * 1e3)
        assert r["latency_ms"]["age"] == pytest.approx((r["t_pub"] - r["t_sample"]) * 1e3)
        assert len(r["values"]) == CHANNELS
    m = daemon.pipelines[0].metrics
    assert (m.samples_in, m.results, m.dropped_queue, m.dropped_stale) == (N, N, 0, 0)
    assert daemon.publisher is not None and daemon.publisher.stats.dropped_offline == 0
    # Streaming equals offline: the same signal through scipy's sosfilt from the same primed state.
    x = SyntheticEEG(n_channels=CHANNELS, rate=RATE, seed=7).next(N).astype(np.float64)
    sos = design_bandpass(1.0, 40.0, RATE, 4)
    zi = scipy.signal.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    expected, _ = scipy.signal.sosfilt(sos, x, axis=0, zi=zi)
    got = np.array([r["values"] for r in received])
    # float32 samples through a float64 filter: the only error is the float32 rounding of in- and output.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.broker
async def test_lsl_to_mosquitto_every_sample_accounted_for(mosquitto: Any) -> None:
    received, daemon = await _run_path(mosquitto.url, "5")
    _check(received, daemon)
    assert daemon.publisher is not None and daemon.publisher.stats.protocol == "5"


async def test_lsl_to_embedded_broker_every_sample_accounted_for(embedded_broker: str) -> None:
    received, daemon = await _run_path(embedded_broker, "auto")
    _check(received, daemon)
    assert daemon.publisher is not None and daemon.publisher.stats.protocol == "3.1.1"  # fell back from 5
