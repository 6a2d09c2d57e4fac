"""CSV / TSV recordings: one header row of channel names, then one row per sample.

- Delimiter: `,` (`.csv`) or tab (`.tsv`). Lines starting with `#` are comments.
- A column named `t`, `time` or `timestamp` (any case) holds each sample's time in seconds (any origin; it is
  made relative to the first row). It must be finite and non-decreasing. Without it `rate_hz=` is required.
- A header cell `name [unit]` or `name (unit)` gives the channel's unit; otherwise the unit is `""`.
- rate: `rate_hz=` when given; else, with a time column, 1 / the median step when every step is within
  0.1 % of it (rounded to 1 µHz), and 0.0 (irregular) otherwise.
- Every value must be a finite number; a ragged row, an empty cell, text, NaN or infinity is an error naming
  the line and the column.
"""

from __future__ import annotations

import csv as _csv
import io
import re
from pathlib import Path

import numpy as np

from . import Recording, RecordingError

__all__ = ["TIME_COLUMNS", "load_csv"]

TIME_COLUMNS = ("t", "time", "timestamp")
_UNIT = re.compile(r"^(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]$")


def _split_unit(cell: str) -> tuple[str, str]:
    m = _UNIT.match(cell.strip())
    return (m.group(1), m.group(2)) if m and m.group(1) else (cell.strip(), "")


def _locate(path: Path, text: str, delim: str, n_cols: int, header_line: int) -> RecordingError:
    """Error path only: find the first bad row and say what is wrong with it."""
    lines = text.splitlines()
    for ln in range(header_line + 1, len(lines)):
        s = lines[ln]
        if not s.strip() or s.lstrip().startswith("#"):
            continue
        row = next(_csv.reader([s], delimiter=delim))
        if len(row) != n_cols:
            return RecordingError(f"{path}:{ln + 1}: {len(row)} fields, the header has {n_cols}")
        for j, cell in enumerate(row):
            try:
                ok = np.isfinite(float(cell))
            except ValueError:
                ok = False
            if not ok:
                return RecordingError(f"{path}:{ln + 1}: column {j + 1}: {cell[:30]!r} is not a finite number")
    return RecordingError(f"{path}: cannot read the values")  # pragma: no cover - numpy and we disagree


def load_csv(path: Path, *, rate_hz: float | None = None,
             channels: tuple[str, ...] | None = None) -> list[Recording]:
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecordingError(f"{path}: not UTF-8 text (byte {e.start})") from e
    lines = text.splitlines()
    header_line = next((i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith("#")), -1)
    if header_line < 0:
        raise RecordingError(f"{path}: empty: expected a header row of channel names")
    head = next(_csv.reader([lines[header_line]], delimiter=delim))
    named = [_split_unit(c) for c in head]
    names = [n for n, _ in named]
    if any(not n for n in names):
        raise RecordingError(f"{path}:{header_line + 1}: empty column name in the header")
    try:
        [float(n) for n in names]
    except ValueError:
        pass
    else:
        raise RecordingError(f"{path}:{header_line + 1}: the first row is numbers; a header row of channel "
                             "names is required")
    if len(set(names)) != len(names):
        raise RecordingError(f"{path}:{header_line + 1}: duplicate column names")
    time_cols = [i for i, n in enumerate(names) if n.lower() in TIME_COLUMNS]
    if len(time_cols) > 1:
        raise RecordingError(f"{path}: more than one time column ({', '.join(names[i] for i in time_cols)})")
    if not any(s.strip() and not s.lstrip().startswith("#") for s in lines[header_line + 1:]):
        raise RecordingError(f"{path}: no data rows after the header")
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=delim, skiprows=header_line + 1, comments="#",
                            ndmin=2, dtype=np.float64)
    except ValueError:
        raise _locate(path, text, delim, len(names), header_line) from None
    if values.shape[1] != len(names) or not np.all(np.isfinite(values)):
        raise _locate(path, text, delim, len(names), header_line)
    cols = [i for i in range(len(names)) if i not in time_cols]
    if not cols:
        raise RecordingError(f"{path}: only a time column, no channels")
    timestamps = None
    rate = rate_hz or 0.0
    if time_cols:
        t = values[:, time_cols[0]]
        steps = np.diff(t)
        if np.any(steps < 0):
            r = int(np.flatnonzero(steps < 0)[0]) + 1
            raise RecordingError(f"{path}: the time column goes backwards at data row {r + 1} "
                                 f"({t[r - 1]!r} -> {t[r]!r})")
        timestamps = np.ascontiguousarray(t - t[0])
        if rate_hz is None and steps.size:
            med = float(np.median(steps))
            if med > 0 and np.all(np.abs(steps - med) <= 1e-3 * med):
                rate = round(1.0 / med, 6)
    elif rate_hz is None:
        raise RecordingError(f"{path}: no time column ({'/'.join(TIME_COLUMNS)}) and no rate_hz given")
    chan = tuple(names[i] for i in cols)
    if channels is not None:
        if len(channels) != len(chan):
            raise RecordingError(f"{path}: {len(chan)} channels in the file but {len(channels)} names given")
        chan = tuple(channels)
    data = np.ascontiguousarray(values[:, cols], dtype=np.float32)
    return [Recording(name=path.stem, data=data, rate_hz=float(rate), channels=chan,
                      units=tuple(named[i][1] for i in cols), timestamps=timestamps,
                      info={"file": str(path)})]
