"""MQTT, stdout and JSON-lines sinks."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..homeassistant import discovery_messages
from ..mqtt import expiry_from_budget
from ..params import Param
from ..result import RESULT_SCHEMA, encode_result
from .base import Sink, SinkContext

log = logging.getLogger("spikeline.sinks")


class MqttSink(Sink):
    kind = "mqtt"
    summary = "one message per result on spikeline/<node>/<pipeline>/result (node's MQTT connection)"
    params = {
        "qos": Param("int", -1, min=-1, max=2, help="-1: the node's [mqtt] qos"),
        "expiry_s": Param("int", -1, min=-1, help="MQTT 5 message expiry; -1: derived from the budget, 0: none"),
    }

    def __init__(self, p: dict[str, Any], ctx: SinkContext, primary: bool) -> None:
        super().__init__(p, ctx, primary)
        if ctx.publisher is None:  # pragma: no cover - the daemon always creates one when an mqtt sink exists
            raise RuntimeError("mqtt sink without an MQTT connection")
        self.pub = ctx.publisher
        self.topic = f"{ctx.topic_base}/result"
        self.device_topic = f"{ctx.topic_base}/{{device}}/result"
        self.expiry = expiry_from_budget(ctx.budget_s) if p["expiry_s"] < 0 else p["expiry_s"]
        self._announce = False

    def start(self, meta: StreamMeta) -> None:
        info = {"node": self.ctx.node, "pipeline": self.ctx.pipeline, "stream": meta.name,
                "channels": list(meta.channels), "units": list(meta.units), "rate_hz": meta.nominal_rate,
                "classes": list(meta.classes), "budget_ms": self.ctx.budget_s * 1e3,
                "result_topic": self.topic if meta.devices is None else self.device_topic.replace("{device}", "+"),
                "schema": RESULT_SCHEMA}
        self.pub.publish_control(f"{self.ctx.topic_base}/info", json.dumps(info).encode(), qos=1, retain=True)
        self._announce = self.pub.s.homeassistant and meta.devices is None  # with the first result
        if self.pub.s.homeassistant and meta.devices is not None:
            log.info("pipeline %s: Home Assistant discovery is not offered for gateway pipelines", self.ctx.pipeline)

    def _discovery(self, chunk: SampleChunk) -> None:
        """Home Assistant discovery, once the first result shows whether the stream carries decisions."""
        self._announce = False
        for topic, payload in discovery_messages(self.pub.s.homeassistant_prefix, self.ctx.node, self.ctx.pipeline,
                                                 chunk.meta, chunk.label is not None, self.topic,
                                                 f"{self.ctx.topic_base}/metrics", self.pub.status_topic):
            self.pub.publish_control(topic, payload, qos=1, retain=True)

    def submit(self, chunk: SampleChunk) -> None:
        if self._announce:
            self._discovery(chunk)
        if chunk.streams is not None:  # gateway mode: spikeline/<node>/<pipeline>/<device>/result
            table = chunk.meta.devices
            self.pub.submit(self.device_topic, chunk, self.head, self.ctx.metrics if self.primary else None,
                            qos=None if self.p["qos"] < 0 else self.p["qos"], expiry_s=self.expiry,
                            devices=[table.name(int(k)) for k in chunk.streams])
            return
        self.pub.submit(self.topic, chunk, self.head, self.ctx.metrics if self.primary else None,
                        qos=None if self.p["qos"] < 0 else self.p["qos"], expiry_s=self.expiry)


class _LineSink(Sink):
    """Writes each result as one JSON line to a text stream (buffered; flushed once per chunk)."""

    out: IO[str]

    def submit(self, chunk: SampleChunk) -> None:
        n = len(chunk)
        t_pub = [0.0] * n
        table = chunk.meta.devices if chunk.streams is not None else None
        for i in range(n):
            t_pub[i] = time.monotonic()
            dev = None if table is None or chunk.streams is None else table.name(int(chunk.streams[i]))
            self.out.write(encode_result(self.head, chunk, i, t_pub[i], dev).decode())
            self.out.write("\n")
        self.out.flush()
        if self.primary:
            self.ctx.metrics.record_published(chunk.t_recv, chunk.t, np.asarray(t_pub))


class StdoutSink(_LineSink):
    kind = "stdout"
    summary = "results as JSON lines on standard output"

    def __init__(self, p: dict[str, Any], ctx: SinkContext, primary: bool) -> None:
        super().__init__(p, ctx, primary)
        self.out = sys.stdout


class JsonlSink(_LineSink):
    kind = "jsonl"
    summary = "results as JSON lines appended to a file"
    params = {"path": Param("str", help="file to append to")}

    def __init__(self, p: dict[str, Any], ctx: SinkContext, primary: bool) -> None:
        super().__init__(p, ctx, primary)
        path = Path(p["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = path.open("a", encoding="utf-8", buffering=1 << 16)

    async def close(self) -> None:
        self.out.close()
