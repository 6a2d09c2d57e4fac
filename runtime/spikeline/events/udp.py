"""AEStream's UDP wire format for address events (dvs_to_udp): encoder and a stateful decoder.

A datagram is at most 512 bytes of little-endian uint32 words. Without timestamps, one word per event:

    ((x | 0x8000) << 16) | (y | 0x8000 if polarity else y & 0x7FFF)

With timestamps, two words per event: ((x & 0x7FFF) << 16) | (y with the same polarity bit), then the
timestamp as a uint32 in microseconds. Bit 31 set therefore means "no timestamp follows".

    packets = encode_aestream(events, timestamps=True)        # list[bytes], each <= 512 bytes
    dec = AEStreamDecoder((640, 480))
    ev = dec.decode(packet, arrival_us)                       # EVENT_DTYPE array
    dec.rejected_packets, dec.rejected_events, dec.counters   # what was dropped, never raised

The decoder handles both variants, also mixed in one datagram. Events without a timestamp take the
arrival time; 32-bit timestamps are unwrapped (each taken as the value nearest the previous one, so a
wrap and slightly reordered datagrams both come out right). A datagram whose length is not a multiple
of 4 is rejected whole; events outside the sensor, and a final event whose timestamp word is missing,
are dropped and counted. It allocates at most one EVENT_DTYPE array of len(packet) // 4 events per
call (none with `out=`). `AEStreamDecoder` is compiled (spikeline._ext.evio) unless SPIKELINE_NO_EXT
is set or the extension is missing; AEStreamDecoderRef is the numpy reference (same events, same
counts). UDP_BACKEND says which is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..chunk import EVENT_DTYPE, Events
from ..kernels._backend import pick

__all__ = ["MAX_BYTES", "UDP_BACKEND", "AEStreamDecoder", "AEStreamDecoderRef", "encode_aestream"]

MAX_BYTES = 512  # AEStream's datagram size


def encode_aestream(events: Events, timestamps: bool = True, max_bytes: int = MAX_BYTES) -> list[bytes]:
    """Datagrams (each at most max_bytes) carrying `events` in order, as AEStream's dvs_to_udp sends them.

    x and y must be < 32768 (15 bits); with timestamps, t is sent modulo 2^32 (microseconds)."""
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise ValueError("events must be a 1-D EVENT_DTYPE array (spikeline.chunk.as_events builds one)")
    per_event = 8 if timestamps else 4
    if int(max_bytes) < per_event:
        raise ValueError(f"max_bytes must be >= {per_event} to carry one event, got {max_bytes}")
    n = events.shape[0]
    if n == 0:
        return []
    x = events["x"].astype(np.uint32)
    y = events["y"].astype(np.uint32)
    if int(x.max()) > 0x7FFF or int(y.max()) > 0x7FFF:
        raise ValueError("AEStream carries 15-bit coordinates: x and y must be < 32768")
    pol = np.where(events["p"] != 0, np.uint32(0x8000), np.uint32(0))
    head = (x << 16) | y | pol
    if timestamps:
        words = np.empty((n, 2), dtype="<u4")
        words[:, 0] = head
        words[:, 1] = (events["t"].astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    else:
        words = (head | np.uint32(0x80000000)).astype("<u4")
    data = words.tobytes()
    step = (int(max_bytes) // per_event) * per_event
    return [data[i : i + step] for i in range(0, len(data), step)]


class AEStreamDecoderRef:
    """numpy reference of spikeline._ext.evio.AEStreamDecoder (same events, state and counters)."""

    def __init__(self, sensor: tuple[int, int]) -> None:
        width, height = sensor
        if not (0 < width <= 65536 and 0 < height <= 65536):
            raise ValueError(f"sensor size must be within 1..65536, got ({width}, {height})")
        self.width = int(width)
        self.height = int(height)
        self.reset()

    @property
    def sensor(self) -> tuple[int, int]:
        return (self.width, self.height)

    def reset(self) -> None:
        self._last_t = 0
        self._have_t = False
        self.reset_counters()

    def reset_counters(self) -> None:
        self.packets = self.events = self.rejected_packets = self.rejected_events = 0
        self.bad_length = self.out_of_sensor = self.missing_timestamp = 0

    @property
    def counters(self) -> dict[str, int]:
        return {"packets": self.packets, "events": self.events, "rejected_packets": self.rejected_packets,
                "rejected_events": self.rejected_events, "bad_length": self.bad_length,
                "out_of_sensor": self.out_of_sensor, "missing_timestamp": self.missing_timestamp}

    @property
    def state(self) -> dict[str, int | bool]:
        return {"last_t": self._last_t, "have_t": self._have_t}

    @state.setter
    def state(self, value: dict[str, int | bool]) -> None:
        self._last_t = int(value["last_t"])
        self._have_t = bool(value["have_t"])

    def decode(self, packet: Any, arrival_us: int, out: Events | None = None) -> Events:
        buf = np.frombuffer(packet, dtype=np.uint8)
        self.packets += 1
        if buf.shape[0] % 4:
            self.rejected_packets += 1
            self.bad_length += 1
            return np.empty(0, dtype=EVENT_DTYPE)
        w = buf.view("<u4").astype(np.int64)
        nw = w.shape[0]
        if out is None:
            out = np.empty(nw, dtype=EVENT_DTYPE)
        elif out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous 1-D EVENT_DTYPE array, got {out.dtype} {out.shape}")
        if out.shape[0] < nw:
            raise ValueError(f"out has room for {out.shape[0]} events; a {buf.shape[0]}-byte packet needs {nw}")
        if nw == 0:
            return out[:0]
        # Roles: word 0 is a header; the word after any word with bit 31 set is a header (that word was
        # either a header without timestamp or a timestamp); between those, headers and timestamps alternate.
        b31 = (w >> 31) == 1
        known = np.zeros(nw, dtype=bool)
        known[0] = True
        known[1:] = b31[:-1]
        seg = np.maximum.accumulate(np.where(known, np.arange(nw), 0))
        header = ((np.arange(nw) - seg) & 1) == 0
        has_ts = header & ~b31
        missing = has_ts & (np.arange(nw) == nw - 1)
        has_ts &= ~missing
        hidx = np.flatnonzero(header & ~missing)
        hw = w[hidx]
        ts_mask = has_ts[hidx]
        ts = w[hidx[ts_mask] + 1]
        # unwrap: each timestamp is the previous one plus the signed 32-bit difference
        tfull = np.empty(ts.shape[0], dtype=np.int64)
        if ts.shape[0]:
            prev32 = np.concatenate(([self._last_t & 0xFFFFFFFF], ts[:-1]))
            d = ((ts - prev32 + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            if not self._have_t:
                d[0] = 0
                start = int(ts[0])
            else:
                start = self._last_t
            tfull = start + np.cumsum(d)
            self._last_t = int(tfull[-1])
            self._have_t = True
        t = np.full(hidx.shape[0], int(arrival_us), dtype=np.int64)
        t[ts_mask] = tfull
        x = (hw >> 16) & 0x7FFF
        y = hw & 0x7FFF
        ok = (x < self.width) & (y < self.height)
        n = int(ok.sum())
        ev = out[:n]
        ev["t"] = t[ok]
        ev["x"] = x[ok]
        ev["y"] = y[ok]
        ev["p"] = (hw[ok] >> 15) & 1
        bad_xy = int(hidx.shape[0] - n)
        n_missing = int(missing.sum())
        self.out_of_sensor += bad_xy
        self.missing_timestamp += n_missing
        self.rejected_events += bad_xy + n_missing
        self.events += n
        return ev


if TYPE_CHECKING:
    from spikeline._ext.evio import AEStreamDecoder

    UDP_BACKEND: Literal["ext", "numpy"]
else:
    AEStreamDecoder, UDP_BACKEND = pick("spikeline._ext.evio", "AEStreamDecoder", AEStreamDecoderRef)
