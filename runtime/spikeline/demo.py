"""`spikeline demo`: the whole path on one machine, with nothing to configure.

synthetic EEG on an LSL outlet (loopback only) -> LSL inlet -> band-pass 8-30 Hz -> mu band power
-> left/rest/right laterality decision -> MQTT. A subscriber on the result topic proves the round trip;
one line per second shows rate, latency percentiles, misses, drops and the latest decision.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from . import lslcfg
from .cli import serve
from .config import parse
from .daemon import Daemon
from .result import Result, decode_result

log = logging.getLogger("spikeline.demo")


def demo_config(args: argparse.Namespace, url: str, protocol: str, stream: str) -> dict[str, Any]:
    every = max(1, round(args.rate / 10))  # ten decisions per second
    return {
        "node": {"name": args.node, "metrics_interval_s": 1.0, "drain_s": 2.0},
        "lsl": {"config": "loopback"},
        "mqtt": {"url": url, "protocol": protocol, "qos": 0},
        "pipeline": [{
            "name": "eeg-laterality",
            "budget_ms": args.budget_ms,
            "source": {"type": "lsl", "name": stream, "resolve_timeout_s": 10.0},
            "stages": [
                {"type": "bandpass", "low_hz": 8.0, "high_hz": 30.0, "order": 4},
                {"type": "select", "channels": ["C3", "C4"]},
                {"type": "bandpower", "window_s": 1.0, "every": every},
                {"type": "laterality", "left": "C3", "right": "C4", "threshold": 0.2},
            ],
            "sinks": [{"type": "mqtt"}],
        }],
    }


def _fmt(x: float | None, unit: str = "") -> str:
    return "   -  " if x is None else f"{x:6.2f}{unit}"


class Console:
    """The live line: what the runtime measured, and what a subscriber actually received."""

    def __init__(self, out: Any = sys.stdout) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.received = 0
        self.last: Result | None = None

    def on_result(self, payload: bytes) -> None:
        self.received += 1
        self.last = decode_result(payload)

    def on_metrics(self, reports: list[dict[str, Any]]) -> None:
        for r in reports:
            lat = r["latency_ms"]["runtime"]
            age = r["latency_ms"]["age"]
            c = r["counters"]
            mq = r.get("mqtt", {})
            decision = ""
            if self.last is not None:
                decision = f"  decision {self.last.get('label', '?'):>5} ({self.last['values'][0]:+.2f})"
            print(f"[{time.monotonic() - self.t0:5.1f}s] {r['pipeline']}: "
                  f"{r['rate']['samples_per_s'] or 0:6.1f} samples/s {r['rate']['results_per_s'] or 0:5.1f} results/s  "
                  f"runtime p50 {_fmt(lat['p50'])} p99 {_fmt(lat['p99'])} ms  "
                  f"age p50 {_fmt(age['p50'])} ms  misses {c['deadline_misses']}  "
                  f"drops {c['dropped_queue'] + c['dropped_stale']}  "
                  f"mqtt {mq.get('protocol') or '-'} received {self.received}{decision}",
                  file=self.out, flush=True)


async def _subscribe(url: str, protocol: str, topic: str, console: Console, ready: asyncio.Event) -> None:
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError

    from .mqtt import MqttSettings

    s = MqttSettings.from_url(url)
    versions = {"3.1.1": [aiomqtt.ProtocolVersion.V311],
                "auto": [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311]}[protocol]
    for i, version in enumerate(versions):
        try:
            async with aiomqtt.Client(s.host, s.port, protocol=version, identifier="spikeline-demo-viewer",
                                      max_queued_incoming_messages=10000) as client:
                await client.subscribe(topic)
                ready.set()
                async for msg in client.messages:
                    if isinstance(msg.payload, bytes):
                        console.on_result(msg.payload)
        except MqttConnectError as e:
            if i + 1 < len(versions) and e.rc in (1, 132):
                continue
            raise


def run_demo(args: argparse.Namespace) -> int:
    lslcfg.configure("loopback")
    from .broker import EmbeddedBroker
    from .synth import LslEEGOutlet

    broker = None
    if args.mqtt:
        url, protocol = args.mqtt, "auto"
        print(f"broker: {url} (MQTT 5 preferred)")
    else:
        broker = EmbeddedBroker().start()
        url, protocol = broker.url, "3.1.1"
        print(f"broker: embedded amqtt on {url} (development fallback, MQTT 3.1.1; "
              "pass --mqtt mqtt://host:port for a real broker)")
    stream = "spikeline-demo-eeg"
    outlet = LslEEGOutlet(stream, n_channels=args.channels, rate=args.rate, chunk=1).start()
    print(f"source: synthetic {args.channels}-channel EEG at {args.rate:g} Hz on LSL {stream!r} (loopback only); "
          "mu rhythm script: rest -> left -> rest -> right, 4 s each")
    try:
        cfg = parse(demo_config(args, url, protocol, stream), origin="demo")
        console = Console()
        daemon = Daemon(cfg, on_metrics=console.on_metrics)
        topic = f"spikeline/{cfg.node}/eeg-laterality/result"
        print(f"results: {topic}   metrics: spikeline/{cfg.node}/eeg-laterality/metrics")

        async def main() -> int:
            ready = asyncio.Event()
            sub = asyncio.create_task(_subscribe(url, protocol, topic, console, ready))
            try:
                await asyncio.wait_for(ready.wait(), 10.0)
                code = await daemon.run()
                await asyncio.sleep(0.2)  # let the viewer receive the last results
                return code
            finally:
                sub.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sub

        code = asyncio.run(serve(main, daemon.request_stop, args.duration))
        p = daemon.pipelines[0]
        m = p.metrics
        print(f"done: {m.samples_in} samples in, {m.results} results published, {console.received} received by "
              f"the viewer, {m.deadline_misses} deadline misses, {m.dropped_queue + m.dropped_stale} samples dropped"
              + (f"; pipeline failed: {p.error}" if p.error else ""))
        return code
    finally:
        outlet.close()
        if broker is not None:
            broker.stop()
