"""AEStream's UDP wire format (spikeline.events.udp): encoder, compiled decoder and numpy reference.

The words are built here from AEStream's published definition (dvs_to_udp), independently of the encoder:
without timestamps ((x | 0x8000) << 16) | (y | 0x8000 if on else y & 0x7FFF); with timestamps
((x & 0x7FFF) << 16) | (y with the same polarity bit), then the uint32 microsecond timestamp.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.chunk import EVENT_DTYPE, as_events
from spikeline.events.udp import MAX_BYTES, AEStreamDecoder, AEStreamDecoderRef, encode_aestream

pytestmark = pytest.mark.kernel

evio: Any
try:
    from spikeline._ext import evio
except ImportError:  # pragma: no cover - the extension is built in CI
    evio = None

# the selected backend, the reference and the compiled class (duplicates removed)
DECODERS = list(dict.fromkeys([AEStreamDecoder, AEStreamDecoderRef] + ([] if evio is None else [evio.AEStreamDecoder])))
IDS = [d.__module__.rsplit(".", 1)[-1] for d in DECODERS]


def _key(ev: Any) -> list[tuple[int, int, int, int]]:
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(ev["t"], ev["x"], ev["y"], ev["p"], strict=True)]


def _word(x: int, y: int, on: bool, ts: bool) -> int:
    if ts:
        return ((x & 0x7FFF) << 16) | (y | 0x8000 if on else y & 0x7FFF)
    return ((x | 0x8000) << 16) | (y | 0x8000 if on else y & 0x7FFF)


def _packet(*words: int) -> bytes:
    return np.array(words, dtype="<u4").tobytes()


@st.composite
def events(draw: Any, width: int = 640, height: int = 480, max_dt: int = 1 << 20, n_max: int = 400) -> Any:
    n = draw(st.integers(0, n_max))
    t0 = draw(st.integers(0, (1 << 32) - 1))
    dt = np.array(draw(st.lists(st.integers(0, max_dt), min_size=n, max_size=n)), dtype=np.int64)
    x = draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, height - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return as_events(t0 + np.cumsum(dt) - (dt[0] if n else 0), x, y, p)  # the first event at t0 < 2^32


def test_encoder_words_follow_the_aestream_definition() -> None:
    ev = as_events([5, 70000], [3, 639], [4, 479], [1, 0])
    with_ts = encode_aestream(ev, timestamps=True)
    assert with_ts == [_packet(_word(3, 4, True, True), 5, _word(639, 479, False, True), 70000)]
    without = encode_aestream(ev, timestamps=False)
    assert without == [_packet(_word(3, 4, True, False), _word(639, 479, False, False))]
    assert np.frombuffer(without[0], "<u4")[0] >> 31 == 1 and np.frombuffer(with_ts[0], "<u4")[0] >> 31 == 0


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("max_bytes", [8, 12, 100, MAX_BYTES])
def test_packets_are_at_most_max_bytes(timestamps: bool, max_bytes: int) -> None:
    ev = as_events(np.arange(1000), np.arange(1000) % 640, np.arange(1000) % 480, np.arange(1000) % 2)
    packets = encode_aestream(ev, timestamps=timestamps, max_bytes=max_bytes)
    per = 8 if timestamps else 4
    assert all(len(p) <= max_bytes and len(p) % per == 0 for p in packets)
    assert sum(len(p) for p in packets) == 1000 * per
    assert len(packets) == -(-1000 // (max_bytes // per))


def test_encoder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="EVENT_DTYPE"):
        encode_aestream(np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="15-bit coordinates"):
        encode_aestream(as_events([0], [40000], [0], [0]))
    with pytest.raises(ValueError, match="max_bytes must be >= 8"):
        encode_aestream(as_events([0], [0], [0], [0]), max_bytes=4)
    assert encode_aestream(np.zeros(0, dtype=EVENT_DTYPE)) == []


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
@settings(deadline=None, max_examples=120)
@given(ev=events(), max_bytes=st.integers(8, 2048))
def test_round_trip_with_timestamps(cls: Any, ev: Any, max_bytes: int) -> None:
    """Times up to 2^32 + 400 * 2^20 us: the decoder unwraps every wrap of the 32-bit field."""
    dec = cls((640, 480))
    out = [dec.decode(p, arrival_us=-1) for p in encode_aestream(ev, True, max_bytes)]
    got = np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)
    assert _key(got) == _key(ev)
    assert dec.counters["events"] == len(ev) and dec.rejected_events == dec.rejected_packets == 0


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
@settings(deadline=None, max_examples=60)
@given(ev=events(), arrival=st.integers(0, 1 << 40))
def test_round_trip_without_timestamps_takes_the_arrival_time(cls: Any, ev: Any, arrival: int) -> None:
    dec = cls((640, 480))
    out = [dec.decode(p, arrival + i) for i, p in enumerate(encode_aestream(ev, False))]
    got = np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)
    per_packet = MAX_BYTES // 4
    expected = ev.copy()
    expected["t"] = arrival + np.arange(len(ev)) // per_packet
    assert _key(got) == _key(expected)


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
def test_timestamps_unwrap_across_wraparound(cls: Any) -> None:
    steps = [9, 1, 7, (1 << 31) - 1, (1 << 31) - 1, 5, (1 << 31) - 1, (1 << 31) - 1, (1 << 31) - 1, 3]
    t = (1 << 32) - 10 + np.concatenate(([0], np.cumsum(steps)))
    assert t[-1] > 3 << 32
    ev = as_events(t, [1] * len(t), [2] * len(t), [1] * len(t))
    dec = cls((8, 8))
    got = np.concatenate([dec.decode(p, 0) for p in encode_aestream(ev, True, max_bytes=8)])
    assert got["t"].tolist() == t.tolist()
    # a datagram from just before the wrap that arrives late maps back before the wrap
    last = int(t[-1])
    late_ts = (last - 100) & 0xFFFFFFFF
    late = dec.decode(_packet(_word(1, 1, False, True), late_ts), 0)
    assert late["t"].tolist() == [last - 100]
    assert dec.state["last_t"] == last - 100


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
def test_malformed_packets_are_counted_exactly(cls: Any) -> None:
    dec = cls((10, 6))
    assert len(dec.decode(b"\x00\x00\x80", 1)) == 0  # not a multiple of 4
    assert len(dec.decode(b"", 1)) == 0
    assert dec.counters == {"packets": 2, "events": 0, "rejected_packets": 1, "rejected_events": 0,
                            "bad_length": 1, "out_of_sensor": 0, "missing_timestamp": 0}
    pkt = _packet(_word(9, 5, True, False),          # ok, arrival time
                  _word(10, 0, False, False),        # x = width: out of sensor
                  _word(0, 6, True, True), 123,      # y = height: out of sensor (its timestamp is consumed)
                  _word(2, 3, False, True), 0x80000005,  # ok; a timestamp with bit 31 set is still a timestamp
                  _word(4, 4, True, True))           # timestamp word missing at the end
    got = dec.decode(pkt, 77)
    assert _key(got) == [(77, 9, 5, 1), (0x80000005, 2, 3, 0)]
    assert dec.counters == {"packets": 3, "events": 2, "rejected_packets": 1, "rejected_events": 3,
                            "bad_length": 1, "out_of_sensor": 2, "missing_timestamp": 1}
    dec.reset_counters()
    assert dec.counters["packets"] == 0 and dec.rejected_events == 0


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
def test_decoder_arguments(cls: Any) -> None:
    with pytest.raises(ValueError, match="sensor size"):
        cls((0, 5))
    dec = cls((4, 4))
    assert dec.sensor == (4, 4)
    with pytest.raises(ValueError, match="out has room for 1 events"):
        dec.decode(_packet(_word(1, 1, True, False), _word(1, 1, True, False)), 0, out=np.zeros(1, EVENT_DTYPE))
    out = np.zeros(4, EVENT_DTYPE)
    got = dec.decode(_packet(_word(1, 2, True, False)), 9, out=out)
    assert _key(got) == [(9, 1, 2, 1)] and np.shares_memory(got, out)
    ro = np.frombuffer(_packet(_word(3, 3, False, False)), dtype=np.uint8)  # read-only input
    assert _key(dec.decode(ro, 1)) == [(1, 3, 3, 0)]


@pytest.mark.skipif(evio is None, reason="spikeline._ext.evio not built")
@settings(deadline=None, max_examples=400)
@given(packets=st.lists(st.binary(max_size=80), max_size=6), w=st.integers(1, 40000), h=st.integers(1, 40000),
       arrival=st.integers(-(1 << 40), 1 << 40))
def test_compiled_equals_reference_on_random_packets(packets: list[bytes], w: int, h: int, arrival: int) -> None:
    a, b = evio.AEStreamDecoder((w, h)), AEStreamDecoderRef((w, h))
    for p in packets:
        assert _key(a.decode(p, arrival)) == _key(b.decode(p, arrival))
    assert a.counters == b.counters and a.state == b.state


@pytest.mark.parametrize("cls", DECODERS, ids=IDS)
@settings(deadline=None, max_examples=60)
@given(ev=events(width=64, height=48, max_dt=(1 << 31) - 1), split=st.integers(0, 400))
def test_state_carries_across_decoders(cls: Any, ev: Any, split: int) -> None:
    """A decoder restored from another's state continues the unwrapping exactly."""
    packets = encode_aestream(ev, True, 64)
    whole = cls((64, 48))
    ref = [whole.decode(p, 0) for p in packets]
    first, second = cls((64, 48)), cls((64, 48))
    out = [first.decode(p, 0) for p in packets[:split]]
    second.state = first.state
    out += [second.decode(p, 0) for p in packets[split:]]
    assert [_key(e) for e in out] == [_key(e) for e in ref]
