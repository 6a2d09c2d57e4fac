"""Event-camera sources: recorded event files replayed as if live, and a live UDP input.

`event_file` plays one or more files (Prophesee EVT 2.0/3.0 .raw and .dat, iniVation .aedat4, N-MNIST .bin,
numpy, CSV; see `spikeline.events.formats`) back to back as one stream, at real time, N times faster or as fast
as possible. Files are read block by block in a worker thread (bounded memory, the event loop never waits on
the disk); chunks cover `chunk_ms` of sensor time and are handed over when their newest event is due (one
asyncio sleep per chunk, never per event). Files after the first are shifted in time to start `gap_ms` after
the previous one ended, so the stream's time never goes back (a pause between files is what lets an event
classifier tell N-MNIST digits apart).

`event_udp` listens on a UDP port for AEStream-compatible datagrams (see `spikeline.events.udp`): a camera
host runs `aestream input ... output udp <host> <port>` or `spikeline events send FILE --udp host:port`. A
reader thread receives and decodes (no Python per event), batches `chunk_ms` of events and hands each batch to
the event loop. Packets the OS dropped because the socket buffer was full are counted (Linux SO_RXQ_OVFL), as
are malformed packets and out-of-sensor events (never raised: a network peer cannot crash the source).

Both pass events through an `EventGate` (time order + a cap on events/s, see `spikeline.events.rate`) before
the pipeline's bounded queue; every event dropped anywhere is counted in the pipeline's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..chunk import EVENT_DTYPE, EventChunk, Events, StreamMeta
from ..events import formats as _formats
from ..events.rate import EventGate
from ..events.udp import AEStreamDecoder
from ..params import Param
from .base import SO_RXQ_OVFL, Source, SourceError, sleep_until

log = logging.getLogger("spikeline.events")

BLOCK_EVENTS = 1 << 18  # events read from a file per worker-thread call
_TICK = Param("number", 10.0, min=0,
               help="while no event arrives, tell the stages every tick_ms that time has passed (so a burst's "
                    "or a window's end is decided without waiting for the next event); 0 = never")
_RATE_PARAMS = {
    "max_rate": Param("number", 5e6, min=0,
                      help="cap in events/s on this host's clock (0 = none); above it events are thinned evenly "
                           "and counted (dropped_rate). Not applied at speed = 0 (lossless replay)"),
    "burst_ms": Param("number", 20.0, min=0, min_exclusive=True, help="token bucket depth: burst_ms at max_rate"),
}


def _check_sensor(v: list[float]) -> str | None:
    if v and (len(v) != 2 or any(x < 1 or x > 65535 or x != int(x) for x in v)):
        return "expected [width, height] in pixels"
    return None


def expand_files(patterns: list[str], where: str) -> list[Path]:
    """Paths named by files or glob patterns, in order (each pattern's matches sorted naturally)."""
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat).expanduser()
        if any(c in pat for c in "*?["):
            hits = sorted(glob.glob(str(p)), key=_natural)
            if not hits:
                raise SourceError(f"{where}: no file matches {pat!r}")
            out.extend(Path(h) for h in hits)
        elif not p.is_file():
            raise SourceError(f"{where}: {p} is not a file")
        else:
            out.append(p)
    if not out:
        raise SourceError(f"{where}: no event file given (set file or files)")
    return out


def _natural(s: str) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


