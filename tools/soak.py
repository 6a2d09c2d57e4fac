#!/usr/bin/env python3
"""Soak test: every example pipeline of deploy/examples in ONE `spikeline run` daemon, fed by replayed real
recordings from ../shared/data, looping, for --minutes; memory, CPU, latency, misses, drops and reconnects sampled
over time; verdict on the daemon's memory growth after warm-up.

    python tools/soak.py                          # 10 minutes, every example config, 20 simulated watches
    python tools/soak.py --minutes 60 --json soak.json --write-docs
    python tools/soak.py --render soak.json --write-docs      # no run: docs/tables from a saved report

One daemon, not one per config: the examples can share a process (the daemon runs many pipelines and one MQTT
connection on one event loop), so they are merged into one config with only what must change for them to run
side by side on this machine:
- pipeline names that collide (`har` in both smartwatch-har-*.toml, `digits` in both nmnist-*.toml) become the
  config file's stem (`smartwatch-har-l2mu`, `nmnist-udp`, ...); the others keep theirs;
- [mqtt] url -> a mosquitto this tool starts on a free loopback port (the other [mqtt] keys are merged; a
  conflict is reported); [node] name = "soak", metrics_interval_s = --interval; [lsl] config = "loopback";
- lsl sources: `name` set to an outlet this tool plays (so no other LSL stream on the host is picked up; the
  `stream_type` is kept); lsl sinks get a stream name and source_id of this run's own;
- event_file / replay sources: data paths mapped onto --data, `loop = true`; event_udp / watch_udp: a free
  loopback port; budgets, queues, stages and models are the examples' own.

Fed by (every feeder is a process of its own, started here, loopback only):
- LSL EEG: `spikeline replay eegmmidb_S001/S001R04.edf --lsl --loop` (64 ch, 160 Hz, real time), read by both
  EEG pipelines (laterality, motor imagery);
- LSL IMU: `spikeline replay spar_applewatch/spar_watch.npz --lsl --loop` (all 140 series, 6 ch, 50 Hz), read by
  both smartwatch HAR pipelines;
- event_udp: the 100 N-MNIST test digits as AEStream datagrams at real time, 100 ms apart, looping
  (`--role udp-events`, below). Not `spikeline events send --loop`: it restarts the sensor clock at every pass,
  and the pipeline then stops (the source's gate takes the jump back as a clock reset and lets the events
  through, and the denoise stage raises "time goes backwards"). This sender keeps the camera's clock running
  across passes, as a camera does;
- watch_mqtt: tools/watch_sim.py, --watches watches replaying SPAR over MQTT (SLW1 frames, 5 samples each);
- event_file sources read the recordings themselves (N-MNIST test digits, the DVXplorer sample), looping.

Sampled every --interval seconds (default 5): the daemon's RSS (VmRSS of /proc/<pid>/status), CPU (utime + stime
of /proc/<pid>/stat, % of one core), threads and open file descriptors; the machine's load (loadavg, and the
cores busy in /proc/stat, split into this soak's processes and everybody else's); results received per pipeline
by a subscriber on spikeline/soak/#. From each pipeline's metrics topic (every --interval): runtime latency
(t_pub - t_recv) p50/p99/max of the window and of the whole run, deadline misses, drops (dropped_queue,
dropped_stale, skipped_late, the MQTT offline buffer's dropped_offline, and source_gaps / dropped_rate /
rejected_input), and the publisher's connects (reconnects = connects - 1).

Verdict: time counts from the daemon's start (start-up is part of the warm-up); warm-up = --warmup-minutes
(default: 2 min, or 20 % of a run shorter than 10 min). The reference RSS is the median over the window just
after warm-up, the end RSS the median over the last window (window: 1 min, or 10 % of a shorter run, at least 3
samples); growth = end / reference - 1 must be < 5 % (PASS, exit 0; FAIL, exit 1). A pipeline that failed or
published nothing, or a daemon that died, is a problem (exit 2).

Prints the JSON report (with the commit and any uncommitted changes under runtime/: the daemon runs this
checkout; --json also writes it), then tables; writes a plot of RSS, p99 latency and CPU over time
(matplotlib; --plot PATH, docs/soak.png with --write-docs); --write-docs writes docs/soak.md. A progress line on
stderr. Everything started is stopped on exit: the daemon first (SIGINT: it drains), then the feeders and the
broker; Ctrl-C ends the soak early with a report (a second Ctrl-C stops without waiting for the drain).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import glob
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LSLAPICFG", str(ROOT / "runtime" / "spikeline" / "lsl_api.cfg"))
for _p in (ROOT / "runtime", ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from benchlib import cpu_name, format_table, versions  # noqa: E402

EXAMPLES = ROOT / "deploy" / "examples"
DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
SHARED_DATA = ROOT.parent / "shared" / "data"  # where the examples' relative data paths point
DOCS = ROOT / "docs" / "soak.md"
DOCS_PLOT = ROOT / "docs" / "soak.png"
NODE = "soak"
GROWTH_LIMIT_PCT = 5.0

# What plays each LSL stream type the examples ask for (file under --data, series).
LSL_FEEDS = {"EEG": ("eegmmidb_S001/S001R04.edf", ""), "IMU": ("spar_applewatch/spar_watch.npz", "")}
# What an event_udp source of this sensor size gets: (files under --data, gap between files in ms).
UDP_EVENT_FEEDS = {(34, 34): ("nmnist_small_slayer/6????.bs2", 100.0)}
WATCH_UDP_FORMATS = {"auto": ("binary", "plain"), "binary": ("binary", "plain"), "json": ("json", "plain"),
                     "csv-plain": ("csv", "plain"), "csv-sensorstream": ("csv", "sensorstream")}


# --- the merged configuration ------------------------------------------------------------------------------------


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"no TOML for {v}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def toml_dumps(doc: dict[str, Any], prefix: str = "") -> str:
    """TOML for a parsed config (scalars, arrays, tables, arrays of tables); checked by parsing it back."""
    lines: list[str] = []
    tables, arrays = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        lines += ["", f"[{prefix}{_toml_key(k)}]", toml_dumps(v, f"{prefix}{_toml_key(k)}.")]
    for k, items in arrays:
        for item in items:
            lines += ["", f"[[{prefix}{_toml_key(k)}]]", toml_dumps(item, f"{prefix}{_toml_key(k)}.")]
    text = "\n".join(lines).strip("\n")
    if not prefix and tomllib.loads(text) != doc:
        raise AssertionError("TOML round trip changed the config")
    return text


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data_path(p: str, data: Path) -> str:
    """An example's data path (relative to the repository, e.g. ../shared/data/x) mapped onto `data`."""
    path = Path(p).expanduser()
    if not path.is_absolute():
        path = Path(os.path.normpath(ROOT / path))
    try:
        return str(data / path.relative_to(os.path.normpath(SHARED_DATA)))
    except ValueError:
        return str(path)


