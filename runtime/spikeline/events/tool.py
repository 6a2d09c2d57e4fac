"""`spikeline events`: look at event files, and stream them to a spikeline (or any AEStream) UDP input.

    spikeline events info FILE... [--plot out.png]
    spikeline events send FILE... --udp 127.0.0.1:3333 [--speed N] [--no-timestamps] [--loop] [--gap-ms G]

`send` is the camera-host side of the `event_udp` source: it plays files at real time (or N x) as AEStream
datagrams (at most 512 bytes of little-endian uint32 words, with or without timestamps), pacing one burst
per `--chunk-ms` of sensor time. Each file after the first starts `--gap-ms` after the previous one ended.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..chunk import Events
from . import formats
from .udp import encode_aestream

BLOCK = 1 << 18


def add_parser(sub: Any) -> None:
    p = sub.add_parser("events", help="event-camera files: describe them, plot them, stream them over UDP")
    esub = p.add_subparsers(dest="events_cmd", required=True)
    i = esub.add_parser("info", help="format, sensor, events, duration and rates of event files")
    i.add_argument("files", nargs="+")
    i.add_argument("--format", default=None, help="file format (default: from the header/suffix)")
    i.add_argument("--plot", default=None, help="write a PNG: event rate over time and the accumulated image")
    s = esub.add_parser("send", help="play event files as AEStream UDP datagrams (the camera-host side)")
    s.add_argument("files", nargs="+")
    s.add_argument("--udp", required=True, help="destination HOST:PORT")
    s.add_argument("--format", default=None)
    s.add_argument("--speed", type=float, default=1.0, help="1 = real time, N = N times faster, 0 = no pacing")
    s.add_argument("--gap-ms", type=float, default=0.0, help="silence between files")
    s.add_argument("--chunk-ms", type=float, default=1.0, help="sensor time sent per burst")
    s.add_argument("--no-timestamps", action="store_true", help="one word per event; the receiver stamps them")
    s.add_argument("--loop", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        if args.events_cmd == "info":
            return _info(args)
        return _send(args)
    except (formats.EventFormatError, OSError, ValueError) as e:
        print(f"spikeline events: {e}", file=sys.stderr)
        return 2


def _info(args: argparse.Namespace) -> int:
    shown: list[tuple[str, Events, tuple[int, int]]] = []
    for f in args.files:
        ef = formats.read(f, args.format)
        ev = ef.events
        n = len(ev)
        dur = (int(ev["t"][-1]) - int(ev["t"][0])) * 1e-6 if n else 0.0
        on = int(np.count_nonzero(ev["p"])) if n else 0
        print(f"{f}: {ef.format}, sensor {ef.sensor[0]}x{ef.sensor[1]}, {n:,} events over {dur:.3f} s"
              + (f" ({n / dur / 1e6:.3f} Mev/s), t {int(ev['t'][0])}..{int(ev['t'][-1])} µs, ON {on / n:.1%}"
                 if n and dur > 0 else ""))
        for k, v in sorted(ef.info.items()):
            print(f"    {k}: {v}")
        shown.append((Path(f).name, ev, ef.sensor))
    if args.plot:
        _plot(shown, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def _plot(files: list[tuple[str, Events, tuple[int, int]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(files), 2, figsize=(11, 3.4 * len(files)), squeeze=False)
    for (name, ev, (w, h)), (a, b) in zip(files, axes, strict=True):
        if len(ev):
            t = (ev["t"] - ev["t"][0]) * 1e-3
            bins = max(10, min(500, int(t[-1]) + 1))
            for pol, colour, lab in ((1, "tab:red", "ON"), (0, "tab:blue", "OFF")):
                sel = ev["p"] == pol
                cnt, edges = np.histogram(t[sel], bins=bins, range=(0, max(t[-1], 1e-3)))
                a.plot(edges[:-1], cnt / np.diff(edges) * 1e3 / 1e3, color=colour, label=lab, lw=1)
            img = np.zeros((h, w), dtype=np.float32)
            np.add.at(img, (ev["y"].astype(np.intp), ev["x"].astype(np.intp)), np.where(ev["p"] > 0, 1.0, -1.0))
            lim = float(np.percentile(np.abs(img), 99)) or 1.0
            b.imshow(img, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
        a.set_title(f"{name}: event rate")
        a.set_xlabel("time (ms)")
        a.set_ylabel("k events / s")
        a.legend(loc="upper right")
        b.set_title(f"{name}: ON - OFF per pixel ({w}x{h})")
        b.set_xticks([])
        b.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def stream_files(paths: list[str], fmt: str | None, gap_us: int) -> Iterator[Events]:
    """Blocks of events from the files back to back, later files shifted to start gap_us after the previous."""
    end: int | None = None
    for path in paths:
        with formats.open_reader(path, fmt) as r:
            offset = 0
            first = True
            while len(block := r.read(BLOCK)):
                if first:
                    first = False
                    if end is not None:
                        offset = end + gap_us + 1 - int(block["t"][0])
                if offset:
                    block = block.copy()
                    block["t"] += offset
                end = int(block["t"][-1])
                yield block


def _send(args: argparse.Namespace) -> int:
    host, _, port = args.udp.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--udp must be HOST:PORT, got {args.udp!r}")
    addr = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    chunk_us = max(1, round(args.chunk_ms * 1e3))
    sent = packets = 0
    t_start = time.monotonic()
    try:
        while True:
            t0: int | None = None
            start = time.monotonic()
            for block in stream_files(args.files, args.format, round(args.gap_ms * 1e3)):
                if t0 is None:
                    t0 = int(block["t"][0])
                k = (block["t"] - t0) // chunk_us
                cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
                for part in np.split(block, cuts) if len(cuts) else [block]:
                    if args.speed > 0:
                        delay = start + (int(part["t"][-1]) - t0) * 1e-6 / args.speed - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    for pkt in encode_aestream(part, timestamps=not args.no_timestamps):
                        sock.sendto(pkt, addr)
                        packets += 1
                    sent += len(part)
                if not args.quiet:
                    print(f"\rsent {sent:,} events in {packets:,} datagrams", end="", file=sys.stderr)
            if not args.loop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not args.quiet:
        print(f"\rsent {sent:,} events in {packets:,} datagrams in {time.monotonic() - t_start:.2f} s",
              file=sys.stderr)
    return 0
