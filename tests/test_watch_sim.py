"""tools/watch_sim.py: virtual watches replaying SPAR recordings over UDP and MQTT.

Everything received is decoded with spikeline.watch.frames and checked against the recording (read here
independently with spikeline.recordings.load) and against the ledger: the sample values and indices, the
device times from the ledger's drift/offset/phase, and which messages were lost or came twice — exactly.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spikeline.recordings import load
from spikeline.watch import Frame, decode_csv, decode_frame, decode_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import watch_sim
from watch_sim import SimConfig, Simulator

pytestmark = pytest.mark.data

SPAR = "spar_applewatch/spar_watch.npz"
WATCHES = 20
K = 5
RATE = 50.0


def _config(data_dir: Path, fmt: str, seed: int, **kw: Any) -> SimConfig:
    return SimConfig(watches=WATCHES, format=fmt, batch=K, rate=RATE, duration=2.0, jitter_ms=5.0, loss=0.1,
                     dup=0.1, drift_ppm=100.0, offset_s=5.0, seed=seed, data=str(data_dir / SPAR), **kw)


def _decode(fmt: str, payload: bytes, sender: str) -> Frame:
    if fmt == "binary":
        return decode_frame(payload, 6)
    if fmt == "json":
        return decode_json(payload, 6)
    (f,) = decode_csv(payload, fmt.removeprefix("csv-"), sender, 6)
    return f


def _expected_time_us(w: dict[str, Any], i: np.ndarray) -> np.ndarray:
    tau = w["phase_s"] + i / RATE
    return np.rint((tau * (1 + w["drift_ppm"] * 1e-6) + w["offset_s"]) * 1e6).astype(np.int64)


def verify(ledger: dict[str, Any], fmt: str, got: list[tuple[str, bytes]], data_dir: Path) -> Counter[str]:
    """Every message decodes, carries the recording's samples at the right indices and device times, and the
    messages received (and received twice) are exactly those the ledger says were sent (and duplicated)."""
    series = [r.data for r in load(data_dir / SPAR)]
    by_device = {w["device"]: w for w in ledger["watches"]}
    assert len(by_device) == WATCHES
    seen: dict[str, Counter[int]] = {d: Counter() for d in by_device}
    for name, payload in got:
        f = _decode(fmt, payload, name)
        device = f.device or name
        w = by_device[device]
        n = f.data.shape[0]
        if f.first_index is None:  # CSV: the index from the device time
            first = round(((f.t_us[0] / 1e6 - w["offset_s"]) / (1 + w["drift_ppm"] * 1e-6) - w["phase_s"]) * RATE)
        else:
            first = f.first_index
        assert first % K == 0 and n == min(K, w["samples_planned"] - first)
        idx = first + np.arange(n)
        s = series[w["series"]]
        np.testing.assert_array_equal(f.data, s[idx % len(s)])
        want_t = _expected_time_us(w, idx)
        if f.t_us is not None:
            assert np.abs(f.t_us - want_t).max() <= 1
        else:
            assert abs(f.t0_us - want_t[0]) <= 1
            assert f.period_us is None or abs(f.period_us - 1e6 / RATE * (1 + w["drift_ppm"] * 1e-6)) <= 0.5
        seen[device][first // K] += 1
    totals: Counter[str] = Counter()
    for device, w in by_device.items():
        sent = {a // K for a, b in w["sample_ranges"] for a in range(a, b, K)}
        lost = {m for a, b in w["lost_messages"] for m in range(a, b + 1)}
        assert set(seen[device]) == sent, device
        assert not sent & lost
        assert sorted(m for m, c in seen[device].items() if c == 2) == w["duplicated_messages"], device
        assert max(seen[device].values(), default=1) <= 2
        assert len(sent) + len(lost) == w["messages_planned"]  # the run finished: every message is accounted
        totals["sent"] += len(sent)
        totals["lost"] += len(lost)
        totals["dup"] += len(w["duplicated_messages"])
    s = ledger["summary"]
    assert s["finished"] and len(got) == s["datagrams_or_publishes"] == totals["sent"] + totals["dup"]
    assert (s["messages_lost"], s["messages_duplicated"]) == (totals["lost"], totals["dup"])
    assert totals["lost"] > 0 and totals["dup"] > 0  # 10 % of ~400 messages each
    return totals


@pytest.mark.parametrize("fmt", ["binary", "json", "csv-plain", "csv-sensorstream"])
def test_udp_watches_match_recording_and_ledger(fmt: str, data_dir: Path) -> None:
    layout = fmt.removeprefix("csv-") if fmt.startswith("csv") else "plain"
    sim = Simulator(_config(data_dir, fmt.split("-")[0], seed=3, csv_layout=layout))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.1)
    port = rx.getsockname()[1]
    out: list[dict[str, Any]] = []
    th = threading.Thread(target=lambda: out.append(sim.run(udp=f"127.0.0.1:{port}")))
    got: list[tuple[str, bytes]] = []
    try:
        th.start()
        while True:
            try:
                data, addr = rx.recvfrom(65536)
                got.append((f"{addr[0]}:{addr[1]}", data))
            except TimeoutError:
                if not th.is_alive():
                    break
    finally:
        th.join()
        rx.close()
    (ledger,) = out
    totals = verify(ledger, fmt, got, data_dir)
    print(f"\n{fmt}: {len(got)} datagrams, {dict(totals)}, summary {ledger['summary']}")
    assert ledger["summary"]["elapsed_s"] < 4


@pytest.mark.broker
@pytest.mark.parametrize("fmt", ["binary", "json"])
async def test_mqtt_watches_match_recording_and_ledger(fmt: str, data_dir: Path, mosquitto: Any) -> None:
    import aiomqtt

    sim = Simulator(_config(data_dir, fmt, seed=5))
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watch-sim-test",
                              max_queued_incoming_messages=100_000) as sub:
        await sub.subscribe("watch/+/imu", qos=0)
        task = asyncio.create_task(sim.arun(mqtt=mosquitto.url))

        async def receive() -> None:  # never cancelled mid-message (a timeout around anext() can lose one)
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                got.append((str(msg.topic).split("/")[1], msg.payload))

        reader = asyncio.create_task(receive())
        async with asyncio.timeout(30):
            await task
            n = -1
            while n != len(got):  # until nothing more arrives for 0.5 s
                n = len(got)
                await asyncio.sleep(0.5)
        reader.cancel()
        ledger = await task
    totals = verify(ledger, fmt, got, data_dir)
    print(f"\nmqtt {fmt}: {len(got)} messages, {dict(totals)}")


def test_schedule_is_deterministic_from_the_seed(data_dir: Path) -> None:
    a, b = (Simulator(_config(data_dir, "binary", seed=7)) for _ in range(2))
    c = Simulator(_config(data_dir, "binary", seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a.lost + a.duped, b.lost + b.duped, strict=True))
    assert np.array_equal(a.s_due, b.s_due) and np.array_equal(a.drift, b.drift)
    assert not np.array_equal(a.s_due, c.s_due)
    assert np.all(np.abs(a.drift) <= 100e-6) and np.all(np.abs(a.offset) <= 5.0)
    # watch k replays series k mod n_series; jitter (5 ms) < a message's span (100 ms): sent in order
    assert list(a.series_of[:3]) == [0, 1, 2]
    for k in range(WATCHES):
        assert np.all(np.diff(a.s_msg[a.s_watch == k]) > 0)


def test_cli_writes_the_ledger(data_dir: Path, tmp_path: Path) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.1)
    try:
        ledger_path = tmp_path / "ledger.json"
        t = time.monotonic()
        rc = watch_sim.main(["--watches", "3", "--udp", f"127.0.0.1:{rx.getsockname()[1]}", "--format", "binary",
                             "--duration", "0.4", "--loss", "0.2", "--data", str(data_dir / SPAR), "--quiet",
                             "--ledger", str(ledger_path)])
        assert rc == 0 and time.monotonic() - t < 3
        n = 0
        with pytest.raises(TimeoutError):
            while True:
                rx.recvfrom(65536)
                n += 1
    finally:
        rx.close()
    led = json.loads(ledger_path.read_text())
    assert [w["device"] for w in led["watches"]] == ["w0", "w1", "w2"]
    assert n == led["summary"]["datagrams_or_publishes"] == sum(w["messages_sent"] for w in led["watches"])
    assert all(w["samples_sent"] + w["lost_samples"] == 20 for w in led["watches"])
