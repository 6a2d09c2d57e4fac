"""The shipped example pipelines (deploy/examples) on replayed real recordings, through the daemon, to a
real mosquitto: every published decision equals what the model's training tool computed offline.

Two paths per model:
- streaming equals offline: the replay source feeds the daemon one sample per chunk, as fast as possible
  (no sample can be dropped), and every result matches the offline evaluation exactly (class) and to
  float rounding (scores);
- live: the recording plays on a real LSL outlet (`spikeline replay --lsl`'s player) at 8x real time, the
  deploy config's LSL source picks it up, and the decisions on MQTT (and, for EEG, on the LSL decision
  outlet) match the offline ones.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import tomllib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT, collect_results
from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.lslcfg import import_pylsl
from spikeline.recordings import Recording, load
from spikeline.registry import resolve
from spikeline.sources.replay import LslPlayer, build_program
from spikeline.stages import build_stage

sys.path.insert(0, str(ROOT / "tools"))

pytestmark = [pytest.mark.data, pytest.mark.broker, pytest.mark.slow]

EXAMPLES = ROOT / "deploy" / "examples"


def deploy_config(name: str, url: str, source: dict[str, Any], node: str) -> Any:
    """A shipped example config with only the broker and the source swapped for the test's."""
    doc = tomllib.loads((EXAMPLES / name).read_text())
    doc["mqtt"]["url"] = url
    doc["mqtt"]["qos"] = 1
    doc["node"]["name"] = node
    doc["node"]["metrics_interval_s"] = 0.5
    doc["lsl"] = {"config": "loopback"}
    (pipe,) = doc["pipeline"]
    pipe["source"] = source
    pipe["budget_ms"] = 200  # CI machines are shared; the budget is not what this test checks
    pipe["policy"] = "mark_late"  # every sample computed even if a loaded machine delays it
    return parse(doc)


async def collect(url: str, topic: str, expected: int, run: Any, timeout: float = 90.0) -> list[dict[str, Any]]:
    return await collect_results(url, topic, expected, run, timeout)


# ----------------------------------------------------------------------------------------------- EEG

EEG_RUN = "S001R04.edf"


def then_decide(config: str, scores: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The config's own decide stage applied to the offline scores in one call (its smoothing and hysteresis
    are chunk-invariant, tests/test_stages.py): (scores after smoothing, labels, class names)."""
    doc = tomllib.loads((EXAMPLES / config).read_text())
    decide = next(s for s in doc["pipeline"][0]["stages"] if s["type"] == "decide")
    st = build_stage("decide", {k: v for k, v in decide.items() if k != "type"})
    k = scores.shape[1]
    meta = StreamMeta(name="p", type="x", channels=tuple(f"c{i}" for i in range(k)), nominal_rate=rate,
                      units=("",) * k)
    st.start(meta)
    n = len(scores)
    out = st.process(SampleChunk(data=np.ascontiguousarray(scores, np.float32), t=np.zeros(n), t_recv=np.zeros(n),
                                 seq=0, meta=meta))
    assert out is not None and out.label is not None
    return out.data, out.label, list(decide["classes"])


def check(rows: list[dict[str, Any]], seqs: np.ndarray, scores: np.ndarray, labels: np.ndarray,
          classes: list[str], atol: float) -> None:
    """Published results == offline decisions: same rows (seq), same classes, same scores to float rounding."""
    assert np.array_equal(np.array([r["seq"] for r in rows]), seqs)
    assert [r["label"] for r in rows] == [classes[i] for i in labels]
    np.testing.assert_allclose(np.array([r["values"] for r in rows]), scores, rtol=0, atol=atol)


def eeg_expected(rec: Recording) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Offline: the training tool's evaluation of the shipped model, then the config's decide stage."""
    import train_eeg

    ends, probs = train_eeg.offline_predictions(resolve("eeg-mi-lr"), rec)
    scores, labels, classes = then_decide("eeg-motor-imagery.toml", probs, 10.0)
    return ends, scores, labels, classes


