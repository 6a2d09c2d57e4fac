#!/usr/bin/env python3
"""N virtual smartwatches replaying real SPAR Apple Watch recordings over MQTT or UDP (spikeline gateway mode).

    python tools/watch_sim.py --watches 2000 --udp 127.0.0.1:5700 --format binary --batch 5 --duration 20
    python tools/watch_sim.py --watches 200 --mqtt mqtt://127.0.0.1:1883 --format json --batch 5 --whole

Each watch k replays series k mod n_series of the recording (6 channels ax, ay, az in g, wx, wy, wz in rad/s,
50 Hz), in real time, K samples per message, sample indices counting from 0 (a series shorter than the run
wraps around: the indices keep counting). Watch k is device `w<k>` (zero-padded to the same width), on MQTT
topic `watch/{device}/imu` by default; on UDP the binary and JSON payloads carry the device id, and CSV lines
(which cannot) are sent from one socket per watch, so the gateway names each watch by its sender address.

Per watch, drawn from --seed (numpy default_rng([seed, k])): clock drift d uniform in ±D ppm, clock offset o
uniform in ±O s, a start phase uniform in [0, K/rate) s (watches do not all send in the same millisecond);
sample i is taken at true time τ_i = phase + i / rate (seconds since the simulator started) and stamped with
the device time τ_i · (1 + d) + o (a frame carries its first sample's time and the period
round(1e6 / rate · (1 + d)) µs; CSV lines carry every sample's own time). A message is due when its last
sample is taken, plus a send-time jitter uniform in [0, J] ms; with probability P(loss) it is not sent (its
samples are lost), else with probability P(dup) it is sent twice.

One process: the schedule of every message is computed up front (sorted by due time), payloads are encoded
ahead of the send pointer in slices (binary frames vectorised, a block at a time), and one pacing loop wakes
every `tick_ms` (5 ms) and sends every message that is due. MQTT: one aiomqtt client, QoS 0, TCP_NODELAY,
messages handed to paho directly and written once per tick; UDP: one socket (CSV: one per watch).

--ledger FILE writes, per watch: device id, series index, the sample indices sent (half-open [start, stop)
ranges), the lost message indices (inclusive [first, last] ranges), the duplicated message indices, drift,
offset and phase, and a summary (messages/samples sent, lost, duplicated, achieved rate, pacing lateness).
`Simulator(...).run()` (blocking) and `await Simulator(...).arun()` do the same in-process and return the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "runtime") not in sys.path:
    sys.path.insert(0, str(ROOT / "runtime"))

from spikeline.watch.frames import encode_csv, encode_frame, encode_json  # noqa: E402

DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_DATA = DATA / "spar_applewatch" / "spar_watch.npz"
FORMATS = ("binary", "json", "csv")


@dataclass
class SimConfig:
    watches: int = 10
    format: str = "binary"  # binary | json | csv (csv: UDP only)
    batch: int = 5  # samples per message
    rate: float = 50.0
    duration: float | None = 10.0  # seconds of samples per watch; None: each watch's whole series
    jitter_ms: float = 0.0
    loss: float = 0.0
    dup: float = 0.0
    drift_ppm: float = 0.0
    offset_s: float = 0.0
    seed: int = 0
    data: str = str(DEFAULT_DATA)
    topic: str = "watch/{device}/imu"
    csv_layout: str = "plain"  # plain | sensorstream
    tick_ms: float = 5.0
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.watches < 1:
            raise ValueError("--watches must be >= 1")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}")
        if not 1 <= self.batch <= 4096:
            raise ValueError("--batch must be 1..4096")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("--rate must be > 0")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("--duration must be > 0")
        for name in ("loss", "dup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} must be a probability in [0, 1]")
        if self.jitter_ms < 0 or self.drift_ppm < 0 or self.offset_s < 0:
            raise ValueError("--jitter-ms, --drift-ppm and --offset-s are magnitudes (>= 0)")
        if self.csv_layout not in ("plain", "sensorstream"):
            raise ValueError("--csv-layout must be plain or sensorstream")
        if not 0.5 <= self.tick_ms <= 100:
            raise ValueError("tick_ms must be 0.5..100")


def load_series(path: str | Path) -> list[npt.NDArray[np.float32]]:
    from spikeline.recordings import load

    return [r.data for r in load(path)]


def _ranges(idx: npt.NDArray[np.int64], inclusive: bool) -> list[list[int]]:
    """Sorted unique integers as runs: [first, last] (inclusive) or [start, stop) ranges."""
    if idx.size == 0:
        return []
    idx = np.unique(idx)
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.r_[0, cut]]
    ends = idx[np.r_[cut - 1, idx.size - 1]]
    return [[int(a), int(b) + (0 if inclusive else 1)] for a, b in zip(starts, ends, strict=True)]


def _pct(x: npt.NDArray[np.floating[Any]], q: float) -> float:
    return float(np.percentile(x, q)) if x.size else math.nan


class Simulator:
    """N watches: the schedule and per-watch parameters are drawn in __init__; run()/arun() send them."""

    def __init__(self, config: SimConfig, series: list[npt.NDArray[np.float32]] | None = None) -> None:
        cfg = self.cfg = config
        cfg.check()
        self.series = series if series is not None else load_series(cfg.data)
        if not self.series:
            raise ValueError(f"{cfg.data}: no series")
        lens = np.array([len(s) for s in self.series], np.int64)
        if lens.min() < 1:
            raise ValueError("a series is empty")
        self.channels = int(self.series[0].shape[1])
        self.all_data = np.ascontiguousarray(np.concatenate(self.series), dtype=np.float32)
        soff = np.r_[0, np.cumsum(lens)[:-1]]
        n, k_ = cfg.watches, cfg.batch
        width = len(str(n - 1))
        self.devices = [f"w{k:0{width}d}" for k in range(n)]
        self.series_of = np.arange(n, dtype=np.int64) % len(self.series)
        self.len_of = lens[self.series_of]
        self.off_of = soff[self.series_of]
        self.drift = np.empty(n)
        self.offset = np.empty(n)
        self.phase = np.empty(n)
        self.n_samples = np.empty(n, np.int64)
        self.n_messages = np.empty(n, np.int64)
        self.lost: list[npt.NDArray[np.int64]] = []
        self.duped: list[npt.NDArray[np.int64]] = []
        dues, ws, ms, cps = [], [], [], []
        for k in range(n):
            rng = np.random.default_rng([cfg.seed, k])
            self.drift[k] = rng.uniform(-cfg.drift_ppm, cfg.drift_ppm) * 1e-6 if cfg.drift_ppm else 0.0
            self.offset[k] = rng.uniform(-cfg.offset_s, cfg.offset_s) if cfg.offset_s else 0.0
            self.phase[k] = rng.uniform(0, k_ / cfg.rate)
            ns = int(self.len_of[k]) if cfg.duration is None else max(1, round(cfg.duration * cfg.rate))
            nm = -(-ns // k_)
            self.n_samples[k], self.n_messages[k] = ns, nm
            m = np.arange(nm, dtype=np.int64)
            last = np.minimum((m + 1) * k_, ns) - 1
            due = self.phase[k] + last / cfg.rate + rng.uniform(0, cfg.jitter_ms / 1e3, nm)
            lost = rng.random(nm) < cfg.loss
            dup = ~lost & (rng.random(nm) < cfg.dup)
            self.lost.append(m[lost])
            self.duped.append(m[dup])
            keep = ~lost
            dues.append(due[keep])
            ws.append(np.full(int(keep.sum()), k, np.int32))
            ms.append(m[keep].astype(np.int32))
            cps.append(np.where(dup[keep], 2, 1).astype(np.int8))
        due_all = np.concatenate(dues)
        order = np.argsort(due_all, kind="stable")
        self.s_due = due_all[order]
        self.s_watch = np.concatenate(ws)[order]
        self.s_msg = np.concatenate(ms)[order]
        self.s_copies = np.concatenate(cps)[order]
        self.total = int(self.s_due.size)
        self.period_us = np.rint(1e6 / cfg.rate * (1 + self.drift)).astype(np.int64)
        self.late = np.full(self.total, np.nan, np.float32)
        self.wake_late: list[float] = []
        self._payloads: deque[bytes] = deque()
        self._prepared = 0  # schedule positions encoded so far
        self._sent = 0  # schedule positions sent so far
        self.copies_sent = 0
        self._stop = threading.Event()
        self.elapsed = 0.0
        self.t_start_monotonic = math.nan
        self.t_start_unix = math.nan
        self.udp_devices: list[str] | None = None  # CSV over UDP: the sender address of each watch

    # ------------------------------------------------------------------------------------------ payloads

    def device_time_us(self, w: npt.NDArray[np.int64], i: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Device time (µs) of sample i of watch w: (phase + i / rate) · (1 + drift) + offset."""
        tau = self.phase[w] + i / self.cfg.rate
        return np.rint((tau * (1 + self.drift[w]) + self.offset[w]) * 1e6).astype(np.int64)

    def samples(self, w: int, first: int, count: int) -> npt.NDArray[np.float32]:
        """The recording's values for samples first..first+count-1 of watch w (wrapping the series)."""
        rows = (first + np.arange(count)) % self.len_of[w] + self.off_of[w]
        out: npt.NDArray[np.float32] = self.all_data[rows]
        return out

    def _in_payload_device(self, w: int) -> str:
        return self.devices[w] if self._transport == "udp" else ""

    def _prepare(self, upto: int) -> None:
        """Encode the payloads of schedule positions [prepared, upto)."""
        a, b = self._prepared, min(upto, self.total)
        if b <= a:
            return
        cfg, k_ = self.cfg, self.cfg.batch
        w = self.s_watch[a:b].astype(np.int64)
        m = self.s_msg[a:b].astype(np.int64)
        first = m * k_
        count = np.minimum(k_, self.n_samples[w] - first)
        if cfg.format == "binary":
            out: list[bytes | None] = [None] * (b - a)
            full = np.flatnonzero(count == k_)
            if full.size:
                for j, p in zip(full.tolist(), self._binary_block(w[full], first[full]), strict=True):
                    out[j] = p
            for j in np.flatnonzero(count != k_).tolist():
                wj, fj = int(w[j]), int(first[j])
                out[j] = encode_frame(self.samples(wj, fj, int(count[j])), fj,
                                      int(self.device_time_us(w[j:j + 1], first[j:j + 1])[0]),
                                      int(self.period_us[wj]), self._in_payload_device(wj))
            self._payloads.extend(p for p in out if p is not None)
        elif cfg.format == "json":
            t0 = self.device_time_us(w, first)
            for j in range(b - a):
                wj, fj, cj = int(w[j]), int(first[j]), int(count[j])
                self._payloads.append(encode_json(self.samples(wj, fj, cj), fj, int(t0[j]), int(self.period_us[wj]),
                                                  self._in_payload_device(wj), single=cj == 1))
        else:
            for j in range(b - a):
                wj, fj, cj = int(w[j]), int(first[j]), int(count[j])
                idx = fj + np.arange(cj, dtype=np.int64)
                t = self.device_time_us(np.full(cj, wj), idx)
                self._payloads.append(encode_csv(self.samples(wj, fj, cj), t, cfg.csv_layout))
        self._prepared = b

    def _binary_block(self, w: npt.NDArray[np.int64], first: npt.NDArray[np.int64]) -> list[bytes]:
        """SLW1 frames of K samples each, built for the whole block at once with a packed structured dtype."""
        k_, c = self.cfg.batch, self.channels
        dev_len = len(self.devices[0]) if self._transport == "udp" else 0
        fields: list[Any] = [("magic", "S4"), ("n", "<u2"), ("c", "<u2"), ("first", "<u8"), ("t0", "<i8"),
                             ("period", "<u4"), ("dlen", "u1")]
        if dev_len:
            fields.append(("dev", f"S{dev_len}"))
        fields.append(("data", "<f4", (k_, c)))
        rec = np.empty(w.size, np.dtype(fields))
        rec["magic"] = b"SLW1"
        rec["n"] = k_
        rec["c"] = c
        rec["first"] = first
        rec["t0"] = self.device_time_us(w, first)
        rec["period"] = self.period_us[w]
        rec["dlen"] = dev_len
        if dev_len:
            rec["dev"] = self._dev_array[w]
        rows = (first[:, None] + np.arange(k_)) % self.len_of[w][:, None] + self.off_of[w][:, None]
        rec["data"] = self.all_data[rows]
        raw = rec.tobytes()
        size = rec.dtype.itemsize
        return [raw[i:i + size] for i in range(0, len(raw), size)]

    # --------------------------------------------------------------------------------------------- pacing

    def stop(self) -> None:
        self._stop.set()

    def _slice(self) -> int:
        return 2000 if self.cfg.format == "binary" else 50

    def _start(self) -> None:
        self._dev_array = np.array([d.encode() for d in self.devices])
        # encode the first second before the clock starts
        first_s = int(np.searchsorted(self.s_due, 1.0))
        self._prepare(max(first_s, min(self.total, self._slice())))
        self.t_start_unix = time.time()
        self.t_start_monotonic = time.monotonic()

    def _tick(self, send: Callable[[bytes, int], None], room: Callable[[], bool] | None = None) -> None:
        """Send every message that is due; then encode ahead if the prepared horizon is short."""
        origin = self.t_start_monotonic
        now = time.monotonic() - origin
        due, watch, copies, late = self.s_due, self.s_watch, self.s_copies, self.late
        pl = self._payloads
        i = self._sent
        n = 0
        while i < self.total and due[i] <= now:
            if i >= self._prepared:
                self._prepare(i + self._slice())
            if room is not None and (n & 255) == 0 and not room():
                break
            p = pl.popleft()
            w = int(watch[i])
            send(p, w)
            if copies[i] == 2:
                send(p, w)
            self.copies_sent += int(copies[i])
            late[i] = time.monotonic() - origin - due[i]
            i += 1
            n += 1
        self._sent = i
        # encode ahead: up to 0.5 s of schedule, at most ~3 ms per tick unless the horizon is under 0.1 s
        t_end = time.monotonic() + 0.003
        while self._prepared < self.total:
            horizon = self.s_due[self._prepared - 1] - now
            if horizon >= 0.5 or (horizon >= 0.1 and time.monotonic() >= t_end):
                break
            self._prepare(self._prepared + self._slice())

    def _progress(self, last: float, force: bool = False) -> float:
        now = time.monotonic()
        if not self.cfg.progress or (now - last < 1.0 and not force):
            return last
        el = now - self.t_start_monotonic
        lat = self.late[max(0, self._sent - 20000):self._sent]
        lat = lat[np.isfinite(lat)]
        end = "\n" if force or not sys.stderr.isatty() else ""
        print(f"\r[watch_sim] {el:6.1f} s  {self._sent}/{self.total} messages  "
              f"{self.copies_sent / max(el, 1e-9):8.0f} msg/s  late p99 {_pct(lat, 99) * 1e3:6.2f} ms", end=end,
              file=sys.stderr, flush=True)
        return now

    def _next_wake(self, target: float) -> float:
        """The next tick's time (monotonic), and the lateness of this wake-up recorded."""
        now = time.monotonic()
        self.wake_late.append(now - target)
        tick = self.cfg.tick_ms / 1e3
        nxt = target + tick
        if nxt < now:
            nxt = now + tick / 2  # behind: do not try to catch up tick by tick
        return nxt

    def _done(self) -> bool:
        return self._sent >= self.total or self._stop.is_set()

    # ----------------------------------------------------------------------------------------------- UDP

    def run_udp(self, host: str, port: int) -> dict[str, Any]:
        """Send over UDP to host:port until the schedule is done or stop(); blocking. Returns the ledger."""
        self._transport = "udp"
        addr = (host, port)
        socks: list[socket.socket] = []
        try:
            if self.cfg.format == "csv":  # CSV names no device: one sender address per watch
                for _ in range(self.cfg.watches):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind(("127.0.0.1", 0))
                self.udp_devices = ["{}:{}".format(*s.getsockname()[:2]) for s in socks]
                csv_socks = socks

                def send(p: bytes, w: int) -> None:
                    csv_socks[w].sendto(p, addr)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.bind(("127.0.0.1", 0))
                sendto = sock.sendto

                def send(p: bytes, w: int) -> None:
                    sendto(p, addr)

            self._start()
            target = self.t_start_monotonic
            last = target
            while not self._done():
                self._tick(send)
                last = self._progress(last)
                target = self._next_wake(target)
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            for s in socks:
                s.close()
        return self._finish()

    # ---------------------------------------------------------------------------------------------- MQTT

    async def run_mqtt(self, url: str) -> dict[str, Any]:
        """Publish (QoS 0) on cfg.topic to the broker at url until done or stop(). Returns the ledger."""
        import aiomqtt

        self._transport = "mqtt"
        u = urlparse(url if "://" in url else f"mqtt://{url}")
        host, port = u.hostname or "127.0.0.1", u.port or 1883
        topics = [self.cfg.topic.replace("{device}", d) for d in self.devices]
        async with aiomqtt.Client(host, port, identifier=f"watch-sim-{uuid.uuid4().hex[:8]}",
                                  username=u.username, password=u.password,
                                  socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                  max_queued_outgoing_messages=1_000_000) as client:
            paho: Any = client._client
            loop = asyncio.get_running_loop()
            publish = paho.publish
            out = paho._out_packet  # QoS 0 packets paho has not written yet

            def send(p: bytes, w: int) -> None:
                info = publish(topics[w], p, 0)
                if info.rc != 0:
                    raise RuntimeError(f"paho publish failed: rc {info.rc}")

            def room() -> bool:
                return len(out) < 20_000  # the broker is not keeping up: wait (messages get late, none dropped)

            def flush() -> None:
                try:
                    paho.loop_write()
                except OSError as e:
                    raise RuntimeError(f"socket write failed: {e}") from e
                if not paho.want_write():
                    sock = paho.socket()
                    if sock is not None:  # see spikeline.mqtt._send_now
                        loop.call_soon(loop.remove_writer, sock.fileno())

            self._start()
            target = self.t_start_monotonic
            last = target
            while not self._done():
                self._tick(send, room)
                flush()
                last = self._progress(last)
                target = self._next_wake(target)
                await asyncio.sleep(max(0.0, target - time.monotonic()))
            deadline = time.monotonic() + 30
            while len(out) and time.monotonic() < deadline:  # let paho write what it holds
                flush()
                await asyncio.sleep(0.005)
        return self._finish()

    # ------------------------------------------------------------------------------------------- drivers

    def run(self, udp: str | None = None, mqtt: str | None = None) -> dict[str, Any]:
        """Blocking: `udp="host:port"` or `mqtt="mqtt://host:port"`. Returns the ledger."""
        if (udp is None) == (mqtt is None):
            raise ValueError("give exactly one of udp= and mqtt=")
        if udp is not None:
            host, _, port = udp.rpartition(":")
            return self.run_udp(host or "127.0.0.1", int(port))
        assert mqtt is not None
        return asyncio.run(self.run_mqtt(mqtt))

    async def arun(self, udp: str | None = None, mqtt: str | None = None) -> dict[str, Any]:
        """On a running event loop: UDP in a worker thread (the loop stays free), MQTT on the loop."""
        if (udp is None) == (mqtt is None):
            raise ValueError("give exactly one of udp= and mqtt=")
        if udp is not None:
            return await asyncio.to_thread(self.run, udp=udp)
        assert mqtt is not None
        return await self.run_mqtt(mqtt)

    # -------------------------------------------------------------------------------------------- ledger

    def _finish(self) -> dict[str, Any]:
        self.elapsed = time.monotonic() - self.t_start_monotonic
        self._progress(0.0, force=True)
        return self.ledger()

    def ledger(self) -> dict[str, Any]:
        """What was sent, per watch (see the module docstring), and the summary."""
        cfg, k_ = self.cfg, self.cfg.batch
        sent_w = self.s_watch[:self._sent].astype(np.int64)
        sent_m = self.s_msg[:self._sent].astype(np.int64)
        sent_c = self.s_copies[:self._sent]
        finished = self._sent >= self.total
        # lost messages count only as far as the run got (a stopped run did not reach the later ones)
        horizon = self.s_due[self._sent - 1] if self._sent else -1.0
        order = np.argsort(sent_w, kind="stable")
        bounds = np.searchsorted(sent_w[order], np.arange(cfg.watches + 1))
        watches = []
        tot = {"messages": 0, "copies": 0, "samples": 0, "lost_messages": 0, "lost_samples": 0, "duplicated": 0}
        for k in range(cfg.watches):
            sel = order[bounds[k]:bounds[k + 1]]
            msgs = np.sort(sent_m[sel])
            dups = np.sort(sent_m[sel][sent_c[sel] == 2])
            lost = self.lost[k]
            if not finished:
                last = self.phase[k] + (np.minimum((lost + 1) * k_, self.n_samples[k]) - 1) / cfg.rate
                lost = lost[last <= horizon]
            ns = int(self.n_samples[k])
            starts = msgs * k_
            counts = np.minimum(k_, ns - starts)
            samp = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            lost_samples = int(np.minimum(k_, ns - lost * k_).sum()) if lost.size else 0
            watches.append({
                "device": self.devices[k] if self.udp_devices is None else self.udp_devices[k],
                "name": self.devices[k],
                "series": int(self.series_of[k]),
                "samples_planned": ns,
                "messages_planned": int(self.n_messages[k]),
                "messages_sent": int(msgs.size),
                "samples_sent": int(samp.size),
                "sample_ranges": _ranges(samp.astype(np.int64), inclusive=False),
                "lost_messages": _ranges(lost.astype(np.int64), inclusive=True),
                "lost_samples": lost_samples,
                "duplicated_messages": [int(x) for x in dups],
                "drift_ppm": float(self.drift[k] * 1e6),
                "offset_s": float(self.offset[k]),
                "phase_s": float(self.phase[k]),
                "period_us": int(self.period_us[k]),
            })
            tot["messages"] += int(msgs.size)
            tot["copies"] += int(msgs.size + dups.size)
            tot["samples"] += int(samp.size)
            tot["lost_messages"] += int(lost.size)
            tot["lost_samples"] += lost_samples
            tot["duplicated"] += int(dups.size)
        late = self.late[np.isfinite(self.late)].astype(np.float64)
        wake = np.asarray(self.wake_late[1:], np.float64)
        el = max(self.elapsed, 1e-9)
        summary = {
            "transport": getattr(self, "_transport", ""),
            "finished": finished,
            "elapsed_s": round(self.elapsed, 3),
            "messages_sent": tot["messages"],
            "datagrams_or_publishes": tot["copies"],
            "samples_sent": tot["samples"],
            "messages_lost": tot["lost_messages"],
            "samples_lost": tot["lost_samples"],
            "messages_duplicated": tot["duplicated"],
            "rate_msgs_per_s": round(tot["copies"] / el, 1),
            "rate_samples_per_s": round(tot["samples"] / el, 1),
            "lateness_ms": {"p50": round(_pct(late, 50) * 1e3, 3), "p99": round(_pct(late, 99) * 1e3, 3),
                            "max": round(float(late.max()) * 1e3, 3) if late.size else math.nan},
            "wake_lateness_ms": {"p50": round(_pct(wake, 50) * 1e3, 3), "p99": round(_pct(wake, 99) * 1e3, 3)},
        }
        conf = asdict(cfg)
        conf.pop("extra")
        conf.pop("progress")
        return {"config": conf, "channels": self.channels, "t_start_monotonic": self.t_start_monotonic,
                "t_start_unix": self.t_start_unix, "summary": summary, "watches": watches}


