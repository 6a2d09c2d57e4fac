"""Event-camera files: readers (whole file or streamed in bounded memory) and writers.

    from spikeline.events.formats import read, open_reader, write
    f = read("recording.raw")                 # EventFile: events, sensor, format, path, info, imu
    with open_reader("recording.raw") as r:   # replay in bounded memory
        while len(ev := r.read(65536)):
            ...

Formats (FORMATS): Prophesee RAW EVT 2.0 ("evt2") and EVT 3.0 ("evt3"), Prophesee/N-CARS DAT ("dat"),
iniVation AEDAT 4.0 ("aedat4", events + IMU), N-MNIST 40-bit binary ("nmnist": .bin, .bs2), numpy
structured arrays ("npy", "npz") and CSV with a `t,x,y,p` header ("csv").

The format comes from the file's header when it has one (`% evt 2.0`, `% evt 3.0`, `% format EVT3;...`,
DAT's `% Version 2`, AEDAT4's `#!AER-DAT4.0`, numpy's magic), else from the extension; an explicit
`format=` that contradicts the header raises EventFormatError ("mislabelled"). The sensor size comes
from the header (`% geometry WxH`, `% format ...;height=H;width=W`, DAT `% Width`/`% Height`, AEDAT4
sizeX/sizeY), else from the camera plugin name (gen3 -> 640x480, gen4.1 -> 1280x720), else it is the
largest coordinate + 1 (info["sensor"] == "inferred"; for a streamed file this costs one extra pass).

Bad input raises EventFormatError naming the file, the byte offset and what is wrong: truncated
words/packets, unknown word types, coordinates outside the declared sensor, time going backwards
beyond what the format allows, bad magic, a DAT event size other than 8, AEDAT4 sizes or flatbuffer
offsets outside the file. Nothing is allocated from an untrusted length before it is checked against
the file size (AEDAT4 packets also have a cap on their decompressed size).

The EVT2/EVT3/DAT word decoders are compiled (spikeline._ext.evio) unless SPIKELINE_NO_EXT is set or
the extension is missing; the numpy references below (_Evt2DecoderRef, ...) give identical events,
state and errors. DECODER_BACKEND says which is in use.
"""

from __future__ import annotations

import csv as _csv
import os
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..chunk import EVENT_DTYPE, Events
from ..kernels._backend import pick_all

__all__ = [
    "DECODER_BACKEND",
    "FORMATS",
    "IMU_DTYPE",
    "EventFile",
    "EventFormatError",
    "EventReader",
    "open_reader",
    "read",
    "write",
    "write_dat",
    "write_evt2",
    "write_evt3",
    "write_npy",
]

FORMATS = ("evt2", "evt3", "dat", "aedat4", "nmnist", "npy", "npz", "csv")

# One AEDAT4 IMU sample, the fields and order of aedat's (and dv-processing's) IMU struct; t in us.
IMU_DTYPE = np.dtype([
    ("t", "<i8"), ("temperature", "<f4"),
    ("accelerometer_x", "<f4"), ("accelerometer_y", "<f4"), ("accelerometer_z", "<f4"),
    ("gyroscope_x", "<f4"), ("gyroscope_y", "<f4"), ("gyroscope_z", "<f4"),
    ("magnetometer_x", "<f4"), ("magnetometer_y", "<f4"), ("magnetometer_z", "<f4"),
])

BLOCK_BYTES = 1 << 20                 # file bytes read per step by the streamed readers
MAX_HEADER_BYTES = 1 << 20            # a Prophesee '%' header longer than this is not a header
MAX_PACKET_BYTES = 1 << 28            # AEDAT4: largest decompressed packet accepted

_EXTENSIONS = {".raw": None, ".dat": "dat", ".aedat4": "aedat4", ".bin": "nmnist", ".bs2": "nmnist",
               ".npy": "npy", ".npz": "npz", ".csv": "csv"}
# Prophesee camera plugins whose sensor size is fixed, most specific first.
_PLUGINS = (("gen41", (1280, 720)), ("gen4.1", (1280, 720)), ("imx636", (1280, 720)), ("gen4", (1280, 720)),
            ("gen31", (640, 480)), ("gen3.1", (640, 480)), ("gen3", (640, 480)), ("imx8", (320, 320)))
_AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


class EventFormatError(ValueError):
    """A file is not what its format says: truncated, corrupt or mislabelled. The message says where."""


@dataclass
class EventFile:
    events: Events
    sensor: tuple[int, int]  # (width, height)
    format: str
    path: Path
    info: dict[str, str] = field(default_factory=dict)
    imu: npt.NDArray[np.void] | None = None  # IMU_DTYPE samples (AEDAT4 files with an IMU stream)


# ---------------------------------------------------------------------------------------------
# Word decoders: numpy references of spikeline._ext.evio (same interface, events, state, errors)
# ---------------------------------------------------------------------------------------------

class WordDecoder(Protocol):
    width: int
    height: int
    position: int

    @property
    def word_bytes(self) -> int: ...
    def decode(self, data: Any, out: Events) -> tuple[int, int]: ...
    def reset(self) -> None: ...
    @property
    def state(self) -> dict[str, int | bool]: ...


def _error_message(fmt: str, code: int, a: int, b: int, width: int, height: int) -> str:
    return {
        1: f"unknown {fmt} word type 0x{a:X}",
        2: f"x = {a} outside the sensor (width {width})",
        3: f"y = {a} outside the sensor (height {height})",
        4: f"time goes backwards ({b} -> {a}) beyond what {fmt} allows",
        5: f"{fmt} event before the first time base (TIME_HIGH)",
        6: f"{fmt} event before the first EVT_ADDR_Y",
        7: f"{fmt} vector event before the first VECT_BASE_X",
        8: f"polarity field {a} is not 0 or 1",
    }.get(code, f"decoder error {code}")


def _check_out(out: Any) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array of EVENT_DTYPE, got {type(out).__name__}")
    if out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable C-contiguous 1-D EVENT_DTYPE array, got {out.dtype} {out.shape}")


def _check_sensor(width: int, height: int) -> None:
    if not (0 < width <= 65536 and 0 < height <= 65536):
        raise ValueError(f"sensor size must be within 1..65536, got ({width}, {height})")


def _words(data: Any, dtype: str, word_bytes: int) -> npt.NDArray[Any]:
    buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.shape[0] // word_bytes
    return buf[: n * word_bytes].view(dtype)