def merge_examples(configs: Sequence[Path], data: Path, url: str, run: str, interval: float,
                   watches: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """One daemon config with every pipeline of `configs`: (config, pipelines, feeds, notes). Each pipeline entry
    says where it came from, what was changed and what feeds it; each feed is a process to start."""
    docs = [(p, tomllib.loads(p.read_text(encoding="utf-8"))) for p in configs]
    counts: dict[str, int] = {}
    for _, d in docs:
        for pipe in d.get("pipeline", []):
            counts[pipe["name"]] = counts.get(pipe["name"], 0) + 1
    node: dict[str, Any] = {"name": NODE, "metrics_interval_s": interval, "drain_s": 3.0}
    mqtt: dict[str, Any] = {}
    notes: list[str] = []
    pipelines: list[dict[str, Any]] = []
    info: list[dict[str, Any]] = []
    feeds: list[dict[str, Any]] = []
    lsl_feeds: dict[str, dict[str, Any]] = {}
    for path, d in docs:
        node["drain_s"] = max(node["drain_s"], float(d.get("node", {}).get("drain_s", 0.0)))
        for k, v in d.get("mqtt", {}).items():
            if k == "url":
                continue
            if k in mqtt and mqtt[k] != v:
                notes.append(f"[mqtt] {k}: {path.name} says {v!r}, kept {mqtt[k]!r} (one connection per daemon)")
                continue
            mqtt[k] = v
        if d.get("lsl", {}).get("config", "loopback") != "loopback":
            notes.append(f"{path.name}: [lsl] config {d['lsl']['config']!r} replaced by loopback")
        for raw in d.get("pipeline", []):
            pipe = copy.deepcopy(raw)
            orig = pipe["name"]
            if counts[orig] > 1:
                pipe["name"] = path.stem
            name = pipe["name"]
            src = pipe["source"]
            kind = src["type"]
            changes = [f"name {orig} -> {name}"] if name != orig else []
            feed: dict[str, Any] | None = None
            if kind == "lsl":
                stype = src.get("stream_type", "")
                if stype not in LSL_FEEDS:
                    raise SystemExit(f"{path.name}: pipeline {orig}: no recording to play for LSL stream type "
                                     f"{stype!r} (known: {', '.join(LSL_FEEDS)})")
                if stype not in lsl_feeds:
                    file, series = LSL_FEEDS[stype]
                    lsl_feeds[stype] = {"kind": "lsl", "name": f"soak-{stype.lower()}-{run}", "stream_type": stype,
                                        "file": str(data / file), "series": series, "pipelines": []}
                    feeds.append(lsl_feeds[stype])
                feed = lsl_feeds[stype]
                src["name"] = feed["name"]
                src.pop("source_id", None)
                changes.append(f"source name = {feed['name']!r} (this run's outlet)")
            elif kind in ("event_file", "replay"):
                for key in ("file",):
                    if src.get(key):
                        src[key] = data_path(src[key], data)
                if src.get("files"):
                    src["files"] = [data_path(f, data) for f in src["files"]]
                if not src.get("loop", False):
                    changes.append("loop = true")
                src["loop"] = True
                changes.append("data paths under --data")
            elif kind == "event_udp":
                size = (int(src["width"]), int(src["height"]))
                if size not in UDP_EVENT_FEEDS:
                    raise SystemExit(f"{path.name}: pipeline {orig}: no event recording for a {size[0]}x{size[1]} "
                                     "event_udp source")
                files, gap = UDP_EVENT_FEEDS[size]
                src["host"], src["port"] = "127.0.0.1", free_udp_port()
                changes.append(f"port {raw['source'].get('port')} -> {src['port']}")
                feed = {"kind": "udp_events", "files": str(data / files), "gap_ms": gap, "port": src["port"],
                        "pipelines": []}
                feeds.append(feed)
            elif kind == "watch_mqtt":
                if src.get("url"):
                    src["url"] = url
                    changes.append("url -> this run's broker")
                topic = src.get("topic", "watch/+/imu")
                feed = {"kind": "watch_mqtt", "topic": topic.replace("+", "{device}"), "watches": watches,
                        "pipelines": []}
                feeds.append(feed)
            elif kind == "watch_udp":
                src["host"], src["port"] = "127.0.0.1", free_udp_port()
                changes.append(f"port {raw['source'].get('port')} -> {src['port']}")
                fmt, layout = WATCH_UDP_FORMATS[src.get("format", "auto")]
                feed = {"kind": "watch_udp", "port": src["port"], "format": fmt, "csv_layout": layout,
                        "watches": watches, "pipelines": []}
                feeds.append(feed)
            else:
                raise SystemExit(f"{path.name}: pipeline {orig}: no feeder for a {kind!r} source")
            for sink in pipe.get("sinks", []):
                if sink.get("type") == "lsl":
                    base = sink.get("stream_name") or f"spikeline-{name}"
                    sink["stream_name"] = f"{base}-{run}"
                    sink["source_id"] = f"soak-{run}-{name}"
                    changes.append(f"lsl sink stream {sink['stream_name']!r}")
            if feed is not None:
                feed["pipelines"].append(name)
            pipelines.append(pipe)
            info.append({"pipeline": name, "config": path.name, "original_name": orig, "source": kind,
                         "stages": [s.get("name", s["type"]) for s in pipe.get("stages", [])],
                         "sinks": [s["type"] for s in pipe.get("sinks", [])], "budget_ms": pipe.get("budget_ms"),
                         "changes": changes})
    mqtt["url"] = url
    doc = {"node": node, "lsl": {"config": "loopback"}, "mqtt": mqtt, "pipeline": pipelines}
    return doc, info, feeds, notes


# --- processes -------------------------------------------------------------------------------------------------


class Procs:
    """Every process the soak starts, in its own session (a terminal's Ctrl-C reaches only this tool, which
    stops them in order). stop_all(): reverse start order; SIGINT for the daemon (it drains), SIGTERM/SIGINT for
    the rest, SIGKILL after a deadline or when `force` is set (a second Ctrl-C)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.items: list[dict[str, Any]] = []
        self.force = threading.Event()

    def start(self, name: str, cmd: list[str], stop_signal: int = signal.SIGTERM, grace_s: float = 5.0,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env, start_new_session=True)
        log.close()
        self.items.append({"name": name, "proc": proc, "signal": stop_signal, "grace_s": grace_s,
                           "log": self.tmp / f"{name}.log", "cmd": cmd, "restarts": 0, "t_start": time.monotonic()})
        return proc

    def get(self, name: str) -> dict[str, Any] | None:
        return next((it for it in reversed(self.items) if it["name"] == name), None)

    def pids(self) -> list[int]:
        return [it["proc"].pid for it in self.items if it["proc"].poll() is None]

    def stop(self, it: dict[str, Any]) -> None:
        proc: subprocess.Popen[bytes] = it["proc"]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(it["signal"])
            end = time.monotonic() + it["grace_s"]
            while proc.poll() is None and time.monotonic() < end and not self.force.is_set():
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                it["killed"] = True
            proc.wait()

    def stop_all(self) -> None:
        for it in reversed(self.items):
            self.stop(it)

    def summary(self) -> list[dict[str, Any]]:
        return [{"name": it["name"], "pid": it["proc"].pid, "exit_code": it["proc"].returncode,
                 "killed": bool(it.get("killed")), "restarts": it["restarts"]} for it in self.items]


def git_state() -> dict[str, Any]:
    """The commit the soak ran, and whether runtime/ had uncommitted changes (the daemon runs the working tree)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "runtime", "ext")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "runtime_dirty": bool(dirty),
            "dirty_files": [ln[3:] for ln in dirty.splitlines()][:20]}


