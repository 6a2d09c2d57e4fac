"""Gateway mode's device table: slots, gaps and duplicates from sample indices, clock offset and drift,
retirement and re-admission."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.gateway import ClockMap, DeviceTable


def frame_times(first: int, n: int, t0_us: int = 0, period_us: int = 20_000) -> np.ndarray:
    return t0_us + (first + np.arange(n, dtype=np.int64)) * period_us


def test_gaps_and_duplicates_are_counted_exactly_from_the_indices() -> None:
    tab = DeviceTable(4)
    d = tab.device("w1", 0.0)
    assert d is not None and d.slot == 0
    a = tab.admit(d, 0, frame_times(0, 5), 0.1)
    assert a is not None and a.index.tolist() == [0, 1, 2, 3, 4]
    a = tab.admit(d, 8, frame_times(8, 2), 0.2)  # 5, 6, 7 lost
    assert a is not None and a.index.tolist() == [8, 9] and d.lost == 3
    a = tab.admit(d, 8, frame_times(8, 4), 0.3)  # 8, 9 again, 10, 11 new
    assert a is not None and a.index.tolist() == [10, 11] and d.duplicates == 2
    assert a.keep == slice(2, None)
    assert tab.admit(d, 10, frame_times(10, 2), 0.4) is None and d.duplicates == 4  # all seen
    assert (d.samples, d.lost, d.duplicates) == (9, 3, 4)
    t = tab.totals()
    assert (t["samples"], t["lost"], t["duplicates"], t["active_devices"]) == (9, 3, 4, 1)


def test_a_device_that_restarts_its_counter_starts_a_new_index_line() -> None:
    tab = DeviceTable(1)
    d = tab.device("w", 0.0)
    assert d is not None
    tab.admit(d, 100_000, frame_times(100_000, 5), 0.0)
    a = tab.admit(d, 0, frame_times(0, 5), 1.0)  # far behind: a reboot, not 100,000 duplicates
    assert a is not None and a.index.tolist() == [0, 1, 2, 3, 4] and d.duplicates == 0


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), min_size=1, max_size=40))
def test_every_index_is_delivered_once_lost_or_duplicate(ops: list[tuple[int, int]]) -> None:
    tab = DeviceTable(1)
    d = tab.device("w", 0.0)
    assert d is not None
    delivered: list[int] = []
    received = 0
    for first, n in ops:
        received += n
        a = tab.admit(d, first, frame_times(first, n), 0.0)
        if a is not None:
            delivered += a.index.tolist()
    assert delivered == sorted(set(delivered))  # strictly increasing: no duplicate ever passes
    assert d.samples == len(delivered)
    assert d.duplicates == received - len(delivered)
    assert d.lost == delivered[-1] + 1 - ops[0][0] - len(delivered) if delivered else d.lost == 0


def test_slots_retirement_and_readmission() -> None:
    tab = DeviceTable(2, idle_timeout_s=5.0)
    freed: list[int] = []
    tab.on_retire(freed.append)
    a, b = tab.device("a", 0.0), tab.device("b", 0.0)
    assert a is not None and b is not None and {a.slot, b.slot} == {0, 1}
    assert tab.device("c", 0.0) is None and tab.refused == 1  # no free slot: refused, counted
    tab.admit(a, 0, frame_times(0, 3), 1.0)
    tab.admit(b, 0, frame_times(0, 3), 4.0)
    assert tab.sweep(6.0) == ["a"] and freed == [0] and len(tab) == 1
    assert tab.name(0) == "slot0"
    c = tab.device("c", 6.0)
    assert c is not None and c.slot == 0  # the freed slot serves another device
    tab.admit(b, 3, frame_times(3, 1), 7.0)
    assert tab.sweep(11.5) == ["c"]
    a2 = tab.device("a", 12.0)  # a returns: its counters continue, its index line starts again
    assert a2 is a and a.readmissions == 1 and a.next_index is None and a.samples == 3
    r = tab.admit(a, 500, frame_times(500, 2), 12.0)
    assert r is not None and a.lost == 0
    assert [e for _, e in tab.events()].count("retired") == 2
    tab.reject("a", "bad_json")
    tab.reject("ghost", "bad_magic")
    assert a.rejected == {"bad_json": 1} and tab.totals()["rejected"] == 2


def test_clock_map_follows_offset_and_drift_from_the_least_delayed_samples() -> None:
    rng = np.random.default_rng(0)
    drift, offset = 80e-6, 1234.5  # the device's clock runs 80 ppm fast, 1234.5 s away from ours
    cm = ClockMap(window_s=2.0)
    for k in range(1500):  # 60 s of frames at 25 per second
        true = 100.0 + k * 0.04
        d_us = round(((true - 100.0) * (1 + drift) + offset) * 1e6)
        arrival = true + 0.002 + rng.exponential(0.01)  # transport: 2 ms floor + queueing
        cm.observe(d_us, arrival)
        t = cm.map(d_us, arrival)
        assert t <= arrival
    assert abs((cm.b - 1) - (-drift / (1 + drift))) < 5e-6  # local per device second: 1 / (1 + drift)
    # the mapped time of a fresh sample is its true time plus about the transport floor
    true = 100.0 + 1500 * 0.04
    d_us = round(((true - 100.0) * (1 + drift) + offset) * 1e6)
    assert cm.map(d_us, true + 1.0) == pytest.approx(true + 0.002, abs=0.003)


def test_lateness_per_device_is_the_delay_above_the_least_delayed_sample() -> None:
    tab = DeviceTable(1)
    d = tab.device("w", 0.0)
    assert d is not None
    tab.admit(d, 0, frame_times(0, 5, t0_us=0), 0.100)  # newest sample (t = 80 ms) arrives 20 ms later
    tab.admit(d, 5, frame_times(5, 5, t0_us=0), 0.250)  # (t = 180 ms) arrives 70 ms later: 50 ms late
    assert d.late_max_s == pytest.approx(0.050)
    info = tab.per_device()["w"]
    assert info["late_max_ms"] == pytest.approx(50.0) and 0 < info["late_ms"] < 50


def test_batched_ingest_equals_frame_by_frame() -> None:
    """The watch sources' fast path (a batch of payloads decoded together, admitted with scalars, rows
    assembled per run) gives the same chunk and the same counters as taking the payloads one at a time, with
    devices mixing SLW1 and JSON, gaps, duplicates, overlaps, a restart, clock drift, and refused payloads
    interleaved (the refused ones and JSON split the fast runs)."""
    from types import SimpleNamespace

    from spikeline.chunk import StreamMeta
    from spikeline.sources.watch import _Ingest, _WatchSource
    from spikeline.watch import encode_frame, encode_json

    rng = np.random.default_rng(4)
    items: list[tuple[bytes, str, float]] = []
    next_idx = {f"w{k}": 0 for k in range(12)}
    arrival = 100.0
    for _ in range(600):
        name = f"w{int(rng.integers(12))}"
        n = int(rng.integers(1, 8))
        first = next_idx[name]
        r = rng.random()
        if r < 0.05:
            first += int(rng.integers(1, 20))  # a gap
        elif r < 0.10:
            first = max(0, first - int(rng.integers(1, 10)))  # duplicates / overlap
        elif r < 0.11:
            first = 0  # far behind after enough samples: a restart
        next_idx[name] = max(next_idx[name], first + n)
        data = rng.normal(size=(n, 6)).astype(np.float32)
        t0 = int(first * 20_000 * (1 + 300e-6 * (int(name[1:]) - 6))) + 7_000_000  # drifting device clocks
        arrival += float(rng.exponential(0.03))  # 18 s: the drift fit runs
        kind = rng.random()
        if kind < 0.1:
            payload = encode_json(data, first, t0, 20_000)
        elif kind < 0.13:
            payload = b"SLW1garbage"
        elif kind < 0.15:
            payload = encode_frame(data[:, :3], first, t0, 20_000)  # wrong channel count
        elif kind < 0.17:
            payload = encode_frame(data, first, t0, 20_000, device="w99")  # an id in the frame
        else:
            payload = encode_frame(data, first, t0, 20_000)
        items.append((payload, name, arrival))

    def run(batched: bool, frame_names: bool) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        tab = DeviceTable(64, idle_timeout_s=1e9)
        meta = StreamMeta(name="w", type="IMU", channels=tuple("abcdef"), nominal_rate=50.0, source_id="t",
                          devices=tab)
        src = SimpleNamespace(p={"max_payload": 65536, "channels": list("abcdef")}, table=tab)
        src._decode = lambda payload, fmt, name: _WatchSource._decode(src, payload, fmt, name)  # type: ignore[arg-type]
        ing = _Ingest(src, tab, meta, 6, 50.0)  # type: ignore[arg-type]
        chunks = []
        for start in range(0, len(items), 50):
            batch = items[start:start + 50]
            if batched:
                ing.add_batch(batch, "auto", frame_names)
            else:
                for payload, name, arr in batch:
                    for f in src._decode(payload, "auto", name):
                        ing.add(f, (f.device or name) if frame_names else name, arr)
            c = ing.chunk()
            if c is not None:
                chunks.append(c)
        got = {k: np.concatenate([getattr(c, k) for c in chunks]) for k in ("data", "t", "t_recv", "streams", "row_seq")}
        every = {d.name: (d.samples, d.lost, d.duplicates, dict(d.rejected), d.clock.a, d.clock.b, d.late_s,
                          d.late_max_s) for d in tab.by_name.values()}
        return got, {"devices": every, "unknown": tab.unknown_rejected, "totals": tab.totals()}

    for frame_names in (True, False):
        a, ca = run(True, frame_names)
        b, cb = run(False, frame_names)
        assert ca == cb
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        t = ca["totals"]
        assert t["lost"] > 0 and t["duplicates"] > 0 and t["rejected"] > 0 and len(a["data"]) > 1000  # type: ignore[index]
        devices = ca["devices"]
        assert ("w99" in devices) == frame_names  # type: ignore[operator]
        assert any(v[5] != 1.0 for v in devices.values())  # type: ignore[attr-defined]  # drift estimated
