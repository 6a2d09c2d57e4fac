"""XDF recordings (LabRecorder's format), read with pyxdf (optional extra `xdf`).

pyxdf reads the file with its defaults: clocks synchronised across streams from the ClockOffset chunks and
timestamps of regular streams de-jittered. Then:

- every numeric stream (int*, float32, double64) with at least one sample becomes one Recording: its name is
  the stream name (`name#<stream id>` when two streams share a name), channels and units from the stream's
  `desc/channels/channel` (`label`, `unit`), else `ch0..`; `timestamps` are the stream's timestamps relative to
  its first sample; `rate_hz` the stream's nominal rate (0.0 for irregular streams).
- every string stream is a marker stream: each of its samples becomes a `Marker` (duration 0.0, label the
  sample's first channel, or its channels joined with "|" when it has several) on *every* numeric Recording,
  at the marker's time relative to that recording's first sample (so markers may be negative or beyond the
  end). `info["marker_streams"]` names the marker streams used.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import Marker, Recording, RecordingError

__all__ = ["load_xdf"]

log = logging.getLogger("spikeline.recordings")


def _pyxdf(path: Path) -> ModuleType:
    try:
        return importlib.import_module("pyxdf")
    except ImportError as e:
        raise RecordingError(f"{path}: reading XDF needs pyxdf: pip install 'spikeline[xdf]'") from e


def _first(v: Any, default: Any = "") -> Any:
    """pyxdf's info values are lists of one item (XML elements)."""
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def _channels(info: dict[str, Any], n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    labels: list[str] = []
    units: list[str] = []
    try:
        desc = _first(info.get("desc"), None)
        for ch in _first(desc["channels"])["channel"] if desc else []:
            labels.append(str(_first(ch.get("label"), "")))
            units.append(str(_first(ch.get("unit"), "")))
    except (AttributeError, KeyError, IndexError, TypeError):
        labels, units = [], []
    if len(labels) != n or not all(labels):
        return tuple(f"ch{i}" for i in range(n)), ("",) * n
    return tuple(labels), tuple(units)


def load_xdf(path: Path, *, rate_hz: float | None = None,
             channels: tuple[str, ...] | None = None) -> list[Recording]:
    pyxdf = _pyxdf(path)
    if path.suffix.lower() == ".xdf":
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"XDF:":
            raise RecordingError(f"{path}: not a readable XDF file: it does not start with 'XDF:' ({magic!r})")
    try:
        streams, _header = pyxdf.load_xdf(str(path))
    except Exception as e:  # pyxdf raises whatever its parser hits on a corrupt file
        raise RecordingError(f"{path}: not a readable XDF file: {type(e).__name__}: {e}") from e
    numeric: list[dict[str, Any]] = []
    markers: list[tuple[float, str]] = []
    marker_streams: list[str] = []
    for s in streams:
        info = s.get("info", {})
        fmt = str(_first(info.get("channel_format"), ""))
        name = str(_first(info.get("name"), ""))
        if fmt == "string":
            ts = np.asarray(s.get("time_stamps", []), dtype=np.float64)
            values = s.get("time_series") or []
            if len(values) != len(ts):
                raise RecordingError(f"{path}: marker stream {name!r} has {len(values)} samples and {len(ts)} timestamps")
            markers.extend((float(t), "|".join(str(x) for x in v)) for t, v in zip(ts, values, strict=True))
            marker_streams.append(name)
        elif fmt in ("float32", "double64", "int8", "int16", "int32", "int64"):
            numeric.append(s)
        else:
            raise RecordingError(f"{path}: stream {name!r} has unknown channel format {fmt!r}")
    markers.sort(key=lambda m: m[0])
    names = [str(_first(s["info"].get("name"), "")) for s in numeric]
    recs: list[Recording] = []
    for s, name in zip(numeric, names, strict=True):
        info = s["info"]
        sid = _first(info.get("stream_id"), "?")
        x = np.asarray(s.get("time_series"))
        ts = np.asarray(s.get("time_stamps"), dtype=np.float64)
        n_ch = int(_first(info.get("channel_count"), "0") or 0)
        if ts.size == 0:
            log.info("%s: stream %r has no samples; skipped", path, name)
            continue
        if x.ndim != 2 or x.shape != (ts.size, n_ch):
            raise RecordingError(f"{path}: stream {name!r}: samples of shape {x.shape}, expected ({ts.size}, {n_ch})")
        try:
            rate = float(_first(info.get("nominal_srate"), "0"))
        except ValueError:
            raise RecordingError(f"{path}: stream {name!r}: nominal_srate is not a number") from None
        if rate_hz is not None and rate != rate_hz:
            raise RecordingError(f"{path}: stream {name!r} says {rate:g} Hz; rate_hz={rate_hz:g} disagrees")
        labels, units = _channels(info, n_ch)
        if channels is not None:
            if len(channels) != n_ch:
                raise RecordingError(f"{path}: stream {name!r} has {n_ch} channels but {len(channels)} names given")
            labels = tuple(channels)
        if np.any(np.diff(ts) < 0):
            raise RecordingError(f"{path}: stream {name!r}: timestamps go backwards")
        t0 = float(ts[0])
        recs.append(Recording(
            name=name if names.count(name) == 1 else f"{name}#{sid}",
            data=np.ascontiguousarray(x, dtype=np.float32), rate_hz=rate, channels=labels, units=units,
            timestamps=ts - t0, markers=tuple(Marker(t - t0, 0.0, lab) for t, lab in markers),
            info={"file": str(path), "stream_id": sid, "type": str(_first(info.get("type"), "")),
                  "source_id": str(_first(info.get("source_id"), "")), "t0": t0,
                  "marker_streams": list(marker_streams)}))
    if not recs:
        raise RecordingError(f"{path}: no numeric stream with samples (marker streams only, or empty)")
    return recs