def log_tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


# --- /proc ------------------------------------------------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process; {} when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime (fields 14, 15 of stat(5))


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs (busy = total - idle - iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    total = float(sum(v))
    return total - v[3] - v[4], total


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as f:
        return float(f.read().split()[0])


# --- the subscriber ---------------------------------------------------------------------------------------------


class Subscriber:
    """Counts results per pipeline and keeps each pipeline's metrics messages (paho, its own thread)."""

    def __init__(self, url: str, node: str, clock: Callable[[], float]) -> None:
        import paho.mqtt.client as mqtt

        self.node, self.clock = node, clock
        self.lock = threading.Lock()
        self.results: dict[str, int] = {}
        self.latest: dict[str, dict[str, Any]] = {}  # the last metrics message per pipeline
        self.series: dict[str, list[dict[str, Any]]] = {}  # every metrics window, condensed
        self.bad_payloads = 0
        self.connected = threading.Event()
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.client = c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-sub-{uuid.uuid4().hex[:8]}")
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(host, int(port))
        c.loop_start()

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        client.subscribe(f"spikeline/{self.node}/#", qos=0)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4:
            return
        pipeline, leaf = parts[2], parts[-1]
        if leaf == "result":
            with self.lock:
                self.results[pipeline] = self.results.get(pipeline, 0) + 1
        elif leaf == "metrics":
            try:
                m = json.loads(msg.payload)
            except ValueError:
                self.bad_payloads += 1
                return
            entry = condense(m, self.clock())
            with self.lock:
                self.latest[pipeline] = m
                self.series.setdefault(pipeline, []).append(entry)

    def snapshot(self) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        with self.lock:
            return dict(self.results), dict(self.latest)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def condense(m: dict[str, Any], t: float) -> dict[str, Any]:
    """One metrics window, kept for the time series."""
    w = m.get("latency_ms", {}).get("runtime", {})
    c = m.get("counters", {})
    q = m.get("mqtt") or {}
    return {"t": round(t, 2), "state": m.get("state"), "n": w.get("n"), "p50": w.get("p50"), "p99": w.get("p99"),
            "max": w.get("max"), "results": c.get("results"), "misses": c.get("deadline_misses"),
            "dropped_queue": c.get("dropped_queue"), "dropped_stale": c.get("dropped_stale"),
            "dropped_offline": q.get("dropped_offline"), "connects": q.get("connects")}


# --- feeders ---------------------------------------------------------------------------------------------------


def role_udp_events(pattern: str, dest: str, gap_ms: float, speed: float, chunk_ms: float) -> int:
    """Play event files as AEStream datagrams (with timestamps), back to back `gap_ms` apart, looping with the
    sensor clock running on across passes (a camera's clock does not restart when the scene does)."""
    from spikeline.events.tool import stream_files
    from spikeline.events.udp import encode_aestream
    from spikeline.sources.events import expand_files

    files = [str(p) for p in expand_files([pattern], "udp-events")]
    host, _, port = dest.rpartition(":")
    addr = (host, int(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    gap_us, chunk_us = round(gap_ms * 1e3), max(1, round(chunk_ms * 1e3))
    sent = datagrams = passes = 0
    shift = 0
    last: int | None = None
    t0: int | None = None
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.is_set():
            first: int | None = None
            for block in stream_files(files, None, gap_us):
                if stop.is_set():
                    break
                if first is None:
                    first = int(block["t"][0])
                    if last is not None:
                        shift = last + gap_us + 1 - first
                block = block.copy()
                block["t"] += shift
                if t0 is None:
                    t0 = int(block["t"][0])
                k = (block["t"] - t0) // chunk_us
                cuts = [0, *((k[1:] != k[:-1]).nonzero()[0] + 1).tolist(), len(block)]
                for a, b in itertools.pairwise(cuts):
                    part = block[a:b]
                    delay = start + (int(part["t"][-1]) - t0) * 1e-6 / speed - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                    for pkt in encode_aestream(part, timestamps=True):
                        sock.sendto(pkt, addr)
                        datagrams += 1
                    sent += len(part)
                last = int(block["t"][-1])
            else:
                passes += 1
    print(json.dumps({"udp_events": {"files": len(files), "passes": passes, "events": sent, "datagrams": datagrams,
                                     "seconds": round(time.monotonic() - start, 1)}}), flush=True)
    return 0


def start_feed(procs: Procs, feed: dict[str, Any], url: str, remaining_s: float, env: dict[str, str]) -> None:
    py = sys.executable
    kind = feed["kind"]
    if kind == "lsl":
        cmd = [py, "-m", "spikeline", "replay", feed["file"], "--lsl", "--loop", "--speed", "1",
               "--name", feed["name"], "--type", feed["stream_type"], "--linger", "0"]
        if feed["series"]:
            cmd += ["--series", feed["series"]]
        procs.start(f"lsl-{feed['stream_type'].lower()}", cmd, signal.SIGTERM, env=env)
    elif kind == "udp_events":
        procs.start(f"udp-events-{feed['port']}",
                    [py, __file__, "--role", "udp-events", "--files", feed["files"], "--gap-ms", str(feed["gap_ms"]),
                     "--dest", f"127.0.0.1:{feed['port']}"], signal.SIGTERM, env=env)
    elif kind in ("watch_mqtt", "watch_udp"):
        # watch_sim schedules every message up front: a long soak gets segments of at most 30 min (restarted by
        # the main loop; the watches' sample indices then start again, which the gateway sees as a restart)
        seconds = max(10.0, min(remaining_s + 30.0, 1800.0))
        cmd = [py, str(ROOT / "tools" / "watch_sim.py"), "--watches", str(feed["watches"]), "--format",
               feed.get("format", "binary"), "--batch", "5", "--duration", f"{seconds:.0f}", "--quiet",
               "--data", str(DATA / "spar_applewatch" / "spar_watch.npz")]
        if kind == "watch_mqtt":
            cmd += ["--mqtt", url, "--topic", feed["topic"]]
        else:
            cmd += ["--udp", f"127.0.0.1:{feed['port']}", "--csv-layout", feed["csv_layout"]]
        procs.start(f"watch-sim-{kind}", cmd, signal.SIGINT, env=env)
    else:
        raise ValueError(kind)


def start_mosquitto(procs: Procs, tmp: Path) -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        raise SystemExit("mosquitto not found: install it (tools/test.sh does)")
    port = free_tcp_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
                    "max_queued_messages 100000\n")
    proc = procs.start("mosquitto", [binary, "-c", str(conf)], signal.SIGTERM)
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return f"mqtt://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > end or proc.poll() is not None:
                raise SystemExit(f"mosquitto did not start: {log_tail(tmp / 'mosquitto.log')}") from None
            time.sleep(0.05)


# --- the run ---------------------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """One line on stderr: rewritten in place on a terminal, else printed every 30 s or so."""

    def __init__(self, total_s: float, quiet: bool) -> None:
        self.total, self.quiet = total_s, quiet
        self.tty = sys.stderr.isatty()
        self._next = 0.0

    def __call__(self, elapsed: float, text: str) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now < self._next:
            return
        self._next = now + 30.0
        frac = min(1.0, elapsed / self.total) if self.total > 0 else 1.0
        bar = "#" * int(frac * 20)
        line = f"[soak] {_clock(elapsed)}/{_clock(self.total)} [{bar:<20}] {text}"
        print(f"\r{line}\x1b[K" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr, flush=True)


def run_soak(args: argparse.Namespace, stop: threading.Event, procs: Procs, tmp: Path) -> dict[str, Any]:
    total_s = args.minutes * 60.0
    configs = sorted(Path(p) for pat in args.configs for p in glob.glob(pat)) if args.configs else \
        sorted(EXAMPLES.glob("*.toml"))
    if not configs:
        raise SystemExit(f"no config matches {args.configs}")
    run = uuid.uuid4().hex[:6]
    git = git_state()  # what the daemon will import: the checkout as it is now
    url = start_mosquitto(procs, tmp)
    doc, info, feeds, notes = merge_examples(configs, DATA, url, run, args.interval, args.watches)
    cfg_path = tmp / "soak.toml"
    cfg_path.write_text(toml_dumps(doc) + "\n", encoding="utf-8")
    from spikeline.config import parse  # validate here: every problem at once, before anything runs

    parse(tomllib.loads(cfg_path.read_text(encoding="utf-8")), origin=str(cfg_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "runtime"), os.environ.get("PYTHONPATH", "")) if p)}
    names = [p["pipeline"] for p in info]

    t_launch = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t_launch

    sub = Subscriber(url, NODE, clock)
    if not sub.connected.wait(10):
        raise SystemExit("the subscriber could not connect to mosquitto")
    early = [f for f in feeds if f["kind"] == "lsl"]  # outlets first: the LSL sources resolve them at start
    late = [f for f in feeds if f["kind"] != "lsl"]  # the rest once the pipelines listen
    for f in early:
        start_feed(procs, f, url, total_s, env)
    time.sleep(0.5)
    t_launch = time.monotonic()
    daemon = procs.start("daemon", [sys.executable, "-m", "spikeline", "--log-level", "warning", "run", str(cfg_path)],
                         signal.SIGINT, grace_s=doc["node"]["drain_s"] + 10.0, env=env)
    pid = daemon.pid
    progress = Progress(total_s, args.quiet)
    samples: list[dict[str, Any]] = []
    problems: list[str] = []
    t_ready: float | None = None
    late_started = False
    prev_cpu: tuple[float, float] | None = None
    prev_machine = machine_busy()
    prev_mine: tuple[float, float] | None = None
    ncpu = os.cpu_count() or 1
    next_sample = 0.0
    interrupted = False
    while True:
        el = clock()
        if stop.is_set():
            interrupted = True
            break
        if daemon.poll() is not None:
            problems.append(f"the daemon exited early (code {daemon.returncode}) after {el:.0f} s")
            break
        results, latest = sub.snapshot()
        if not late_started and (all(latest.get(n, {}).get("state") in ("running", "failed", "stopped")
                                     for n in names) or el > 90):
            t_ready = el
            for f in late:
                start_feed(procs, f, url, total_s - el, env)
            late_started = True
        for it in list(procs.items):  # a watch simulator segment ended: the next one
            if not (it["name"].startswith("watch-sim") and it["proc"].poll() is not None
                    and procs.get(it["name"]) is it and not it.get("done")):
                continue
            it["done"] = True
            if time.monotonic() - it["t_start"] < 60:
                problems.append(f"{it['name']} ended after {time.monotonic() - it['t_start']:.0f} s (code "
                                f"{it['proc'].returncode}): {' | '.join(log_tail(it['log'], 3))}")
            elif el < total_s - 5:
                feed = next(f for f in late if f"watch-sim-{f['kind']}" == it["name"])
                start_feed(procs, feed, url, total_s - el, env)
                new = procs.get(it["name"])
                assert new is not None
                new["restarts"] = it["restarts"] + 1
        if el >= next_sample or el >= total_s:
            st = proc_status(pid)
            cpu = proc_cpu_s(pid)
            mb, mt = machine_busy()
            mine_cpu = sum(c for p in procs.pids() if (c := proc_cpu_s(p)) is not None) + sum(os.times()[:2])
            s: dict[str, Any] = {
                "t": round(el, 2), "rss_mb": round(st.get("VmRSS", 0) / 1024, 2),
                "hwm_mb": round(st.get("VmHWM", 0) / 1024, 2), "threads": st.get("Threads"), "fds": proc_fds(pid),
                "cpu_pct": None, "load1": loadavg(),
                "machine_busy_cores": round((mb - prev_machine[0]) / max(1.0, mt - prev_machine[1]) * ncpu, 3),
                "soak_busy_cores": None, "others_busy_cores": None,
                "results": {n: results.get(n, 0) for n in names},
            }
            if cpu is not None and prev_cpu is not None and el > prev_cpu[1]:
                s["cpu_pct"] = round((cpu - prev_cpu[0]) / (el - prev_cpu[1]) * 100, 1)
            if prev_mine is not None and el > prev_mine[1]:
                mine = max(0.0, (mine_cpu - prev_mine[0]) / (el - prev_mine[1]))
                s["soak_busy_cores"] = round(mine, 3)
                s["others_busy_cores"] = round(max(0.0, s["machine_busy_cores"] - mine), 3)
            prev_cpu = (cpu, el) if cpu is not None else prev_cpu
            prev_mine, prev_machine = (mine_cpu, el), (mb, mt)
            if st:
                samples.append(s)
            next_sample += args.interval
            misses = sum((latest.get(n, {}).get("counters") or {}).get("deadline_misses", 0) for n in names)
            running = sum(1 for n in names if latest.get(n, {}).get("state") == "running")
            progress(el, f"RSS {s['rss_mb']:.1f} MB  CPU {s['cpu_pct'] if s['cpu_pct'] is not None else '-'} %  "
                         f"results {sum(results.values()):,}  misses {misses}  pipelines {running}/{len(names)}  "
                         f"load {s['load1']:.2f}")
            if el >= total_s:
                break
        time.sleep(min(0.2, max(0.01, next_sample - clock())))
    progress.done()
    final_results, final_metrics = sub.snapshot()
    with sub.lock:
        series = {n: list(v) for n, v in sub.series.items()}
    if t_ready is None:
        problems.append("the pipelines never all reported running")
    # stop the daemon first (it drains, publishes its last metrics and `offline`), then the feeders and the broker
    dit = procs.get("daemon")
    assert dit is not None
    procs.stop(dit)
    time.sleep(0.3)
    _, after = sub.snapshot()
    sub.stop()
    procs.stop_all()
    feeders_out = {}
    for it in procs.items:
        if it["name"].startswith("udp-events"):
            for ln in reversed(log_tail(it["log"], 5)):
                if ln.startswith("{"):
                    feeders_out[it["name"]] = json.loads(ln)
                    break
    daemon_log = [ln for ln in log_tail(tmp / "daemon.log", 200) if "INFO|" not in ln][-40:]  # not liblsl's INFO
    all_log = (tmp / "daemon.log").read_text(encoding="utf-8", errors="replace") if (tmp / "daemon.log").exists() else ""
    report: dict[str, Any] = {
        "tool": "soak",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "tools/soak.py", *args.argv]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "versions": versions("numpy", "spikeline")},
        "git": git,
        "settings": {"minutes": args.minutes, "interval_s": args.interval, "watches": args.watches,
                     "configs": [p.name for p in configs], "node": NODE},
        "interrupted": interrupted,
        "daemon_pid": pid,
        "daemon_exit_code": daemon.returncode,
        "startup_s": None if t_ready is None else round(t_ready, 2),
        "pipelines": info, "feeds": feeds, "notes": notes, "problems": problems,
        "samples": samples, "metrics": series,
        "final": {"results_received": {n: final_results.get(n, 0) for n in names},
                  "metrics": {n: final_metrics.get(n) for n in names}},
        "shutdown_states": {n: (after.get(n) or {}).get("state") for n in names},
        "daemon_log": {"warnings": len(re.findall(r" WARNING ", all_log)), "errors": len(re.findall(r" ERROR ", all_log)),
                       "tail": daemon_log},
        "feeders": feeders_out,
    }
    report["processes"] = procs.summary()
    report["summary"] = summarise(report, args.warmup_minutes)
    return report


