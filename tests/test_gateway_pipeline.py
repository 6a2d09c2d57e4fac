"""Gateway mode through a real pipeline: many watches over UDP (SLW1 frames) into one l2mu pipeline.

Every watch's results equal the same model run on that watch alone (the single-stream stage); loss and
duplicates injected on the wire are counted exactly per device; malformed payloads are refused and counted;
a watch that goes quiet is retired and re-admitted."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.config import parse
from spikeline.pipeline import Pipeline, State
from spikeline.recordings import load
from spikeline.stages import build_stage
from spikeline.watch.frames import encode_frame, encode_json

pytestmark = pytest.mark.data

CLASSES = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
STAGES = [{"type": "l2mu", "model": "har-spar-l2mu", "readout": "window", "window_s": 2, "every": 50},
          {"type": "decide", "classes": CLASSES}]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline(data: np.ndarray) -> tuple[list[int], list[str], np.ndarray]:
    """The same stages on one watch's samples, single-stream: (seq, label, scores) of each result row."""
    meta = StreamMeta(name="w", type="IMU", channels=("ax", "ay", "az", "wx", "wy", "wz"), nominal_rate=50.0)
    stages = [build_stage(s["type"], {k: v for k, v in s.items() if k != "type"}) for s in STAGES]
    m = meta
    for st in stages:
        m = st.start(m)
    n = len(data)
    out: Any = SampleChunk(data=np.ascontiguousarray(data, np.float32), t=np.zeros(n), t_recv=np.zeros(n), seq=0,
                           meta=meta)
    for st in stages:
        out = st.process(out)
    return out.seqs().tolist(), [CLASSES[i] for i in out.label], out.data


async def run_gateway(tmp_path: Path, send: Any, extra: dict[str, Any] | None = None,
                      settle_s: float = 0.5) -> tuple[Pipeline, list[dict[str, Any]]]:
    port = free_udp_port()
    out = tmp_path / "results.jsonl"
    cfg = parse({"pipeline": [{"name": "gw", "budget_ms": 500, "queue_s": 2.0,
                               "source": {"type": "watch_udp", "port": port, "max_devices": 64, **(extra or {})},
                               "stages": STAGES, "sinks": [{"type": "jsonl", "path": str(out)}]}]})
    p = Pipeline(cfg.pipelines[0], node="n")
    task = asyncio.create_task(p.run())
    try:
        async with asyncio.timeout(20):
            while p.state != State.RUNNING:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(send, port)
        await asyncio.sleep(settle_s)
    finally:
        p.stop()
        await asyncio.wait_for(task, 20)
    assert p.state == State.STOPPED, p.error
    return p, [json.loads(line) for line in out.read_text().splitlines()]


def paced_send(port: int, messages: list[bytes], per_burst: int = 40, pause_s: float = 0.002) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i, m in enumerate(messages):
        s.sendto(m, ("127.0.0.1", port))
        if i % per_burst == per_burst - 1:
            time.sleep(pause_s)
    s.close()


def by_device(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["device"], []).append(r)
    return out


async def test_many_watches_each_get_the_results_of_their_own_stream(data_dir: Path, tmp_path: Path) -> None:
    recs = load(data_dir / "spar_applewatch" / "spar_watch.npz")
    n_watches, k = 24, 5  # 5 samples (100 ms) per frame
    series = [recs[i * 5 % len(recs)].data[:600] for i in range(n_watches)]  # 12 s each
    messages: list[bytes] = []
    for start in range(0, 600, k):  # interleaved as they would arrive: every watch's frame of each 100 ms
        for w, x in enumerate(series):
            device = f"w{w:03d}"
            if w % 2:
                messages.append(encode_frame(x[start:start + k], start, 1_000_000 + start * 20_000, 20_000, device))
            else:
                messages.append(encode_json(x[start:start + k], start, 1_000_000 + start * 20_000, 20_000, device))
    p, rows = await run_gateway(tmp_path, lambda port: paced_send(port, messages))
    got = by_device(rows)
    assert sorted(got) == [f"w{w:03d}" for w in range(n_watches)]
    for w, x in enumerate(series):
        seqs, labels, scores = offline(x)
        mine = got[f"w{w:03d}"]
        assert [r["seq"] for r in mine] == seqs
        assert [r["label"] for r in mine] == labels
        np.testing.assert_array_equal(np.array([r["values"] for r in mine], np.float32), scores)
    t = p.source.table.totals()  # type: ignore[attr-defined]
    assert (t["samples"], t["lost"], t["duplicates"], t["rejected"]) == (n_watches * 600, 0, 0, 0)
    assert p.metrics.dropped_queue == 0