class EventFileSource(Source):
    kind = "event_file"
    summary = "event-camera files (EVT2/EVT3 .raw, .dat, .aedat4, N-MNIST .bin, .npy, .csv) at real time, N x or max"
    params = {
        "file": Param("str", "", help="event file or glob pattern"),
        "files": Param("str_list", [], help="more files or patterns, played after `file`, back to back"),
        "format": Param("str", "", choices=("", *_formats.FORMATS), help="file format (default: from the header/suffix)"),
        "speed": Param("number", 1.0, min=0, help="1 = real time, N = N times faster, 0 = as fast as possible"),
        "gap_ms": Param("number", 0.0, min=0, help="silence inserted between files"),
        "loop": Param("bool", False, help="start again at the end (times keep increasing)"),
        "chunk_ms": Param("number", 1.0, min=0, min_exclusive=True, help="sensor time per chunk when paced"),
        "chunk_events": Param("int", 65536, min=1, help="events per chunk at speed = 0"),
        "sensor": Param("number_list", [], check=_check_sensor,
                        help="[width, height] for files that do not state it (numpy, CSV)"),
        "stream_name": Param("str", "", help="stream name (default events-<first file>)"),
        "tick_ms": _TICK,
        **_RATE_PARAMS,
    }

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        self._stopping = asyncio.Event()
        self.paths: list[Path] = []
        self.sensor: tuple[int, int] = (0, 0)
        self.meta: StreamMeta | None = None
        self.gate = EventGate(p["max_rate"] if p["speed"] > 0 else 0.0, p["burst_ms"] / 1e3)
        self.position = 0  # events handed over
        self.files_done = 0
        self.passes = 0
        self.file_starts: list[tuple[Path, int, int]] = []  # (file, first seq, time offset µs) as played

    async def open(self) -> StreamMeta:
        where = f"pipeline {self.ctx.pipeline}: event_file"
        pats = ([self.p["file"]] if self.p["file"] else []) + list(self.p["files"])
        self.paths = expand_files(pats, where)
        sensors = []
        for path in self.paths:
            try:
                r = await asyncio.to_thread(_formats.open_reader, path, self.p["format"] or None)
            except (_formats.EventFormatError, OSError) as e:
                raise SourceError(f"{where}: {e}") from e
            sensors.append(r.sensor)
            r.close()
        given = tuple(int(v) for v in self.p["sensor"])
        if given:
            self.sensor = (given[0], given[1])
        else:
            self.sensor = (max(w for w, _ in sensors), max(h for _, h in sensors))
            if len(set(sensors)) > 1:
                raise SourceError(f"{where}: the files have different sensor sizes {sorted(set(sensors))}; "
                                  "set sensor = [width, height] to play them as one stream")
        rate = self.p["max_rate"] if self.p["max_rate"] > 0 else 5e6
        name = self.p["stream_name"] or f"events-{self.paths[0].stem}"
        self.meta = StreamMeta(name=name, type="events", channels=(), nominal_rate=float(rate), sensor=self.sensor,
                               source_id=str(self.paths[0]))
        log.info("event_file %s: %d file(s), sensor %dx%d, speed %s", self.paths[0], len(self.paths), *self.sensor,
                 f"{self.p['speed']:g}x" if self.p["speed"] else "max")
        return self.meta

    def stop(self) -> None:
        self._stopping.set()

    @property
    def lossless(self) -> bool:
        return float(self.p["speed"]) == 0  # as fast as possible: waits for room in the queue

    async def run(self, put: Callable[[EventChunk], None]) -> None:
        if self.meta is None:
            raise SourceError("event_file: run() before open()")
        meta, p = self.meta, self.p
        speed = float(p["speed"])
        queue = self.ctx.queue if speed == 0 else None
        scale = 1e-6 / speed if speed > 0 else 1e-6
        chunk_us = max(1, round(p["chunk_ms"] * 1e3))
        gap_us = round(p["gap_ms"] * 1e3)
        m = self.ctx.metrics
        t_base: float | None = None
        offset = 0  # µs added to the current file's times
        end_t: int | None = None  # newest stream time so far
        seq = 0
        while True:
            for path in self.paths:
                try:
                    reader = await asyncio.to_thread(_formats.open_reader, path, p["format"] or None)
                except (_formats.EventFormatError, OSError) as e:
                    raise SourceError(f"event_file: {e}") from e
                first = True
                try:
                    while True:
                        try:
                            block = await asyncio.to_thread(reader.read, BLOCK_EVENTS)
                        except _formats.EventFormatError as e:
                            raise SourceError(f"event_file: {e}") from e
                        if len(block) == 0:
                            break
                        if first:
                            first = False
                            if end_t is not None:
                                offset = end_t + gap_us + 1 - int(block["t"][0])
                            self.file_starts.append((path, seq, offset))
                        if offset:
                            block = block.copy()
                            block["t"] += offset
                        if t_base is None:
                            t_base = time.monotonic() - int(block["t"][0]) * scale
                        for part in self._split(block, speed, chunk_us, p["chunk_events"], queue):
                            if speed > 0:
                                if not await self._wait(put, t_base, scale, end_t, part, seq):
                                    return
                                now = time.monotonic()
                                base = t_base
                            else:
                                if queue is not None:
                                    await queue.wait_room(len(part))
                                if self._stopping.is_set():
                                    return
                                now = time.monotonic()
                                base = now - int(part["t"][-1]) * scale  # newest event of the chunk = now
                            n_in = len(part)
                            part = self.gate.admit(part, now)
                            m.dropped_rate = self.gate.dropped_rate
                            m.rejected_input = self.gate.out_of_order
                            if len(part):
                                put(EventChunk(ev=part, t_base=base, t_recv=now, seq=seq, meta=meta, t_scale=scale))
                                seq += len(part)
                            self.position += n_in
                            end_t = int(part["t"][-1]) if len(part) else end_t
                        end_t = max(end_t or 0, int(block["t"][-1]))
                finally:
                    reader.close()
                self.files_done += 1
            self.passes += 1
            if not p["loop"]:
                return

    async def _wait(self, put: Callable[[EventChunk], None], t_base: float, scale: float, last_t: int | None,
                    part: Events, seq: int) -> bool:
        """Sleep until `part` is due; meanwhile, every tick_ms, a tick saying no event comes before now.
        False if stopped meanwhile."""
        due = t_base + int(part["t"][-1]) * scale
        tick = self.p["tick_ms"] / 1e3
        assert self.meta is not None
        while tick > 0 and last_t is not None and time.monotonic() + tick < due:
            if not await sleep_until(time.monotonic() + tick, self._stopping):
                return False
            now = time.monotonic()
            until = min(int((now - t_base) / scale), int(part["t"][0]) - 1)
            if until > last_t:
                put(EventChunk(ev=part[:0], t_base=t_base, t_recv=now, seq=seq, meta=self.meta, t_scale=scale,
                               until=until))
        return await sleep_until(due, self._stopping)

    @staticmethod
    def _split(block: Events, speed: float, chunk_us: int, chunk_events: int, queue: Any) -> list[Events]:
        """The block cut into chunks: `chunk_us` of sensor time each when paced, `chunk_events` at speed 0."""
        if speed == 0:
            n = chunk_events if queue is None else min(chunk_events, queue.capacity)
            return [block[i:i + n] for i in range(0, len(block), n)]
        k = block["t"] // chunk_us
        cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
        return np.split(block, cuts) if len(cuts) else [block]