# ------------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--watches", type=int, required=True)
    dest = ap.add_mutually_exclusive_group(required=True)
    dest.add_argument("--mqtt", help="broker URL, e.g. mqtt://127.0.0.1:1883")
    dest.add_argument("--udp", help="HOST:PORT of the gateway")
    ap.add_argument("--topic", default="watch/{device}/imu", help="MQTT topic ({device} = the watch id)")
    ap.add_argument("--format", choices=FORMATS, default="binary")
    ap.add_argument("--csv-layout", choices=("plain", "sensorstream"), default="plain")
    ap.add_argument("--batch", type=int, default=5, help="samples per message (K)")
    ap.add_argument("--rate", type=float, default=50.0, help="samples per second per watch")
    how_long = ap.add_mutually_exclusive_group()
    how_long.add_argument("--duration", type=float, default=None, help="seconds of samples per watch (default 10)")
    how_long.add_argument("--whole", action="store_true", help="each watch replays its whole series once")
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0, help="probability that a message is not sent")
    ap.add_argument("--dup", type=float, default=0.0, help="probability that a message is sent twice")
    ap.add_argument("--drift-ppm", type=float, default=0.0, help="per-watch clock drift drawn in ±D ppm")
    ap.add_argument("--offset-s", type=float, default=0.0, help="per-watch clock offset drawn in ±O s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tick-ms", type=float, default=5.0, help="pacing loop period")
    ap.add_argument("--ledger", type=Path, help="write the per-watch ledger (JSON) here")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="SPAR .npz recording (read-only)")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    a = ap.parse_args(argv)
    if a.format == "csv" and a.mqtt:
        ap.error("--format csv is for UDP (phone apps); use binary or json over MQTT")
    cfg = SimConfig(watches=a.watches, format=a.format, batch=a.batch, rate=a.rate,
                    duration=None if a.whole else (a.duration if a.duration is not None else 10.0),
                    jitter_ms=a.jitter_ms, loss=a.loss, dup=a.dup, drift_ppm=a.drift_ppm, offset_s=a.offset_s,
                    seed=a.seed, data=a.data, topic=a.topic, csv_layout=a.csv_layout, tick_ms=a.tick_ms,
                    progress=not a.quiet)
    if not Path(cfg.data).is_file():
        ap.error(f"recording {cfg.data} not found (--data, or set SPIKELINE_DATA)")
    try:
        t = time.perf_counter()
        sim = Simulator(cfg)
        print(f"[watch_sim] {cfg.watches} watches, {sim.total} messages scheduled "
              f"(set up in {time.perf_counter() - t:.2f} s)", file=sys.stderr)
    except ValueError as e:
        ap.error(str(e))
    try:
        ledger = sim.run(udp=a.udp, mqtt=a.mqtt)
    except KeyboardInterrupt:  # what was sent so far
        sim.elapsed = time.monotonic() - sim.t_start_monotonic
        ledger = sim.ledger()
    s = ledger["summary"]
    print(f"[watch_sim] sent {s['messages_sent']} messages ({s['datagrams_or_publishes']} with duplicates), "
          f"{s['samples_sent']} samples in {s['elapsed_s']} s: {s['rate_msgs_per_s']} msg/s, "
          f"{s['rate_samples_per_s']} samples/s; lost {s['messages_lost']} messages ({s['samples_lost']} samples), "
          f"duplicated {s['messages_duplicated']}; lateness p50 {s['lateness_ms']['p50']} ms, "
          f"p99 {s['lateness_ms']['p99']} ms, max {s['lateness_ms']['max']} ms; wake-up lateness "
          f"p50 {s['wake_lateness_ms']['p50']} ms, p99 {s['wake_lateness_ms']['p99']} ms", file=sys.stderr)
    if a.ledger:
        a.ledger.write_text(json.dumps(ledger, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