# --- the numbers -----------------------------------------------------------------------------------------------


def _diff(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def window_median(samples: list[dict[str, Any]], key: str, t0: float, t1: float, at_least: int = 3) -> \
        tuple[float | None, float, float]:
    """Median of `key` over samples with t0 <= t < t1, widened to the nearest `at_least` samples around the
    window when it holds fewer; (median, first t, last t)."""
    sel = [s for s in samples if t0 <= s["t"] < t1 and s.get(key) is not None]
    if len(sel) < at_least:
        mid = (t0 + t1) / 2
        sel = sorted((s for s in samples if s.get(key) is not None), key=lambda s: abs(s["t"] - mid))[:at_least]
        sel.sort(key=lambda s: s["t"])
    if not sel:
        return None, t0, t1
    return _median([s[key] for s in sel]), sel[0]["t"], sel[-1]["t"]


def summarise(report: dict[str, Any], warmup_minutes: float | None) -> dict[str, Any]:
    samples = report["samples"]
    duration = samples[-1]["t"] if samples else 0.0
    warmup = warmup_minutes * 60 if warmup_minutes is not None else min(120.0, 0.2 * duration)
    win = min(60.0, 0.1 * duration)
    ref, ref0, ref1 = window_median(samples, "rss_mb", warmup, warmup + win)
    end, end0, end1 = window_median(samples, "rss_mb", duration - win, duration + 1)
    growth = (end / ref - 1) * 100 if ref and end else None
    post = [s for s in samples if s["t"] >= warmup]
    slope = None
    if len(post) >= 3:
        ts = [s["t"] for s in post]
        ys = [s["rss_mb"] for s in post]
        tm, ym = statistics.fmean(ts), statistics.fmean(ys)
        den = sum((t - tm) ** 2 for t in ts)
        slope = sum((t - tm) * (y - ym) for t, y in zip(ts, ys, strict=True)) / den * 3600 if den else None
    ready = report.get("startup_s")
    at_ready = next((s for s in samples if ready is not None and s["t"] >= ready), samples[0] if samples else None)
    cpu_post = [s["cpu_pct"] for s in post if s.get("cpu_pct") is not None]
    rss = {
        "warmup_s": round(warmup, 1), "window_s": round(win, 1),
        "first_mb": samples[0]["rss_mb"] if samples else None,
        "start_mb": at_ready["rss_mb"] if at_ready else None,
        "start_t": at_ready["t"] if at_ready else None,
        "after_warmup_mb": ref, "after_warmup_window": [ref0, ref1],
        "end_mb": end, "end_window": [end0, end1],
        "max_mb": max((s["rss_mb"] for s in samples), default=None),
        "hwm_mb": samples[-1].get("hwm_mb") if samples else None,
        "growth_pct": None if growth is None else round(growth, 2),
        "slope_mb_per_h": None if slope is None else round(slope, 2),
    }
    verdict = "PASS" if growth is not None and growth < GROWTH_LIMIT_PCT else "FAIL"
    daemon = {
        "cpu_pct_mean_after_warmup": round(statistics.fmean(cpu_post), 1) if cpu_post else None,
        "cpu_pct_max": max(cpu_post, default=None),
        "threads_start": at_ready.get("threads") if at_ready else None,
        "threads_end": samples[-1].get("threads") if samples else None,
        "fds_start": at_ready.get("fds") if at_ready else None, "fds_end": samples[-1].get("fds") if samples else None,
    }
    others = [s["others_busy_cores"] for s in samples if s.get("others_busy_cores") is not None]
    soak = [s["soak_busy_cores"] for s in samples if s.get("soak_busy_cores") is not None]
    load = {"load1_mean": round(statistics.fmean(s["load1"] for s in samples), 2) if samples else None,
            "load1_max": max((s["load1"] for s in samples), default=None),
            "soak_busy_cores_mean": round(statistics.fmean(soak), 2) if soak else None,
            "others_busy_cores_mean": round(statistics.fmean(others), 2) if others else None,
            "others_busy_cores_max": max(others, default=None)}
    pipelines: dict[str, Any] = {}
    problems = list(report["problems"])
    for p in report["pipelines"]:
        name = p["pipeline"]
        m = report["final"]["metrics"].get(name) or {}
        c = m.get("counters") or {}
        q = m.get("mqtt") or {}
        tot = (m.get("latency_ms_total") or {}).get("runtime") or {}
        age = (m.get("latency_ms_total") or {}).get("age") or {}
        ser = report["metrics"].get(name, [])
        w_post = [e for e in ser if e["t"] >= warmup and e.get("n")]
        base = next((e for e in ser if e["t"] >= warmup), None)
        received = report["final"]["results_received"].get(name, 0)
        connects = q.get("connects")
        row = {
            "state": m.get("state"), "error": m.get("error"),
            "results_received": received, "results_published": c.get("results"),
            "results_per_s": round(received / duration, 2) if duration else None,
            "samples_in": c.get("samples_in"),
            "runtime_ms": {k: tot.get(k) for k in ("n", "p50", "p99", "p999", "max", "mean")},
            "age_ms": {k: age.get(k) for k in ("p50", "p99", "max")},
            "after_warmup": {
                "window_p99_median": _median([e["p99"] for e in w_post if e.get("p99") is not None]),
                "window_p99_worst": max((e["p99"] for e in w_post if e.get("p99") is not None), default=None),
                "max": max((e["max"] for e in w_post if e.get("max") is not None), default=None),
                "misses": _diff(c.get("deadline_misses"), (base or {}).get("misses")),
                "results": _diff(c.get("results"), (base or {}).get("results")),
            },
            "budget_ms": m.get("budget_ms", p.get("budget_ms")),
            "deadline_misses": c.get("deadline_misses"),
            "drops": {"queue": c.get("dropped_queue"), "stale": c.get("dropped_stale"), "late": c.get("skipped_late"),
                      "offline": q.get("dropped_offline"), "source_gaps": c.get("source_gaps"),
                      "rate": c.get("dropped_rate"), "rejected_input": c.get("rejected_input"),
                      "stage_errors": c.get("stage_errors")},
            "mqtt_connects": connects, "reconnects": None if connects is None else max(0, connects - 1),
            "connect_failures": q.get("connect_failures"),
            "source": m.get("source"),
        }
        pipelines[name] = row
        if not m:
            problems.append(f"{name}: no metrics received")
        elif m.get("state") != "running":
            problems.append(f"{name}: state {m.get('state')}" + (f" ({m.get('error')})" if m.get("error") else ""))
        if not received:
            problems.append(f"{name}: no result received")
    return {"duration_s": round(duration, 1), "rss": rss, "verdict": verdict, "daemon": daemon, "load": load,
            "pipelines": pipelines, "problems": problems, "ok": verdict == "PASS" and not problems}


# --- output ----------------------------------------------------------------------------------------------------


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _mins(s: float | None) -> str:
    return "-" if s is None else f"{s / 60:.1f} min"


def pipeline_table(report: dict[str, Any], markdown: bool = False) -> str:
    sm = report["summary"]
    src = {p["pipeline"]: p["source"] for p in report["pipelines"]}
    rows = [["pipeline", "source", "results", "results/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
             "worst p99 after warm-up", "budget ms", "misses", "drops queue/stale/late/offline", "gaps/rate/rejected",
             "reconnects", "state"]]
    for name, r in sm["pipelines"].items():
        d, rt = r["drops"], r["runtime_ms"]
        rows.append([name, src.get(name, "?"), f"{r['results_received']:,}", _f(r["results_per_s"], "{:.1f}"),
                     _f(rt["p50"]), _f(rt["p99"]), _f(rt["p999"]), _f(rt["max"]),
                     _f(r["after_warmup"]["window_p99_worst"]), _f(r["budget_ms"], "{:g}"),
                     _f(r["deadline_misses"], "{:,}"),
                     "/".join(_f(d[k], "{:,}") for k in ("queue", "stale", "late", "offline")),
                     "/".join(_f(d[k], "{:,}") for k in ("source_gaps", "rate", "rejected_input")),
                     _f(r["reconnects"], "{}"), str(r["state"])])
    return format_table(rows, left=2, markdown=markdown)


def rss_lines(report: dict[str, Any]) -> list[str]:
    sm = report["summary"]
    r = sm["rss"]
    return [
        f"{sm['verdict']}: RSS growth after warm-up {_f(r['growth_pct'], '{:+.2f}')} % "
        f"(limit < {GROWTH_LIMIT_PCT:g} %); duration {_mins(sm['duration_s'])}, warm-up {_mins(r['warmup_s'])}, "
        f"windows of {r['window_s']:g} s",
        f"RSS MB: start (pipelines up, {_f(r['start_t'], '{:.0f}')} s) {_f(r['start_mb'], '{:.1f}')}, after warm-up "
        f"(median {_clock(r['after_warmup_window'][0])}-{_clock(r['after_warmup_window'][1])}) "
        f"{_f(r['after_warmup_mb'], '{:.1f}')}, end (median {_clock(r['end_window'][0])}-{_clock(r['end_window'][1])}) "
        f"{_f(r['end_mb'], '{:.1f}')}, max {_f(r['max_mb'], '{:.1f}')}; slope after warm-up "
        f"{_f(r['slope_mb_per_h'], '{:+.1f}')} MB/h",
    ]


def header_lines(report: dict[str, Any]) -> list[str]:
    """Verdict, RSS, the daemon's CPU/threads/fds and the machine's load, one line each."""
    sm = report["summary"]
    d, ld = sm["daemon"], sm["load"]
    out = rss_lines(report)
    out.append(f"Daemon (pid {report['daemon_pid']}, {len(sm['pipelines'])} pipelines, start-up "
               f"{_f(report['startup_s'], '{:.1f}')} s): CPU {_f(d['cpu_pct_mean_after_warmup'], '{:.1f}')} % of one "
               f"core on average after warm-up (max {_f(d['cpu_pct_max'], '{:.1f}')} %); threads {d['threads_start']} -> "
               f"{d['threads_end']}; open fds {d['fds_start']} -> {d['fds_end']}; exit code {report['daemon_exit_code']}")
    out.append(f"Machine load: loadavg(1 min) mean {_f(ld['load1_mean'])}, max {_f(ld['load1_max'])}; this soak's "
               f"processes {_f(ld['soak_busy_cores_mean'])} cores busy on average, everybody else's "
               f"{_f(ld['others_busy_cores_mean'])} (max {_f(ld['others_busy_cores_max'])}) of {report['machine']['cores']}")
    return out


def tables(report: dict[str, Any], markdown: bool = False) -> str:
    sm = report["summary"]
    out = [*header_lines(report), "", pipeline_table(report, markdown), ""]
    out.append("Latency: the daemon's runtime latency (t_pub - t_recv) over the whole run (its cumulative histogram); "
               "worst p99 after warm-up: the highest p99 of one metrics window after warm-up.")
    if sm["problems"]:
        out += ["", "Problems:", *(f"- {p}" for p in sm["problems"])]
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[train]'): no plot", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sm, samples = report["summary"], report["samples"]
    r = sm["rss"]
    t = [s["t"] / 60 for s in samples]
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(10, 9.5), sharex=True, gridspec_kw={"height_ratios": [3, 3, 2]})
    a.plot(t, [s["rss_mb"] for s in samples], color="tab:blue", lw=1.5, label="daemon RSS")
    if r["after_warmup_mb"]:
        a.axhline(r["after_warmup_mb"], color="grey", lw=0.8, ls="--", label="median after warm-up")
        a.axhline(r["after_warmup_mb"] * (1 + GROWTH_LIMIT_PCT / 100), color="tab:red", lw=0.8, ls=":",
                  label=f"+{GROWTH_LIMIT_PCT:g} % limit")
    for lo, hi in (r["after_warmup_window"], r["end_window"]):
        a.axvspan(lo / 60, hi / 60, color="tab:green", alpha=0.12)
    for ax in (a, b, c):
        ax.axvspan(0, r["warmup_s"] / 60, color="grey", alpha=0.12)
    up = [s["rss_mb"] for s in samples if r["start_t"] is not None and s["t"] >= r["start_t"]]
    if up and r["after_warmup_mb"]:  # from the pipelines being up: the start-up's climb from 0 is cut off
        a.set_ylim(0.97 * min(up), max(max(up), r["after_warmup_mb"] * (1 + GROWTH_LIMIT_PCT / 100)) * 1.02)
    a.set_ylabel("RSS (MB)")
    a.set_title(f"soak: {len(sm['pipelines'])} pipelines in one daemon, {_mins(sm['duration_s'])}: {sm['verdict']} "
                f"(RSS {_f(r['growth_pct'], '{:+.2f}')} % after warm-up; shaded grey: warm-up, green: the windows "
                "compared)", fontsize=9)
    a.legend(loc="lower right", fontsize=8)
    budgets = set()
    for name, ser in report["metrics"].items():
        pts = [(e["t"] / 60, e["p99"]) for e in ser if e.get("p99")]
        if pts:
            b.plot(*zip(*pts, strict=True), lw=0.8, label=name)
        bud = (sm["pipelines"].get(name) or {}).get("budget_ms")
        if bud:
            budgets.add(bud)
    for bud in budgets:
        b.axhline(bud, color="tab:red", lw=0.8, ls="--")
    b.set_yscale("log")
    b.set_ylabel("runtime p99 per window (ms)")
    if b.get_legend_handles_labels()[0]:
        b.legend(loc="upper right", fontsize=7, ncol=2)
    c.plot(t, [s["cpu_pct"] for s in samples], color="tab:blue", lw=1, label="daemon (% of one core)")
    c.plot(t, [None if s["soak_busy_cores"] is None or s["cpu_pct"] is None else
               max(0.0, s["soak_busy_cores"] * 100 - s["cpu_pct"]) for s in samples],
           color="tab:green", lw=1, label="feeders, broker, this tool")
    c.plot(t, [None if s["others_busy_cores"] is None else s["others_busy_cores"] * 100 for s in samples],
           color="tab:orange", lw=1, label="other processes on the machine (% of one core)")
    c.set_ylabel("CPU %")
    c.set_xlabel("minutes since the daemon started")
    c.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":  # a palette of 64 colours: a quarter of the bytes, looks the same
        import io

        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, dpi=80, format="png")
        Image.open(buf).convert("RGB").quantize(64).save(path, optimize=True)
    else:
        fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


