"""Smartwatch wire formats: what a watch (or the phone/hub bridging it) sends, decoded into `Frame`s.

A `Frame` is one device's consecutive samples: `data` float32 `(n, channels)` C-contiguous, the index of the
first sample on the device's sample counter (`first_index`, +1 per sample; None when the format has none),
and the device-clock times: either a first time and a period (`t0_us`, `period_us`) or one time per sample
(`t_us`). A payload that is not a valid frame raises `FrameError(reason, message)`: `reason` is a short
stable code for per-device rejection counters, `message` says what was wrong. The decoders never raise
anything else, whatever the input, and never allocate more than the payload justifies: at most
`max_samples` (default 4096) samples per payload, at most 64 channels.

Rejection reasons:

| reason       | meaning                                                                             |
|--------------|-------------------------------------------------------------------------------------|
| `bad_type`   | the payload is not bytes (or str, for JSON/CSV); a JSON field of the wrong type     |
| `bad_magic`  | a binary payload that does not start with b"SLW1"                                   |
| `truncated`  | a binary payload shorter than its header says                                       |
| `trailing`   | a binary payload longer than its header says                                        |
| `too_large`  | more than `max_samples` samples (or a JSON/CSV text longer than `max_bytes`)        |
| `bad_shape`  | 0 samples, 0 or > 64 channels, rows of unequal length, not the expected channels    |
| `non_finite` | a NaN or infinite value (JSON `NaN`/`Infinity` tokens, a float32 overflow, CSV nan) |
| `bad_device` | a device id that is too long, not UTF-8, or has characters outside [A-Za-z0-9._:-] |
| `bad_json`   | not JSON, too deeply nested, or not an object at the top                            |
| `bad_index`  | a sample index missing, negative, not an integer, or beyond 2**63 - 1               |
| `bad_time`   | a time missing, not a number, out of the int64 µs range; a period that is not > 0   |
| `bad_csv`    | a CSV line that is not numbers in the layout's shape, or lacks accelerometer/gyro   |

## a) Binary "SLW1" frame (all fields little-endian)

```
offset size field
 0      4   magic b"SLW1"
 4      2   n_samples   uint16 (1..max_samples)
 6      2   n_channels  uint16 (1..64)
 8      8   index of the first sample, uint64 (device sample counter, +1 per sample; < 2**63)
16      8   device timestamp of the first sample, int64 µs (device clock)
24      4   sample period, uint32 µs (> 0)
28      1   device-id length L, uint8 (0..64; 0 = the transport names the device: MQTT topic level, UDP sender)
29      L   device id, UTF-8, characters [A-Za-z0-9._:-] only
29+L        n_samples x n_channels float32, row-major; the payload ends exactly there
```

Sample i was taken at device time `t0_us + i * period_us`. `encode_frame(data, first_index, t0_us,
period_us, device="")` writes one; `decode_frame(buf, channels=None)` reads one (vectorised: one
`np.frombuffer` for the samples, whatever their number); `decode_frames(payloads, channels)` reads a batch
with a few vectorised passes per distinct payload size, accepting exactly what `decode_frame` accepts (the
gateway's fast path; what it leaves out goes to `decode_frame`, which gives the reason).

## b) JSON (UTF-8 text)

One sample:   `{"seq": 1234, "t": 1732.5, "values": [ax, ay, az, gx, gy, gz]}`
A batch:      `{"seq": 1234, "t": 1732.5, "dt": 0.02, "values": [[ax, ...], [ax, ...], ...]}`

`seq` is the index of the (first) sample (integer, 0..2**63-1), `t` the device time of the (first) sample in
seconds on the device's clock, `dt` the sample period in seconds (required for a batch, optional for one
sample), optional `"device": "w17"` (same rules as the binary device id; absent or "" = the transport names
the device). Types are strict: a bool is not a number, a number is not a string; `NaN`, `Infinity` and
numbers that overflow are refused as `non_finite`; nesting deeper than a batch is refused. Other keys are
ignored. `encode_json(...)` writes the batch form for more than one sample (or whenever a period is given
with `single=False`), the one-sample form otherwise.

## c) CSV lines over UDP (phone sensor-streaming apps)

Several lines per datagram are allowed (`\\n` or `\\r\\n`); blank lines are skipped; all lines of a datagram
become one Frame with `first_index` None and one device time per sample in `t_us` (the formats carry no
sample counter: the gateway derives indices from the times and the nominal rate). Times must not decrease
within a datagram.

- `plain`: `t,ax,ay,az,gx,gy,gz` per line: `t` in seconds on the device clock, then the channel values (any
  number of values, the same in every line; the `channels=` argument checks the count). This is the
  generic layout of configurable streaming apps and of our simulator (`tools/watch_sim.py --format csv`);
  apps whose timestamp is in milliseconds must be configured (or bridged) to send seconds.
- `sensorstream`: the layout of the "Sensorstream IMU+GPS" Android app (Axel Lorenz), one line per reading:
  `t, 3, ax, ay, az, 4, gx, gy, gz[, 5, mx, my, mz]...`: after the timestamp `t` (seconds), groups of a
  sensor-id tag and its three values: 3 accelerometer, 4 gyroscope, 5 magnetometer (other tags, e.g. 1 GPS,
  81..84 orientation, are skipped with their three values). A line without both a 3 and a 4 group is
  refused (`bad_csv`); the frame's channels are ax, ay, az, gx, gy, gz (the magnetometer is dropped).

Units: the SPAR recordings (and so the simulator) send the accelerometer in g and the gyroscope in rad/s;
Android apps such as Sensorstream send the accelerometer in m/s² (gyroscope rad/s). spikeline does not
convert: the values go to the model as they arrive, and the units on the model card apply — configure the
app or the bridge to match them.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_DEVICE_LEN",
    "MAX_SAMPLES",
    "Frame",
    "FrameBatch",
    "FrameError",
    "decode_csv",
    "decode_frame",
    "decode_frames",
    "decode_json",
    "encode_csv",
    "encode_frame",
    "encode_json",
    "valid_device",
]

MAGIC = b"SLW1"
HEADER = struct.Struct("<4sHHQqIB")  # 29 bytes: magic, n_samples, n_channels, first index, t0 µs, period µs, L
MAX_SAMPLES = 4096
MAX_CHANNELS = 64
MAX_DEVICE_LEN = 64
MAX_BYTES = 1 << 20  # JSON / CSV text
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
UINT32_MAX = (1 << 32) - 1
CSV_LAYOUTS = ("plain", "sensorstream")

_DEVICE = re.compile(r"[A-Za-z0-9._:-]{0,64}")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_TAG = re.compile(r"[+-]?\d{1,6}")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class FrameError(ValueError):
    """A payload refused: `reason` is a short stable code (see the module docstring), `message` the detail."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, eq=False, slots=True)
