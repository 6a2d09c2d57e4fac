"""`spikeline run` as a process: SIGTERM drains and says offline; a killed daemon's last will says offline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from spikeline.mqtt import MqttSettings
from spikeline.synth import LslEEGOutlet

pytestmark = [pytest.mark.broker, pytest.mark.lsl, pytest.mark.slow]


def write_config(tmp_path: Path, url: str, stream: str) -> Path:
    cfg = tmp_path / "life.toml"
    cfg.write_text(f"""
[node]
name = "life"
metrics_interval_s = 0.5
drain_s = 2
[mqtt]
url = "{url}"
qos = 1
[[pipeline]]
name = "eeg"
budget_ms = 50
policy = "mark_late"
source = {{ type = "lsl", name = "{stream}" }}
stages = [{{ type = "bandpass", low_hz = 1, high_hz = 40 }}, {{ type = "bandpower", every = 10 }}]
sinks = [{{ type = "mqtt" }}]
""")
    return cfg


async def run_daemon_until(tmp_path: Path, url: str, how: signal.Signals) -> tuple[int, list[Any], float]:
    stream = f"life-{uuid.uuid4().hex[:8]}"
    outlet = LslEEGOutlet(stream, n_channels=4, rate=250.0).start()
    s = MqttSettings.from_url(url)
    got: list[Any] = []
    try:
        async with aiomqtt.Client(s.host, s.port, identifier=f"obs-{stream}",
                                  max_queued_incoming_messages=100000) as sub:
            await sub.subscribe("spikeline/life/#", qos=1)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "spikeline", "run", str(write_config(tmp_path, url, stream)),
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            results = 0
            async with asyncio.timeout(20):
                async for msg in sub.messages:
                    got.append(msg)
                    results += str(msg.topic).endswith("/result")
                    if results >= 50:
                        break
            t_signal = time.monotonic()
            proc.send_signal(how)
            code = await asyncio.wait_for(proc.wait(), 10)
            elapsed = time.monotonic() - t_signal
            async with asyncio.timeout(10):
                async for msg in sub.messages:
                    got.append(msg)
                    if str(msg.topic) == "spikeline/life/status" and msg.payload == b"offline":
                        break
    finally:
        outlet.close()
    return code, got, elapsed


async def test_sigterm_drains_publishes_everything_and_goes_offline(tmp_path: Path, mosquitto: Any) -> None:
    code, got, elapsed = await run_daemon_until(tmp_path, mosquitto.url, signal.SIGTERM)
    assert code == 0
    assert elapsed < 2 + 3, "drain took longer than drain_s plus connection close"
    status = [m.payload for m in got if str(m.topic) == "spikeline/life/status"]
    assert status[0] == b"online" and status[-1] == b"offline"
    results = [json.loads(m.payload) for m in got if str(m.topic).endswith("/result")]
    seqs = [r["seq"] for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 10 * len(seqs), 10))  # every 10th sample, none missing
    metrics = [json.loads(m.payload) for m in got if str(m.topic).endswith("/metrics")]
    final = metrics[-1]
    assert final["counters"]["results"] == len(results)  # everything counted was received
    assert final["mqtt"]["dropped_offline"] == 0 and final["mqtt"]["dropped_shutdown"] == 0
    assert final["state"] == "stopped"
    info = [json.loads(m.payload) for m in got if str(m.topic).endswith("/info")]
    assert info and info[0]["channels"] == ["C3", "C4", "Cz", "FC3"] and info[0]["rate_hz"] == 25.0


async def test_killed_daemon_last_will_says_offline(tmp_path: Path, mosquitto: Any) -> None:
    code, got, _ = await run_daemon_until(tmp_path, mosquitto.url, signal.SIGKILL)
    assert code == -signal.SIGKILL
    status = [m for m in got if str(m.topic) == "spikeline/life/status"]
    assert status[0].payload == b"online" and status[-1].payload == b"offline"


def test_stage_counters_are_not_asked_before_the_stages_started_and_a_failing_one_is_skipped() -> None:
    from spikeline.chunk import StreamMeta
    from spikeline.config import parse
    from spikeline.pipeline import Pipeline
    from spikeline.stages.base import Stage

    cfg = parse({"pipeline": [{"name": "p", "budget_ms": 20, "source": {"type": "lsl", "name": "x"},
                               "stages": [{"type": "bandpass", "low_hz": 1, "high_hz": 10}],
                               "sinks": [{"type": "stdout"}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")

    class Broken(Stage):
        def counters(self) -> dict[str, int | float]:
            raise AttributeError("not started")

    p.stages.append(Broken("broken", {}))
    assert p.stage_counters() == {}  # still opening: nothing is asked
    p.meta_out = p.stages[0].start(StreamMeta(name="s", type="EEG", channels=("a",), nominal_rate=100.0,
                                              units=("",)))
    assert p.stage_counters() == {}  # bandpass has none, the broken one is skipped (and logged)
