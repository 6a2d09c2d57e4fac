"""Smartwatch sources for gateway mode: many devices, one pipeline.

`watch_udp` listens on a UDP port; `watch_mqtt` subscribes to a topic pattern whose `+` level names the device
(e.g. `watch/+/imu`). Payloads (see spikeline.watch.frames): the binary "SLW1" frame, JSON (one sample or a
batch), and on UDP the CSV lines of phone sensor-streaming apps. Each device is admitted into a slot of the
pipeline's `DeviceTable` (spikeline.gateway): its sample indices reveal gaps and duplicates, its timestamps
are mapped to this host's clock (online offset and drift), and after `idle_timeout_s` without data it is
retired (its state freed, the event logged and counted) and re-admitted when it returns.

Both read on the event loop itself (UDP: a non-blocking socket drained when readable, each datagram stamped
with the kernel's receive time; MQTT: each message taken from paho's callback straight into the batch, the
connection retried with backoff) and hand what arrived to the stages every `chunk_ms`; SLW1 payloads are
decoded and admitted a batch at a time.

Every chunk handed to the pipeline holds the rows of many devices (`SampleChunk.streams` = slots,
`row_seq` = each row's index on its device), in arrival order and in each device's sample order; stages that
serve gateway streams advance all the devices of a round with one kernel call.

Nothing from the network can crash a source: a malformed, oversized, wrongly shaped or non-finite payload
is refused and counted per device (by reason), the incoming queue is bounded and its overflow counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..chunk import SampleChunk, StreamMeta
from ..gateway import Device, DeviceTable
from ..params import Param
from .base import SO_RXQ_OVFL, Source, SourceError

log = logging.getLogger("spikeline.watch")

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)  # receive time

_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
IMU_CHANNELS = ["ax", "ay", "az", "wx", "wy", "wz"]

_COMMON = {
    "channels": Param("str_list", IMU_CHANNELS, help="channel names, in the payloads' value order"),
    "rate_hz": Param("number", 50.0, min=0, min_exclusive=True, help="the devices' sampling rate"),
    "max_devices": Param("int", 4096, min=1, max=1 << 20, help="slots: devices served at once"),
    "idle_timeout_s": Param("number", 10.0, min=0.1, help="a device without data this long is retired"),
    "chunk_ms": Param("number", 5.0, min=0.5, help="payloads batched into one chunk for the stages (the most a "
                      "payload waits before the stages see it: part of the latency budget)"),
    "max_payload": Param("int", 65536, min=64, max=1 << 20, help="larger payloads are refused (too_large)"),
    "max_pending": Param("int", 100_000, min=1, help="payloads received but not yet handed to the stages (one "
                                                  "chunk_ms); beyond it they are dropped and counted (dropped_queue)"),
    "stream_name": Param("str", "", help="stream name (default: watches)"),
}


class _Ingest:
    """Decoded, admitted rows of many devices, collected until the next chunk, in arrival order.

    `add_batch` is the fast path: SLW1 payloads are decoded together (`frames.decode_frames`), each frame is
    admitted with scalars only (`DeviceTable.admit_frame`), and a run of such frames becomes one block of rows
    with a few vectorised operations. Other payloads (JSON, CSV, anything the batch decoder leaves out) go one
    Frame at a time through `add`, and end the run, so every device's rows stay in order."""

    def __init__(self, source: _WatchSource, table: DeviceTable, meta: StreamMeta, channels: int,
                 rate: float) -> None:
        self.src = source
        self.table = table
        self.meta = meta
        self.channels = channels
        self.period_us = 1e6 / rate
        # blocks of rows: data (n, c) float32, t (n,) local s, t_recv (n,), streams (n,) int32, row_seq (n,) int64
        self.blocks: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float64],
                                npt.NDArray[np.int32], npt.NDArray[np.int64]]] = []
        self.rows = 0
        self._last_t: dict[str, int] = {}  # CSV devices (no sample index): device time of the newest sample

    def _device(self, name: str, arrival: float) -> Device | None:
        d = self.table.by_name.get(name)
        if d is not None:
            return d
        if not _NAME.match(name):
            self.table.reject(name[:64] or "(empty)", "bad_device")
            return None
        return self.table.device(name, arrival)

    def add(self, frame: Any, name: str, arrival: float) -> None:
        """One decoded Frame of any format."""
        if not _NAME.match(name):
            self.table.reject(name[:64] or "(empty)", "bad_device")
            return
        if frame.data.shape[1] != self.channels:
            self.table.reject(name, "bad_shape")
            return
        d = self._device(name, arrival)
        if d is None:
            return
        n = frame.data.shape[0]
        t_us = np.asarray(frame.times_us(), dtype=np.int64)
        first = frame.first_index
        if first is None:  # CSV: the index from the time since the device's previous sample, in periods (so a
            # drifting clock never accumulates into false gaps or duplicates)
            last = self._last_t.get(name)
            if d.next_index is None or last is None:
                first = 0
            else:
                first = d.next_index - 1 + round((int(t_us[0]) - last) / self.period_us)
            steps = np.rint((t_us - t_us[0]) / self.period_us).astype(np.int64)
            if n > 1 and not np.array_equal(steps, np.arange(n)):
                self.table.reject(name, "bad_time")  # irregular times inside one datagram
                return
            self._last_t[name] = int(t_us[-1])
        a = self.table.admit(d, first, t_us, arrival)
        if a is None:
            return
        k = len(a.index)
        self.blocks.append((frame.data[a.keep], a.t, np.full(k, arrival), np.full(k, a.slot, np.int32), a.index))
        self.rows += k

    def add_batch(self, items: list[tuple[bytes, str, float]], fmt: str, frame_names: bool) -> None:
        """Payloads (bytes, the transport's device name, arrival), in arrival order. frame_names: a device id
        inside a frame overrides the transport's name (UDP); otherwise the transport's name is the device
        (MQTT: the topic level)."""
        from ..watch import frames as fr

        fast = None
        if fmt in ("binary", "auto") and items:
            fast = fr.decode_frames([it[0] for it in items], self.channels, max_size=self.src.p["max_payload"])
        run: list[tuple[int, int, int, int, int, int, float, float, float]] = []
        if fast is not None:  # plain ints for the loop (numpy scalars are slow one at a time)
            ok, ns, firsts = fast.ok.tolist(), fast.n.tolist(), fast.first_index.tolist()
            t0s, periods, offsets, devs = fast.t0_us.tolist(), fast.period_us.tolist(), fast.offset.tolist(), fast.device
        else:
            ok = [False] * len(items)
        admit = self.table.admit_frame
        for j, (payload, name, arrival) in enumerate(items):
            if ok[j]:
                d = self._device((devs[j] or name) if frame_names else name, arrival)
                if d is None:
                    continue
                n, first, t0, period = ns[j], firsts[j], t0s[j], periods[j]
                skip = admit(d, first, n, t0, period, arrival)
                if skip is None:
                    continue
                c = d.clock
                run.append((offsets[j] + skip, n - skip, d.slot, first + skip, t0 + skip * period, period,
                            c.a, c.b, arrival))
                continue
            if run:
                assert fast is not None
                self._add_run(run, fast.data)
                run = []
            for frame in self.src._decode(payload, fmt, name):
                self.add(frame, (frame.device or name) if frame_names else name, arrival)
        if run:
            assert fast is not None
            self._add_run(run, fast.data)

    def _add_run(self, run: list[tuple[int, int, int, int, int, int, float, float, float]],
                 data: npt.NDArray[np.float32]) -> None:
        """The rows of admitted SLW1 frames, each (offset into data, rows, slot, first index, device time of
        the first row, period, clock a, clock b, arrival), as one block."""
        ints = np.array([r[:6] for r in run], np.int64)
        flts = np.array([r[6:] for r in run], np.float64)
        cnt = ints[:, 1]
        total = int(cnt.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        t_dev = np.repeat(ints[:, 4], cnt) + within * np.repeat(ints[:, 5], cnt)
        t_recv = np.repeat(flts[:, 2], cnt)
        # exactly DeviceTable.admit's mapping: min(a + b * (t_us * 1e-6), arrival)
        t = np.repeat(flts[:, 0], cnt) + np.repeat(flts[:, 1], cnt) * (t_dev.astype(np.float64) * 1e-6)
        self.blocks.append((data[np.repeat(ints[:, 0], cnt) + within], np.minimum(t, t_recv), t_recv,
                            np.repeat(ints[:, 2], cnt).astype(np.int32), np.repeat(ints[:, 3], cnt) + within))
        self.rows += total

    def chunk(self) -> SampleChunk | None:
        if not self.blocks:
            return None
        b = self.blocks
        self.blocks = []
        self.rows = 0
        if len(b) == 1:
            data, t, t_recv, streams, row_seq = b[0]
        else:
            data = np.concatenate([x[0] for x in b])
            t = np.concatenate([x[1] for x in b])
            t_recv = np.concatenate([x[2] for x in b])
            streams = np.concatenate([x[3] for x in b])
            row_seq = np.concatenate([x[4] for x in b])
        return SampleChunk(data=np.ascontiguousarray(data, dtype=np.float32), t=t, t_recv=t_recv, seq=0,
                           meta=self.meta, streams=streams, row_seq=row_seq)


class _WatchSource(Source):
    """What both transports share: the device table, the stream description, the periodic sweep."""

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        if len(set(p["channels"])) != len(p["channels"]) or not p["channels"]:
            raise SourceError("channels must be distinct names")
        self.table = DeviceTable(p["max_devices"], p["idle_timeout_s"])
        self.meta: StreamMeta | None = None
        self._stopping = asyncio.Event()
        self.payloads = 0
        self.overflow = 0

    def _meta(self, source_id: str) -> StreamMeta:
        p = self.p
        self.meta = StreamMeta(name=p["stream_name"] or "watches", type="IMU", channels=tuple(p["channels"]),
                               nominal_rate=float(p["rate_hz"]), source_id=source_id, devices=self.table)
        return self.meta

    def _decode(self, payload: bytes, fmt: str, name: str) -> list[Any]:
        """Frames of one payload; a refused payload is counted against `name` and gives none."""
        from ..watch import frames as fr

        if len(payload) > self.p["max_payload"]:
            self.table.reject(name, "too_large")
            return []
        try:
            if fmt == "auto":
                fmt = "binary" if payload[:4] == b"SLW1" else "json"
            if fmt == "binary":
                return [fr.decode_frame(payload, len(self.p["channels"]))]
            if fmt == "json":
                return [fr.decode_json(payload, len(self.p["channels"]))]
            return list(fr.decode_csv(payload, fmt.removeprefix("csv-"), name))
        except fr.FrameError as e:
            self.table.reject(name, e.reason)
            return []

    def _publish_counters(self) -> None:
        m = self.ctx.metrics
        tot = self.table.totals()
        m.source_counters.update(tot, payloads=self.payloads, overflow=self.overflow)
        m.source_gaps = tot["lost"]
        m.rejected_input = tot["rejected"]
        m.devices = self.table.per_device(20)

    async def _sweeper(self) -> None:
        """Retire quiet devices (on the event loop thread, between chunks)."""
        period = min(1.0, self.p["idle_timeout_s"] / 4)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=period)
            self.table.sweep()
            self._publish_counters()

    def stop(self) -> None:
        self._stopping.set()


