"""Sources. Importing this package registers every built-in source type."""

from . import events as events
from . import lsl as lsl
from . import replay as replay
from . import watch as watch
from .base import SOURCES, Source, SourceContext, SourceError

__all__ = ["SOURCES", "Source", "SourceContext", "SourceError"]
