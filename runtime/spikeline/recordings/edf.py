"""EDF and EDF+ (continuous) reader in plain numpy.

The file is read once; the data records are viewed as one int16 array `(records, samples per record)`,
the kept signals are gathered with one fancy index and scaled digital -> physical with
`physical = (digital - dmin) * (pmax - pmin) / (dmax - dmin) + pmin` (what pyedflib computes), in float64,
then stored as float32.

Decisions:
- Only signals sampled at one common rate become channels of the Recording (no resampling): the rate that
  most ordinary signals share (on a tie, the highest). Other signals are named in `info["skipped_signals"]`
  with their rates; a file where no ordinary signal is left is an error.
- EDF+D (discontinuous) files are rejected: a Recording is one regularly sampled block. In EDF+C files every
  data record's time-keeping annotation must follow on from the previous record; a file that says EDF+C but
  is not contiguous is rejected too.
- Channel labels: the EDF label with trailing dots and spaces stripped (PhysioNet pads 10-10 names to four
  characters with dots: "Fc5." -> "Fc5", "C3.." -> "C3"); when stripping would make two labels equal, both keep
  their full label. The raw 16-character labels are in `info["raw_labels"]`.
- Markers: every annotation of the 'EDF Annotations' signals (not the per-record time-keeping ones), onset in
  seconds from the first sample (onsets before the file start are kept negative), duration 0.0 when the TAL
  gives none. Several annotations in one TAL give one Marker each, with the TAL's onset and duration.
- The file must be exactly as long as its header says (a truncated file, or one with trailing bytes, e.g. after
  an LF -> CRLF conversion, is an error); a header "number of data records" of -1 is taken from the file size.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import Marker, Recording, RecordingError

__all__ = ["EdfHeader", "EdfSignal", "load_edf", "read_header", "strip_label"]

ANNOTATIONS = "EDF Annotations"
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8),
                  ("dmax", 8), ("prefilter", 80), ("n_samples", 8), ("reserved", 32))


@dataclass(frozen=True)
class EdfSignal:
    label: str  # raw label, trailing spaces removed
    transducer: str
    unit: str
    pmin: float
    pmax: float
    dmin: int
    dmax: int
    prefilter: str
    n_samples: int  # per data record

    @property
    def annotations(self) -> bool:
        return self.label == ANNOTATIONS


@dataclass(frozen=True)
class EdfHeader:
    patient: str
    recording: str
    start: str  # ISO 8601 local date/time of the first sample, as the header writes it
    header_bytes: int
    reserved: str  # "EDF+C", "EDF+D" or free text for plain EDF
    n_records: int
    record_s: float
    signals: tuple[EdfSignal, ...]

    @property
    def plus(self) -> bool:
        return self.reserved.startswith(("EDF+C", "EDF+D"))

    @property
    def record_samples(self) -> int:
        return sum(s.n_samples for s in self.signals)


def strip_label(label: str) -> str:
    """'Fc5.' -> 'Fc5', 'C3..' -> 'C3', 'EEG Fpz-Cz ' -> 'EEG Fpz-Cz' (a label of only dots stays as it is)."""
    return label.rstrip(" .") or label.strip()


def _ascii(path: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise RecordingError(f"{path}: header field {what} is not ASCII: {raw!r} (not an EDF file, or corrupt)") from None


def _num(path: Path, text: str, what: str) -> float:
    s = text.strip()
    if not _NUMBER.match(s):
        raise RecordingError(f"{path}: header field {what} must be a number, got {text!r}")
    return float(s)


def _int(path: Path, text: str, what: str) -> int:
    v = _num(path, text, what)
    if v != int(v):
        raise RecordingError(f"{path}: header field {what} must be an integer, got {text!r}")
    return int(v)


def read_header(path: Path, buf: bytes | None = None) -> EdfHeader:
    """Parse and check the fixed and per-signal header of an EDF/EDF+ file."""
    if buf is None:
        with open(path, "rb") as f:
            buf = f.read(256)
            if len(buf) == 256:
                ns_guess = buf[252:256]
                try:
                    ns = int(ns_guess.decode("ascii").strip())
                except ValueError:
                    ns = 0
                buf += f.read(256 * max(0, min(ns, 100_000)))
    if len(buf) < 256:
        raise RecordingError(f"{path}: {len(buf)} bytes: too short for an EDF header (256 bytes + 256 per signal)")
    if buf[:8] == b"\xffBIOSEMI":
        raise RecordingError(f"{path}: a BDF (24-bit BioSemi) file; only EDF/EDF+ (16-bit) is supported")
    version = _ascii(path, buf[0:8], "version")
    if version.strip() != "0":
        raise RecordingError(f"{path}: not an EDF file: version field is {version!r}, expected '0'")
    patient = _ascii(path, buf[8:88], "patient").strip()
    recording = _ascii(path, buf[88:168], "recording").strip()
    date = _ascii(path, buf[168:176], "startdate")
    time_ = _ascii(path, buf[176:184], "starttime")
    m_d = re.match(r"^(\d\d)\.(\d\d)\.(\d\d)$", date)
    m_t = re.match(r"^(\d\d)\.(\d\d)\.(\d\d)$", time_)
    if not m_d or not m_t:
        raise RecordingError(f"{path}: start date/time must be dd.mm.yy and hh.mm.ss, got {date!r} {time_!r}")
    yy = int(m_d.group(3))
    start = (f"{1900 + yy if yy >= 85 else 2000 + yy:04d}-{m_d.group(2)}-{m_d.group(1)}"
             f"T{m_t.group(1)}:{m_t.group(2)}:{m_t.group(3)}")
    header_bytes = _int(path, _ascii(path, buf[184:192], "header bytes"), "header bytes")
    reserved = _ascii(path, buf[192:236], "reserved").strip()
    n_records = _int(path, _ascii(path, buf[236:244], "number of data records"), "number of data records")
    record_s = _num(path, _ascii(path, buf[244:252], "data record duration"), "data record duration")
    ns = _int(path, _ascii(path, buf[252:256], "number of signals"), "number of signals")
    if ns < 1:
        raise RecordingError(f"{path}: header says {ns} signals")
    if header_bytes != 256 * (ns + 1):
        raise RecordingError(f"{path}: header size field says {header_bytes} bytes; {ns} signals need {256 * (ns + 1)}")
    if len(buf) < header_bytes:
        raise RecordingError(f"{path}: truncated in the header ({len(buf)} of {header_bytes} bytes)")
    if n_records < -1:
        raise RecordingError(f"{path}: number of data records is {n_records}")
    if record_s < 0:
        raise RecordingError(f"{path}: data record duration is negative ({record_s:g} s)")
    cols: dict[str, list[str]] = {}
    off = 256
    for name, width in _SIGNAL_FIELDS:
        cols[name] = [_ascii(path, buf[off + i * width: off + (i + 1) * width], f"{name} of signal {i}")
                      for i in range(ns)]
        off += ns * width
    signals = []
    for i in range(ns):
        label = cols["label"][i].rstrip()
        where = f"signal {i} ({label!r})"
        sig = EdfSignal(
            label=label, transducer=cols["transducer"][i].strip(), unit=cols["unit"][i].strip(),
            pmin=_num(path, cols["pmin"][i], f"physical minimum of {where}"),
            pmax=_num(path, cols["pmax"][i], f"physical maximum of {where}"),
            dmin=_int(path, cols["dmin"][i], f"digital minimum of {where}"),
            dmax=_int(path, cols["dmax"][i], f"digital maximum of {where}"),
            prefilter=cols["prefilter"][i].strip(),
            n_samples=_int(path, cols["n_samples"][i], f"samples per record of {where}"))
        if sig.n_samples < 1:
            raise RecordingError(f"{path}: {where} has {sig.n_samples} samples per data record")
        if not -32768 <= sig.dmin < sig.dmax <= 32767:
            raise RecordingError(f"{path}: {where} digital range {sig.dmin}..{sig.dmax} is not a 16-bit range "
                                 "with minimum < maximum")
        if sig.pmin == sig.pmax:
            raise RecordingError(f"{path}: {where} physical minimum equals maximum ({sig.pmin:g})")
        signals.append(sig)
    return EdfHeader(patient=patient, recording=recording, start=start, header_bytes=header_bytes,
                     reserved=reserved, n_records=n_records, record_s=record_s, signals=tuple(signals))


def _pick_rate(path: Path, h: EdfHeader) -> tuple[list[int], float]:
    ordinary = [i for i, s in enumerate(h.signals) if not s.annotations]
    if not ordinary:
        raise RecordingError(f"{path}: no ordinary signals (only EDF annotations)")
    if h.record_s <= 0:
        raise RecordingError(f"{path}: data record duration is {h.record_s:g} s; a file with signals needs > 0")
    counts = Counter(h.signals[i].n_samples for i in ordinary)
    best = max(counts, key=lambda k: (counts[k], k))
    return [i for i in ordinary if h.signals[i].n_samples == best], best / h.record_s


def _tal_onset(path: Path, text: str, rec: int) -> tuple[float, float]:
    onset_s, _, dur_s = text.partition("\x15")
    if not re.match(r"^[+-]\d+(\.\d*)?$", onset_s):
        raise RecordingError(f"{path}: data record {rec}: annotation onset {onset_s[:30]!r} is not +/-seconds")
    dur = 0.0
    if dur_s:
        if not re.match(r"^\d+(\.\d*)?$", dur_s):
            raise RecordingError(f"{path}: data record {rec}: annotation duration {dur_s[:30]!r} is not seconds")
        dur = float(dur_s)
    return float(onset_s), dur


def _annotations(path: Path, h: EdfHeader, rows: npt.NDArray[np.int16]) -> tuple[list[Marker], list[float]]:
    """Markers (onset relative to the file start) and each record's time-keeping onset."""
    markers: list[Marker] = []
    keeping: list[float] = []
    offs = np.cumsum([0] + [s.n_samples for s in h.signals])
    ann = [i for i, s in enumerate(h.signals) if s.annotations]
    for r in range(rows.shape[0]):
        first_in_record = True
        for k, i in enumerate(ann):
            raw = rows[r, offs[i]:offs[i + 1]].astype("<i2").tobytes()
            for tal in raw.split(b"\x00"):
                if not tal:
                    continue
                try:
                    text = tal.decode("utf-8")
                except UnicodeDecodeError:
                    raise RecordingError(f"{path}: data record {r}: annotation is not UTF-8: {tal[:40]!r}") from None
                head, sep, rest = text.partition("\x14")
                if not sep or not rest.endswith("\x14"):
                    raise RecordingError(f"{path}: data record {r}: malformed annotation (TAL) {text[:40]!r}")
                onset, dur = _tal_onset(path, head, r)
                texts = rest[:-1].split("\x14")
                if first_in_record and k == 0:
                    if texts[0] != "":
                        raise RecordingError(f"{path}: data record {r}: no time-keeping annotation "
                                             "(the first TAL of each record must have an empty first text)")
                    keeping.append(onset)
                    texts = texts[1:]
                    first_in_record = False
                markers.extend(Marker(onset, dur, t) for t in texts if t)
        if first_in_record:
            raise RecordingError(f"{path}: data record {r} has no time-keeping annotation")
    return markers, keeping