def _ffill_index(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """For each position, the index (into mask.nonzero()) of the last True at or before it; -1 if none."""
    return np.cumsum(mask, dtype=np.intp) - 1


_HIBIT = np.array([max(v.bit_length() - 1, 0) for v in range(4096)], dtype=np.int64)


class _RefDecoderBase:
    _fmt = "?"
    word_bytes = 4

    def __init__(self, width: int, height: int, position: int = 0) -> None:
        _check_sensor(width, height)
        self.width = int(width)
        self.height = int(height)
        self.position = int(position)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def decode(self, data: Any, out: Events) -> tuple[int, int]:
        raise NotImplementedError

    def _fail(self, data: Any, out: Events, j: int, code: int, a: int, b: int = 0) -> None:
        # Decode the words before the bad one (state as the compiled loop leaves it), then raise.
        self.decode(np.frombuffer(data, np.uint8)[: j * self.word_bytes], out)
        raise ValueError(f"byte offset {self.position}: "
                         + _error_message(self._fmt, code, a, b, self.width, self.height))


class _Evt2DecoderRef(_RefDecoderBase):
    """numpy reference of spikeline._ext.evio.Evt2Decoder (Prophesee EVT 2.0)."""

    _fmt = "EVT 2.0"
    word_bytes = 4

    def reset(self) -> None:
        self.time_high = 0
        self.loops = 0
        self.have_time = False

    @property
    def state(self) -> dict[str, int | bool]:
        return {"time_high": self.time_high, "loops": self.loops, "have_time": self.have_time}

    @state.setter
    def state(self, value: dict[str, int | bool]) -> None:
        self.time_high = int(value["time_high"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])

    def decode(self, data: Any, out: Events) -> tuple[int, int]:
        _check_out(out)
        cap = out.shape[0]
        w = _words(data, "<u4", 4).astype(np.int64)
        if w.shape[0] == 0 or cap == 0:
            return 0, 0
        ty = w >> 28
        cd = ty <= 1
        cdpos = np.flatnonzero(cd)
        if cdpos.shape[0] > cap:
            w, ty, cd = w[: cdpos[cap]], ty[: cdpos[cap]], cd[: cdpos[cap]]
        nw = w.shape[0]
        th_w = ty == 8
        thv = w[th_w] & 0xFFFFFFF
        prev = np.concatenate(([self.time_high], thv[:-1]))
        has_prev = np.ones(thv.shape[0], dtype=bool)
        if thv.shape[0] and not self.have_time:
            has_prev[0] = False
        dec = has_prev & (thv < prev)
        wrap = dec & (prev - thv > (1 << 27))
        loops = self.loops + np.cumsum(wrap)
        base_th = ((loops << 28) | thv) << 6
        k = _ffill_index(th_w)
        base = np.where(k >= 0, base_th[np.maximum(k, 0)] if thv.shape[0] else 0,
                        ((self.loops << 28) | self.time_high) << 6)
        have = (k >= 0) | self.have_time
        x = (w >> 11) & 0x7FF
        y = w & 0x7FF
        err = np.zeros(nw, dtype=np.int8)
        known = cd | th_w | (ty == 0xA) | (ty == 0xE) | (ty == 0xF)
        err[~known] = 1
        err[cd & ~have] = 5
        err[cd & have & (y >= self.height)] = 3
        err[cd & have & (x >= self.width)] = 2
        back = np.zeros(nw, dtype=bool)
        back[th_w] = dec & ~wrap
        err[back] = 4
        bad = np.flatnonzero(err)
        if bad.shape[0]:
            j = int(bad[0])
            code = int(err[j])
            a = {1: int(ty[j]), 2: int(x[j]), 3: int(y[j])}.get(code, 0)
            b = 0
            if code == 4:
                i = int(np.cumsum(th_w)[j]) - 1
                a = int(((loops[i] << 28) | thv[i]) << 6)
                b = int(base[j - 1]) if j > 0 else int(((self.loops << 28) | self.time_high) << 6)
            self._fail(data, out, j, code, a, b)
        n = int(cd.sum())
        ev = out[:n]
        ev["t"] = (base | ((w >> 22) & 0x3F))[cd]
        ev["x"] = x[cd]
        ev["y"] = y[cd]
        ev["p"] = ty[cd]
        if thv.shape[0]:
            self.time_high = int(thv[-1])
            self.loops = int(loops[-1])
            self.have_time = True
        self.position += 4 * nw
        return n, 4 * nw


class _Evt3DecoderRef(_RefDecoderBase):
    """numpy reference of spikeline._ext.evio.Evt3Decoder (Prophesee EVT 3.0)."""

    _fmt = "EVT 3.0"
    word_bytes = 2

    def reset(self) -> None:
        self.time_high = self.time_low = self.loops = 0
        self.have_time = self.have_y = self.have_base = False
        self.y = self.base_x = self.pol = 0

    @property
    def state(self) -> dict[str, int | bool]:
        return {"time_high": self.time_high, "time_low": self.time_low, "loops": self.loops,
                "have_time": self.have_time, "have_y": self.have_y, "have_base": self.have_base,
                "y": self.y, "base_x": self.base_x, "pol": self.pol}

    @state.setter
    def state(self, value: dict[str, int | bool]) -> None:
        self.time_high = int(value["time_high"])
        self.time_low = int(value["time_low"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])
        self.have_y = bool(value["have_y"])
        self.have_base = bool(value["have_base"])
        self.y = int(value["y"])
        self.base_x = int(value["base_x"])
        self.pol = int(value["pol"])

    def decode(self, data: Any, out: Events) -> tuple[int, int]:
        _check_out(out)
        cap = out.shape[0]
        w = _words(data, "<u2", 2).astype(np.int64)
        if w.shape[0] == 0 or cap == 0:
            return 0, 0
        ty = w >> 12
        is_v = (ty == 4) | (ty == 5)
        m = np.where(ty == 4, w & 0xFFF, np.where(ty == 5, w & 0xFF, 0))
        is_x = ty == 2
        cnt = np.where(is_x, 1, np.bitwise_count(m).astype(np.int64))
        cum = np.cumsum(cnt)
        if cum[-1] > cap:
            stop = int(np.searchsorted(cum, cap, side="right"))
            w, ty, is_v, m, is_x, cnt = w[:stop], ty[:stop], is_v[:stop], m[:stop], is_x[:stop], cnt[:stop]
        nw = w.shape[0]
        is_y, is_b, is_tl, is_th = ty == 0, ty == 3, ty == 6, ty == 8
        # time
        thv = w[is_th] & 0xFFF
        prev = np.concatenate(([self.time_high], thv[:-1]))
        has_prev = np.ones(thv.shape[0], dtype=bool)
        if thv.shape[0] and not self.have_time:
            has_prev[0] = False
        dec = has_prev & (thv < prev)
        wrap = dec & (prev - thv > 2048)
        loops_th = self.loops + np.cumsum(wrap)
        kh = _ffill_index(is_th)
        kh0 = np.maximum(kh, 0)
        th = np.where(kh >= 0, thv[kh0] if thv.shape[0] else 0, self.time_high)
        loops = np.where(kh >= 0, loops_th[kh0] if thv.shape[0] else 0, self.loops)
        tlv = w[is_tl] & 0xFFF
        kl = _ffill_index(is_tl)
        tl = np.where(kl >= 0, tlv[np.maximum(kl, 0)] if tlv.shape[0] else 0, self.time_low)
        t = (loops << 24) | (th << 12) | tl
        have_t = (kh >= 0) | self.have_time
        # y, vector base and polarity
        ky = _ffill_index(is_y)
        yv = w[is_y] & 0x7FF
        y = np.where(ky >= 0, yv[np.maximum(ky, 0)] if yv.shape[0] else 0, self.y)
        have_y = (ky >= 0) | self.have_y
        width_v = np.where(ty == 4, 12, np.where(ty == 5, 8, 0))
        cw = np.cumsum(width_v)
        cw_excl = cw - width_v
        b_idx = np.flatnonzero(is_b)
        kb = _ffill_index(is_b)
        kb0 = np.maximum(kb, 0)
        if b_idx.shape[0]:
            bval = w[b_idx] & 0x7FF
            bx = np.where(kb >= 0, bval[kb0] + cw_excl - cw_excl[b_idx][kb0], self.base_x + cw_excl)
            pol = np.where(kb >= 0, ((w[b_idx] >> 11) & 1)[kb0], self.pol)
        else:
            bx = self.base_x + cw_excl
            pol = np.full(nw, self.pol, dtype=np.int64)
        have_b = (kb >= 0) | self.have_base
        # errors, in the compiled loop's order for each word
        ev_w = is_x | (is_v & (m != 0))
        hib = _HIBIT[m]
        err = np.zeros(nw, dtype=np.int8)
        known = is_x | is_v | is_y | is_b | is_tl | is_th | (ty == 7) | (ty == 0xA) | (ty == 0xE) | (ty == 0xF)
        err[~known] = 1
        err[ev_w & (y >= self.height)] = 3
        err[is_x & ((w & 0x7FF) >= self.width)] = 2
        err[is_v & (m != 0) & (bx + hib >= self.width)] = 2
        err[ev_w & ~have_y] = 6
        err[ev_w & ~have_t] = 5
        err[is_v & ~have_b] = 7
        back = np.zeros(nw, dtype=bool)
        back[is_th] = dec & ~wrap
        err[back] = 4
        bad = np.flatnonzero(err)
        if bad.shape[0]:
            j = int(bad[0])
            code = int(err[j])
            a, b = 0, 0
            if code == 1:
                a = int(ty[j])
            elif code == 2:
                a = int(w[j] & 0x7FF) if is_x[j] else int(bx[j] + hib[j])
            elif code == 3:
                a = int(y[j])
            elif code == 4:
                i = int(np.cumsum(is_th)[j]) - 1
                a = int((int(loops_th[i]) << 24) | (int(thv[i]) << 12) | int(tl[j]))
                b = int(t[j - 1]) if j > 0 else (self.loops << 24) | (self.time_high << 12) | self.time_low
            self._fail(data, out, j, code, a, b)
        n = int(cnt.sum())
        ev = out[:n]
        ev_word = np.repeat(np.arange(nw), cnt)
        vec_ev = is_v[ev_word]
        xs = np.empty(n, dtype=np.int64)
        ps = np.empty(n, dtype=np.int64)
        xs[~vec_ev] = (w & 0x7FF)[is_x]
        ps[~vec_ev] = ((w >> 11) & 1)[is_x]
        vw = np.flatnonzero(is_v)
        rows, ks = np.nonzero((m[vw][:, None] >> np.arange(12)) & 1)
        xs[vec_ev] = bx[vw][rows] + ks
        ps[vec_ev] = pol[vw][rows]
        ev["t"] = t[ev_word]
        ev["x"] = xs
        ev["y"] = y[ev_word]
        ev["p"] = ps
        # state after the last word
        if thv.shape[0]:
            self.time_high = int(thv[-1])
            self.loops = int(loops_th[-1])
            self.have_time = True
        if tlv.shape[0]:
            self.time_low = int(tlv[-1])
        if yv.shape[0]:
            self.y = int(yv[-1])
            self.have_y = True
        self.base_x = int(bx[-1] + width_v[-1])
        self.pol = int(pol[-1])
        self.have_base = bool(have_b[-1])
        self.position += 2 * nw
        return n, 2 * nw


class _DatDecoderRef(_RefDecoderBase):
    """numpy reference of spikeline._ext.evio.DatDecoder (Prophesee DAT CD records)."""

    _fmt = "DAT"
    word_bytes = 8

    def reset(self) -> None:
        self.last_t32 = 0
        self.loops = 0
        self.have_time = False

    @property
    def state(self) -> dict[str, int | bool]:
        return {"last_t32": self.last_t32, "loops": self.loops, "have_time": self.have_time}

    @state.setter
    def state(self, value: dict[str, int | bool]) -> None:
        self.last_t32 = int(value["last_t32"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])

    def decode(self, data: Any, out: Events) -> tuple[int, int]:
        _check_out(out)
        r = _words(data, "<u4", 8).astype(np.int64)
        nw = min(r.shape[0] // 2, out.shape[0])
        if nw == 0:
            return 0, 0
        ts, w = r[0 : 2 * nw : 2], r[1 : 2 * nw : 2]
        prev = np.concatenate(([self.last_t32], ts[:-1]))
        has_prev = np.ones(nw, dtype=bool)
        has_prev[0] = self.have_time
        dec = has_prev & (ts < prev)
        wrap = dec & (prev - ts > (1 << 31))
        loops = self.loops + np.cumsum(wrap)
        x, y, p = w & 0x3FFF, (w >> 14) & 0x3FFF, w >> 28
        err = np.zeros(nw, dtype=np.int8)
        err[p > 1] = 8
        err[y >= self.height] = 3
        err[x >= self.width] = 2
        err[dec & ~wrap] = 4
        bad = np.flatnonzero(err)
        if bad.shape[0]:
            j = int(bad[0])
            code = int(err[j])
            a = {2: int(x[j]), 3: int(y[j]), 8: int(p[j])}.get(code, 0)
            b = 0
            if code == 4:
                a = (int(loops[j]) << 32) | int(ts[j])
                lp = int(loops[j - 1]) if j > 0 else self.loops
                b = (lp << 32) | int(prev[j])
            self._fail(data, out, j, code, a, b)
        ev = out[:nw]
        ev["t"] = (loops << 32) | ts
        ev["x"] = x
        ev["y"] = y
        ev["p"] = p
        self.last_t32 = int(ts[-1])
        self.loops = int(loops[-1])
        self.have_time = True
        self.position += 8 * nw
        return nw, 8 * nw


if TYPE_CHECKING:
    _Evt2Decoder: Any
    _Evt3Decoder: Any
    _DatDecoder: Any
    DECODER_BACKEND: Literal["ext", "numpy"]
else:
    _impls, DECODER_BACKEND = pick_all("spikeline._ext.evio", {
        "Evt2Decoder": _Evt2DecoderRef, "Evt3Decoder": _Evt3DecoderRef, "DatDecoder": _DatDecoderRef})
    _Evt2Decoder, _Evt3Decoder, _DatDecoder = (
        _impls["Evt2Decoder"], _impls["Evt3Decoder"], _impls["DatDecoder"])

_WORD_DECODERS = {"evt2": lambda: _Evt2Decoder, "evt3": lambda: _Evt3Decoder, "dat": lambda: _DatDecoder}
_MAX_COORD = {"evt2": 2048, "evt3": 2048, "dat": 16384}


def word_decoder(fmt: str, sensor: tuple[int, int], position: int = 0) -> WordDecoder:
    """The word decoder of `fmt` ("evt2", "evt3", "dat") for a (width, height) sensor."""
    try:
        cls = _WORD_DECODERS[fmt]()
    except KeyError:
        raise ValueError(f"no word decoder for format {fmt!r}; one of {sorted(_WORD_DECODERS)}") from None
    dec: WordDecoder = cls(sensor[0], sensor[1], position)
    return dec


# ---------------------------------------------------------------------------------------------
# Headers and format detection
# ---------------------------------------------------------------------------------------------

def _prophesee_header(head: bytes) -> tuple[dict[str, str], int] | None:
    """Fields of a '%' header at the start of `head` and where the data starts, or None."""
    if not head.startswith(b"%"):
        return None
    info: dict[str, str] = {}
    pos = 0
    while pos < len(head) and head[pos : pos + 1] == b"%":
        end = head.find(b"\n", pos)
        if end < 0:
            return None  # the header does not end within the bytes read
        line = head[pos + 1 : end].decode("latin-1").strip()
        pos = end + 1
        if line == "end":
            break
        if line.startswith("Data file containing"):
            info.setdefault("description", line)
            continue
        key, _, value = line.partition(" ")
        if key and key not in info:
            info[key] = value.strip()
    return info, pos


def _header_format(info: dict[str, str]) -> str | None:
    fmt = info.get("format", "").split(";")[0].strip().upper()
    evt = info.get("evt", "").strip()
    if fmt:
        return {"EVT2": "evt2", "EVT3": "evt3"}.get(fmt, "unsupported:" + fmt)
    if evt:
        return {"2.0": "evt2", "3.0": "evt3"}.get(evt, "unsupported:EVT " + evt)
    if "Version" in info or "description" in info or "Height" in info:
        return "dat"
    return None


def _sniff(path: Path) -> tuple[str | None, dict[str, str], int]:
    """(format the file's own bytes say, header fields, data start) without trusting the name."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        if head.startswith(b"%") and len(head) == 1 << 16:
            head += fh.read(MAX_HEADER_BYTES - len(head))
    if head.startswith(_AEDAT4_MAGIC[:12]):
        return "aedat4", {}, 0
    if head.startswith(b"\x93NUMPY"):
        return "npy", {}, 0
    if head.startswith(b"PK\x03\x04"):
        return "npz", {}, 0
    hdr = _prophesee_header(head)
    if hdr is None:
        if head.startswith(b"%") and len(head) == MAX_HEADER_BYTES:
            raise EventFormatError(f"{path}: '%' header longer than {MAX_HEADER_BYTES} bytes")
        return None, {}, 0
    info, start = hdr
    return _header_format(info), info, start


def _resolve_format(path: Path, format: str | None) -> tuple[str, dict[str, str], int]:
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown event file format {format!r}; one of {', '.join(FORMATS)}")
    said, info, start = _sniff(path)
    if said is not None and said.startswith("unsupported:"):
        raise EventFormatError(f"{path}: unsupported Prophesee encoding {said.split(':', 1)[1]!r} "
                               "(EVT 2.0 and EVT 3.0 are supported)")
    if format is not None:
        if said is not None and said != format:
            raise EventFormatError(f"{path}: mislabelled: format={format!r} but the file's header says {said!r}")
        return format, info, start
    if said is not None:
        return said, info, start
    ext = path.suffix.lower()
    if ext == ".raw":
        raise EventFormatError(f"{path}: a .raw file needs a Prophesee header with '% evt 2.0' or '% evt 3.0' "
                               "(or pass format='evt2' / 'evt3')")
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        raise EventFormatError(f"{path}: unknown event file format (extension {ext!r}, no header); pass format=")
    return fmt, info, start


def _header_sensor(info: dict[str, str]) -> tuple[tuple[int, int] | None, str]:
    geometry = info.get("geometry", "")
    if geometry:
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", geometry)
        if m:
            return (int(m.group(1)), int(m.group(2))), "header"
    fields = dict(kv.split("=", 1) for kv in info.get("format", "").split(";")[1:] if "=" in kv)
    if "width" in fields and "height" in fields and fields["width"].isdigit() and fields["height"].isdigit():
        return (int(fields["width"]), int(fields["height"])), "header"
    if info.get("Width", "").isdigit() and info.get("Height", "").isdigit():
        return (int(info["Width"]), int(info["Height"])), "header"
    plugin = info.get("plugin_name", "").lower()
    for key, size in _PLUGINS:
        if key in plugin:
            return size, "plugin"
    return None, "inferred"


# ---------------------------------------------------------------------------------------------
# Streamed readers
# ---------------------------------------------------------------------------------------------

class EventReader:
    """Events of one file, read in pieces of bounded size. `read(max_events)` returns the next at most
    max_events events (an empty array at the end of the file); `.sensor`, `.format`, `.info`, `.path`."""

    sensor: tuple[int, int]
    format: str
    info: dict[str, str]
    path: Path

    def read(self, max_events: int = 1 << 20) -> Events:
        raise NotImplementedError

    def imu(self) -> npt.NDArray[np.void] | None:
        """IMU samples passed over so far (AEDAT4 files with an IMU stream), else None."""
        return None

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Events]:
        while len(ev := self.read()):
            yield ev

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _check_max(max_events: int) -> int:
    if int(max_events) < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    return int(max_events)


class _WordReader(EventReader):
    """EVT2 / EVT3 / DAT: the file's bytes through a stateful word decoder, BLOCK_BYTES at a time."""

    def __init__(self, path: Path, fmt: str, sensor: tuple[int, int], info: dict[str, str], start: int,
                 block_bytes: int = BLOCK_BYTES) -> None:
        self.path, self.format, self.sensor, self.info = path, fmt, sensor, info
        self._fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._fh.seek(start)
        self._dec = word_decoder(fmt, sensor, start)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._block = block_bytes
        self._ready: list[Events] = []
        self._ready_n = 0

    def _step(self, room: int) -> bool:
        """Decode what the buffer holds into at most `room` (>= 12) events, or read the next block;
        False at the end of the file."""
        wb = self._dec.word_bytes
        if len(self._buf) - self._pos < wb:
            if self._eof or self._fh is None:
                rest = len(self._buf) - self._pos
                if rest:
                    raise EventFormatError(
                        f"{self.path}: byte offset {self._dec.position}: truncated trailing {self.format} word "
                        f"({rest} of {wb} bytes)")
                return False
            block = self._fh.read(self._block)
            if not block:
                self._eof = True
            self._buf = self._buf[self._pos :] + block
            self._pos = 0
            return True
        out = np.empty(room, dtype=EVENT_DTYPE)
        try:
            k, c = self._dec.decode(memoryview(self._buf)[self._pos :], out)
        except ValueError as exc:
            raise EventFormatError(f"{self.path}: {exc}") from None
        self._pos += c
        if k:
            self._ready.append(out[:k] if 2 * k >= room else out[:k].copy())
            self._ready_n += k
        return True

    def read_all(self) -> Events:
        """Every remaining event in one array: the rest of the file in memory, one decode call into an
        output sized by the word count (EVT2, DAT: an exact bound; EVT3: grown when vectors need more)."""
        if self._fh is None:
            return np.empty(0, dtype=EVENT_DTYPE)
        data = self._buf[self._pos :] + self._fh.read()
        self._buf, self._pos, self._eof = b"", 0, True
        wb = self._dec.word_bytes
        out = np.empty(max(len(data) // wb, 16), dtype=EVENT_DTYPE)
        n = pos = 0
        mv = memoryview(data)
        while len(data) - pos >= wb:
            try:
                k, c = self._dec.decode(mv[pos:], out[n:])
            except ValueError as exc:
                raise EventFormatError(f"{self.path}: {exc}") from None
            n += k
            pos += c
            if len(data) - pos >= wb:  # stopped for room only
                grown = np.empty(2 * out.shape[0], dtype=EVENT_DTYPE)
                grown[:n] = out[:n]
                out = grown
        if len(data) - pos:
            raise EventFormatError(f"{self.path}: byte offset {self._dec.position}: truncated trailing "
                                   f"{self.format} word ({len(data) - pos} of {wb} bytes)")
        events = out[:n] if 2 * n >= out.shape[0] else out[:n].copy()
        if self._ready:
            events = np.concatenate([*self._ready, events])
            self._ready, self._ready_n = [], 0
        return events

    def read(self, max_events: int = 1 << 20) -> Events:
        cap = _check_max(max_events)
        # decode into pieces of >= 4096 events (an EVT3 vector word is up to 12 events), hand out `cap`
        while self._ready_n < cap and self._step(max(cap - self._ready_n, 4096)):
            pass
        if not self._ready:
            return np.empty(0, dtype=EVENT_DTYPE)
        allev = np.concatenate(self._ready) if len(self._ready) > 1 else self._ready[0]
        out, rest = allev[:cap], allev[cap:]
        self._ready = [rest] if len(rest) else []
        self._ready_n = len(rest)
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _NmnistReader(EventReader):
    """N-MNIST 40-bit events: x, y, p (bit 7) and a 23-bit time; y == 240 marks a time overflow (+2^13 us)."""

    def __init__(self, path: Path, info: dict[str, str]) -> None:
        self.path, self.format, self.sensor, self.info = path, "nmnist", (34, 34), info
        self._fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._offset = 0
        self._overflows = 0
        self._last_t = -1
        self._size = os.fstat(self._fh.fileno()).st_size

    def read(self, max_events: int = 1 << 20) -> Events:
        cap = _check_max(max_events)
        if self._fh is None:
            return np.empty(0, dtype=EVENT_DTYPE)
        raw = self._fh.read(min(5 * cap, max(self._size - self._offset, 0)) or 5 * cap)
        if len(raw) % 5:
            raise EventFormatError(
                f"{self.path}: byte offset {self._offset + len(raw) // 5 * 5}: truncated trailing N-MNIST "
                f"event ({len(raw) % 5} of 5 bytes)")
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 5)
        x, y = b[:, 0], b[:, 1]
        ovf = y == 240
        n_ovf = int(np.count_nonzero(ovf))
        t = ((b[:, 2] & 0x7F).astype(np.int64) << 16) | (b[:, 3].astype(np.int64) << 8) | b[:, 4]
        if n_ovf or self._overflows:
            t += (self._overflows + np.cumsum(ovf)) * 8192
        bad = np.flatnonzero(~ovf & ((x >= 34) | (y >= 34)))
        if bad.shape[0]:
            j = int(bad[0])
            what = f"x = {x[j]}" if x[j] >= 34 else f"y = {y[j]}"
            raise EventFormatError(f"{self.path}: byte offset {self._offset + 5 * j}: {what} outside the 34x34 "
                                   "N-MNIST sensor")
        if n_ovf:
            keep = ~ovf
            t, x, y, pb = t[keep], x[keep], y[keep], b[keep, 2]
        else:
            pb = b[:, 2]
        if t.shape[0]:
            back = np.flatnonzero(t[1:] < t[:-1])
            if t[0] < self._last_t or back.shape[0]:
                k = 0 if t[0] < self._last_t else int(back[0]) + 1
                prev = self._last_t if k == 0 else int(t[k - 1])
                j = int(np.flatnonzero(~ovf)[k])
                raise EventFormatError(f"{self.path}: byte offset {self._offset + 5 * j}: time goes backwards "
                                       f"({prev} -> {int(t[k])}) in an N-MNIST file")
            self._last_t = int(t[-1])
        self._offset += len(raw)
        self._overflows += n_ovf
        ev = np.empty(t.shape[0], dtype=EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, pb >> 7
        if len(raw) < 5 * cap or self._offset >= self._size:
            self.close()
        return ev

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _to_events(arr: npt.NDArray[Any], where: str, sensor: tuple[int, int] | None) -> Events:
    """EVENT_DTYPE copy of a structured array with t, x, y, p fields of integer or bool dtypes."""
    names = arr.dtype.names or ()
    cols: dict[str, npt.NDArray[Any]] = {}
    for name in ("t", "x", "y", "p"):
        if name not in names:
            raise EventFormatError(f"{where}: structured array without a {name!r} field (fields: {names})")
        col = arr[name]
        if col.dtype.kind not in "iub":
            raise EventFormatError(f"{where}: field {name!r} has dtype {col.dtype}; integers or bool expected")
        cols[name] = col
    n = arr.shape[0]
    ev = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return ev
    t = cols["t"]
    if t.dtype.kind == "u" and t.dtype.itemsize == 8 and int(t.max()) > np.iinfo(np.int64).max:
        raise EventFormatError(f"{where}: t = {int(t.max())} does not fit int64 microseconds")
    for name, limit in (("x", 65536 if sensor is None else sensor[0]), ("y", 65536 if sensor is None else sensor[1])):
        c = cols[name]
        if c.dtype.kind != "b" and (int(c.min()) < 0 or int(c.max()) >= limit):
            bad = int(np.flatnonzero((c < 0) | (c >= limit))[0])
            raise EventFormatError(f"{where}: event {bad}: {name} = {int(c[bad])} outside the sensor (0..{limit - 1})")
    p = cols["p"]
    if p.dtype.kind != "b":
        ok = (p == 0) | (p == 1) | (p == -1) if p.dtype.kind == "i" else (p <= 1)
        if not bool(ok.all()):
            bad = int(np.flatnonzero(~ok)[0])
            raise EventFormatError(f"{where}: event {bad}: polarity {int(p[bad])} is not 0/1 (or -1/1)")
    ev["t"] = t
    ev["x"] = cols["x"]
    ev["y"] = cols["y"]
    ev["p"] = p > 0
    return ev


def _infer_from_columns(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> tuple[int, int]:
    if x.shape[0] == 0:
        return (1, 1)
    return (int(x.max()) + 1, int(y.max()) + 1)


class _ArrayReader(EventReader):
    """npy (memory-mapped), npz and csv: slices of an array converted to EVENT_DTYPE on the way out."""

    def __init__(self, path: Path, fmt: str, arr: npt.NDArray[Any], sensor: tuple[int, int] | None,
                 info: dict[str, str]) -> None:
        self.path, self.format, self.info = path, fmt, info
        self._arr: npt.NDArray[Any] | None = arr
        self._i = 0
        if sensor is None:
            for name in ("x", "y"):
                if arr.dtype.names is None or name not in arr.dtype.names:
                    raise EventFormatError(f"{path}: structured array without a {name!r} field")
            sensor = _infer_from_columns(arr["x"], arr["y"]) if arr.shape[0] else (1, 1)
            if sensor[0] > 65536 or sensor[1] > 65536 or min(sensor) < 1:
                raise EventFormatError(f"{path}: coordinates outside 0..65535")
            self.info["sensor"] = "inferred"
        self.sensor = sensor

    def read(self, max_events: int = 1 << 20) -> Events:
        cap = _check_max(max_events)
        if self._arr is None:
            return np.empty(0, dtype=EVENT_DTYPE)
        part = self._arr[self._i : self._i + cap]
        ev = _to_events(np.asarray(part), f"{self.path} (from event {self._i})", self.sensor)
        self._i += part.shape[0]
        return ev

    def close(self) -> None:
        self._arr = None


def _open_npy(path: Path, fmt: str) -> _ArrayReader:
    info: dict[str, str] = {}
    sensor: tuple[int, int] | None = None
    try:
        if fmt == "npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            # our own file handle: numpy leaks its own when the zip is corrupt
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "events" if "events" in keys else next((k for k in keys if z[k].dtype.names), None)
                if key is None:
                    raise EventFormatError(f"{path}: no structured array with t, x, y, p in the .npz ({keys})")
                arr = z[key]
                if "sensor" in keys:
                    s = np.asarray(z["sensor"]).ravel()
                    if s.shape != (2,) or s.dtype.kind not in "iu":
                        raise EventFormatError(f"{path}: 'sensor' must be two integers (width, height)")
                    sensor = (int(s[0]), int(s[1]))
                    _check_sensor(*sensor)
                    info["sensor"] = "header"
    except EventFormatError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise EventFormatError(f"{path}: not a readable {fmt} file: {exc}") from None
    if arr.ndim != 1 or arr.dtype.names is None:
        raise EventFormatError(f"{path}: expected a 1-D structured array with t, x, y, p; got {arr.dtype} {arr.shape}")
    for name in ("t", "x", "y", "p"):
        if name not in arr.dtype.names:
            raise EventFormatError(f"{path}: structured array without a {name!r} field (fields: {arr.dtype.names})")
        if arr.dtype[name].kind not in "iub":
            raise EventFormatError(f"{path}: field {name!r} has dtype {arr.dtype[name]}; integers or bool expected")
    return _ArrayReader(path, fmt, arr, sensor, info)


def _open_csv(path: Path) -> _ArrayReader:
    dt = np.dtype([("t", "<i8"), ("x", "<i8"), ("y", "<i8"), ("p", "<i8")])
    rows: list[tuple[int, int, int, int]] = []
    try:
        return _read_csv_rows(path, dt, rows)
    except UnicodeDecodeError as exc:
        raise EventFormatError(f"{path}: byte offset {exc.start}: not UTF-8 text") from None
    except _csv.Error as exc:
        raise EventFormatError(f"{path}: not a CSV file: {exc}") from None


def _read_csv_rows(path: Path, dt: np.dtype[Any], rows: list[tuple[int, int, int, int]]) -> _ArrayReader:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = _csv.reader(fh)
        header = next(reader, None)
        names = [h.strip().lower() for h in header] if header else []
        if sorted(names) != ["p", "t", "x", "y"]:
            raise EventFormatError(f"{path}: line 1: a CSV event file starts with the header 't,x,y,p', got {header}")
        order = [names.index(k) for k in ("t", "x", "y", "p")]
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise EventFormatError(f"{path}: line {lineno}: {len(row)} fields, 4 expected")
            try:
                vals = [int(row[i]) for i in order]
            except ValueError:
                raise EventFormatError(f"{path}: line {lineno}: not integers: {row}") from None
            rows.append((vals[0], vals[1], vals[2], vals[3]))
    try:
        arr = np.array(rows, dtype=dt)
    except OverflowError:
        raise EventFormatError(f"{path}: a value does not fit int64") from None
    return _ArrayReader(path, "csv", arr, None, {})


# ---------------------------------------------------------------------------------------------
# AEDAT 4.0
# ---------------------------------------------------------------------------------------------

_AEDAT_EVENT = np.dtype({"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"],
                         "offsets": [0, 8, 10, 12], "itemsize": 16})


class _FlatBuffer:
    """Just enough flatbuffers to read tables of scalars, strings and vectors, every offset checked."""

    def __init__(self, buf: bytes | memoryview, where: str) -> None:
        self.buf = buf
        self.where = where

    def _err(self, what: str) -> EventFormatError:
        return EventFormatError(f"{self.where}: flatbuffer offset out of range ({what})")

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.buf):
            raise self._err(f"u32 at {pos} of {len(self.buf)} bytes")
        return int(struct.unpack_from("<I", self.buf, pos)[0])

    def root(self) -> int:
        return self.u32(0)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` of the table at `table`, or None when absent."""
        soff = struct.unpack("<i", struct.pack("<I", self.u32(table)))[0]
        vt = table - soff
        if vt < 0 or vt + 4 > len(self.buf):
            raise self._err(f"vtable at {vt}")
        vt_size = struct.unpack_from("<H", self.buf, vt)[0]
        if vt_size < 4 or vt + vt_size > len(self.buf):
            raise self._err(f"vtable size {vt_size} at {vt}")
        entry = 4 + 2 * index
        if entry + 2 > vt_size:
            return None
        off = int(struct.unpack_from("<H", self.buf, vt + entry)[0])
        if off == 0:
            return None
        if table + off >= len(self.buf):
            raise self._err(f"field {index} at {table + off}")
        return table + off

    def scalar(self, table: int, index: int, fmt: str, default: int) -> int:
        pos = self.field(table, index)
        if pos is None:
            return default
        if pos + struct.calcsize(fmt) > len(self.buf):
            raise self._err(f"scalar field {index} at {pos}")
        return int(struct.unpack_from("<" + fmt, self.buf, pos)[0])

    def vector(self, table: int, index: int, item: int) -> tuple[int, int]:
        """(start, length) of a vector field with `item`-byte elements; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = pos + self.u32(pos)
        n = self.u32(vec)
        if vec + 4 + n * item > len(self.buf):
            raise self._err(f"vector of {n} x {item} bytes at {vec} in {len(self.buf)} bytes")
        return vec + 4, n

    def string(self, table: int, index: int) -> str:
        start, n = self.vector(table, index, 1)
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")


def _aedat_streams(xml: str) -> dict[int, dict[str, str]]:
    streams: dict[int, dict[str, str]] = {}
    starts = list(re.finditer(r'<node name="(\d+)" path="[^"]*/outInfo/\d+/">', xml))
    for k, m in enumerate(starts):
        body = xml[m.end() : starts[k + 1].start() if k + 1 < len(starts) else len(xml)]
        attrs = dict(re.findall(r'<attr key="(\w+)" type="\w+">([^<]*)</attr>', body))
        streams[int(m.group(1))] = attrs
    return streams


class _Aedat4Reader(EventReader):
    """AEDAT 4.0: IOHeader flatbuffer, then packets [int32 stream id, int32 size, (compressed) flatbuffer]."""

    def __init__(self, path: Path, fmt_info: dict[str, str]) -> None:
        self.path, self.format, self.info = path, "aedat4", dict(fmt_info)
        self._size = os.path.getsize(path)
        self._fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 (closed by close())
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise
        self._pending: list[Events] = []
        self._pending_n = 0
        self._imu: list[npt.NDArray[np.void]] = []
        self._imu_raw: list[tuple[bytes, int, int, int]] = []
        self._last_t: int | None = None

    def _read_header(self) -> None:
        assert self._fh is not None
        magic = self._fh.read(len(_AEDAT4_MAGIC))
        if magic != _AEDAT4_MAGIC:
            raise EventFormatError(f"{self.path}: byte offset 0: bad magic {magic[:16]!r}, expected {_AEDAT4_MAGIC!r}")
        raw = self._fh.read(4)
        if len(raw) < 4:
            raise EventFormatError(f"{self.path}: byte offset 14: truncated IOHeader size")
        hsize = struct.unpack("<i", raw)[0]
        if hsize <= 0 or 18 + hsize > self._size:
            raise EventFormatError(f"{self.path}: byte offset 14: IOHeader size {hsize} beyond the file "
                                   f"({self._size} bytes)")
        fb = _FlatBuffer(self._fh.read(hsize), f"{self.path}: IOHeader at byte offset 18")
        root = fb.root()
        compression = fb.scalar(root, 0, "i", 0)
        self._table_pos = fb.scalar(root, 1, "q", -1)
        xml = fb.string(root, 2)
        names = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}
        if compression not in names:
            raise EventFormatError(f"{self.path}: IOHeader: unknown compression type {compression}")
        self._compression = names[compression]
        self._start = 18 + hsize
        self._pos = self._start
        self._end = self._table_pos if self._start <= self._table_pos <= self._size else self._size
        streams = _aedat_streams(xml)
        self.streams = streams
        ev_ids = [sid for sid, a in streams.items() if a.get("typeIdentifier") == "EVTS"]
        imu_ids = [sid for sid, a in streams.items() if a.get("typeIdentifier") == "IMUS"]
        if not ev_ids:
            raise EventFormatError(f"{self.path}: no event stream (typeIdentifier EVTS) in the IOHeader")
        self._ev_id = ev_ids[0]
        self._imu_id = imu_ids[0] if imu_ids else None
        a = streams[self._ev_id]
        sx, sy = a.get("sizeX", ""), a.get("sizeY", "")
        self.info.update({"compression": self._compression, "event_stream": str(self._ev_id),
                          "streams": ",".join(f"{k}:{v.get('typeIdentifier', '?')}" for k, v in streams.items())})
        if "source" in a:
            self.info["source"] = a["source"]
        if "tsOffset" in a:
            self.info["tsOffset"] = a["tsOffset"]
        if sx.isdigit() and sy.isdigit() and 0 < int(sx) <= 65536 and 0 < int(sy) <= 65536:
            self.sensor = (int(sx), int(sy))
            self.info["sensor"] = "header"
        else:
            raise EventFormatError(f"{self.path}: IOHeader: event stream {self._ev_id} without sizeX/sizeY")
        if self._compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise EventFormatError(f"{self.path}: packets are ZSTD-compressed; install the 'zstandard' package "
                                       "to read this file") from None

    def _decompress(self, data: bytes, at: int) -> bytes:
        if self._compression == "none":
            return data
        try:
            if self._compression == "lz4":
                import lz4.frame

                # LZ4 expands at most ~255x: that bound (capped) is also a cheap output allocation
                d = lz4.frame.LZ4FrameDecompressor()
                out = d.decompress(data, max_length=min(MAX_PACKET_BYTES, 256 * len(data) + 1024))
                if not d.eof:
                    raise EventFormatError(
                        f"{self.path}: byte offset {at}: LZ4 packet incomplete or larger than "
                        f"{MAX_PACKET_BYTES} bytes decompressed")
                return bytes(out)
            import zstandard

            zd = zstandard.ZstdDecompressor().decompressobj()
            out = zd.decompress(data)
            if len(out) > MAX_PACKET_BYTES or not zd.eof:
                raise EventFormatError(f"{self.path}: byte offset {at}: ZSTD packet incomplete or too large")
            return bytes(out)
        except EventFormatError:
            raise
        except Exception as exc:  # lz4/zstandard raise their own error types on corrupt frames
            raise EventFormatError(f"{self.path}: byte offset {at}: corrupt {self._compression} packet: {exc}") from None

    def _next_packet(self) -> bool:
        """Read one packet; False at the end of the packets."""
        if self._fh is None or self._pos >= self._end:
            return False
        at = self._pos
        if at + 8 > self._end:
            raise EventFormatError(f"{self.path}: byte offset {at}: truncated packet header "
                                   f"({self._end - at} of 8 bytes)")
        self._fh.seek(at)
        sid, size = struct.unpack("<ii", self._fh.read(8))
        if size <= 0 or at + 8 + size > self._end:
            raise EventFormatError(f"{self.path}: byte offset {at}: packet size {size} beyond the file "
                                   f"(stream {sid}, {self._end - at - 8} bytes left)")
        if sid not in self.streams:
            raise EventFormatError(f"{self.path}: byte offset {at}: packet of stream {sid}, which the IOHeader "
                                   f"does not declare ({sorted(self.streams)})")
        self._pos = at + 8 + size
        if sid != self._ev_id and sid != self._imu_id:
            return True
        full = self._decompress(self._fh.read(size), at + 8)
        # packets are size-prefixed flatbuffers: uint32 size, then the buffer
        if len(full) < 8 or struct.unpack_from("<I", full, 0)[0] != len(full) - 4:
            raise EventFormatError(f"{self.path}: packet at byte offset {at}: flatbuffer size prefix does not "
                                   f"match the {len(full)}-byte packet")
        body = memoryview(full)[4:]
        fb = _FlatBuffer(body, f"{self.path}: packet at byte offset {at}")
        root = fb.root()
        if sid == self._ev_id:
            start, n = fb.vector(root, 0, 16)
            arr = np.frombuffer(body, dtype=_AEDAT_EVENT, count=n, offset=start) if n else \
                np.empty(0, _AEDAT_EVENT)
            x, y, t = arr["x"], arr["y"], arr["t"]
            bad = np.flatnonzero((x < 0) | (x >= self.sensor[0]) | (y < 0) | (y >= self.sensor[1]))
            if bad.shape[0]:
                j = int(bad[0])
                raise EventFormatError(f"{self.path}: packet at byte offset {at}: event {j}: ({int(x[j])}, "
                                       f"{int(y[j])}) outside the {self.sensor[0]}x{self.sensor[1]} sensor")
            if n:
                prev = np.concatenate(([t[0] if self._last_t is None else self._last_t], t[:-1]))
                back = np.flatnonzero(t < prev)
                if back.shape[0]:
                    j = int(back[0])
                    raise EventFormatError(f"{self.path}: packet at byte offset {at}: event {j}: time goes "
                                           f"backwards ({int(prev[j])} -> {int(t[j])})")
                self._last_t = int(t[-1])
            ev = np.empty(n, dtype=EVENT_DTYPE)
            ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, arr["on"] != 0
            self._pending.append(ev)
            self._pending_n += n
        else:
            # IMUPacket.elements: a vector of IMU tables; parsed later, all packets at once (imu())
            start, n = fb.vector(root, 0, 4)
            if n:
                self._imu_raw.append((bytes(body), start, n, at))
        return True

    def read(self, max_events: int = 1 << 20) -> Events:
        cap = _check_max(max_events)
        while self._pending_n < cap and self._next_packet():
            pass
        if not self._pending:
            return np.empty(0, dtype=EVENT_DTYPE)
        allev = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        out, rest = allev[:cap], allev[cap:]
        self._pending = [rest] if len(rest) else []
        self._pending_n = len(rest)
        return out

    def _parse_imu(self) -> None:
        """IMU tables (fields in IMU_DTYPE order, absent = 0) of the packets read so far, with one
        bounds-checked gather per field over all of them."""
        raw, self._imu_raw = self._imu_raw, []
        if not raw:
            return
        lens = np.array([len(r[0]) for r in raw], dtype=np.int64)
        bases = np.cumsum(lens) - lens
        counts = np.array([r[2] for r in raw], dtype=np.int64)
        buf = np.frombuffer(b"".join(r[0] for r in raw), dtype=np.uint8)
        lo, hi = np.repeat(bases, counts), np.repeat(bases + lens, counts)
        where = np.repeat(np.array([r[3] for r in raw], dtype=np.int64), counts)
        first = np.repeat(bases + np.array([r[1] for r in raw], dtype=np.int64), counts)
        elem = first + 4 * (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))

        def gather(pos: npt.NDArray[np.int64], dtype: str, what: str) -> npt.NDArray[Any]:
            size = np.dtype(dtype).itemsize
            bad = (pos < lo) | (pos + size > hi)
            if bool(bad.any()):
                j = int(np.argmax(bad))
                raise EventFormatError(f"{self.path}: IMU packet at byte offset {int(where[j])}: flatbuffer offset "
                                       f"out of range ({what})")
            vals = np.ascontiguousarray(buf[pos[:, None] + np.arange(size)]).view(dtype).ravel()
            return vals.astype(np.int64) if dtype[1] in "iu" else vals

        table = elem + gather(elem, "<u4", "table offset")
        vt = table - gather(table, "<i4", "vtable offset")
        vt_size = gather(vt, "<u2", "vtable")
        imu = np.zeros(elem.shape[0], dtype=IMU_DTYPE)
        for f, name in enumerate(IMU_DTYPE.names or ()):
            entry = 4 + 2 * f
            has = entry + 2 <= vt_size
            off = np.where(has, gather(np.where(has, vt + entry, lo), "<u2", "vtable entry"), 0)
            present = off != 0
            vals = gather(np.where(present, table + off, lo), "<i8" if f == 0 else "<f4", f"field {name}")
            imu[name] = np.where(present, vals, 0)
        self._imu.append(imu)

    def imu(self) -> npt.NDArray[np.void] | None:
        if self._imu_id is None:
            return None
        self._parse_imu()
        return np.concatenate(self._imu) if self._imu else np.empty(0, dtype=IMU_DTYPE)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def _infer_word_sensor(path: Path, fmt: str, info: dict[str, str], start: int) -> tuple[int, int]:
    lim = _MAX_COORD[fmt]
    r = _WordReader(path, fmt, (lim, lim), info, start)
    mx, my = -1, -1
    try:
        while len(ev := r.read(1 << 20)):
            mx = max(mx, int(ev["x"].max()))
            my = max(my, int(ev["y"].max()))
    finally:
        r.close()
    return (max(mx + 1, 1), max(my + 1, 1))


def open_reader(path: str | os.PathLike[str], format: str | None = None) -> EventReader:
    """A streamed reader of an event file (see the module docstring for formats and errors)."""
    p = Path(path)
    fmt, info, start = _resolve_format(p, format)
    if fmt in ("evt2", "evt3", "dat"):
        if fmt == "dat":
            with open(p, "rb") as fh:
                fh.seek(start)
                two = fh.read(2)
            if len(two) < 2:
                raise EventFormatError(f"{p}: byte offset {start}: truncated DAT header (event type and size)")
            info["event_type"], info["event_size"] = str(two[0]), str(two[1])
            if two[1] != 8:
                raise EventFormatError(f"{p}: byte offset {start + 1}: DAT event size {two[1]} does not match the "
                                       "8-byte CD events this reader decodes")
            if two[0] not in (0x00, 0x0C):
                raise EventFormatError(f"{p}: byte offset {start}: DAT event type 0x{two[0]:02X} is not a CD event "
                                       "type (0x00 Event2D, 0x0C EventCD)")
            start += 2
        elif not info:
            raise EventFormatError(f"{p}: {fmt} file without a Prophesee '%' header")
        sensor, how = _header_sensor(info)
        if sensor is not None:
            try:
                _check_sensor(*sensor)
            except ValueError as exc:
                raise EventFormatError(f"{p}: header: {exc}") from None
        else:
            sensor = _infer_word_sensor(p, fmt, info, start)
        info["sensor"] = how
        return _WordReader(p, fmt, sensor, info, start)
    if fmt == "aedat4":
        return _Aedat4Reader(p, info)
    if fmt == "nmnist":
        return _NmnistReader(p, info)
    if fmt in ("npy", "npz"):
        return _open_npy(p, fmt)
    return _open_csv(p)


def read(path: str | os.PathLike[str], format: str | None = None) -> EventFile:
    """The whole file: events in file order, sensor (width, height), format, header info (and IMU)."""
    with open_reader(path, format) as r:
        if isinstance(r, _WordReader):
            events = r.read_all()
        else:
            parts = list(r)
            events = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.empty(0, EVENT_DTYPE))
        return EventFile(events, r.sensor, r.format, Path(path), r.info, r.imu())


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------

def _events_in(events: Events, sensor: tuple[int, int], max_xy: int) -> Events:
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise ValueError("events must be a 1-D EVENT_DTYPE array (spikeline.chunk.as_events builds one)")
    w, h = int(sensor[0]), int(sensor[1])
    if not (0 < w <= max_xy and 0 < h <= max_xy):
        raise ValueError(f"sensor {sensor} cannot be written in this format (1..{max_xy} per side)")
    if len(events):
        if int(events["x"].max()) >= w or int(events["y"].max()) >= h:
            raise ValueError(f"events outside the {w}x{h} sensor")
        if int(events["t"].min()) < 0:
            raise ValueError("negative event times cannot be written")
        if not bool(np.isin(events["p"], (0, 1)).all()):
            raise ValueError("polarity must be 0 or 1")
    return events


def _write_bytes(path: str | os.PathLike[str], header: bytes, body: npt.NDArray[Any]) -> None:
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.ascontiguousarray(body).tobytes())


def write_evt2(path: str | os.PathLike[str], events: Events, sensor: tuple[int, int]) -> None:
    """Prophesee EVT 2.0 RAW: a TIME_HIGH word whenever t >> 6 changes, then one CD word per event.
    Times must be < 2^34 us and non-decreasing in t >> 6 (the format's own constraint)."""
    ev = _events_in(events, sensor, 2048)
    t = ev["t"].astype(np.int64)
    th = t >> 6
    if len(ev) and (int(t.max()) >= 1 << 34 or bool((np.diff(th) < 0).any())):
        raise ValueError("EVT 2.0 needs times < 2^34 us with t >> 6 non-decreasing")
    change = np.ones(len(ev), dtype=bool)
    change[1:] = th[1:] != th[:-1]
    n = len(ev) + int(change.sum())
    words = np.empty(n, dtype="<u4")
    cd_pos = np.arange(len(ev)) + np.cumsum(change)
    words[cd_pos[change] - 1] = (8 << 28) | th[change]
    words[cd_pos] = ((ev["p"].astype(np.int64) << 28) | ((t & 0x3F) << 22)
                     | (ev["x"].astype(np.int64) << 11) | ev["y"].astype(np.int64))
    header = (f"% evt 2.0\n% format EVT2;height={sensor[1]};width={sensor[0]}\n"
              f"% geometry {sensor[0]}x{sensor[1]}\n% integrator_name spikeline\n% end\n").encode()
    _write_bytes(path, header, words)


def write_evt3(path: str | os.PathLike[str], events: Events, sensor: tuple[int, int]) -> None:
    """Prophesee EVT 3.0 RAW. Consecutive events with the same time, y and polarity whose x increase within
    one 12-pixel block become VECT_BASE_X + VECT_12 words; a lone event is an EVT_ADDR_X. EVT_TIME_HIGH,
    EVT_TIME_LOW and EVT_ADDR_Y are written when they change. Time-high steps of >= 2048 (8.4 s) get
    intermediate TIME_HIGH words so that readers unwrap the 24-bit time correctly. Times must be
    non-decreasing."""
    ev = _events_in(events, sensor, 2048)
    t = ev["t"].astype(np.int64)
    if len(ev) and bool((np.diff(t) < 0).any()):
        raise ValueError("EVT 3.0 writer needs non-decreasing times")
    x, y, p = ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["p"].astype(np.int64)
    n = len(ev)
    # groups: a new one where t, y, p or the 12-pixel block change, or x does not increase
    new = np.ones(n, dtype=bool)
    new[1:] = ((t[1:] != t[:-1]) | (y[1:] != y[:-1]) | (p[1:] != p[:-1]) | (x[1:] // 12 != x[:-1] // 12)
               | (x[1:] <= x[:-1]))
    g0 = np.flatnonzero(new)
    size = np.diff(np.append(g0, n))
    gt, gy, gp, gx = t[g0], y[g0], p[g0], x[g0]
    base = 12 * (gx // 12)
    mask = np.bitwise_or.reduceat(np.left_shift(1, x - np.repeat(base, size)), g0) if n else np.zeros(0, np.int64)
    ng = g0.shape[0]
    thf = gt >> 12  # full time high (with loops)
    prev_thf = np.concatenate(([0], thf[:-1]))
    dth = thf - prev_thf
    n_th = np.where(dth > 0, (dth + 2046) // 2047, 0)
    if ng:
        n_th[0] = max(int(n_th[0]), 1)
    new_tl = (np.concatenate(([-1], gt[:-1])) != gt) | (n_th > 0)
    new_y = np.concatenate(([-1], gy[:-1])) != gy
    vec = size > 1
    per = n_th + new_tl + new_y + 1 + vec
    ends = np.cumsum(per)
    starts = ends - per
    words = np.empty(int(ends[-1]) if ng else 0, dtype="<u2")
    # TIME_HIGH words of group i, k = 1..n_th[i]: value prev_thf + min(k * 2047, dth)
    th_g = np.repeat(np.arange(ng), n_th)
    k = np.arange(th_g.shape[0]) - np.repeat(np.cumsum(n_th) - n_th, n_th) + 1
    words[starts[th_g] + k - 1] = (8 << 12) | ((prev_thf[th_g] + np.minimum(k * 2047, dth[th_g])) & 0xFFF)
    pos = starts + n_th
    words[pos[new_tl]] = (6 << 12) | (gt[new_tl] & 0xFFF)
    pos = pos + new_tl
    words[pos[new_y]] = gy[new_y]
    pos = pos + new_y
    words[pos[~vec]] = (2 << 12) | (gp[~vec] << 11) | gx[~vec]
    words[pos[vec]] = (3 << 12) | (gp[vec] << 11) | base[vec]
    words[pos[vec] + 1] = (4 << 12) | mask[vec]
    header = (f"% evt 3.0\n% format EVT3;height={sensor[1]};width={sensor[0]}\n"
              f"% geometry {sensor[0]}x{sensor[1]}\n% integrator_name spikeline\n% end\n").encode()
    _write_bytes(path, header, words)


def write_dat(path: str | os.PathLike[str], events: Events, sensor: tuple[int, int]) -> None:
    """Prophesee DAT v2 CD events (8-byte records; times stored mod 2^32, each step < 2^31 us)."""
    ev = _events_in(events, sensor, 16384)
    t = ev["t"].astype(np.int64)
    if len(ev) and (bool((np.diff(t) < 0).any()) or bool((np.diff(t) >= 1 << 31).any()) or t[0] >= 1 << 31):
        raise ValueError("DAT needs non-decreasing times with steps (and a first time) below 2^31 us")
    rec = np.empty((len(ev), 2), dtype="<u4")
    rec[:, 0] = t & 0xFFFFFFFF
    rec[:, 1] = (ev["p"].astype(np.uint32) << 28) | (ev["y"].astype(np.uint32) << 14) | ev["x"].astype(np.uint32)
    header = (f"% Data file containing Event2D events.\n% Version 2\n% Width {sensor[0]}\n"
              f"% Height {sensor[1]}\n").encode() + bytes([0x00, 0x08])
    _write_bytes(path, header, rec)


def write_npy(path: str | os.PathLike[str], events: Events) -> None:
    """The EVENT_DTYPE array as .npy (numpy.load reads it; read() infers the sensor from it)."""
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise ValueError("events must be a 1-D EVENT_DTYPE array")
    np.save(path, events, allow_pickle=False)


def write(path: str | os.PathLike[str], events: Events, sensor: tuple[int, int], format: str | None = None) -> None:
    """Write `events` as `format` (default from the extension: .raw = EVT 3.0, .dat, .npy)."""
    fmt = format or {".raw": "evt3", ".dat": "dat", ".npy": "npy"}.get(Path(path).suffix.lower())
    if fmt == "evt2":
        write_evt2(path, events, sensor)
    elif fmt == "evt3":
        write_evt3(path, events, sensor)
    elif fmt == "dat":
        write_dat(path, events, sensor)
    elif fmt == "npy":
        write_npy(path, events)
    else:
        raise ValueError(f"no writer for {fmt!r} (evt2, evt3, dat, npy)")