class WatchUdpSource(_WatchSource):
    kind = "watch_udp"
    summary = "smartwatches over UDP (SLW1 frames, JSON, or phone-app CSV lines), one stream per device"
    params = {
        "host": Param("str", "127.0.0.1", help="address to listen on (loopback by default)"),
        "port": Param("int", min=1, max=65535),
        "format": Param("str", "auto", choices=("auto", "binary", "json", "csv-plain", "csv-sensorstream"),
                        help="auto: SLW1 frames and JSON told apart by their first bytes"),
        "rcvbuf_kb": Param("int", 4096, min=64),
        **_COMMON,
    }

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        self._sock: socket.socket | None = None
        self.address: tuple[str, int] = (p["host"], p["port"])
        self.socket_drops = 0  # datagrams the OS dropped (receive buffer full), from SO_RXQ_OVFL
        self.kernel_stamps = False  # arrival times from the kernel (SO_TIMESTAMPNS) rather than from the read

    async def open(self) -> StreamMeta:
        p = self.p
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p["rcvbuf_kb"] * 1024)
            sock.bind((p["host"], p["port"]))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise SourceError(f"pipeline {self.ctx.pipeline}: watch_udp cannot listen on {p['host']}:{p['port']}: "
                              f"{e}") from e
        for opt in (_SO_TIMESTAMPNS, SO_RXQ_OVFL):
            if opt is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 1)
                    if opt == _SO_TIMESTAMPNS:
                        self.kernel_stamps = True
        self._sock = sock
        self.address = sock.getsockname()[:2]
        log.info("watch_udp listening on %s:%d", *self.address)
        return self._meta(f"udp://{self.address[0]}:{self.address[1]}")

    async def run(self, put: Callable[[SampleChunk], None]) -> None:
        """The event loop reads the socket itself (non-blocking, when it is readable): no thread, no hand-over.
        Each datagram keeps the kernel's receive time, so time spent waiting in the socket buffer while the
        loop computes counts in the latency. Every chunk_ms what has arrived goes to the stages as one chunk."""
        if self._sock is None or self.meta is None:
            raise SourceError("watch_udp: run() before open()")
        loop = asyncio.get_running_loop()
        sock = self._sock
        ing = _Ingest(self, self.table, self.meta, len(self.p["channels"]), self.p["rate_hz"])
        fmt = self.p["format"]
        limit = self.p["max_pending"]
        period = self.p["chunk_ms"] / 1e3
        pending: list[tuple[bytes, str, float]] = []
        cmsg = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
        names: dict[tuple[str, int], str] = {}
        unpack_ts = struct.Struct("=qq" if struct.calcsize("l") == 8 else "=ii").unpack_from

        def readable() -> None:
            now = time.monotonic()
            mono_minus_wall = now - time.time()
            for _ in range(4096):  # bounded: a flood cannot hold the loop; the rest is read on the next turn
                try:
                    data, anc, _flags, addr = sock.recvmsg(65536, cmsg)
                except OSError:  # nothing more to read now (BlockingIOError), or closed while stopping
                    return
                arrival = now
                for level, kind, payload in anc:
                    if level != socket.SOL_SOCKET:
                        continue
                    if kind == _SO_TIMESTAMPNS and len(payload) >= 8:
                        sec, nsec = unpack_ts(payload)
                        t = sec + nsec * 1e-9 + mono_minus_wall
                        if now - 1.0 < t <= now:  # a wall-clock step: keep the read time
                            arrival = t
                    elif kind == SO_RXQ_OVFL and len(payload) >= 4:
                        self.socket_drops = int.from_bytes(payload[:4], sys.byteorder)
                if len(pending) >= limit:
                    self._count_overflow(1)
                    continue
                name = names.get(addr)
                if name is None:
                    name = f"{addr[0]}:{addr[1]}"
                    if len(names) < 65536:
                        names[addr] = name
                pending.append((data, name, arrival))

        loop.add_reader(sock.fileno(), readable)
        sweeper = asyncio.create_task(self._sweeper())
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=period)
                if pending:
                    items = pending[:]
                    pending.clear()
                    self.payloads += len(items)
                    ing.add_batch(items, fmt, frame_names=True)
                c = ing.chunk()
                if c is not None:
                    put(c)
        finally:
            loop.remove_reader(sock.fileno())
            self._stopping.set()
            await sweeper
            sock.close()
            self._publish_counters()

    def _count_overflow(self, n: int) -> None:
        self.overflow += n
        self.ctx.metrics.dropped_queue += n

    def _publish_counters(self) -> None:
        super()._publish_counters()
        self.ctx.metrics.source_counters.update(socket_drops=self.socket_drops)