DROP_COUNTERS = {"queue": "dropped_queue", "stale": "dropped_stale", "late": "skipped_late",
                 "offline": "dropped_offline", "rate": "dropped_rate"}


def observations(report: dict[str, Any]) -> list[str]:
    sm = report["summary"]
    src = {p["pipeline"]: p["source"] for p in report["pipelines"]}
    out = []
    for name, r in sm["pipelines"].items():
        if r["deadline_misses"]:
            out.append(f"- `{name}`: {r['deadline_misses']:,} of {r['results_published'] or 0:,} results missed the "
                       f"{r['budget_ms']:g} ms budget ({r['after_warmup']['misses']} after warm-up); runtime max "
                       f"{_f(r['runtime_ms']['max'])} ms.")
        drops = {k: v for k, v in r["drops"].items() if v}
        if drops:
            unit = "events" if src.get(name, "").startswith("event") else "samples"
            total = f" of {r['samples_in']:,} {unit} in" if r.get("samples_in") else f" {unit}"
            out.append(f"- `{name}`: " + ", ".join(f"{DROP_COUNTERS.get(k, k)} {v:,}" for k, v in drops.items())
                       + f"{total} ({sum(drops.values()) / r['samples_in'] * 100 if r.get('samples_in') else 0:.2f} %).")
        if r["reconnects"]:
            out.append(f"- `{name}`: the MQTT publisher reconnected {r['reconnects']} times.")
    lg = report["daemon_log"]
    out.append(f"- The daemon logged {lg['warnings']} warnings and {lg['errors']} errors"
               + ("; the last lines:" if lg["warnings"] or lg["errors"] else "."))
    if lg["warnings"] or lg["errors"]:
        out += ["", "```", *lg["tail"][-10:], "```", ""]
    for p in sm["problems"]:
        out.append(f"- Problem: {p}")
    return out


