"""Smartwatch wire formats (spikeline.watch.frames): SLW1 binary frames, JSON samples/batches and the CSV
lines of phone sensor-streaming apps, decoded into `Frame`s or refused with a `FrameError` reason code."""

from .frames import (
    MAGIC,
    MAX_CHANNELS,
    MAX_SAMPLES,
    Frame,
    FrameError,
    decode_csv,
    decode_frame,
    decode_json,
    encode_csv,
    encode_frame,
    encode_json,
    valid_device,
)

__all__ = [
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_SAMPLES",
    "Frame",
    "FrameError",
    "decode_csv",
    "decode_frame",
    "decode_json",
    "encode_csv",
    "encode_frame",
    "encode_json",
    "valid_device",
]
