#!/usr/bin/env python3
"""End-to-end latency: LSL push -> spikeline (band-pass) -> mosquitto -> subscriber, beside the pylsl floor.

For each scenario (250 Hz x 64 ch, 1 kHz x 8 ch) and in the same run:
  floor      a synthetic EEG outlet (own process) -> a bare pylsl inlet doing blocking pull_sample
  spikeline  the same outlet -> `spikeline run` (own process) -> mosquitto (TCP_NODELAY) -> a paho subscriber

Latency is receive time minus the sample's LSL timestamp (stamped by liblsl at push), both on this
host's monotonic clock. Reported: p50 / p99 / p99.9 / max in ms, lost samples, and the CPU% of the
spikeline process. Prints JSON, then a table. Needs mosquitto (tools/test.sh installs it) unless
--mqtt points at a running broker.

    python tools/bench_e2e.py                 # 20 s per path and scenario
    python tools/bench_e2e.py --quick         # 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LSLAPICFG", str(ROOT / "runtime" / "spikeline" / "lsl_api.cfg"))

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT / "runtime"))
from spikeline.broker import free_port, wait_port  # noqa: E402

SCENARIOS = [("250Hz x 64ch", 250.0, 64), ("1kHz x 8ch", 1000.0, 8)]


def summary(lat_s: np.ndarray) -> dict[str, Any]:
    if lat_s.size == 0:
        return {"n": 0}
    ms = lat_s * 1e3
    return {"n": int(ms.size), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "p999": float(np.percentile(ms, 99.9)), "max": float(ms.max())}


def progress(label: str, seconds: float, count: callable) -> None:  # type: ignore[valid-type]
    t0 = time.monotonic()
    while (el := time.monotonic() - t0) < seconds:
        time.sleep(min(1.0, seconds - el))
        print(f"\r  {label}: {min(el + 1, seconds):4.0f}/{seconds:.0f} s, {count()} received", end="",
              file=sys.stderr, flush=True)
    print(file=sys.stderr)


# -- roles run in their own processes ------------------------------------------------------------

def role_outlet(name: str, rate: float, channels: int) -> None:
    sys.path.insert(0, str(ROOT / "runtime"))
    from spikeline.synth import LslEEGOutlet

    out = LslEEGOutlet(name, n_channels=channels, rate=rate, chunk=1, seed=1).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes our stdin
    out.close()


# -- measurement phases -----------------------------------------------------------------------------

def measure_floor(name: str, seconds: float, warmup: float) -> dict[str, Any]:
    import pylsl

    info = pylsl.resolve_byprop("name", name, 1, 10.0)[0]
    inlet = pylsl.StreamInlet(info, max_buflen=1, recover=True)
    inlet.open_stream(5.0)
    lat: list[float] = []
    end_warm = pylsl.local_clock() + warmup
    while pylsl.local_clock() < end_warm:
        inlet.pull_sample(timeout=0.5)
    got = [0]

    def pull() -> None:
        end = pylsl.local_clock() + seconds
        while (now := pylsl.local_clock()) < end:
            _, ts = inlet.pull_sample(timeout=0.5)
            if ts is not None:
                lat.append(pylsl.local_clock() - ts)
                got[0] += 1
        del now

    t = threading.Thread(target=pull)
    t.start()
    progress("pylsl floor", seconds, lambda: got[0])
    t.join()
    inlet.close_stream()
    return {"latency_ms": summary(np.asarray(lat)), "lost": None}


def measure_spikeline(name: str, rate: float, seconds: float, warmup: float, mqtt_url: str,
                      tmp: Path) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    import psutil

    node, pipeline = "bench", "eeg"
    cfg = tmp / f"bench-{int(rate)}.toml"
    cfg.write_text(f"""
