"""What a stage is: declared parameters, one compute method, state that can be reset and saved.

A stage can be used without the runtime (tests do exactly that):

    st = build_stage("bandpass", {"low_hz": 8, "high_hz": 30})
    out_meta = st.start(meta)
    out = st.process(chunk)
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..chunk import Chunk, StreamMeta
from ..params import Component, ConfigError, check_table

STAGES: dict[str, type[Stage]] = {}


class StageError(Exception):
    """A stage cannot run on the stream it was given (e.g. a cutoff above Nyquist for this rate)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class Stage(Component):
    registry = STAGES  # type: ignore[assignment]
    # What the stage consumes: sample streams (SampleChunk) or event streams (EventChunk). The pipeline checks
    # every stage against what the stage before it produces.
    takes_events: ClassVar[bool] = False
    # Whether the stage serves a gateway stream (rows from many devices, SampleChunk.streams): its state is
    # kept per device slot. The pipeline refuses a gateway stream into a stage that cannot.
    gateway: ClassVar[bool] = False

    def __init__(self, name: str, p: dict[str, Any]) -> None:
        self.name = name
        self.p = p

    def start(self, meta: StreamMeta) -> StreamMeta:
        """Check the input stream, allocate state, return the output stream's description."""
        return meta

    def process(self, chunk: Any) -> Chunk | None:
        """Consume one chunk (a SampleChunk, or an EventChunk when `takes_events`); return the rows or events it
        produces (None or empty when it produces none)."""
        raise NotImplementedError

    def flush(self) -> Chunk | None:
        """The input has ended: return what is still held back (e.g. a last partial window), or None."""
        return None

    def reset(self) -> None:
        """Forget all state (a new session, a stream that restarted)."""

    def counters(self) -> dict[str, int | float]:
        """Work counters for the metrics topic (e.g. temporal sparsity, skipped operations)."""
        return {}


def build_stage(kind: str, p: dict[str, Any], name: str | None = None) -> Stage:
    """Validate parameters and build a stage (for use outside a config file)."""
    cls = STAGES.get(kind)
    if cls is None:
        raise ConfigError([f"unknown stage type {kind!r}; known: {', '.join(sorted(STAGES))}"])
    problems: list[str] = []
    values = check_table(p, cls.params, kind, problems)
    if problems:
        raise ConfigError(problems)
    return cls(name or kind, values)


def need_rate(meta: StreamMeta, what: str) -> float:
    """The stream's nominal rate, or a StageError: `what` needs regularly sampled input."""
    if meta.nominal_rate <= 0:
        raise StageError(f"{what} needs a regular sampling rate; stream {meta.name!r} declares none")
    return meta.nominal_rate


def channel_indices(meta: StreamMeta, names: list[str], param: str) -> list[int]:
    """Indices of the named channels, or a StageError naming the missing ones and what exists."""
    missing = [c for c in names if c not in meta.channels]
    if missing:
        shown = ", ".join(meta.channels[:16]) + (" ..." if meta.n_channels > 16 else "")
        raise StageError(f"channels {missing} not in stream {meta.name!r} (has: {shown})", param)
    return [meta.channels.index(c) for c in names]