# ------------------------------------------------------------------------------------------------ UDP

_NO_EVENTS = np.zeros(0, dtype=EVENT_DTYPE)


class EventUdpSource(Source):
    kind = "event_udp"
    summary = "live events over UDP (AEStream-compatible datagrams, with or without timestamps)"
    params = {
        "host": Param("str", "127.0.0.1", help="address to listen on (loopback by default)"),
        "port": Param("int", min=1, max=65535, help="UDP port"),
        "width": Param("int", min=1, max=32767, help="sensor width in pixels"),
        "height": Param("int", min=1, max=32767, help="sensor height in pixels"),
        "format": Param("str", "aestream", choices=("aestream",), help="datagram format"),
        "chunk_ms": Param("number", 1.0, min=0.1, help="events batched by the reader before each hand-over"),
        "rcvbuf_kb": Param("int", 4096, min=64, help="socket receive buffer (the OS may cap it: net.core.rmem_max)"),
        "max_pending": Param("int", 64, min=1, help="batches waiting for the event loop; beyond it they are dropped "
                                                  "and counted (dropped_queue)"),
        "stream_name": Param("str", "", help="stream name (default udp-<port>)"),
        "tick_ms": _TICK,
        **_RATE_PARAMS,
    }

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.meta: StreamMeta | None = None
        self.gate = EventGate(p["max_rate"], p["burst_ms"] / 1e3)
        self.address: tuple[str, int] = (p["host"], p["port"])
        self.packets = 0
        self.clock_restarts = 0  # the sender's clock started over: its new times continue the stream's time line
        self.socket_drops = 0  # datagrams the OS dropped (receive buffer full), from SO_RXQ_OVFL
        self.rejected = 0  # events the decoder refused (outside the sensor, missing timestamp word)
        self.rejected_packets = 0  # datagrams refused whole (length not a multiple of 4)
        self._pending = 0
        self._lock = threading.Lock()

    async def open(self) -> StreamMeta:
        p = self.p
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p["rcvbuf_kb"] * 1024)
            if SO_RXQ_OVFL is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            sock.bind((p["host"], p["port"]))
            sock.settimeout(0.05)
        except OSError as e:
            sock.close()
            raise SourceError(f"pipeline {self.ctx.pipeline}: event_udp cannot listen on {p['host']}:{p['port']}: "
                              f"{e}") from e
        self._sock = sock
        self.address = sock.getsockname()[:2]
        rate = p["max_rate"] if p["max_rate"] > 0 else 5e6
        self.meta = StreamMeta(name=p["stream_name"] or f"udp-{self.address[1]}", type="events", channels=(),
                               nominal_rate=float(rate), sensor=(p["width"], p["height"]),
                               source_id=f"udp://{self.address[0]}:{self.address[1]}")
        log.info("event_udp listening on %s:%d (%dx%d)", *self.address, p["width"], p["height"])
        return self.meta

    def stop(self) -> None:
        self._stop.set()

    async def run(self, put: Callable[[EventChunk], None]) -> None:
        if self._sock is None or self.meta is None:
            raise SourceError("event_udp: run() before open()")
        loop = asyncio.get_running_loop()
        meta = self.meta
        m = self.ctx.metrics
        seq = 0

        def deliver(ev: Events, t_base: float, t_recv: float) -> None:
            nonlocal seq
            with self._lock:
                self._pending -= 1
            m.dropped_rate = self.gate.dropped_rate
            m.rejected_input = self.gate.out_of_order + self.rejected
            m.source_counters.update(packets=self.packets, socket_dropped_packets=self.socket_drops,
                                     rejected_packets=self.rejected_packets, out_of_order=self.gate.out_of_order,
                                     clock_resets=self.gate.clock_resets + self.clock_restarts)
            put(EventChunk(ev=ev, t_base=t_base, t_recv=t_recv, seq=seq, meta=meta))
            seq += len(ev)

        def overflow(n: int) -> None:
            m.dropped_queue += n

        def tick(until: int, t_base: float, t_recv: float) -> None:
            with self._lock:
                self._pending -= 1
            put(EventChunk(ev=_NO_EVENTS, t_base=t_base, t_recv=t_recv, seq=seq, meta=meta, until=until))

        try:
            await asyncio.to_thread(self._reader, loop, deliver, overflow, tick)
        finally:
            self._sock.close()

    def _reader(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Events, float, float], None],
                overflow: Callable[[int], None], tick: Callable[[int, float, float], None]) -> None:
        assert self._sock is not None and self.meta is not None
        sock = self._sock
        dec = AEStreamDecoder(self.meta.sensor)
        cmsg_space = socket.CMSG_SPACE(4) if SO_RXQ_OVFL is not None else 0
        batch: list[Events] = []
        batch_start = 0.0
        period = self.p["chunk_ms"] / 1e3
        offset: float | None = None  # local clock minus sender clock (s): the smallest seen, i.e. least delayed
        max_pending = self.p["max_pending"]
        tick_s = self.p["tick_ms"] / 1e3
        if tick_s > 0:
            sock.settimeout(min(0.05, tick_s))
        last_t: int | None = None  # newest event handed over (sensor µs)
        seen_t: int | None = None  # newest event time decoded (after `shift`)
        shift = 0  # µs added to the sender's times since its clock last started over
        reset_us = self.gate.reset_us
        last_packet = last_tick = 0.0
        clock = time.monotonic
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = sock.recvmsg(65536, cmsg_space)
                got = True
            except TimeoutError:
                got = False
            except OSError:
                if self._stop.is_set():
                    return
                raise
            now = clock()
            if got:
                last_packet = now
                self.packets += 1
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= 4:
                        self.socket_drops = struct.unpack("=I", payload[:4])[0]
                ev = dec.decode(data, int(now * 1e6))
                self.rejected = dec.rejected_events
                self.rejected_packets = dec.rejected_packets
                if len(ev):
                    if shift:
                        ev["t"] += shift
                    if seen_t is not None and int(ev["t"][0]) < seen_t - reset_us:
                        # The sender's clock started over (a restarted camera host): its new times go on from
                        # where the stream's time line is now, so stages keep their time order and the mapping
                        # to this host's clock stays right.
                        target = int((now - offset) * 1e6) if offset is not None else seen_t + 1
                        delta = max(target, seen_t + 1) - int(ev["t"][0])
                        ev["t"] += delta
                        shift += delta
                        self.clock_restarts += 1
                        log.warning("event_udp: the sender's clock started over (restart %d); its times continue "
                                    "the stream's", self.clock_restarts)
                    seen_t = max(seen_t if seen_t is not None else 0, int(ev["t"][-1]))
                    off = now - int(ev["t"][-1]) * 1e-6
                    offset = off if offset is None else min(offset, off)
                    if not batch:
                        batch_start = now
                    batch.append(ev)
            if batch and (now - batch_start >= period or not got):
                ev = batch[0] if len(batch) == 1 else np.concatenate(batch)
                batch = []
                assert offset is not None
                ev = self.gate.admit(ev, now)
                if not len(ev):
                    continue
                with self._lock:
                    full = self._pending >= max_pending
                    if not full:
                        self._pending += 1
                if full:
                    loop.call_soon_threadsafe(overflow, len(ev))
                else:
                    last_t = int(ev["t"][-1])
                    loop.call_soon_threadsafe(deliver, ev, offset, now)
            elif (tick_s > 0 and not batch and offset is not None and last_t is not None
                  and now - last_packet >= tick_s and now - last_tick >= tick_s):
                # quiet: no event older than (sender's now - one tick) can still come, barring reordering
                until = int((now - offset - tick_s) * 1e6)
                if until > last_t:
                    last_tick = now
                    with self._lock:
                        full = self._pending >= max_pending
                        if not full:
                            self._pending += 1
                    if not full:
                        loop.call_soon_threadsafe(tick, until, offset, now)
