"""What a sink is: it takes finished chunks without blocking and delivers every row as one result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..chunk import SampleChunk, StreamMeta
from ..metrics import PipelineMetrics
from ..mqtt import MqttPublisher
from ..params import Component

SINKS: dict[str, type[Sink]] = {}


@dataclass
class SinkContext:
    node: str
    pipeline: str
    budget_s: float
    metrics: PipelineMetrics
    publisher: MqttPublisher | None = None

    @property
    def topic_base(self) -> str:
        return f"spikeline/{self.node}/{self.pipeline}"


class Sink(Component):
    registry = SINKS  # type: ignore[assignment]

    def __init__(self, p: dict[str, Any], ctx: SinkContext, primary: bool) -> None:
        """`primary`: this sink's hand-over time is the pipeline's t_pub for latency and deadline metrics."""
        self.p = p
        self.ctx = ctx
        self.primary = primary
        self.head: dict[str, Any] = {"node": ctx.node, "pipeline": ctx.pipeline}

    def start(self, meta: StreamMeta) -> None:
        """The stream the sink will receive is now known."""

    def submit(self, chunk: SampleChunk) -> None:
        """Take a finished chunk. Must not block the event loop."""
        raise NotImplementedError

    async def close(self) -> None:
        """Flush and release resources."""
