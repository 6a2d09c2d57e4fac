"""Event sources: recorded event files replayed (lossless, paced, N x, several files back to back) and the live
UDP input (AEStream datagrams from a real socket), with the rate cap and every drop counted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, need
from spikeline.chunk import EventChunk, as_events
from spikeline.config import parse
from spikeline.events import read
from spikeline.events.udp import encode_aestream
from spikeline.metrics import PipelineMetrics
from spikeline.params import ConfigError
from spikeline.pipeline import Pipeline, State
from spikeline.queue import SampleQueue
from spikeline.sources import SourceContext
from spikeline.sources.events import EventFileSource, EventUdpSource

NMNIST = DATA / "nmnist_small_slayer"
AEDAT = DATA / "dvs_samples_tonic" / "sample.aedat4"


def _ctx(queue_events: int = 1 << 20) -> SourceContext:
    ctx = SourceContext("p", 0.05, 0.3, 1.0, PipelineMetrics("p", 0.05, None))
    ctx.queue = SampleQueue(queue_events)
    return ctx


def _params(cls: Any, **p: Any) -> dict[str, Any]:
    return {**{k: v.default for k, v in cls.params.items() if not v.required}, **p}


async def _collect(src: Any, drain: SampleQueue | None = None) -> list[EventChunk]:
    """Run a source to its end; with `drain`, a consumer empties the queue as the pipeline would."""
    got: list[EventChunk] = []

    def put(c: EventChunk) -> None:
        got.append(c)
        if drain is not None:
            drain.put(c)

    async def consume() -> None:
        assert drain is not None
        while await drain.get() is not None:
            pass

    task = asyncio.create_task(consume()) if drain is not None else None
    await asyncio.wait_for(src.run(put), 60)
    if drain is not None and task is not None:
        drain.close()
        await task
    return got


def _files(n: int) -> list[Path]:
    need(NMNIST.is_dir(), f"{NMNIST} not found (set SPIKELINE_DATA or provide ../shared/data)")
    return [NMNIST / f"{60001 + i}.bs2" for i in range(n)]


@pytest.mark.data
async def test_files_back_to_back_as_fast_as_possible_lose_nothing_with_a_tiny_queue() -> None:
    files = _files(4)
    ctx = _ctx(queue_events=1000)  # much smaller than one file: the source must wait for room
    src = EventFileSource(_params(EventFileSource, file=str(files[0]), files=[str(f) for f in files[1:]],
                                  speed=0, gap_ms=100, chunk_events=700), ctx)
    meta = await src.open()
    assert meta.is_events and meta.sensor == (34, 34) and meta.n_channels == 0
    assert ctx.queue is not None
    chunks = await _collect(src, drain=ctx.queue)
    ev = np.concatenate([c.ev for c in chunks])
    want = [read(f).events for f in files]
    assert len(ev) == sum(len(w) for w in want) == src.position
    assert ctx.queue.dropped == 0 and ctx.metrics.dropped_rate == 0
    assert [c.seq for c in chunks] == np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist()
    # each file's events, exactly, shifted in time so that file k starts 100 ms + 1 µs after file k-1 ended
    pos, end = 0, None
    for (_path, seq, offset), w in zip(src.file_starts, want, strict=True):
        assert seq == pos
        part = ev[pos:pos + len(w)]
        for f in "xyp":
            np.testing.assert_array_equal(part[f], w[f])
        np.testing.assert_array_equal(part["t"], w["t"] + offset)
        if end is not None:
            assert part["t"][0] - end == 100_000 + 1
        end = int(part["t"][-1])
        pos += len(w)
    assert [p for p, _, _ in src.file_starts] == files
    assert np.all(np.diff(ev["t"]) >= 0)


@pytest.mark.data
async def test_paced_replay_hands_chunks_over_when_due_never_early() -> None:
    (f,) = _files(1)
    ctx = _ctx()
    src = EventFileSource(_params(EventFileSource, file=str(f), speed=4.0, chunk_ms=5), ctx)
    await src.open()
    t0 = time.monotonic()
    chunks = await _collect(src)
    wall = time.monotonic() - t0
    ev = read(f).events
    span = (int(ev["t"][-1]) - int(ev["t"][0])) * 1e-6
    assert sum(len(c) for c in chunks) == len(ev)
    assert wall >= span / 4 * 0.95  # 4x real time, not as fast as possible
    late = []
    for c in chunks:
        due = float(c.local_time(c.ev["t"][-1]))
        assert c.t_recv >= due - 1e-6, "a chunk was handed over before its newest event was due"
        late.append(c.t_recv - due)
        assert c.t_scale == pytest.approx(1e-6 / 4)
        # a chunk covers at most 5 ms of sensor time
        assert (int(c.ev["t"][-1]) // 5000) == (int(c.ev["t"][0]) // 5000)
    assert float(np.median(late)) < 0.05


@pytest.mark.data
async def test_paced_replay_ticks_through_pauses_so_stages_need_not_wait_for_the_next_event() -> None:
    files = _files(2)
    ctx = _ctx()
    src = EventFileSource(_params(EventFileSource, file=str(files[0]), files=[str(files[1])], speed=2.0,
                                  gap_ms=300, tick_ms=10), ctx)
    await src.open()
    chunks = await _collect(src)
    ticks = [c for c in chunks if c.is_tick]
    events = [c for c in chunks if not c.is_tick]
    assert sum(len(c) for c in events) == sum(len(read(f).events) for f in files)
    (_, second_seq, _) = src.file_starts[1]
    first = next(c for c in events if c.seq == second_seq)
    last_before = max(int(c.ev["t"][-1]) for c in events if c.seq < second_seq)
    in_pause = [c for c in ticks if c.seq == second_seq]
    # 300 ms of sensor time at 2x: 150 ms of waiting, a tick every 10 ms
    assert len(in_pause) >= 8
    untils = [c.until for c in in_pause]
    assert untils == sorted(untils)
    assert last_before < untils[0] and untils[-1] < int(first.ev["t"][0])
    for c in in_pause:  # a tick never claims more than the time that has passed
        assert c.until is not None and float(c.local_time(c.until)) <= c.t_recv + 1e-6


@pytest.mark.data
async def test_real_recording_replays_at_real_time_with_the_rate_cap_counting_what_it_thins() -> None:
    need(AEDAT.exists(), f"{AEDAT} not found")
    ctx = _ctx()
    # the DVXplorer sample carries ~190k events/s; cap it at 50k/s
    src = EventFileSource(_params(EventFileSource, file=str(AEDAT), speed=1.0, max_rate=50_000, burst_ms=10), ctx)
    meta = await src.open()
    assert meta.sensor == (320, 240)
    chunks = await _collect(src)
    n_out = sum(len(c) for c in chunks)
    n_file = len(read(AEDAT).events)
    assert src.position == n_file
    assert n_out + ctx.metrics.dropped_rate == n_file  # every event delivered or counted
    span = (int(chunks[-1].ev["t"][-1]) - int(chunks[0].ev["t"][0])) * 1e-6
    assert n_out <= 50_000 * (span + 0.01) + 500 + 1
    assert ctx.metrics.dropped_rate > n_file // 2


async def test_bad_files_fail_the_pipeline_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "x.raw"
    bad.write_bytes(b"% evt 3.0\n% format EVT3;height=10;width=10\n% end\n" + b"\xff" * 7)
    out = tmp_path / "o.jsonl"
    for source, expect in [({"file": str(tmp_path / "none.raw")}, "is not a file"),
                           ({"file": str(tmp_path / "*.nope")}, "no file matches"),
                           ({"file": str(bad)}, "x.raw")]:
        cfg = parse({"pipeline": [{"name": "p", "budget_ms": 50, "policy": "mark_late", "source": {"type": "event_file", **source},
                                   "stages": [{"type": "event_frames", "window_ms": 5}],
                                   "sinks": [{"type": "jsonl", "path": str(out)}]}]})
        p = Pipeline(cfg.pipelines[0], node="n")
        await asyncio.wait_for(p.run(), 20)
        assert p.state == State.FAILED and expect in p.error, p.error


async def test_stage_and_stream_kinds_are_checked_at_open(tmp_path: Path) -> None:
    f = tmp_path / "e.npy"
    np.save(f, as_events(np.arange(100) * 10, np.arange(100) % 8, np.arange(100) % 4, np.arange(100) % 2))
    out = tmp_path / "o.jsonl"
    for stages, expect in [([{"type": "bandpass", "low_hz": 1, "high_hz": 5}], "takes a sample stream"),
                           ([], "ends with event stream"),
                           ([{"type": "denoise"}], "ends with event stream")]:
        cfg = parse({"pipeline": [{"name": "p", "budget_ms": 50, "source": {"type": "event_file", "file": str(f), "speed": 0,
                                                           "sensor": [8, 4]},
                                   "stages": stages, "sinks": [{"type": "jsonl", "path": str(out)}]}]})
        p = Pipeline(cfg.pipelines[0], node="n")
        await asyncio.wait_for(p.run(), 20)
        assert p.state == State.FAILED and expect in p.error, p.error
    with pytest.raises(ConfigError, match="sensor"):
        parse({"pipeline": [{"name": "p", "budget_ms": 50, "source": {"type": "event_file", "file": str(f), "sensor": [8]},
                             "sinks": [{"type": "stdout"}]}]})


# ------------------------------------------------------------------------------------------------ UDP

def _sender(port: int, packets: list[bytes], pace_every: int = 0, pause_s: float = 0.0) -> threading.Thread:
    def run() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, pkt in enumerate(packets):
            s.sendto(pkt, ("127.0.0.1", port))
            if pace_every and i % pace_every == pace_every - 1:
                time.sleep(pause_s)
        s.close()

    return threading.Thread(target=run, daemon=True)


async def _udp_run(src: EventUdpSource, packets: list[bytes], expect_packets: int, pace_every: int = 16,
                   pause_s: float = 0.001) -> list[EventChunk]:
    chunks: list[EventChunk] = []
    task = asyncio.create_task(src.run(chunks.append))
    await asyncio.sleep(0.05)
    th = _sender(src.address[1], packets, pace_every, pause_s)
    th.start()
    async with asyncio.timeout(30):
        while src.packets + src.socket_drops < expect_packets:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the last batch reaches the loop
    src.stop()
    await asyncio.wait_for(task, 5)
    th.join()
    return chunks


@pytest.mark.parametrize("timestamps", [True, False])
async def test_udp_source_receives_aestream_datagrams_exactly(timestamps: bool) -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    ev = as_events(np.sort(rng.integers(0, 2_000_000, n)), rng.integers(0, 346, n), rng.integers(0, 260, n),
                   rng.integers(0, 2, n))
    packets = encode_aestream(ev, timestamps=timestamps)
    ctx = _ctx()
    src = EventUdpSource(_params(EventUdpSource, port=_free_udp_port(), width=346, height=260, max_rate=0), ctx)
    meta = await src.open()
    assert meta.sensor == (346, 260) and src.address[0] == "127.0.0.1"
    chunks = await _udp_run(src, packets, len(packets))
    got = np.concatenate([c.ev for c in chunks])
    assert src.socket_drops == 0, "the OS dropped datagrams (receive buffer too small for this machine?)"
    assert src.packets == len(packets)
    for f in "xyp":
        np.testing.assert_array_equal(got[f], ev[f])
    if timestamps:
        np.testing.assert_array_equal(got["t"], ev["t"])
        # the sender's clock is mapped to ours: no event is stamped after it was received
        for c in chunks:
            newest = c.until if c.is_tick else c.ev["t"][-1]
            assert float(c.local_time(newest)) <= c.t_recv + 1e-6
    else:  # stamped on arrival, on this host's monotonic clock (µs)
        assert np.all(np.diff(got["t"]) >= 0)
        assert abs(int(got["t"][-1]) * 1e-6 - time.monotonic()) < 10
    assert [c.seq for c in chunks] == np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist()


async def test_udp_source_counts_malformed_packets_and_events_and_never_raises() -> None:
    ev = as_events(np.arange(10) * 100, np.arange(10), np.arange(10), np.arange(10) % 2)
    good = encode_aestream(ev, timestamps=True)
    out_of_sensor = encode_aestream(as_events([2000, 2100], [5, 50], [5, 5], [1, 1]), timestamps=True)
    packets = [*good, b"\x01\x02\x03", b"", *out_of_sensor, b"\xff" * 4096]
    ctx = _ctx()
    src = EventUdpSource(_params(EventUdpSource, port=_free_udp_port(), width=16, height=16, max_rate=0), ctx)
    await src.open()
    chunks = await _udp_run(src, packets, len(packets), pace_every=0)
    got = np.concatenate([c.ev for c in chunks])
    # 10 good events + the in-sensor one of the last datagram; the x = 50 event, the 3-byte datagram and the
    # 4096 bytes of 0xff (x = 0x7fff, out of sensor) are counted, not raised
    assert got["x"].tolist() == [*range(10), 5]
    assert src.rejected_packets >= 1 and src.rejected >= 1
    assert ctx.metrics.rejected_input == src.rejected + src.gate.out_of_order
    assert ctx.metrics.source_counters["packets"] == src.packets


async def test_udp_flood_is_capped_and_every_event_is_counted() -> None:
    rng = np.random.default_rng(2)
    n = 120_000
    ev = as_events(np.arange(n) * 2, rng.integers(0, 64, n), rng.integers(0, 64, n), rng.integers(0, 2, n))
    packets = encode_aestream(ev, timestamps=True)
    ctx = _ctx()
    src = EventUdpSource(_params(EventUdpSource, port=_free_udp_port(), width=64, height=64, max_rate=20_000,
                                 burst_ms=10), ctx)
    await src.open()
    t0 = time.monotonic()
    chunks = await _udp_run(src, packets, len(packets), pace_every=32, pause_s=0.0005)
    wall = time.monotonic() - t0
    got = sum(len(c) for c in chunks)
    per_packet = 512 // 8
    received = src.packets * per_packet - (per_packet * len(packets) - n if src.socket_drops == 0 else 0)
    # nothing vanishes: each received event was delivered, thinned by the cap (counted) or rejected (counted)
    assert got + src.gate.dropped_rate + src.rejected + src.gate.out_of_order + ctx.metrics.dropped_queue == received
    assert src.packets + src.socket_drops == len(packets)
    assert got <= 20_000 * wall + 200 + 1
    assert ctx.metrics.dropped_rate == src.gate.dropped_rate > 0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_udp_port_in_use_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        src = EventUdpSource(_params(EventUdpSource, port=port, width=8, height=8), _ctx())
        from spikeline.sources import SourceError

        with pytest.raises(SourceError, match=f"cannot listen on 127.0.0.1:{port}"):
            await src.open()


async def test_udp_sender_clock_restart_continues_the_time_line() -> None:
    """A camera host that restarts (its clock starts over at 0) mid-stream: the restart is counted, and its new
    events continue the stream's time line (no event goes back in time, so time-ordered stages such as denoise
    keep working), and no event is lost."""
    rng = np.random.default_rng(2)
    n = 4000
    first = as_events(np.sort(rng.integers(0, 2_000_000, n)), rng.integers(0, 346, n), rng.integers(0, 260, n),
                      rng.integers(0, 2, n))
    second = as_events(np.sort(rng.integers(0, 1_000_000, n)), rng.integers(0, 346, n), rng.integers(0, 260, n),
                       rng.integers(0, 2, n))
    packets = encode_aestream(first, timestamps=True) + encode_aestream(second, timestamps=True)
    ctx = _ctx()
    src = EventUdpSource(_params(EventUdpSource, port=_free_udp_port(), width=346, height=260, max_rate=0), ctx)
    await src.open()
    chunks = await _udp_run(src, packets, len(packets))
    got = np.concatenate([c.ev for c in chunks if len(c)])
    assert src.socket_drops == 0 and src.packets == len(packets)
    assert src.clock_restarts == 1 and ctx.metrics.source_counters["clock_resets"] == 1
    assert len(got) == 2 * n and ctx.metrics.rejected_input == 0  # nothing dropped as out of order
    assert np.all(np.diff(got["t"]) >= 0)
    np.testing.assert_array_equal(got["t"][:n], first["t"])
    steps = np.diff(got["t"][n:])
    np.testing.assert_array_equal(steps, np.diff(second["t"]))  # the new events keep their spacing
    for f in "xyp":
        np.testing.assert_array_equal(got[f], np.concatenate([first[f], second[f]]))
