"""Event cameras: file formats, the live UDP wire format, rate control.

    from spikeline.events import read
    f = read("recording.raw")          # format from the file's header / extension
    f.events, f.sensor, f.format       # EVENT_DTYPE array, (width, height), "evt3"
"""

from ..chunk import EVENT_DTYPE, EventChunk, Events, as_events, empty_events
from .formats import EventFile, EventFormatError, read

__all__ = ["EVENT_DTYPE", "EventChunk", "EventFile", "EventFormatError", "Events", "as_events", "empty_events", "read"]