class WatchMqttSource(_WatchSource):
    kind = "watch_mqtt"
    summary = "smartwatches over MQTT: a topic pattern whose + level names the device (e.g. watch/+/imu)"
    params = {
        "url": Param("str", "", help="broker (default: the node's [mqtt] url)"),
        "topic": Param("str", "watch/+/imu", help="subscription; exactly one + level is the device id"),
        "format": Param("str", "auto", choices=("auto", "binary", "json")),
        "qos": Param("int", 0, min=0, max=1),
        "max_queued": Param("int", 10_000, min=10, help="incoming messages held for the event loop; beyond it "
                                                      "they are discarded and counted"),
        **_COMMON,
    }

    def __init__(self, p: dict[str, Any], ctx: Any) -> None:
        super().__init__(p, ctx)
        levels = p["topic"].split("/")
        if levels.count("+") != 1 or "#" in p["topic"]:
            raise SourceError(f"watch_mqtt topic {p['topic']!r} must have exactly one + level (the device) and no #")
        self._level = levels.index("+")
        discards = self._discards = [0]
        self._take: Callable[[Any], None] | None = None
        src = self

        class _Queue(asyncio.Queue[Any]):
            """aiomqtt's incoming queue. While the source runs, each message goes straight into its batch (no
            task or queue hop per message: paho's callback runs on the event loop thread); otherwise bounded
            (max_queued), what it discards when full counted."""

            def put_nowait(self, item: Any) -> None:
                take = src._take
                if take is not None:
                    take(item)
                    return
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    discards[0] += 1
                    raise

        self._queue_type = _Queue

    async def open(self) -> StreamMeta:
        return self._meta(f"mqtt:{self.p['topic']}")

    async def run(self, put: Callable[[SampleChunk], None]) -> None:
        import aiomqtt

        from ..mqtt import Backoff, MqttSettings

        if self.meta is None:
            raise SourceError("watch_mqtt: run() before open()")
        s = self.ctx.mqtt
        if self.p["url"]:  # its own broker address; the node's TLS files and login still apply
            own = MqttSettings.from_url(self.p["url"])
            s = own if s is None else dataclasses.replace(s, host=own.host, port=own.port, tls=own.tls or s.tls)
        if s is None:
            raise SourceError("watch_mqtt: no broker: set url, or the node's [mqtt] url")
        ing = _Ingest(self, self.table, self.meta, len(self.p["channels"]), self.p["rate_hz"])
        sweeper = asyncio.create_task(self._sweeper())
        backoff = Backoff(s)
        counters = self.ctx.metrics.source_counters
        counters.setdefault("connects", 0)
        counters.setdefault("connect_failures", 0)
        try:
            while not self._stopping.is_set():
                connects = counters["connects"]
                try:
                    await self._session(aiomqtt, s, ing, put)
                    return  # stopped
                except (aiomqtt.MqttError, OSError) as e:
                    # unreachable, TLS, login refused, connection lost: explained, retried with capped
                    # exponential backoff and full jitter until the pipeline stops (the daemon goes on)
                    if counters["connects"] > connects:  # it was connected: start the backoff again
                        backoff.reset()
                    counters["connect_failures"] += 1
                    wait = backoff.next()
                    log.warning("watch_mqtt: broker %s: %s; retrying in %.2f s", s.url, e, wait)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=wait)
        finally:
            self._take = None
            self._stopping.set()
            await sweeper
            self._publish_counters()

    async def _session(self, aiomqtt: Any, s: Any, ing: _Ingest, put: Callable[[SampleChunk], None]) -> None:
        """One connection: subscribe, take messages into the batch, hand a chunk over every chunk_ms. Returns when
        the source stops; raises MqttError when the connection fails or is lost."""
        period = self.p["chunk_ms"] / 1e3
        fmt = self.p["format"]
        async with aiomqtt.Client(**s.client_kwargs(), identifier=f"spikeline-{self.ctx.pipeline}-watch",
                                  queue_type=self._queue_type,
                                  max_queued_incoming_messages=self.p["max_queued"]) as client:
            self.ctx.metrics.source_counters["connects"] += 1
            pending: list[tuple[bytes, str, float]] = []
            level = self._level
            limit = self.p["max_pending"]

            def take(msg: Any) -> None:
                if len(pending) >= limit:
                    self._discards[0] += 1  # counted with aiomqtt's own overflow
                    return
                self.payloads += 1
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                pending.append((payload, msg.topic.value.split("/")[level], time.monotonic()))

            async def watch_connection() -> None:
                # Messages never reach aiomqtt's iterator (take() has them), but it ends with an MqttError
                # when the connection is lost.
                async for msg in client.messages:
                    take(msg)

            self._take = take
            await client.subscribe(self.p["topic"], qos=self.p["qos"])
            log.info("watch_mqtt subscribed to %s on %s", self.p["topic"], s.url)

            def flush() -> None:
                if pending:
                    ing.add_batch(pending, fmt, frame_names=False)
                    pending.clear()
                c = ing.chunk()
                if c is not None:
                    put(c)
                self.overflow = self._discards[0]
                self.ctx.metrics.dropped_queue = self.overflow

            reader = asyncio.create_task(watch_connection())
            try:
                while not self._stopping.is_set() and not reader.done():
                    await asyncio.wait((reader,), timeout=period)
                    flush()
                flush()  # what came in since the last chunk (stopping, or the connection ended)
                if reader.done():
                    reader.result()  # the connection failed: raise it
            finally:
                self._take = None
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

