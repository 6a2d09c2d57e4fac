"""The shipped event-camera pipelines (deploy/examples) through the daemon to a real mosquitto.

- N-MNIST from files: the 100 test samples played back to back (as fast as possible, nothing dropped)
  -> denoise -> nmnist-evnet -> MQTT: one decision per digit, equal to the same kernels run offline on each
  file, with the accuracy of the model card's denoised evaluation;
- N-MNIST live over UDP: `spikeline events send` streams the same files as AEStream datagrams at 5x real
  time into the `event_udp` source of nmnist-udp.toml: the same decisions;
- DVXplorer motion: the real 320x240 recording -> denoise -> HD-SNN motion layer -> MQTT: the published
  direction per window equals the same stages run offline on the whole recording.
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
from spikeline.broker import free_port
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.events import read
from spikeline.pipeline import State

sys.path.insert(0, str(ROOT / "tools"))

pytestmark = [pytest.mark.data, pytest.mark.broker, pytest.mark.slow]

EXAMPLES = ROOT / "deploy" / "examples"


def deploy_config(name: str, url: str, node: str, source: dict[str, Any]) -> Any:
    """A shipped example config with the broker, node and some source keys swapped for the test's."""
    doc = tomllib.loads((EXAMPLES / name).read_text())
    doc["mqtt"]["url"] = url
    doc["mqtt"]["qos"] = 1
    doc["node"]["name"] = node
    doc["node"]["metrics_interval_s"] = 0.5
    (pipe,) = doc["pipeline"]
    pipe["source"].update(source)
    pipe["budget_ms"] = 500  # CI machines are shared; the budget is not what this test checks
    pipe["policy"] = "mark_late"  # every sample computed even if a loaded machine delays it
    return parse(doc), pipe


