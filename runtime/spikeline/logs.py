"""Log output: plain text for a terminal, one JSON object per line for log shippers, or the journal's form.

`--log-format` (env SPIKELINE_LOG_FORMAT):
- `text`: `2026-11-28 12:00:00,123 INFO    spikeline.pipeline: ...` (the default on a terminal);
- `json`: `{"ts": "2026-11-28T12:00:00.123456Z", "level": "info", "logger": "spikeline.pipeline", "msg": "...",
  "pid": 1234}` plus `exc` (the traceback) when there is one, and any `extra={...}` fields a caller passes —
  one line per record, whatever the message contains;
- `journal`: the message with a `<N>` syslog priority prefix and no time stamp (journald adds its own and files
  the priority, so `journalctl -p warning` works); chosen by `auto` when stderr is the journal's stream
  (systemd sets JOURNAL_STREAM), otherwise `auto` is `text`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO

FORMATS = ("auto", "text", "json", "journal")

# LogRecord's own attributes: anything else on a record came from `extra=` and goes into the JSON
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for k, v in vars(record).items():
            if k not in _RECORD_KEYS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        # every line of a multi-line message (a traceback) keeps the priority
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def on_journal(stream: IO[str]) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM = "device:inode")."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(level: str, fmt: str = "auto", stream: IO[str] | None = None) -> str:
    """Configure the root logger; returns the format used."""
    out = stream if stream is not None else sys.stderr
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        fmt = "journal" if on_journal(out) else "text"
    handler = logging.StreamHandler(out)
    handler.setFormatter({"json": JsonFormatter(), "journal": JournalFormatter()}.get(
        fmt, logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return fmt
