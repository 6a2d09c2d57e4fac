"""Recordings: whole files read into memory as `Recording`s, for replay, training and offline evaluation.

`load(path)` picks the reader by suffix (or `kind=`) and returns one `Recording` per series in the file:

| kind   | suffix          | one Recording per        | reader                                   |
|--------|-----------------|--------------------------|------------------------------------------|
| `edf`  | `.edf`          | file                     | `recordings.edf` (pure numpy, EDF / EDF+C) |
| `xdf`  | `.xdf`, `.xdfz` | numeric stream           | `recordings.xdf` (pyxdf, extra `xdf`)    |
| `ts`   | `.ts`           | case (UEA/UCR archive)   | here                                     |
| `spar` | `.npz`          | series (SPAR Apple Watch)| here                                     |
| `csv`  | `.csv`, `.tsv`  | file                     | `recordings.csv`                         |

Every reader checks what it reads and raises `RecordingError` naming the file and the problem; none of
them returns a half-read recording.

UEA/UCR `.ts` decisions:
- `?` (a missing value) becomes NaN only when the header declares `@missing true`; in any other file it is
  an error, as is any other value that is not a number.
- `@timeStamps true` files (values written as `(t,v)` pairs) are rejected: no archive dataset we ship uses them.
- Every dimension of one case must have the same length (a case is one `(n, channels)` array); cases may
  differ in length when the header says `@equalLength false`, and must equal `@seriesLength` when it is given
  with `@equalLength true`.
- The format has no sampling rate. `rate_hz` is, in order: the `rate_hz=` argument of `load`; what the
  dataset's description says (the companion `<problemName>.txt` beside the file, else the file's `#` comment
  lines: "sampling frequency was 16 Hz", "sampled ... every tenth of a second"); else 0.0 (unknown).
- Channels are `dim0..dimN-1` unless `channels=` names them; units are unknown (`""`).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KINDS", "Marker", "Recording", "RecordingError", "load", "load_spar", "load_ts"]


@dataclass(frozen=True)
class Marker:
    t_s: float  # onset, seconds from the recording's first sample
    duration_s: float
    label: str


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value; identity equality, hashable
class Recording:
    name: str  # e.g. "S001R04", "spar_watch#17", "BasicMotions_TRAIN#3"
    data: npt.NDArray[np.float32]  # (n_samples, n_channels) float32, C-contiguous, physical units
    rate_hz: float  # nominal rate; 0.0 when irregular
    channels: tuple[str, ...]
    units: tuple[str, ...]
    timestamps: npt.NDArray[np.float64] | None  # (n,) float64 s from first sample; None = regular at rate_hz
    # (rate_hz 0.0 and timestamps None: timing unknown, e.g. a .ts whose description states no rate)
    markers: tuple[Marker, ...] = ()
    label: str | None = None  # whole-series class label (UEA .ts, SPAR)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"subject": 3, "side": 1, "classes": [...], "index": 17}

    def __post_init__(self) -> None:
        d = self.data
        if not isinstance(d, np.ndarray) or d.dtype != np.float32 or d.ndim != 2 or not d.flags.c_contiguous:
            raise ValueError(f"Recording {self.name!r}: data must be C-contiguous float32 (n, channels), "
                             f"got {getattr(d, 'dtype', type(d).__name__)} {getattr(d, 'shape', '')}")
        n, c = d.shape
        if len(self.channels) != c or len(self.units) != c:
            raise ValueError(f"Recording {self.name!r}: {c} data columns but {len(self.channels)} channel "
                             f"names and {len(self.units)} units")
        if not (self.rate_hz >= 0 and math.isfinite(self.rate_hz)):
            raise ValueError(f"Recording {self.name!r}: rate_hz must be finite and >= 0, got {self.rate_hz}")
        ts = self.timestamps
        if ts is not None and (ts.dtype != np.float64 or ts.shape != (n,)):
            raise ValueError(f"Recording {self.name!r}: timestamps must be float64 ({n},), got {ts.dtype} {ts.shape}")

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def timed(self) -> bool:
        """False when neither timestamps nor a rate say when samples were taken (a `.ts` of unknown rate)."""
        return self.timestamps is not None or self.rate_hz > 0

    def times(self) -> npt.NDArray[np.float64]:
        """Seconds from the first sample for every row (the timestamps, or i / rate_hz)."""
        if self.timestamps is not None:
            return self.timestamps
        if self.rate_hz <= 0:
            raise ValueError(f"Recording {self.name!r} has neither timestamps nor a rate (pass rate_hz= to load)")
        return np.arange(self.n_samples, dtype=np.float64) / self.rate_hz

    @property
    def duration_s(self) -> float:
        """Time from the first sample to one sample period after the last (0 for an empty recording)."""
        n = self.n_samples
        if n == 0:
            return 0.0
        if self.timestamps is None:
            return n / self.rate_hz if self.rate_hz > 0 else math.nan
        period = 1.0 / self.rate_hz if self.rate_hz > 0 else 0.0
        return float(self.timestamps[-1] - self.timestamps[0]) + period


class RecordingError(Exception):
    """An unreadable, corrupt or mislabelled recording file: the message names the file and the problem."""


Loader = Callable[..., list[Recording]]

# kind -> (suffixes, "module:function"); modules are imported only when their kind is used.
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "edf": ((".edf",), "spikeline.recordings.edf:load_edf"),
    "xdf": ((".xdf", ".xdfz"), "spikeline.recordings.xdf:load_xdf"),
    "ts": ((".ts",), "spikeline.recordings:load_ts"),
    "spar": ((".npz",), "spikeline.recordings:load_spar"),
    "csv": ((".csv", ".tsv"), "spikeline.recordings.csv:load_csv"),
}


def kind_of(path: str | Path) -> str:
    """The reader kind for a file name, from its suffix."""
    name = Path(path).name.lower()
    for kind, (suffixes, _) in KINDS.items():
        if name.endswith(suffixes):
            return kind
    known = ", ".join(s for suffixes, _ in KINDS.values() for s in suffixes)
    raise RecordingError(f"{path}: unknown recording format (suffix {Path(path).suffix!r}); known: {known}; "
                         f"or pass kind= one of {', '.join(KINDS)}")


def load(path: str | Path, *, kind: str | None = None, rate_hz: float | None = None,
         channels: Sequence[str] | None = None) -> list[Recording]:
    """Read every series in a recording file. `kind` overrides the suffix (see KINDS).

    rate_hz:  the sampling rate, for formats that do not store one (`.ts`, a CSV without a time column);
              overrides what a `.ts` dataset's description says. Ignored (must agree) for EDF/XDF/SPAR.
    channels: channel names, for formats that do not store them (`.ts`); a CSV's header names them.
    """
    p = Path(path)
    k = kind or kind_of(p)
    if k not in KINDS:
        raise RecordingError(f"{path}: unknown recording kind {k!r}; known: {', '.join(KINDS)}")
    if not p.is_file():
        raise RecordingError(f"{path}: no such file" if not p.exists() else f"{path}: not a regular file")
    module, func = KINDS[k][1].split(":")
    loader: Loader = getattr(importlib.import_module(module), func)
    kw: dict[str, Any] = {}
    if rate_hz is not None:
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise RecordingError(f"{path}: rate_hz must be a positive number, got {rate_hz}")
        kw["rate_hz"] = float(rate_hz)
    if channels is not None:
        kw["channels"] = tuple(channels)
    return loader(p, **kw)


def _check_given_rate(path: Path, stored: float, rate_hz: float | None) -> None:
    if rate_hz is not None and not math.isclose(rate_hz, stored, rel_tol=1e-9):
        raise RecordingError(f"{path}: the file says {stored:g} Hz; rate_hz={rate_hz:g} disagrees")


def _check_given_channels(path: Path, n: int, channels: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if channels is not None and len(channels) != n:
        raise RecordingError(f"{path}: {n} channels in the file but {len(channels)} channel names given")
    return channels


# ---------------------------------------------------------------------------------------------- SPAR .npz

def _unit_of_imu(ch: str) -> str:
    c = ch.lower()
    if c.startswith("a"):
        return "g"
    if c.startswith(("w", "g")):
        return "rad/s"
    return ""


def load_spar(path: Path, *, rate_hz: float | None = None,
              channels: tuple[str, ...] | None = None) -> list[Recording]:
    """The SPAR Apple Watch `.npz` (see data/spar_applewatch/SOURCE.txt): one Recording per series.

    Keys: data float32 (N, C) (all series concatenated), offsets int (S+1,) with series i =
    data[offsets[i]:offsets[i+1]], y int (S,) class indices into classes, subject (S,), side (S,),
    channels (C,), classes (K,), rate_hz (). Accelerometer channels (a*) are in g, gyroscope (w*) in rad/s.
    """
    need = ("data", "offsets", "y", "subject", "side", "channels", "classes", "rate_hz")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            missing = [k for k in need if k not in z.files]
            if missing:
                raise RecordingError(f"{path}: not a SPAR recording: keys {', '.join(missing)} are missing "
                                     f"(it has {', '.join(z.files) or 'none'})")
            a = {k: z[k] for k in need}
    except RecordingError:
        raise
    except Exception as e:  # zipfile.BadZipFile, a pickled array, a truncated member, ...
        raise RecordingError(f"{path}: not a readable .npz file: {type(e).__name__}: {e}") from e
    data, off, y = a["data"], a["offsets"], a["y"]
    if data.ndim != 2 or data.dtype.kind != "f":
        raise RecordingError(f"{path}: data must be a float (samples, channels) array, got {data.dtype} {data.shape}")
    names = tuple(str(c) for c in a["channels"].reshape(-1))
    classes = [str(c) for c in a["classes"].reshape(-1)]
    if len(names) != data.shape[1]:
        raise RecordingError(f"{path}: data has {data.shape[1]} columns but channels lists {len(names)}")
    s = len(y)
    if off.dtype.kind not in "iu" or off.shape != (s + 1,):
        raise RecordingError(f"{path}: offsets must be {s + 1} integers (one more than y), got {off.dtype} {off.shape}")
    if off[0] != 0 or off[-1] != data.shape[0] or np.any(np.diff(off) < 0):
        raise RecordingError(f"{path}: offsets must rise from 0 to {data.shape[0]} (the number of samples)")
    for k in ("subject", "side"):
        if a[k].shape != (s,):
            raise RecordingError(f"{path}: {k} must have {s} entries (one per series), got shape {a[k].shape}")
    if y.dtype.kind not in "iu" or (s and (y.min() < 0 or y.max() >= len(classes))):
        raise RecordingError(f"{path}: y must be class indices in 0..{len(classes) - 1}")
    rate = float(a["rate_hz"])
    if not (rate > 0 and math.isfinite(rate)):
        raise RecordingError(f"{path}: rate_hz must be positive, got {rate}")
    _check_given_rate(path, rate, rate_hz)
    names = _check_given_channels(path, len(names), channels) or names
    if not np.all(np.isfinite(data)):
        raise RecordingError(f"{path}: data contains NaN or infinity")
    data = np.ascontiguousarray(data, dtype=np.float32)
    units = tuple(_unit_of_imu(c) for c in names)
    stem = path.stem
    return [Recording(name=f"{stem}#{i}", data=data[off[i]:off[i + 1]], rate_hz=rate, channels=names,
                      units=units, timestamps=None, label=classes[int(y[i])],
                      info={"subject": int(a["subject"][i]), "side": int(a["side"][i]), "index": i,
                            "classes": classes, "file": str(path)})
            for i in range(s)]


# ------------------------------------------------------------------------------------------- UEA/UCR .ts

_RATE_PATTERNS = (
    (re.compile(r"(?:sampling|sample)\s+(?:frequency|rate)\s+(?:was|is|of|=|:)?\s*(\d+(?:\.\d+)?)\s*hz", re.I), 1.0),
    (re.compile(r"sampled\s+at\s+(\d+(?:\.\d+)?)\s*hz", re.I), 1.0),
    (re.compile(r"(\d+(?:\.\d+)?)\s*hz\s+sampl", re.I), 1.0),
)
_WORD_PERIODS = {"tenth": 10.0, "hundredth": 100.0, "thousandth": 1000.0, "half": 2.0, "quarter": 4.0}
_EVERY_RE = re.compile(r"sampled\s+(?:once\s+)?every\s+(tenth|hundredth|thousandth|half|quarter)\s+of\s+a\s+second", re.I)


def rate_from_description(text: str) -> float:
    """The sampling rate a dataset description states ("The sampling frequency was 16 Hz"), else 0.0."""
    text = re.sub(r"\s+", " ", text)
    for rx, scale in _RATE_PATTERNS:
        m = rx.search(text)
        if m:
            return float(m.group(1)) * scale
    m = _EVERY_RE.search(text)
    return _WORD_PERIODS[m.group(1).lower()] if m else 0.0


def _ts_error(path: Path, line: int, msg: str) -> RecordingError:
    return RecordingError(f"{path}:{line}: {msg}")


def _bool(path: Path, line: int, key: str, v: str) -> bool:
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise _ts_error(path, line, f"@{key} must be true or false, got {v!r}")


def load_ts(path: Path, *, rate_hz: float | None = None,
            channels: tuple[str, ...] | None = None) -> list[Recording]:
    """A UEA/UCR `.ts` file: one Recording per case, label = its class (see the module docstring)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordingError(f"{path}: not a UTF-8 text file (byte {e.start}): not a .ts file?") from e
    header: dict[str, str] = {}
    comments: list[str] = []
    lines = text.splitlines()
    data_line = -1
    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s:
            continue
        if s.startswith("#"):
            comments.append(s[1:])
            continue
        if not s.startswith("@"):
            raise _ts_error(path, i + 1, f"expected a @keyword header line before @data, got {s[:40]!r}")
        key, _, value = s[1:].partition(" ")
        key = key.lower()
        if key == "data":
            data_line = i
            break
        if key in header:
            raise _ts_error(path, i + 1, f"@{key} given twice")
        header[key] = value.strip()
    if data_line < 0:
        raise RecordingError(f"{path}: no @data line: not a .ts file or truncated in its header")
    hl = {k: next((j + 1 for j, r in enumerate(lines[:data_line]) if r.strip().lower().startswith("@" + k)), 0)
          for k in header}
    if "timestamps" in header and _bool(path, hl["timestamps"], "timeStamps", header["timestamps"]):
        raise _ts_error(path, hl["timestamps"], "@timeStamps true files ((t,v) pairs) are not supported")
    missing_ok = _bool(path, hl["missing"], "missing", header["missing"]) if "missing" in header else False
    univariate = _bool(path, hl["univariate"], "univariate", header["univariate"]) if "univariate" in header else None
    dims: int | None = None
    if "dimensions" in header:
        try:
            dims = int(header["dimensions"])
        except ValueError:
            dims = 0
        if dims < 1:
            raise _ts_error(path, hl["dimensions"], f"@dimensions must be a positive integer, got {header['dimensions']!r}")
    if univariate is True:
        if dims not in (None, 1):
            raise _ts_error(path, hl["univariate"], f"@univariate true but @dimensions {dims}")
        dims = 1
    equal = _bool(path, hl["equallength"], "equalLength", header["equallength"]) if "equallength" in header else False
    length: int | None = None
    if "serieslength" in header:
        try:
            length = int(header["serieslength"])
        except ValueError:
            length = -1
        if length < 1:
            raise _ts_error(path, hl["serieslength"], f"@seriesLength must be a positive integer, got {header['serieslength']!r}")
    classes: list[str] | None = None
    if "classlabel" in header:
        flag, *labels = header["classlabel"].split()
        if _bool(path, hl["classlabel"], "classLabel", flag):
            if not labels:
                raise _ts_error(path, hl["classlabel"], "@classLabel true lists no class labels")
            classes = labels
        elif labels:
            raise _ts_error(path, hl["classlabel"], "@classLabel false followed by labels")
    if "targetlabel" in header and _bool(path, hl["targetlabel"], "targetLabel", header["targetlabel"].split()[0]):
        raise _ts_error(path, hl["targetlabel"], "regression files (@targetLabel true) are not supported")
    problem = header.get("problemname", path.stem)

    rate = rate_hz
    if rate is None:
        companion = path.with_name(f"{problem}.txt")
        described = 0.0
        if companion.is_file():
            described = rate_from_description(companion.read_text(encoding="utf-8", errors="replace"))
        rate = described or rate_from_description("\n".join(comments))

    recs: list[Recording] = []
    names = channels
    for i in range(data_line + 1, len(lines)):
        s = lines[i].strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(":")
        label: str | None = None
        if classes is not None:
            if len(parts) < 2:
                raise _ts_error(path, i + 1, "no class label after the values (@classLabel true)")
            label = parts.pop().strip()
            if label not in classes:
                raise _ts_error(path, i + 1, f"class label {label!r} is not declared in @classLabel "
                                             f"({' '.join(classes)})")
        if dims is None:
            dims = len(parts)
        if len(parts) != dims:
            raise _ts_error(path, i + 1, f"{len(parts)} dimensions, expected {dims}")
        cols = [_ts_values(path, i + 1, d, p, missing_ok) for d, p in enumerate(parts)]
        n = len(cols[0])
        if any(len(c) != n for c in cols):
            lens = ", ".join(str(len(c)) for c in cols)
            raise _ts_error(path, i + 1, f"dimensions of one case differ in length ({lens})")
        if equal and length is not None and n != length:
            raise _ts_error(path, i + 1, f"{n} values per dimension, @seriesLength says {length}")
        if names is None:
            names = tuple(f"dim{d}" for d in range(dims))
        elif len(names) != dims:
            raise RecordingError(f"{path}: {dims} dimensions but {len(names)} channel names given")
        data = np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)
        k = len(recs)
        info: dict[str, Any] = {"index": k, "problem": problem, "file": str(path)}
        if classes is not None:
            info["classes"] = list(classes)
        recs.append(Recording(name=f"{path.stem}#{k}", data=data, rate_hz=float(rate), channels=names,
                              units=("",) * dims, timestamps=None, label=label, info=info))
    if not recs:
        raise RecordingError(f"{path}: no cases after @data (empty or truncated file)")
    return recs


def _ts_values(path: Path, line: int, dim: int, s: str, missing_ok: bool) -> npt.NDArray[np.float64]:
    items = s.split(",")
    try:
        out = np.array(items, dtype=np.float64)
        if np.all(np.isfinite(out)):
            return out
    except ValueError:
        out = np.empty(len(items))
    for j, v in enumerate(items):  # slow path (missing values, errors): find and name the bad value
        v = v.strip()
        if v == "?" and missing_ok:
            out[j] = np.nan
            continue
        try:
            x = float(v)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            why = ("a missing value but the header does not say @missing true" if v == "?"
                   else "not a finite number")
            raise _ts_error(path, line, f"dimension {dim}, value {j}: {v[:30]!r} is {why}")
        out[j] = x
    return out
