"""The units that move through a pipeline: one chunk of samples, never one Python object per sample."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What a stream is: fixed for the life of a stream, shared by every chunk of it."""

    name: str
    type: str
    channels: tuple[str, ...]
    nominal_rate: float  # Hz; 0 for irregular streams
    units: tuple[str, ...] = ()
    source_id: str = ""
    # When set, each output row is a decision and `SampleChunk.label` indexes into this tuple.
    classes: tuple[str, ...] = ()
    # Event streams (EventChunk): the sensor's (width, height) in pixels; (0, 0) for sample streams.
    # An event stream has no channels; its nominal_rate is the most events per second it may carry.
    sensor: tuple[int, int] = (0, 0)
    # Streams whose rows are images (event frames, time surfaces, voxel grids): the shape of one row, e.g.
    # (polarities, height, width), row-major. Such streams have n_channels = prod(frame) and no channel names.
    frame: tuple[int, ...] = ()
    # Gateway mode: the table of devices whose slots SampleChunk.streams refers to (not part of equality).
    devices: Any = field(default=None, compare=False, hash=False)

    @property
    def n_channels(self) -> int:
        if self.frame:
            n = 1
            for d in self.frame:
                n *= d
            return n
        return len(self.channels)

    @property
    def is_events(self) -> bool:
        return self.sensor != (0, 0)

    def derive(self, **changes: object) -> StreamMeta:
        """A copy with some fields changed (a stage describing its output). New channel names end a frame shape."""
        if "channels" in changes and "frame" not in changes:
            changes["frame"] = ()
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(slots=True)
class SampleChunk:
    """`n` consecutive samples of one stream.

    data     float32 (n, channels), C-contiguous
    t        float64 (n,), source timestamps mapped to this host's monotonic clock (seconds)
    t_recv   float64 (n,), monotonic time the runtime received each sample
    seq      stream index of the first row's source sample; row i comes from source sample
             seq + i * stride (stride > 1 after decimation); gaps in the indices show drops
    label    optional int16 (n,) class index per row (decision stages), see StreamMeta.classes
    streams  gateway mode (many devices in one pipeline): int32 (n,) the device slot of each row, and
    row_seq  int64 (n,) each row's sample index on its own device (seq/stride then do not apply); the
             slots' names are in meta.devices (a spikeline.gateway.DeviceTable)
    """

    data: F32
    t: F64
    t_recv: F64
    seq: int
    meta: StreamMeta
    label: npt.NDArray[np.int16] | None = None
    stride: int = 1
    t_done: float = 0.0  # monotonic time the last stage finished this chunk (set by the pipeline)
    streams: npt.NDArray[np.int32] | None = None
    row_seq: npt.NDArray[np.int64] | None = None
    budget_s: float = 0.0  # the pipeline's budget (set with t_done): a row published later than it is "late"
    tier: int = -1  # the degrade tier that computed it (-1: the pipeline has no tiers)

    def __post_init__(self) -> None:
        d = self.data
        if d.dtype != np.float32 or d.ndim != 2 or not d.flags.c_contiguous:
            raise ValueError(f"SampleChunk.data must be C-contiguous float32 (n, channels), got {d.dtype} {d.shape}")
        n = d.shape[0]
        if self.t.shape != (n,) or self.t_recv.shape != (n,):
            raise ValueError(f"SampleChunk timestamps must have shape ({n},), got {self.t.shape} and {self.t_recv.shape}")
        if d.shape[1] != self.meta.n_channels:
            raise ValueError(f"SampleChunk has {d.shape[1]} channels, stream {self.meta.name!r} declares {self.meta.n_channels}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def seqs(self) -> npt.NDArray[np.int64]:
        """Source sample index of every row (on its own device in gateway mode)."""
        if self.row_seq is not None:
            return self.row_seq
        return self.seq + self.stride * np.arange(len(self), dtype=np.int64)

    def take(self, start: int, stop: int | None = None, step: int = 1) -> SampleChunk:
        """Rows start:stop:step as a new chunk (decimating stages, the drop policy)."""
        rows = slice(start, stop, step)
        first = rows.indices(len(self))[0]
        return SampleChunk(
            data=np.ascontiguousarray(self.data[rows]),
            t=self.t[rows],
            t_recv=self.t_recv[rows],
            seq=self.seq + first * self.stride,
            meta=self.meta,
            label=None if self.label is None else self.label[rows],
            stride=self.stride * step,
            streams=None if self.streams is None else self.streams[rows],
            row_seq=None if self.row_seq is None else self.row_seq[rows],
        )

    def select(self, rows: npt.NDArray[np.intp]) -> SampleChunk:
        """Some rows, by index (gateway stages emitting per-device rows)."""
        return SampleChunk(
            data=np.ascontiguousarray(self.data[rows]), t=self.t[rows], t_recv=self.t_recv[rows], seq=self.seq,
            meta=self.meta, label=None if self.label is None else self.label[rows], stride=self.stride,
            streams=None if self.streams is None else self.streams[rows],
            row_seq=None if self.row_seq is None else self.row_seq[rows])

    def with_data(self, data: F32, meta: StreamMeta | None = None,
                  label: npt.NDArray[np.int16] | None = None) -> SampleChunk:
        """Same rows and timestamps, new values (a stage that maps row to row)."""
        return SampleChunk(data=data, t=self.t, t_recv=self.t_recv, seq=self.seq,
                           meta=self.meta if meta is None else meta,
                           label=self.label if label is None else label, stride=self.stride,
                           streams=self.streams, row_seq=self.row_seq)


# One address-event: time in microseconds, pixel column x, row y, polarity p (1 = ON, 0 = OFF).
# Aligned (16 bytes: t at 0, x at 8, y at 10, p at 12) so compiled code reads it as a C struct.
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")], align=True)
Events = npt.NDArray[np.void]


def empty_events(n: int = 0) -> Events:
    return np.zeros(n, dtype=EVENT_DTYPE)


def as_events(t: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike, p: npt.ArrayLike) -> Events:
    """Events from separate columns (any integer dtypes; polarity: nonzero = ON)."""
    ta = np.asarray(t)
    ev = np.empty(ta.shape[0], dtype=EVENT_DTYPE)
    ev["t"] = ta
    ev["x"] = np.asarray(x)
    ev["y"] = np.asarray(y)
    ev["p"] = np.asarray(p) != 0
    return ev


@dataclass(slots=True)
class EventChunk:
    """Consecutive events of one event-camera stream, in time order.

    ev       EVENT_DTYPE structured array: t int64 µs on the sensor's clock, x/y uint16, p int8 (0/1)
    t_base   this host's monotonic time (s) of sensor time 0, and
    t_scale  seconds of this host's clock per sensor µs (1e-6 live; 1e-6 / N when a file is replayed N times faster):
             an event's local time is t_base + t * t_scale (the source keeps the mapping)
    t_recv   monotonic time the runtime received the chunk
    seq      stream index of the first event; gaps in the indices show events dropped downstream
             of the source (queue overflow); the source's own rate controller counts its drops
    until    set on a *tick*, a chunk without events that says "no event before sensor time `until`
             will follow": a live source sends ticks while its sensor is quiet, so stages that decide when
             time passes (the end of a burst, of a window) can decide without waiting for the next event
    """

    ev: Events
    t_base: float
    t_recv: float
    seq: int
    meta: StreamMeta
    t_scale: float = 1e-6
    t_done: float = 0.0
    until: int | None = None

    def __post_init__(self) -> None:
        if self.ev.dtype != EVENT_DTYPE or self.ev.ndim != 1:
            raise ValueError(f"EventChunk.ev must be a 1-d EVENT_DTYPE array, got {self.ev.dtype} {self.ev.shape}")
        if not self.meta.is_events:
            raise ValueError(f"stream {self.meta.name!r} is not an event stream (no sensor size)")

    def __len__(self) -> int:
        return int(self.ev.shape[0])

    @property
    def is_tick(self) -> bool:
        return self.until is not None and self.ev.shape[0] == 0

    def tick(self, until: int) -> EventChunk:
        """A tick of this stream (same time mapping and seq position), for `until`."""
        return EventChunk(ev=self.ev[:0], t_base=self.t_base, t_recv=self.t_recv, seq=self.seq + len(self),
                          meta=self.meta, t_scale=self.t_scale, until=until)

    def take(self, start: int, stop: int | None = None, step: int = 1) -> EventChunk:
        """Events start:stop (the queue's drop policy). `step` must be 1: event indices stay dense."""
        if step != 1:
            raise ValueError("EventChunk.take keeps consecutive events only (step 1)")
        first = slice(start, stop).indices(len(self))[0]
        return EventChunk(ev=self.ev[start:stop], t_base=self.t_base, t_recv=self.t_recv,
                          seq=self.seq + first, meta=self.meta, t_scale=self.t_scale)

    def local_time(self, t_us: npt.ArrayLike) -> F64:
        """This host's monotonic time (s) of sensor time(s) `t_us`."""
        return self.t_base + np.asarray(t_us, dtype=np.float64) * self.t_scale


Chunk = SampleChunk | EventChunk