def write_docs(report: dict[str, Any], plot_name: str | None) -> None:
    m, sm = report["machine"], report["summary"]
    feeds = []
    for f in report["feeds"]:
        pipes = ", ".join(f"`{p}`" for p in f["pipelines"])
        if f["kind"] == "lsl":
            feeds.append(f"- {pipes}: `spikeline replay {Path(f['file']).name} --lsl --loop` (LSL type "
                         f"{f['stream_type']}, real time)")
        elif f["kind"] == "udp_events":
            feeds.append(f"- {pipes}: the N-MNIST test digits ({Path(f['files']).name}) as AEStream datagrams, "
                         f"{f['gap_ms']:g} ms apart, real time, looping with the sensor clock running on")
        else:
            feeds.append(f"- {pipes}: `tools/watch_sim.py --watches {f['watches']}` replaying SPAR over "
                         f"{'MQTT' if f['kind'] == 'watch_mqtt' else 'UDP'} (SLW1 frames of 5 samples)")
    for p in report["pipelines"]:
        if p["source"] in ("event_file", "replay"):
            feeds.append(f"- `{p['pipeline']}`: its own {p['source']} source, looping")
    g = report.get("git") or {}
    code = (f", commit {g['commit']}" + (f" with uncommitted changes in {', '.join(g['dirty_files'])}"
                                         if g.get("runtime_dirty") else "")) if g.get("commit") else ""
    header = header_lines(report)
    lines = [
        "# Soak: every example pipeline in one daemon", "",
        "Written by `tools/soak.py --write-docs` (its docstring says what runs, how it is fed and how the verdict "
        "is computed).", "",
        "```", report["command"], "```", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}. Run {report['date']}"
        f"{code}." + (" Interrupted before the end." if report["interrupted"] else ""), "",
        f"**{header[0]}**" + ("" if sm["ok"] else " (with the problems listed under Observations)"), "",
        *[f"{ln}  " for ln in header[1:]], "",
        *([f"![RSS, runtime p99 per pipeline and CPU over time]({plot_name})", ""] if plot_name else []),
        pipeline_table(report, markdown=True).lstrip("\n"), "",
        "Results: received by a subscriber on the broker. Latency: the daemon's runtime latency "
        "(t_pub - t_recv) over the whole run, from its cumulative histogram (≈ 4 % buckets, reported as the "
        "bucket's upper edge); worst p99 after warm-up: the highest p99 of one metrics window "
        f"({report['settings']['interval_s']:g} s) after warm-up. Drops: dropped_queue (the bounded queue's overflow) / "
        "dropped_stale (input already older than stale_ms on arrival) / skipped_late (queued input that could no "
        "longer make the budget, skipped by the drop_oldest policy) / the MQTT offline buffer's dropped_offline; "
        "source_gaps (samples lost upstream: LSL timestamp gaps, watches' "
        "lost samples) / dropped_rate (event rate cap) / rejected_input. Reconnects: the MQTT publisher's "
        "connects - 1.", "",
        "## What ran", "",
        f"One `spikeline run` process with the {len(report['pipelines'])} pipelines of "
        f"{', '.join(f'`{c}`' for c in report['settings']['configs'])} (deploy/examples), a mosquitto on a "
        "loopback port, fed by:", "",
        *feeds, "",
        "Changed from the examples (all else, budgets and queues included, as shipped):", "",
        *[f"- `{p['pipeline']}` ({p['config']}): " + ("; ".join(p["changes"]) or "nothing") for p in report["pipelines"]],
        *([f"- {n}" for n in report["notes"]]), "",
        "## Observations", "",
        *observations(report), "",
    ]
    if lines[-1] != "":
        lines.append("")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(lines), encoding="utf-8")


