"""Event cameras: file formats, the live UDP wire format, rate control.

    from spikeline.events import read, open_reader
    f = read("recording.raw")             # format from the file's header / extension
    f.events, f.sensor, f.format          # EVENT_DTYPE array, (width, height), "evt3"
    with open_reader("big.raw") as r:     # bounded memory: blocks of events
        while len(block := r.read(1 << 20)):
            ...
"""

from ..chunk import EVENT_DTYPE, EventChunk, Events, as_events, empty_events
from .formats import (
    FORMATS,
    IMU_DTYPE,
    EventFile,
    EventFormatError,
    EventReader,
    open_reader,
    read,
    write,
    write_dat,
    write_evt2,
    write_evt3,
    write_npy,
)
from .udp import AEStreamDecoder, encode_aestream

__all__ = ["EVENT_DTYPE", "FORMATS", "IMU_DTYPE", "AEStreamDecoder", "EventChunk", "EventFile", "EventFormatError",
           "EventReader", "Events", "as_events", "empty_events", "encode_aestream", "open_reader", "read", "write",
           "write_dat", "write_evt2", "write_evt3", "write_npy"]
