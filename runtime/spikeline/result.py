"""A result: one output row with the four timestamps that prove its latency. JSON on the wire.

Field meanings are documented in README.md ("Result payload"); `Result` is the decoded form.
"""

from __future__ import annotations

import json
import math
from typing import Any, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt

from .chunk import SampleChunk

RESULT_SCHEMA = "spikeline.result/1"


class Latency(TypedDict):
    runtime: float  # ms, t_pub - t_recv: what spikeline controls; the budget applies to it
    age: float  # ms, t_pub - t_sample: includes the source's own transport


class Result(TypedDict):
    node: str
    pipeline: str
    seq: int  # index of the newest source sample that contributed
    values: list[float | None]  # None where the value is NaN or infinite
    t_sample: float  # source timestamp, this host's monotonic clock, s
    t_recv: float  # when spikeline received that sample
    t_done: float  # when the last stage finished it
    t_pub: float  # when the sink handed it to the transport
    latency_ms: Latency
    label: NotRequired[str]  # decision stages only
    late: NotRequired[bool]  # present (true) when t_pub - t_recv exceeded the pipeline's budget
    tier: NotRequired[int]  # the degrade tier that computed it (pipelines with tiers only)


# What every result has (Result's NotRequired keys are optional; spelled out because, with postponed
# annotations, TypedDict cannot tell them apart at run time).
_REQUIRED = ("node", "pipeline", "seq", "values", "t_sample", "t_recv", "t_done", "t_pub", "latency_ms")


def json_floats(row: npt.NDArray[np.float32]) -> str:
    """A float32 row as a JSON array: 9 significant digits round-trip float32 exactly, at half the
    length of Python's float64 repr; NaN and ±inf (not JSON) become null."""
    vals = row.tolist()
    if np.isfinite(row).all():
        return "[" + ",".join([f"{x:.9g}" for x in vals]) + "]"
    return "[" + ",".join([f"{x:.9g}" if math.isfinite(x) else "null" for x in vals]) + "]"


def encode_result(head: dict[str, Any], chunk: SampleChunk, i: int, t_pub: float, device: str | None = None) -> bytes:
    """Row i of a finished chunk, handed over at t_pub, as one JSON message (gateway mode: with its device, and
    its seq on that device)."""
    t_sample = float(chunk.t[i])
    t_recv = float(chunk.t_recv[i])
    msg = {
        **head,
        **({"device": device} if device is not None else {}),
        "seq": int(chunk.row_seq[i]) if chunk.row_seq is not None else int(chunk.seq + i * chunk.stride),
        "t_sample": t_sample,
        "t_recv": t_recv,
        "t_done": chunk.t_done,
        "t_pub": t_pub,
        "latency_ms": {"runtime": (t_pub - t_recv) * 1e3, "age": (t_pub - t_sample) * 1e3},
    }
    if chunk.budget_s > 0 and t_pub - t_recv > chunk.budget_s:
        msg["late"] = True
    if chunk.tier >= 0:
        msg["tier"] = chunk.tier
    if chunk.label is not None:
        msg["label"] = chunk.meta.classes[int(chunk.label[i])]
    text = json.dumps(msg, separators=(",", ":"))
    return f'{text[:-1]},"values":{json_floats(chunk.data[i])}}}'.encode()


def decode_result(payload: bytes | str) -> Result:
    """Parse a result message; ValueError when it is not one."""
    msg = json.loads(payload)
    missing = [k for k in _REQUIRED if k not in msg] if isinstance(msg, dict) else ["(not an object)"]
    if missing:
        raise ValueError(f"not a spikeline result: missing {', '.join(sorted(missing))}")
    return msg  # type: ignore[no-any-return]