def load_edf(path: Path, *, rate_hz: float | None = None,
             channels: tuple[str, ...] | None = None) -> list[Recording]:
    """One Recording with the signals at the common rate and the EDF+ annotations as markers."""
    buf = path.read_bytes()
    h = read_header(path, buf)
    if h.reserved.startswith("EDF+D"):
        raise RecordingError(f"{path}: EDF+D (discontinuous) recordings are not supported; "
                             "only continuous EDF and EDF+C")
    rec_bytes = 2 * h.record_samples
    body = len(buf) - h.header_bytes
    n_records = h.n_records
    if n_records == -1:
        if body % rec_bytes:
            raise RecordingError(f"{path}: number of data records is -1 (unknown) and the data ({body} bytes) "
                                 f"is not a whole number of {rec_bytes}-byte records")
        n_records = body // rec_bytes
    expected = n_records * rec_bytes
    if body < expected:
        raise RecordingError(f"{path}: truncated: {n_records} data records of {rec_bytes} bytes need {expected} "
                             f"bytes after the header, the file has {body}")
    if body > expected:
        raise RecordingError(f"{path}: {body - expected} bytes more than the header declares ({n_records} records "
                             f"of {rec_bytes} bytes): corrupt (e.g. an LF -> CRLF conversion) or wrong header")
    kept, rate = _pick_rate(path, h)
    if rate_hz is not None and not math.isclose(rate, rate_hz, rel_tol=1e-9):
        raise RecordingError(f"{path}: the signals are sampled at {rate:g} Hz; rate_hz={rate_hz:g} disagrees")
    rows = np.frombuffer(buf, dtype="<i2", count=n_records * h.record_samples,
                         offset=h.header_bytes).reshape(n_records, h.record_samples)

    keeping: list[float] = []
    markers: list[Marker] = []
    if h.plus:
        if not any(s.annotations for s in h.signals):
            raise RecordingError(f"{path}: EDF+ file without an '{ANNOTATIONS}' signal")
        markers, keeping = _annotations(path, h, rows)
        if keeping:
            expect = keeping[0] + h.record_s * np.arange(len(keeping))
            bad = np.flatnonzero(np.abs(np.asarray(keeping) - expect) > 1e-6 * max(1.0, h.record_s))
            if bad.size:
                r = int(bad[0])
                raise RecordingError(f"{path}: says EDF+C (continuous) but data record {r} starts at "
                                     f"{keeping[r]:g} s, not {expect[r]:g} s")
    t0 = keeping[0] if keeping else 0.0

    k = h.signals[kept[0]].n_samples
    starts = np.cumsum([0] + [s.n_samples for s in h.signals])[kept]
    idx = (starts[:, None] + np.arange(k)[None, :]).reshape(-1)  # (signals * k,)
    dig = rows[:, idx].reshape(n_records, len(kept), k).transpose(0, 2, 1).reshape(n_records * k, len(kept))
    sig = [h.signals[i] for i in kept]
    pmin = np.array([s.pmin for s in sig])
    dmin = np.array([s.dmin for s in sig], dtype=np.float64)
    gain = (np.array([s.pmax for s in sig]) - pmin) / (np.array([s.dmax for s in sig], dtype=np.float64) - dmin)
    data = np.ascontiguousarray(((dig - dmin) * gain + pmin).astype(np.float32))

    raw = [s.label for s in sig]
    stripped = [strip_label(x) for x in raw]
    dup = {x for x in stripped if stripped.count(x) > 1}
    names = tuple(x if x not in dup else r for x, r in zip(stripped, raw, strict=True))
    if channels is not None:
        if len(channels) != len(names):
            raise RecordingError(f"{path}: {len(names)} channels in the file but {len(channels)} names given")
        names = tuple(channels)
    info: dict[str, Any] = {
        "file": str(path), "format": h.reserved[:5] if h.plus else "EDF", "patient": h.patient,
        "recording": h.recording, "start": h.start, "raw_labels": raw,
        "prefilter": [s.prefilter for s in sig], "transducer": [s.transducer for s in sig],
        "skipped_signals": [f"{s.label} ({s.n_samples / h.record_s:g} Hz)" for i, s in enumerate(h.signals)
                            if i not in kept and not s.annotations],
    }
    return [Recording(name=path.stem, data=data, rate_hz=rate, channels=names,
                      units=tuple(s.unit for s in sig), timestamps=None,
                      markers=tuple(Marker(m.t_s - t0, m.duration_s, m.label) for m in markers), info=info)]