async def collect(url: str, topic: str, expected: int, run: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
    return await collect_results(url, topic, expected, run, timeout)


# ---------------------------------------------------------------------------------------------- N-MNIST

def nmnist_test(data_dir: Path) -> tuple[list[Path], list[int]]:
    d = data_dir / "nmnist_small_slayer"
    rows = [line.split() for line in (d / "test100.txt").read_text().splitlines() if not line.startswith("#")]
    return [d / f"{a}.bs2" for a, _ in rows], [int(b) for _, b in rows]


def nmnist_offline(files: list[Path], pipe: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """The training tool's evaluation of the example pipeline (its denoise over the files as the source plays
    them, then the classifier per file), with the config's settings: (probabilities, labels)."""
    import train_nmnist

    den = next(s for s in pipe["stages"] if s["type"] == "denoise")
    cls = next(s for s in pipe["stages"] if s["type"] == "event_classifier")
    out, _ = train_nmnist.stream_predictions(cls["model"], files, den["filter_ms"], pipe["source"]["gap_ms"])
    probs = []
    for _, s in out:
        z = np.exp(s - s.max())
        probs.append((z / z.sum()).astype(np.float32))
    return np.array(probs), [p for p, _ in out]


def check_digits(rows: list[dict[str, Any]], probs: np.ndarray, labels: list[int], truth: list[int]) -> None:
    assert [r["seq"] for r in rows] == list(range(len(labels)))
    assert [r["label"] for r in rows] == [str(k) for k in labels]
    np.testing.assert_allclose(np.array([r["values"] for r in rows]), probs, rtol=0, atol=1e-6)
    correct = sum(int(r["label"]) == y for r, y in zip(rows, truth, strict=True))
    assert correct >= 95, f"{correct}/100 (the card's denoised evaluation is 95/100)"
    for r in rows:
        assert r["t_sample"] <= r["t_recv"] + 1e-6 <= r["t_pub"] + 2e-6


@pytest.mark.timeout(300)
async def test_nmnist_file_pipeline_publishes_one_offline_decision_per_digit(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    files, truth = nmnist_test(data_dir)
    node = f"t{uuid.uuid4().hex[:6]}"
    cfg, pipe = deploy_config("nmnist-events.toml", mosquitto.url, node,
                              {"file": str(files[0]), "files": [str(f) for f in files[1:]], "speed": 0,
                               "chunk_events": 1000})
    probs, labels = nmnist_offline(files, pipe)
    daemon = Daemon(cfg)

    async def run() -> None:
        assert await daemon.run() == 0

    rows = await collect(mosquitto.url, f"spikeline/{node}/digits/result", len(files), run)
    check_digits(rows, probs, labels, truth)
    m = daemon.pipelines[0].metrics
    assert m.samples_in == sum(len(read(f).events) for f in files)
    assert (m.dropped_queue, m.dropped_rate, m.rejected_input) == (0, 0, 0)


@pytest.mark.timeout(300)
async def test_nmnist_live_over_udp_publishes_the_same_decisions(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    files, truth = nmnist_test(data_dir)
    port = free_port()  # a TCP port number that is free is very likely free for UDP on loopback too
    node = f"t{uuid.uuid4().hex[:6]}"
    cfg, pipe = deploy_config("nmnist-udp.toml", mosquitto.url, node, {"port": port})
    probs, labels = nmnist_offline(files, {**pipe, "source": {"gap_ms": 100}})  # what the sender below plays
    daemon = Daemon(cfg)

    async def run() -> None:
        d = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(60):  # the UDP port is bound once the pipeline runs
                while not (daemon.pipelines and daemon.pipelines[0].state == State.RUNNING):
                    await asyncio.sleep(0.02)
            cmd = [sys.executable, "-m", "spikeline", "events", "send", *map(str, files),
                   "--udp", f"127.0.0.1:{port}", "--speed", "5", "--gap-ms", "100", "--quiet"]
            proc = await asyncio.create_subprocess_exec(*cmd)
            assert await asyncio.wait_for(proc.wait(), 120) == 0
            # the last digit is decided once the source's ticks show the pause (gap_ms), with no further event
            async with asyncio.timeout(10):
                while daemon.pipelines[0].metrics.results < len(files):
                    await asyncio.sleep(0.02)
        finally:
            daemon.request_stop()
            assert await d == 0

    rows = await collect(mosquitto.url, f"spikeline/{node}/digits/result", len(files), run)
    src = daemon.pipelines[0].source
    assert getattr(src, "socket_drops", None) == 0, "datagrams lost in the OS socket buffer"
    check_digits(rows, probs, labels, truth)
    m = daemon.pipelines[0].metrics
    assert (m.dropped_queue, m.dropped_rate, m.rejected_input) == (0, 0, 0)


# ------------------------------------------------------------------------------------------- DVS motion

@pytest.mark.timeout(300)
async def test_dvxplorer_motion_directions_are_published_as_computed_offline(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    from spikeline.chunk import EventChunk, StreamMeta
    from spikeline.stages import build_stage

    path = data_dir / "dvs_samples_tonic" / "sample.aedat4"
    node = f"t{uuid.uuid4().hex[:6]}"
    cfg, pipe = deploy_config("dvs-motion.toml", mosquitto.url, node,
                              {"file": str(path), "speed": 0, "loop": False, "chunk_events": 1000})
    # offline: the config's stages on the whole recording in one chunk, then the end of the input
    ev = read(path).events
    meta = StreamMeta(name="cam", type="events", channels=(), nominal_rate=5e6, sensor=(320, 240))
    stages = [build_stage(s["type"], {k: v for k, v in s.items() if k != "type"}) for s in pipe["stages"]]
    m = meta
    for st in stages:
        m = st.start(m)
    out = stages[1].process(stages[0].process(EventChunk(ev=ev, t_base=0.0, t_recv=0.0, seq=0, meta=meta)))
    last = stages[1].flush()
    assert out is not None and last is not None and out.label is not None and last.label is not None
    want_values = np.concatenate([out.data, last.data])
    want_labels = [m.classes[i] for i in np.concatenate([out.label, last.label])]
    assert len(want_labels) >= 10  # 0.59 s in 50 ms windows
    daemon = Daemon(cfg)

    async def run() -> None:
        assert await daemon.run() == 0

    rows = await collect(mosquitto.url, f"spikeline/{node}/motion/result", len(want_labels), run)
    assert [r["label"] for r in rows] == want_labels
    np.testing.assert_array_equal(np.array([r["values"] for r in rows], dtype=np.float32), want_values)
    assert set(want_labels) <= {*m.classes}
    assert sum(v.sum() for v in want_values) > 1000  # the layer does spike on the real recording
    metrics = daemon.pipelines[0].metrics
    assert metrics.samples_in == len(ev) and metrics.dropped_queue == 0