async def test_loss_duplicates_and_bad_payloads_are_counted_per_device(data_dir: Path, tmp_path: Path) -> None:
    x = load(data_dir / "spar_applewatch" / "spar_watch.npz")[0].data[:400]
    rng = np.random.default_rng(3)
    messages: list[bytes] = []
    lost = dup = 0
    for start in range(0, 400, 4):
        m = encode_frame(x[start:start + 4], start, start * 20_000, 20_000, "lossy")
        r = rng.random()
        if r < 0.1 and 0 < start < 396:  # never the first or last frame: a gap needs both ends
            lost += 4
            continue
        messages.append(m)
        if r > 0.9:
            messages.append(m)
            dup += 4
    nan = bytearray(encode_frame(np.zeros((2, 6), np.float32), 0, 0, 20_000, "nan"))
    nan[29 + 3:29 + 3 + 4] = np.float32(np.nan).tobytes()  # the first value of the first sample
    bad = [b"SLW1" + b"\x00" * 3, b"{not json", bytes(nan),
           encode_frame(np.zeros((2, 5), np.float32), 0, 0, 20_000, "fivech"), b"\xff" * 65_000]  # a full datagram of garbage
    p, _ = await run_gateway(tmp_path, lambda port: paced_send(port, messages + bad))
    tab = p.source.table  # type: ignore[attr-defined]
    d = tab.by_name["lossy"]
    assert (d.samples, d.lost, d.duplicates) == (400 - lost, lost, dup)
    t = tab.totals()
    assert t["rejected"] == len(bad)  # every bad payload refused once, none admitted
    # a payload that does not decode names no device: it is counted against its sender
    assert "nan" not in tab.by_name and "fivech" not in tab.by_name
    (sender, reasons), = tab.unknown_rejected.items()
    assert sender.startswith("127.0.0.1:") and reasons["non_finite"] == 1 and reasons["bad_shape"] == 1
    assert sum(reasons.values()) == len(bad)
    assert p.metrics.source_gaps == lost and p.metrics.rejected_input == t["rejected"]


async def test_a_quiet_watch_is_retired_and_readmitted(data_dir: Path, tmp_path: Path) -> None:
    x = load(data_dir / "spar_applewatch" / "spar_watch.npz")[0].data[:100]

    def send(port: int) -> None:
        first = [encode_frame(x[i:i + 10], i, i * 20_000, 20_000, "w") for i in range(0, 50, 10)]
        paced_send(port, first)
        time.sleep(1.5)  # idle_timeout_s = 0.5: retired meanwhile
        again = [encode_frame(x[i:i + 10], i, 5_000_000 + i * 20_000, 20_000, "w") for i in range(50, 100, 10)]
        paced_send(port, again)

    p, _ = await run_gateway(tmp_path, send, {"idle_timeout_s": 0.5})
    tab = p.source.table  # type: ignore[attr-defined]
    d = tab.by_name.get("w") or tab._retired["w"]
    assert d.readmissions == 1 and d.samples == 100 and d.lost == 0
    assert tab.retirements >= 1


async def test_csv_lines_from_a_drifting_phone_app_give_no_false_gaps(data_dir: Path, tmp_path: Path) -> None:
    from spikeline.watch.frames import encode_csv

    x = load(data_dir / "spar_applewatch" / "spar_watch.npz")[0].data[:1200]
    # the phone's clock runs 400 ppm fast: after 1200 samples its times are ~0.5 periods ahead of nominal
    t_us = np.rint(np.arange(1200) * 20_000 * (1 + 400e-6)).astype(np.int64) + 7_000_000
    lines = [encode_csv(x[i:i + 1], t_us[i:i + 1], "plain") for i in range(1200)]
    lines[600:601] = []  # one datagram lost: exactly one gap
    p, _ = await run_gateway(tmp_path, lambda port: paced_send(port, lines), {"format": "csv-plain"})
    (d,) = p.source.table.by_name.values()  # type: ignore[attr-defined]
    assert d.name.startswith("127.0.0.1:")  # CSV names no device: the sender does
    assert (d.samples, d.lost, d.duplicates) == (1199, 1, 0)


async def test_udp_arrival_is_the_kernels_receive_time_and_the_backlog_is_bounded() -> None:
    """watch_udp reads the socket on the event loop. Datagrams that wait in the socket buffer while the loop is
    busy keep the kernel's receive time (SO_TIMESTAMPNS), so the wait counts in the latency; beyond
    max_pending payloads per chunk period the rest are dropped and counted, not held."""
    from spikeline.metrics import PipelineMetrics
    from spikeline.queue import SampleQueue
    from spikeline.sources import SourceContext
    from spikeline.sources.watch import WatchUdpSource

    ctx = SourceContext("p", 0.05, 0.3, 1.0, PipelineMetrics("p", 0.05, None))
    ctx.queue = SampleQueue(1 << 20)
    params = {**{k: v.default for k, v in WatchUdpSource.params.items() if not v.required}, "port": free_udp_port(),
              "max_pending": 30, "chunk_ms": 5.0}
    src = WatchUdpSource(params, ctx)
    await src.open()
    assert src.kernel_stamps
    chunks: list[SampleChunk] = []
    task = asyncio.create_task(src.run(chunks.append))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await asyncio.sleep(0.05)
        sent = time.monotonic()
        for k in range(50):  # 50 payloads while the loop is blocked for 200 ms
            tx.sendto(encode_frame(np.full((1, 6), k, np.float32), 0, 0, 20_000, device=f"w{k}"), src.address)
        time.sleep(0.2)  # noqa: ASYNC251 (the loop is busy: blocking on purpose)
        await asyncio.sleep(0.1)
    finally:
        src.stop()
        await asyncio.wait_for(task, 5)
        tx.close()
    rows = np.concatenate([c.t_recv for c in chunks])
    assert len(rows) == 30 and src.overflow == 20  # 30 held, 20 dropped and counted
    assert ctx.metrics.dropped_queue == 20
    # received within a few ms of sending, not when the loop got to them 200 ms later
    assert np.all(rows - sent < 0.05), rows - sent