[node]
name = "{node}"
metrics_interval_s = 1.0
[lsl]
config = "loopback"
[mqtt]
url = "{mqtt_url}"
qos = 0
[[pipeline]]
name = "{pipeline}"
budget_ms = 20
source = {{ type = "lsl", name = "{name}" }}
stages = [{{ type = "bandpass", low_hz = 1, high_hz = {min(40.0, rate / 2 - 1)}, order = 4 }}]
sinks = [{{ type = "mqtt" }}]
""")
    rx_t: list[float] = []
    rx_payload: list[bytes] = []
    metrics: list[dict[str, Any]] = []
    clock = time.monotonic
    recording = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        t = clock()
        if msg.topic.endswith("/result"):
            if recording.is_set():
                rx_t.append(t)
                rx_payload.append(msg.payload)
        else:
            metrics.append(json.loads(msg.payload))

    host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    sub.on_message = on_message
    sub.connect(host, int(port))
    sub.subscribe(f"spikeline/{node}/{pipeline}/#")
    sub.loop_start()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
    daemon = subprocess.Popen([sys.executable, "-m", "spikeline", "--log-level", "warning", "run", str(cfg)],
                              env=env)
    try:
        proc = psutil.Process(daemon.pid)
        time.sleep(warmup)
        recording.set()
        cpu0, w0 = proc.cpu_times(), time.monotonic()
        progress("spikeline", seconds, lambda: len(rx_t))
        cpu1, w1 = proc.cpu_times(), time.monotonic()
        recording.clear()
    finally:
        daemon.terminate()
        daemon.wait(15)
        time.sleep(0.3)
        sub.loop_stop()
        sub.disconnect()
    msgs = [json.loads(p) for p in rx_payload]
    t_sample = np.array([m["t_sample"] for m in msgs])
    seq = np.array([m["seq"] for m in msgs])
    lat = np.asarray(rx_t) - t_sample
    lost = int((seq[-1] - seq[0] + 1) - len(seq)) if len(seq) else None
    runtime = np.array([m["latency_ms"]["runtime"] for m in msgs]) / 1e3
    last = metrics[-1]["counters"] if metrics else {}
    cpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (w1 - w0) * 100
    return {"latency_ms": summary(lat), "runtime_ms": summary(runtime), "lost": lost,
            "cpu_percent": round(cpu, 1), "exit_code": daemon.returncode,
            "deadline_misses": last.get("deadline_misses"),
            "dropped": (last.get("dropped_queue", 0) + last.get("dropped_stale", 0)) if last else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per path and scenario")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="5 s per path and scenario")
    ap.add_argument("--mqtt", help="use this broker (mqtt://host:port) instead of starting mosquitto")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "outlet":
        role_outlet(args.name, args.rate, args.channels)
        return 0
    seconds = 5.0 if args.quick else args.duration

    tmp = Path(tempfile.mkdtemp(prefix="spikeline-bench-"))
    broker = None
    url = args.mqtt
    if url is None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(binary, os.X_OK):
            print("mosquitto not found: install it (tools/test.sh does) or pass --mqtt URL", file=sys.stderr)
            return 2
        port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "persistence false\n")
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        url = f"mqtt://127.0.0.1:{port}"

    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "seconds_per_path": seconds, "broker": "mosquitto (set_tcp_nodelay true)"
                               if broker else url, "scenarios": []}
    try:
        for label, rate, channels in SCENARIOS:
            name = f"bench-{int(rate)}-{channels}-{os.getpid()}"
            print(f"{label}:", file=sys.stderr)
            outlet = subprocess.Popen([sys.executable, __file__, "--role", "outlet", "--name", name,
                                       "--rate", str(rate), "--channels", str(channels)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert outlet.stdout is not None and outlet.stdin is not None
            outlet.stdout.readline()
            try:
                floor = measure_floor(name, seconds, args.warmup)
                spk = measure_spikeline(name, rate, seconds, args.warmup, url, tmp)
            finally:
                outlet.stdin.close()
                outlet.wait(10)
            results["scenarios"].append({"scenario": label, "rate_hz": rate, "channels": channels,
                                         "pylsl_floor": floor, "spikeline_mqtt": spk})
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)

    def row(path: str, r: dict[str, Any]) -> str:
        lat = r["latency_ms"]
        cpu = f"{r['cpu_percent']:.1f}" if r.get("cpu_percent") is not None else "-"
        lost = "-" if r.get("lost") is None else str(r["lost"])
        return (f"| {path:<28} | {lat['n']:>6} | {lat['p50']:6.3f} | {lat['p99']:6.3f} | {lat['p999']:6.3f} | "
                f"{lat['max']:7.3f} | {lost:>4} | {cpu:>5} |")

    print("\n| scenario / path              |      n |  p50 ms |  p99 ms | p99.9 ms | max ms | lost | CPU % |")
    print("|------------------------------|--------|--------|--------|--------|---------|------|-------|")
    for s in results["scenarios"]:
        print(row(f"{s['scenario']} pylsl floor", s["pylsl_floor"]))
        print(row(f"{s['scenario']} spikeline->MQTT", s["spikeline_mqtt"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
