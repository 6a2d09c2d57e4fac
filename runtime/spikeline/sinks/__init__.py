"""Sinks. Importing this package registers every built-in sink type."""

from . import basic as basic
from . import lsl as lsl
from .base import SINKS, Sink, SinkContext

__all__ = ["SINKS", "Sink", "SinkContext"]
