"""LSL outlet sink: results back onto Lab Streaming Layer, for the recorder and the other tools of a session.

Every row is pushed with its source sample's timestamp (SampleChunk.t, already on this host's monotonic
clock, which is liblsl's local_clock on Linux), so LabRecorder stores each decision aligned with the EEG
that produced it. Pushing copies into liblsl's send buffer and never waits for a consumer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..chunk import SampleChunk, StreamMeta
from ..lslcfg import import_pylsl
from ..params import Param
from .base import Sink, SinkContext


class LslSink(Sink):
    kind = "lsl"
    summary = "results as an LSL outlet: the decided class as a string marker stream, or the values as floats"
    params = {
        "content": Param("str", "decision", choices=("decision", "values"),
                         help="decision: the row's class label (string stream); values: the row's channels"),
        "stream_name": Param("str", "", help="LSL stream name (default spikeline-<pipeline>)"),
        "stream_type": Param("str", "", help="LSL stream type (default Markers for decisions, spikeline for values)"),
        "source_id": Param("str", "", help="default spikeline-<node>-<pipeline>-<content>"),
        "only_changes": Param("bool", False, help="decision: push only when the decided class changes"),
    }

    def __init__(self, p: dict[str, Any], ctx: SinkContext, primary: bool) -> None:
        super().__init__(p, ctx, primary)
        self._pylsl = import_pylsl()
        self.outlet: Any = None
        self.pushed = 0
        self._last = -1

    def start(self, meta: StreamMeta) -> None:
        pylsl, p = self._pylsl, self.p
        decision = p["content"] == "decision"
        if decision and not meta.classes:
            raise ValueError(f"lsl sink content = 'decision' needs a stream with classes (a decide stage); "
                             f"stream {meta.name!r} has none")
        name = p["stream_name"] or f"spikeline-{self.ctx.pipeline}"
        info = pylsl.StreamInfo(
            name, p["stream_type"] or ("Markers" if decision else "spikeline"),
            1 if decision else meta.n_channels, pylsl.IRREGULAR_RATE if decision else meta.nominal_rate,
            pylsl.cf_string if decision else pylsl.cf_float32,
            p["source_id"] or f"spikeline-{self.ctx.node}-{self.ctx.pipeline}-{p['content']}")
        desc = info.desc()
        desc.append_child_value("node", self.ctx.node)
        desc.append_child_value("pipeline", self.ctx.pipeline)
        chans = desc.append_child("channels")
        for label, unit in ((("decision", ""),) if decision else zip(meta.channels, meta.units, strict=True)):
            c = chans.append_child("channel")
            c.append_child_value("label", label)
            c.append_child_value("unit", unit)
        if meta.classes:
            classes = desc.append_child("classes")
            for c in meta.classes:
                classes.append_child_value("class", c)
        self.classes = meta.classes
        self.outlet = pylsl.StreamOutlet(info)

    def submit(self, chunk: SampleChunk) -> None:
        n = len(chunk)
        if n == 0 or self.outlet is None:
            return
        if self.p["content"] == "values":
            self.outlet.push_chunk(chunk.data, chunk.t.tolist())
            self.pushed += n
        elif chunk.label is not None:
            labels = chunk.label.astype(np.int64)
            rows = np.arange(n)
            if self.p["only_changes"]:
                prev = np.concatenate([[self._last], labels[:-1]])
                rows = rows[labels != prev]
            self._last = int(labels[-1])
            for i in rows.tolist():
                self.outlet.push_sample([self.classes[labels[i]]], float(chunk.t[i]))
            self.pushed += len(rows)
        if self.primary:
            t_pub = np.full(n, time.monotonic())
            self.ctx.metrics.record_published(chunk.t_recv, chunk.t, t_pub)

    async def close(self) -> None:
        self.outlet = None  # liblsl destroys the outlet when the last reference goes
