"""EventChunk, the bounded queue with events, and the event sources' gate (time order + rate cap)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.chunk import EVENT_DTYPE, EventChunk, StreamMeta, as_events
from spikeline.events.rate import EventGate
from spikeline.queue import SampleQueue

META = StreamMeta(name="cam", type="events", channels=(), nominal_rate=1e6, sensor=(32, 24))


def events(t: list[int] | np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.int64)
    n = len(t)
    return as_events(t, np.arange(n) % 32, np.arange(n) % 24, np.arange(n) % 2)


def test_event_chunk_checks_and_take() -> None:
    ev = events(np.arange(10) * 100)
    c = EventChunk(ev=ev, t_base=5.0, t_recv=6.0, seq=40, meta=META, t_scale=1e-6 / 4)
    assert len(c) == 10
    tail = c.take(3)
    assert (tail.seq, len(tail), tail.t_scale) == (43, 7, c.t_scale)
    assert tail.ev["t"][0] == 300
    # replay at 4x: sensor time 400 µs is 100 µs of host time after t_base
    assert c.local_time(400) == pytest.approx(5.0 + 1e-4)
    with pytest.raises(ValueError, match="consecutive"):
        c.take(0, None, 2)
    with pytest.raises(ValueError, match="EVENT_DTYPE"):
        EventChunk(ev=np.zeros(3, dtype=np.int64), t_base=0, t_recv=0, seq=0, meta=META)
    with pytest.raises(ValueError, match="not an event stream"):
        EventChunk(ev=ev, t_base=0, t_recv=0, seq=0, meta=StreamMeta("x", "EEG", ("a",), 100.0))
    assert EVENT_DTYPE.itemsize == 16 and EVENT_DTYPE.fields is not None and EVENT_DTYPE.fields["p"][1] == 12


async def test_queue_drops_oldest_events_and_counts_them() -> None:
    q = SampleQueue(100)
    for k in range(3):
        q.put(EventChunk(ev=events(np.arange(60) + 60 * k), t_base=0, t_recv=0, seq=60 * k, meta=META))
    assert q.dropped == 80 and len(q) == 100
    first = await q.get()
    assert first is not None and isinstance(first, EventChunk)
    assert first.seq == 80 and first.ev["t"][0] == 80  # the newest 100 events survive, seq shows the gap


def test_gate_drops_out_of_order_events_and_counts_them() -> None:
    g = EventGate(max_rate=0, reset_us=20)
    kept = g.admit(events([0, 10, 5, 20, 20, 15, 30]), now=0.0)
    assert kept["t"].tolist() == [0, 10, 20, 20, 30]
    assert g.out_of_order == 2
    kept = g.admit(events([25, 31, 40]), now=0.0)  # 25 < 30 already let through (but within reset_us)
    assert kept["t"].tolist() == [31, 40] and g.out_of_order == 3
    # a jump back by more than reset_us is a restarted sensor clock: start over, counted
    kept = g.admit(events([3, 4]), now=0.0)
    assert kept["t"].tolist() == [3, 4] and g.clock_resets == 1 and g.out_of_order == 3


def test_gate_caps_the_rate_with_an_even_subset() -> None:
    g = EventGate(max_rate=1000.0, burst_s=0.01)  # 1000 events/s, bursts of 10
    ev = events(np.arange(100))
    kept = g.admit(ev, now=0.0)
    assert len(kept) == 10 and g.dropped_rate == 90
    assert np.all(np.diff(kept["t"]) == 10)  # every 10th event: spread over the chunk, not its head
    # 5 ms later: 5 more tokens
    kept = g.admit(events(np.arange(100, 200)), now=0.005)
    assert len(kept) == 5 and g.dropped_rate == 185
    # a long pause refills only up to the burst
    kept = g.admit(events(np.arange(200, 300)), now=10.0)
    assert len(kept) == 10


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=30),
       gaps=st.lists(st.floats(0, 0.05), min_size=30, max_size=30),
       rate=st.floats(100, 1e5))
def test_gate_never_exceeds_the_bucket_and_counts_every_drop(sizes: list[int], gaps: list[float],
                                                            rate: float) -> None:
    g = EventGate(max_rate=rate, burst_s=0.02)
    now, t0, total_in, total_out = 0.0, 0, 0, 0
    for n, dt in zip(sizes, gaps, strict=False):
        now += dt
        ev = events(np.arange(t0, t0 + n))
        t0 += n
        out = g.admit(ev, now)
        assert np.all(np.diff(out["t"]) > 0)
        total_in += n
        total_out += len(out)
        # what got through never exceeds the initial burst plus what the elapsed time refilled
        assert total_out <= g.capacity + now * rate + 1e-6
    assert total_in == total_out + g.dropped_rate


async def test_queue_carries_ticks_and_keeps_only_the_newest_of_consecutive_ones() -> None:
    q = SampleQueue(100)
    c = EventChunk(ev=events(np.arange(10)), t_base=0, t_recv=0, seq=0, meta=META)
    q.put(c)
    q.put(c.tick(50))
    q.put(c.tick(60))  # replaces the tick before it: it says more
    q.put(c.take(0, 0))  # an empty chunk that is not a tick carries nothing
    assert len(q) == 10 and q.dropped == 0
    got = [await q.get(), await q.get()]
    assert got[0] is c
    assert got[1] is not None and isinstance(got[1], EventChunk) and got[1].is_tick and got[1].until == 60
    assert got[1].seq == 10
    q.close()
    assert await q.get() is None
