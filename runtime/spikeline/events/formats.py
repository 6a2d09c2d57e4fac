"""Event-camera file readers. (First cut: N-MNIST .bin only; the other formats follow.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..chunk import EVENT_DTYPE, Events


class EventFormatError(ValueError):
    """A file is not what its format says: truncated, corrupt or mislabelled. The message says where."""


@dataclass
class EventFile:
    events: Events
    sensor: tuple[int, int]  # (width, height)
    format: str
    path: Path
    info: dict[str, str] = field(default_factory=dict)


def _read_nmnist(path: Path) -> EventFile:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise EventFormatError(f"{path}: N-MNIST files are 5-byte events; {raw.size} bytes is not a multiple of 5")
    b = raw.reshape(-1, 5).astype(np.uint32)
    ev = np.empty(b.shape[0], dtype=EVENT_DTYPE)
    ev["x"] = b[:, 0]
    ev["y"] = b[:, 1]
    ev["p"] = b[:, 2] >> 7
    ev["t"] = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    return EventFile(ev, (34, 34), "nmnist", path)


def read(path: str | Path, format: str | None = None) -> EventFile:
    path = Path(path)
    fmt = format or {".bin": "nmnist", ".bs2": "nmnist"}.get(path.suffix.lower())
    if fmt == "nmnist":
        return _read_nmnist(path)
    raise EventFormatError(f"{path}: unknown event file format (format={format!r})")