class Frame:
    """One device's consecutive samples (see the module docstring)."""

    device: str  # "" = the transport names the device
    first_index: int | None  # device sample counter of row 0; None: the format has none (CSV)
    t0_us: int  # device time of row 0, µs
    period_us: int | None  # µs between rows; None when t_us gives every row's time (or one sample, no dt)
    t_us: I64 | None  # (n,) device times, µs, when the format gives one per sample
    data: F32  # (n, channels) float32, C-contiguous

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    def times_us(self) -> I64:
        """The device time of every row, µs."""
        if self.t_us is not None:
            return self.t_us
        p = self.period_us or 0
        return self.t0_us + np.arange(self.n, dtype=np.int64) * p


def valid_device(name: str) -> bool:
    """True for a device id this module accepts: up to 64 characters of [A-Za-z0-9._:-] ("" included)."""
    return _DEVICE.fullmatch(name) is not None


def _check_device(name: str) -> None:
    if not isinstance(name, str) or not valid_device(name):
        raise ValueError(f"device id {name!r}: up to {MAX_DEVICE_LEN} characters of [A-Za-z0-9._:-]")


def _as_rows(data: npt.ArrayLike) -> F32:
    a = np.ascontiguousarray(data, dtype=np.float32)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or not 1 <= a.shape[0] <= 0xFFFF or not 1 <= a.shape[1] <= MAX_CHANNELS:
        raise ValueError(f"data must be (1..65535, 1..{MAX_CHANNELS}) samples x channels, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("data must be finite (as float32)")
    return a


# ------------------------------------------------------------------------------------------------ binary

def encode_frame(data: npt.ArrayLike, first_index: int, t0_us: int, period_us: int, device: str = "") -> bytes:
    """One SLW1 frame. Raises ValueError for arguments the format cannot carry."""
    a = _as_rows(data)
    _check_device(device)
    if not 0 <= first_index <= INT64_MAX - a.shape[0]:
        raise ValueError(f"first_index must be in 0..2**63-1-n, got {first_index}")
    if not INT64_MIN <= t0_us <= INT64_MAX:
        raise ValueError(f"t0_us must fit int64, got {t0_us}")
    if not 0 < period_us <= UINT32_MAX:
        raise ValueError(f"period_us must be in 1..{UINT32_MAX}, got {period_us}")
    dev = device.encode("ascii")
    head = HEADER.pack(MAGIC, a.shape[0], a.shape[1], first_index, t0_us, period_us, len(dev))
    return head + dev + a.astype("<f4", copy=False).tobytes()


def _buffer(buf: Any) -> memoryview:
    if isinstance(buf, bytes | bytearray | memoryview):
        try:
            m = memoryview(buf).cast("B")
        except TypeError as e:  # a non-contiguous or multi-dimensional memoryview
            raise FrameError("bad_type", f"payload buffer is not contiguous bytes: {e}") from None
        return m
    raise FrameError("bad_type", f"payload must be bytes, got {type(buf).__name__}")


def _check_channels(c: int, channels: int | None) -> None:
    if channels is not None and c != channels:
        raise FrameError("bad_shape", f"{c} channels, expected {channels}")


def decode_frame(buf: bytes | bytearray | memoryview, channels: int | None = None, *,
                 max_samples: int = MAX_SAMPLES) -> Frame:
    """Decode one SLW1 frame (see the module docstring); raises FrameError. `channels`: the count expected."""
    m = _buffer(buf)
    size = len(m)
    if size < 4:
        if bytes(m) == MAGIC[:size]:
            raise FrameError("truncated", f"{size} bytes: shorter than the 29-byte header")
        raise FrameError("bad_magic", f"payload starts with {bytes(m)!r}, not {MAGIC!r}")
    if m[:4] != MAGIC:
        raise FrameError("bad_magic", f"payload starts with {bytes(m[:4])!r}, not {MAGIC!r}")
    if size < HEADER.size:
        raise FrameError("truncated", f"{size} bytes: shorter than the {HEADER.size}-byte header")
    _, n, c, first, t0, period, dlen = HEADER.unpack_from(m, 0)
    if n == 0:
        raise FrameError("bad_shape", "n_samples is 0")
    if n > max_samples:
        raise FrameError("too_large", f"{n} samples, at most {max_samples} per payload")
    if not 1 <= c <= MAX_CHANNELS:
        raise FrameError("bad_shape", f"n_channels {c}, must be 1..{MAX_CHANNELS}")
    _check_channels(c, channels)
    if first > INT64_MAX - n:
        raise FrameError("bad_index", f"first sample index {first} is beyond 2**63-1")
    if period == 0:
        raise FrameError("bad_time", "sample period is 0")
    if t0 > INT64_MAX - (n - 1) * period:
        raise FrameError("bad_time", f"the last sample's time overflows int64 (t0 {t0} µs)")
    if dlen > MAX_DEVICE_LEN:
        raise FrameError("bad_device", f"device-id length {dlen}, at most {MAX_DEVICE_LEN}")
    end = HEADER.size + dlen + 4 * n * c
    if size < end:
        raise FrameError("truncated", f"{size} bytes, the header says {end}")
    if size > end:
        raise FrameError("trailing", f"{size} bytes, the header says {end}: {size - end} bytes after the samples")
    try:
        device = bytes(m[HEADER.size:HEADER.size + dlen]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("bad_device", "device id is not UTF-8") from None
    if not valid_device(device):
        raise FrameError("bad_device", f"device id {device!r} has characters outside [A-Za-z0-9._:-]")
    raw = np.frombuffer(m, dtype="<f4", count=n * c, offset=HEADER.size + dlen)
    data = raw.astype(np.float32).reshape(n, c)  # a native-endian, writable, C-contiguous copy
    if not np.isfinite(data).all():
        bad = int(np.argmin(np.isfinite(data).all(axis=1)))
        raise FrameError("non_finite", f"sample {bad} has a NaN or infinite value")
    return Frame(device, int(first), int(t0), int(period), None, data)


@dataclass(frozen=True, eq=False, slots=True)
class FrameBatch:
    """Many SLW1 payloads decoded at once (`decode_frames`): per payload j, `ok[j]` is True exactly when
    `decode_frame(payloads[j], channels)` would return a Frame, and then its rows are
    `data[offset[j]:offset[j] + n[j]]`; `device[j]` is the frame's device id ("" = the transport names it, or
    not ok). Payloads that are not ok are left to `decode_frame`, which says why."""

    ok: npt.NDArray[np.bool_]
    n: I64
    first_index: I64
    t0_us: I64
    period_us: I64
    offset: I64
    device: list[str]
    data: F32  # (sum of n over ok payloads, channels)


_HEAD_FIELDS = {"names": ["magic", "n", "c", "first", "t0", "period", "dlen"],
                "formats": ["S4", "<u2", "<u2", "<u8", "<i8", "<u4", "u1"],
                "offsets": [0, 4, 6, 8, 16, 24, 28]}
_DEVICE_BYTES = np.zeros(256, np.bool_)
_DEVICE_BYTES[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")] = True


def decode_frames(payloads: list[bytes], channels: int, *, max_samples: int = MAX_SAMPLES,
                  max_size: int = 1 << 20) -> FrameBatch:
    """Decode a batch of SLW1 payloads with a few vectorised passes per distinct payload size (a gateway's
    watches send frames of one or a few sizes), instead of one `decode_frame` call each. Exactly the same
    acceptance and values as `decode_frame(p, channels, max_samples=max_samples)`; payloads longer than
    `max_size` are left out (not ok)."""
    m = len(payloads)
    ok = np.zeros(m, np.bool_)
    fields = {k: np.zeros(m, np.int64) for k in ("n", "first_index", "t0_us", "period_us", "offset")}
    device = [""] * m
    blocks: list[F32] = []
    rows = 0
    sizes = np.fromiter(map(len, payloads), np.int64, m)
    for size in np.unique(sizes).tolist():
        if size < HEADER.size or size > max_size:
            continue
        sel = np.flatnonzero(sizes == size)
        joined = b"".join([payloads[j] for j in sel.tolist()])
        head: Any = np.frombuffer(joined, np.dtype({**_HEAD_FIELDS, "itemsize": size}))  # type: ignore[call-overload]
        n = head["n"].astype(np.int64)
        c = head["c"].astype(np.int64)
        first = head["first"]
        t0 = head["t0"]
        period = head["period"].astype(np.int64)
        dlen = head["dlen"].astype(np.int64)
        good = ((head["magic"] == MAGIC) & (n >= 1) & (n <= max_samples) & (c == channels) & (period > 0)
                & (first <= np.uint64(INT64_MAX) - n.astype(np.uint64)) & (dlen <= MAX_DEVICE_LEN)
                & (t0 <= INT64_MAX - (n - 1) * period) & (size == HEADER.size + dlen + 4 * n * channels))
        raw = np.frombuffer(joined, np.uint8).reshape(-1, size)
        for dl in np.unique(dlen[good]).tolist():
            part = np.flatnonzero(good & (dlen == dl))
            if dl:
                ids = raw[part, HEADER.size:HEADER.size + dl]
                part = part[_DEVICE_BYTES[ids].all(axis=1)]
            if not len(part):
                continue
            k = (size - HEADER.size - dl) // (4 * channels)  # samples per frame: the same for the whole part
            vals = np.ascontiguousarray(raw[part, HEADER.size + dl:]).view("<f4").astype(np.float32, copy=False)
            vals = vals.reshape(len(part), k, channels)
            finite = np.isfinite(vals).all(axis=(1, 2))
            part, vals = part[finite], vals[finite]
            if not len(part):
                continue
            js = sel[part]
            ok[js] = True
            fields["n"][js] = k
            fields["first_index"][js] = first[part].astype(np.int64)
            fields["t0_us"][js] = t0[part]
            fields["period_us"][js] = period[part]
            fields["offset"][js] = rows + np.arange(len(part)) * k
            if dl:
                names = raw[part, HEADER.size:HEADER.size + dl].copy().view(f"S{dl}").ravel().tolist()
                for j, name in zip(js.tolist(), names, strict=True):
                    device[j] = name.decode("ascii")
            blocks.append(vals.reshape(-1, channels))
            rows += len(part) * k
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    return FrameBatch(ok, fields["n"], fields["first_index"], fields["t0_us"], fields["period_us"],
                      fields["offset"], device, data)


# -------------------------------------------------------------------------------------------------- JSON

class _NonFinite(Exception):
    pass


def _reject_constant(token: str) -> Any:
    raise _NonFinite(token)


def _parse_float(token: str) -> float:
    v = float(token)
    if not math.isfinite(v):
        raise _NonFinite(token)
    return v


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def _seconds_to_us(v: Any, what: str) -> int:
    if not _is_number(v):
        raise FrameError("bad_time", f"{what} must be a number (seconds), got {type(v).__name__}")
    try:
        us = round(v * 1e6) if type(v) is float else v * 1_000_000
    except (OverflowError, ValueError):
        raise FrameError("bad_time", f"{what} {v!r} is out of range") from None
    if not INT64_MIN <= us <= INT64_MAX:
        raise FrameError("bad_time", f"{what} {v!r} s is beyond the int64 µs range")
    return int(us)


def encode_json(data: npt.ArrayLike, first_index: int, t0_us: int, period_us: int | None = None,
                device: str = "", *, single: bool | None = None) -> bytes:
    """One JSON payload: the one-sample form for one sample (unless single=False), else the batch form."""
    a = _as_rows(data)
    _check_device(device)
    if not 0 <= first_index <= INT64_MAX - a.shape[0]:
        raise ValueError(f"first_index must be in 0..2**63-1-n, got {first_index}")
    if single is None:
        single = a.shape[0] == 1
    if single and a.shape[0] != 1:
        raise ValueError("the one-sample form carries one sample")
    obj: dict[str, Any] = {"seq": int(first_index), "t": t0_us / 1e6}
    if period_us is not None:
        if not period_us > 0:
            raise ValueError(f"period_us must be > 0, got {period_us}")
        obj["dt"] = period_us / 1e6
    elif not single:
        raise ValueError("a batch needs period_us")
    rows = a.astype(np.float64).tolist()
    obj["values"] = rows[0] if single else rows
    if device:
        obj["device"] = device
    return json.dumps(obj, separators=(",", ":")).encode()


def _text(payload: Any, max_bytes: int, what: str) -> str:
    if isinstance(payload, str):
        if len(payload) > max_bytes:
            raise FrameError("too_large", f"{what} of {len(payload)} characters, at most {max_bytes}")
        return payload
    m = _buffer(payload)
    if len(m) > max_bytes:
        raise FrameError("too_large", f"{what} of {len(m)} bytes, at most {max_bytes}")
    try:
        return bytes(m).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameError("bad_json" if what == "JSON" else "bad_csv", f"not UTF-8 (byte {e.start})") from None


def decode_json(payload: bytes | bytearray | memoryview | str, channels: int | None = None, *,
                max_samples: int = MAX_SAMPLES, max_bytes: int = MAX_BYTES) -> Frame:
    """Decode one JSON sample or batch (see the module docstring); raises FrameError."""
    text = _text(payload, max_bytes, "JSON")
    try:
        obj = _DECODER.decode(text)
    except _NonFinite as e:
        raise FrameError("non_finite", f"non-finite number {str(e)[:20]!r}") from None
    except RecursionError:
        raise FrameError("bad_json", "nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer literal longer than Python's digit limit
        raise FrameError("bad_json", str(e)[:200]) from None
    if not isinstance(obj, dict):
        raise FrameError("bad_json", f"top level must be an object, got {type(obj).__name__}")
    seq = obj.get("seq")
    if seq is None:
        raise FrameError("bad_index", "no \"seq\" (index of the first sample)")
    if type(seq) is not int:
        raise FrameError("bad_index", f"\"seq\" must be an integer, got {type(seq).__name__}")
    if "t" not in obj:
        raise FrameError("bad_time", "no \"t\" (device time of the first sample, s)")
    t0 = _seconds_to_us(obj["t"], "\"t\"")
    device = obj.get("device", "")
    if not isinstance(device, str):
        raise FrameError("bad_device", f"\"device\" must be a string, got {type(device).__name__}")
    if not valid_device(device):
        raise FrameError("bad_device", f"device id {device[:80]!r}: up to 64 characters of [A-Za-z0-9._:-]")
    values = obj.get("values")
    if not isinstance(values, list):
        raise FrameError("bad_type", f"\"values\" must be a list, got {type(values).__name__}")
    if not values:
        raise FrameError("bad_shape", "\"values\" is empty")
    batch = isinstance(values[0], list)
    rows: list[Any] = values if batch else [values]
    n = len(rows)
    if n > max_samples:
        raise FrameError("too_large", f"{n} samples, at most {max_samples} per payload")
    c = len(rows[0]) if batch else len(values)
    if not 1 <= c <= MAX_CHANNELS:
        raise FrameError("bad_shape", f"{c} values per sample, must be 1..{MAX_CHANNELS}")
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise FrameError("bad_shape", f"sample {i} is a {type(row).__name__}, not a list of values")
        if len(row) != c:
            raise FrameError("bad_shape", f"sample {i} has {len(row)} values, sample 0 has {c}")
        for v in row:
            if not _is_number(v):
                raise FrameError("bad_type", f"sample {i}: {type(v).__name__} {str(v)[:20]!r} is not a number")
    _check_channels(c, channels)
    if seq < 0 or seq > INT64_MAX - n:
        raise FrameError("bad_index", f"\"seq\" {seq} is outside 0..2**63-1")
    period: int | None = None
    if "dt" in obj:
        period = _seconds_to_us(obj["dt"], "\"dt\"")
        if period <= 0:
            raise FrameError("bad_time", f"\"dt\" must be > 0 (at least 1 µs), got {obj['dt']!r}")
    elif batch:
        raise FrameError("bad_time", "a batch needs \"dt\" (the sample period, s)")
    if period is not None and t0 > INT64_MAX - (n - 1) * period:
        raise FrameError("bad_time", "the last sample's time overflows int64 µs")
    try:
        with np.errstate(over="ignore"):
            data = np.array(rows, dtype=np.float64).astype(np.float32)
    except OverflowError:  # an integer beyond float64
        raise FrameError("non_finite", "a value overflows a float") from None
    if not np.isfinite(data).all():
        raise FrameError("non_finite", "a value overflows float32")
    return Frame(device, seq, t0, period, None, np.ascontiguousarray(data))


# --------------------------------------------------------------------------------------------------- CSV

def _num(tok: str, line: int) -> float:
    s = tok.strip()
    if _NUMBER.fullmatch(s):
        return float(s)
    if _NONFINITE.fullmatch(s):
        raise FrameError("non_finite", f"line {line}: {s!r}")
    raise FrameError("bad_csv", f"line {line}: {s[:20]!r} is not a number")


def encode_csv(data: npt.ArrayLike, t_us: npt.ArrayLike, layout: str = "plain") -> bytes:
    """CSV lines, one per sample (see the module docstring); `sensorstream` needs 6 channels (acc, gyro)."""
    a = _as_rows(data)
    t = np.asarray(t_us, dtype=np.int64).reshape(-1)
    if t.shape[0] != a.shape[0]:
        raise ValueError(f"{a.shape[0]} samples but {t.shape[0]} times")
    if layout not in CSV_LAYOUTS:
        raise ValueError(f"layout must be one of {CSV_LAYOUTS}, got {layout!r}")
    if layout == "sensorstream" and a.shape[1] != 6:
        raise ValueError("sensorstream lines carry 6 values (accelerometer, gyroscope)")
    out = []
    for ti, row in zip(t.tolist(), a.astype(np.float64).tolist(), strict=True):
        sign, u = ("-" if ti < 0 else ""), abs(ti)
        ts = f"{sign}{u // 1_000_000}.{u % 1_000_000:06d}"
        vals = [repr(v) for v in row]
        if layout == "plain":
            out.append(",".join([ts, *vals]))
        else:
            out.append(", ".join([ts, "3", *vals[:3], "4", *vals[3:]]))
    return ("\n".join(out) + "\n").encode()


def _csv_time(tok: str, line: int) -> int:
    v = _num(tok, line)
    us = round(v * 1e6) if abs(v) < 9.2e12 else None
    if us is None or not INT64_MIN <= us <= INT64_MAX:
        raise FrameError("bad_time", f"line {line}: time {tok.strip()[:20]!r} s is beyond the int64 µs range")
    return int(us)


def decode_csv(datagram: bytes | bytearray | memoryview | str, layout: str, device: str, channels: int | None = None,
               *, max_samples: int = MAX_SAMPLES, max_bytes: int = MAX_BYTES) -> list[Frame]:
    """The CSV lines of one datagram as one Frame (in a list; see the module docstring); raises FrameError."""
    if layout not in CSV_LAYOUTS:
        raise FrameError("bad_csv", f"unknown CSV layout {layout!r}; known: {', '.join(CSV_LAYOUTS)}")
    if not isinstance(device, str) or not valid_device(device):
        raise FrameError("bad_device", f"device id {str(device)[:80]!r}: up to 64 characters of [A-Za-z0-9._:-]")
    text = _text(datagram, max_bytes, "CSV")
    lines = [s for s in text.splitlines() if s.strip()]
    if not lines:
        raise FrameError("bad_shape", "no CSV lines")
    if len(lines) > max_samples:
        raise FrameError("too_large", f"{len(lines)} lines, at most {max_samples} per datagram")
    times: list[int] = []
    rows: list[list[float]] = []
    width = -1
    for i, line in enumerate(lines, 1):
        toks = line.split(",")
        if layout == "plain":
            if not 2 <= len(toks) <= MAX_CHANNELS + 1:
                raise FrameError("bad_csv", f"line {i}: {len(toks)} fields, expected t and 1..{MAX_CHANNELS} values")
            if width < 0:
                width = len(toks)
            elif len(toks) != width:
                raise FrameError("bad_shape", f"line {i}: {len(toks)} fields, line 1 has {width}")
            row = [_num(s, i) for s in toks[1:]]
        else:
            if len(toks) > 4 * 32 + 1 or (len(toks) - 1) % 4:
                raise FrameError("bad_csv", f"line {i}: {len(toks)} fields; expected t then groups of a sensor "
                                            f"tag and 3 values")
            acc: list[float] | None = None
            gyr: list[float] | None = None
            for g in range(1, len(toks), 4):
                tag = toks[g].strip()
                if not _TAG.fullmatch(tag):
                    raise FrameError("bad_csv", f"line {i}: sensor tag {tag[:20]!r} is not an integer")
                vals = [_num(s, i) for s in toks[g + 1:g + 4]]
                if int(tag) == 3:
                    if acc is not None:
                        raise FrameError("bad_csv", f"line {i}: two accelerometer (3) groups")
                    acc = vals
                elif int(tag) == 4:
                    if gyr is not None:
                        raise FrameError("bad_csv", f"line {i}: two gyroscope (4) groups")
                    gyr = vals
            if acc is None or gyr is None:
                raise FrameError("bad_csv", f"line {i}: needs both accelerometer (3) and gyroscope (4) values")
            row = acc + gyr
        t = _csv_time(toks[0], i)
        if times and t < times[-1]:
            raise FrameError("bad_time", f"line {i}: time goes back ({t} µs after {times[-1]} µs)")
        times.append(t)
        rows.append(row)
    _check_channels(len(rows[0]), channels)
    with np.errstate(over="ignore"):
        data = np.array(rows, dtype=np.float64).astype(np.float32)
    if not np.isfinite(data).all():
        raise FrameError("non_finite", "a value overflows float32")
    t_us = np.array(times, dtype=np.int64)
    return [Frame(device, None, times[0], None, t_us, np.ascontiguousarray(data))]