def compact_json(report: dict[str, Any]) -> str:
    """Indented JSON with each sample and each metrics window on one line."""
    rows: dict[str, str] = {}

    def token(x: dict[str, Any]) -> str:
        key = f"@@row{len(rows)}@@"
        rows[key] = json.dumps(x)
        return key

    r = {**report, "samples": [token(s) for s in report["samples"]],
         "metrics": {k: [token(e) for e in v] for k, v in report["metrics"].items()}}
    return re.sub(r'"(@@row\d+@@)"', lambda m: rows[m[1]], json.dumps(r, indent=1))


# --- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="seconds between samples, and the daemon's metrics interval (default 5)")
    ap.add_argument("--warmup-minutes", type=float, default=None,
                    help="warm-up (default: 2, or 20 %% of a run shorter than 10 min)")
    ap.add_argument("--watches", type=int, default=20, help="simulated watches for the gateway pipeline (default 20)")
    ap.add_argument("--configs", nargs="+", default=None, help="config files or globs (default deploy/examples/*.toml)")
    ap.add_argument("--data", type=Path, default=None, help="recordings (default ../shared/data, or SPIKELINE_DATA)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--plot", type=Path, default=None,
                    help="plot file (default docs/soak.png with --write-docs, else spikeline-soak.png in the temp dir)")
    ap.add_argument("--write-docs", action="store_true", help="write docs/soak.md and its plot (docs/soak.png)")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON", help="no run: tables/docs of a saved report")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (config, logs)")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--files", default="", help=argparse.SUPPRESS)
    ap.add_argument("--dest", default="", help=argparse.SUPPRESS)
    ap.add_argument("--gap-ms", type=float, default=100.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.role == "udp-events":
        return role_udp_events(args.files, args.dest, args.gap_ms, 1.0, 1.0)
    global DATA
    if args.data is not None:
        DATA = args.data
    plot_path = args.plot or (DOCS_PLOT if args.write_docs else Path(tempfile.gettempdir()) / "spikeline-soak.png")

    if args.render is not None:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        report["summary"] = summarise(report, args.warmup_minutes)
    else:
        if not DATA.is_dir():
            print(f"recordings not found at {DATA} (--data, or set SPIKELINE_DATA)", file=sys.stderr)
            return 2
        if args.minutes <= 0 or args.interval <= 0:
            ap.error("--minutes and --interval must be > 0")
        stop = threading.Event()
        cleaning = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():  # the second one: no more waiting for drains
                procs.force.set()
                if not cleaning.is_set():
                    raise KeyboardInterrupt
                return
            stop.set()
            print(f"\n[soak] {signal.Signals(signum).name}: stopping early (again to stop without draining)",
                  file=sys.stderr, flush=True)

        tmp = Path(tempfile.mkdtemp(prefix="spikeline-soak-"))
        procs = Procs(tmp)
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            report = run_soak(args, stop, procs, tmp)
        except KeyboardInterrupt:
            print("\n[soak] stopped, no report", file=sys.stderr)
            return 130
        finally:
            cleaning.set()
            try:
                procs.stop_all()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)
                if args.keep:
                    print(f"[soak] kept {tmp}", file=sys.stderr)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
    text = compact_json(report)
    print(text)
    if args.json and args.render is None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print()
    print(tables(report))
    wrote_plot = plot(report, plot_path)
    if wrote_plot:
        print(f"plot: {plot_path}", file=sys.stderr)
    if args.write_docs:
        rel = os.path.relpath(plot_path, DOCS.parent) if wrote_plot else None
        write_docs(report, rel)
        print(f"wrote {DOCS}", file=sys.stderr)
    sm = report["summary"]
    print(f"\n{sm['verdict']}{' (interrupted)' if report.get('interrupted') else ''}: RSS growth after warm-up {_f(sm['rss']['growth_pct'], '{:+.2f}')} % "
          f"(limit < {GROWTH_LIMIT_PCT:g} %)" + (f"; problems: {'; '.join(sm['problems'])}" if sm["problems"] else ""))
    if sm["problems"]:
        return 2
    return 0 if sm["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