async def test_eeg_streaming_one_sample_at_a_time_equals_offline(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    path = data_dir / "eegmmidb_S001" / EEG_RUN
    (rec,) = load(path)
    ends, scores, labels, classes = eeg_expected(rec)
    node = f"t{uuid.uuid4().hex[:6]}"
    cfg = deploy_config("eeg-motor-imagery.toml", mosquitto.url,
                        {"type": "replay", "file": str(path), "speed": 0, "chunk": 1}, node)
    cfg.pipelines[0].sinks[:] = [s for s in cfg.pipelines[0].sinks if s.kind == "mqtt"]
    daemon = Daemon(cfg)

    async def run() -> None:
        assert await daemon.run() == 0

    rows = await collect(mosquitto.url, f"spikeline/{node}/motor-imagery/result", len(ends), run)
    assert len(rows) == len(ends)
    check(rows, ends, scores, labels, classes, atol=2e-6)
    m = daemon.pipelines[0].metrics
    assert (m.samples_in, m.dropped_queue, m.dropped_stale) == (rec.n_samples, 0, 0)


@pytest.mark.timeout(200)
async def test_eeg_live_over_lsl_publishes_the_offline_decisions_on_mqtt_and_lsl(data_dir: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    pylsl = import_pylsl()
    path = data_dir / "eegmmidb_S001" / EEG_RUN
    recs = load(path)
    ends, scores, labels, classes = eeg_expected(recs[0])
    sid = uuid.uuid4().hex[:8]
    prog = build_program(recs, name=f"eeg-{sid}", stream_type="EEG")
    player = LslPlayer(prog, speed=8.0, chunk_ms=50)
    node = f"t{sid[:6]}"
    cfg = deploy_config("eeg-motor-imagery.toml", mosquitto.url,
                        {"type": "lsl", "name": f"eeg-{sid}", "stream_type": "EEG", "resolve_timeout_s": 20}, node)
    for s in cfg.pipelines[0].sinks:
        if s.kind == "lsl":
            s.params["source_id"] = f"dec-{sid}"
    daemon = Daemon(cfg)
    decisions: list[Any] = []

    def read_decisions(stop: threading.Event) -> None:
        found = pylsl.resolve_byprop("source_id", f"dec-{sid}", 1, 30.0)
        assert found, "the decision outlet never appeared"
        inlet = pylsl.StreamInlet(found[0], max_buflen=600)
        inlet.open_stream(10.0)
        while not stop.is_set():
            chunk, ts = inlet.pull_chunk(timeout=0.2)
            decisions.extend(zip([c[0] for c in chunk], ts, strict=True))

    async def run() -> None:
        stop = threading.Event()
        reader = threading.Thread(target=read_decisions, args=(stop,))
        reader.start()
        d = asyncio.create_task(daemon.run())
        try:
            assert await asyncio.to_thread(player.outlet.wait_for_consumers, 30.0), "spikeline never connected"
            await asyncio.sleep(1.0)  # the decision outlet's reader connects before the first decision
            await asyncio.to_thread(player.play)
            await asyncio.sleep(1.0)
        finally:
            daemon.request_stop()
            assert await d == 0
            stop.set()
            await asyncio.to_thread(reader.join)
            player.close()

    rows = await collect(mosquitto.url, f"spikeline/{node}/motor-imagery/result", len(ends), run, timeout=100)
    assert len(rows) == len(ends)
    check(rows, ends, scores, labels, classes, atol=2e-6)
    m = daemon.pipelines[0].metrics
    assert (m.samples_in, m.dropped_queue, m.dropped_stale, m.source_gaps) == (recs[0].n_samples, 0, 0, 0)
    # The LSL decision outlet carried the same decisions, in order (from when its reader connected).
    got = [d for d, _ in decisions]
    want = [r["label"] for r in rows]
    assert len(got) > len(want) - 20
    assert got == want[len(want) - len(got):]


# --------------------------------------------------------------------------------------- smartwatch HAR

SPAR = "spar_applewatch/spar_watch.npz"
# (example config, training tool exposing offline_predictions, the model id the config names)
HAR = [("smartwatch-har-l2mu.toml", "train_l2mu", "har-spar-l2mu"),
       ("smartwatch-har-deltagru.toml", "train_deltagru", "har-spar-deltagru")]


def har_expected(config: str, tool: str, model: str,
                 rec: Recording) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    at, scores, _ = __import__(tool).offline_predictions(model, rec)
    smoothed, labels, classes = then_decide(config, scores, 1.0)
    return at, smoothed, labels, classes


@pytest.mark.parametrize(("config", "tool", "model"), HAR)
async def test_har_streaming_one_sample_at_a_time_equals_offline(data_dir: Path, mosquitto, config: str,  # type: ignore[no-untyped-def]
                                                                  tool: str, model: str) -> None:
    path = data_dir / SPAR
    series = 120
    rec = load(path)[series]
    at, scores, labels, classes = har_expected(config, tool, model, rec)
    node = f"t{uuid.uuid4().hex[:6]}"
    cfg = deploy_config(config, mosquitto.url,
                        {"type": "replay", "file": str(path), "series": str(series), "speed": 0, "chunk": 1}, node)
    daemon = Daemon(cfg)

    async def run() -> None:
        assert await daemon.run() == 0

    rows = await collect(mosquitto.url, f"spikeline/{node}/har/result", len(at), run)
    assert len(rows) == len(at) > 10
    check(rows, at, scores, labels, classes, atol=1e-5)
    m = daemon.pipelines[0].metrics
    assert (m.samples_in, m.dropped_queue, m.dropped_stale) == (rec.n_samples, 0, 0)
    assert np.mean(np.array(classes)[labels] == rec.label) > 0.5  # and it mostly recognises the exercise


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("config", "tool", "model"), HAR)
async def test_har_live_over_lsl_publishes_the_offline_decisions(data_dir: Path, mosquitto, config: str,  # type: ignore[no-untyped-def]
                                                                 tool: str, model: str) -> None:
    path = data_dir / SPAR
    series = 7
    recs = [load(path)[series]]
    at, scores, labels, classes = har_expected(config, tool, model, recs[0])
    sid = uuid.uuid4().hex[:8]
    player = LslPlayer(build_program(recs, name=f"imu-{sid}", stream_type="IMU"), speed=8.0, chunk_ms=100)
    node = f"t{sid[:6]}"
    cfg = deploy_config(config, mosquitto.url,
                        {"type": "lsl", "name": f"imu-{sid}", "stream_type": "IMU", "resolve_timeout_s": 20}, node)
    daemon = Daemon(cfg)

    async def run() -> None:
        d = asyncio.create_task(daemon.run())
        try:
            assert await asyncio.to_thread(player.outlet.wait_for_consumers, 30.0), "spikeline never connected"
            await asyncio.to_thread(player.play)
            await asyncio.sleep(1.0)
        finally:
            daemon.request_stop()
            assert await d == 0
            player.close()

    rows = await collect(mosquitto.url, f"spikeline/{node}/har/result", len(at), run, timeout=100)
    assert len(rows) == len(at) > 10
    check(rows, at, scores, labels, classes, atol=1e-5)
    m = daemon.pipelines[0].metrics
    assert (m.samples_in, m.dropped_queue, m.dropped_stale, m.source_gaps) == (recs[0].n_samples, 0, 0, 0)
