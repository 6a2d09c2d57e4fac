"""Event-camera kernels: RefractoryFilter, BackgroundActivityFilter, TimeSurface, EventFrames, VoxelGrid.

Outside reference: tonic 1.7's transforms (RefractoryPeriod, Denoise, ToTimesurface, ToFrame,
ToVoxelGrid), on the real DVXplorer recording and on random event streams. Inside reference: the
numpy classes in spikeline.kernels.ref_events, compared with the compiled classes (imported from
spikeline._ext.evkernels directly, so those tests run in both CI modes). Chunk invariance: any
split of a stream into chunks gives identical outputs, state and counters (hypothesis). The HD-SNN
has its own file, tests/test_hdsnn.py.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import need
from spikeline.chunk import EVENT_DTYPE, Events, as_events
from spikeline.kernels import ref_events
from spikeline.kernels.events import (
    BACKEND,
    MAX_OUTPUT_BYTES,
    BackgroundActivityFilter,
    BackgroundActivityFilterRef,
    EventFrames,
    EventFramesRef,
    RefractoryFilter,
    RefractoryFilterRef,
    TimeSurface,
    TimeSurfaceRef,
    VoxelGrid,
    VoxelGridRef,
)

pytestmark = pytest.mark.kernel

NAMES = ("RefractoryFilter", "BackgroundActivityFilter", "TimeSurface", "EventFrames", "VoxelGrid")
REFS: dict[str, type[Any]] = {"RefractoryFilter": RefractoryFilterRef,
                              "BackgroundActivityFilter": BackgroundActivityFilterRef,
                              "TimeSurface": TimeSurfaceRef, "EventFrames": EventFramesRef,
                              "VoxelGrid": VoxelGridRef}
SELECTED: dict[str, type[Any]] = {"RefractoryFilter": RefractoryFilter,
                                  "BackgroundActivityFilter": BackgroundActivityFilter,
                                  "TimeSurface": TimeSurface, "EventFrames": EventFrames, "VoxelGrid": VoxelGrid}
SENSOR = (320, 240)


def _no_ext_requested() -> bool:
    return os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


@pytest.fixture(scope="module")
def compiled() -> dict[str, type[Any]]:
    """The compiled classes themselves, whatever backend spikeline.kernels.events selected."""
    try:
        from spikeline._ext import evkernels as ext
    except ImportError as exc:
        if _no_ext_requested():
            pytest.skip(f"spikeline._ext.evkernels is not built and SPIKELINE_NO_EXT is set ({exc})")
        pytest.fail(f"spikeline._ext.evkernels failed to import and SPIKELINE_NO_EXT is not set: {exc}")
    return {name: getattr(ext, name) for name in NAMES}


def _tonic() -> Any:
    try:
        import tonic
    except ImportError as exc:
        need(False, f"tonic is needed for the outside-reference tests ({exc}): pip install tonic")
    return tonic


@functools.lru_cache(maxsize=2)
def read_aedat4_events(path: Path) -> Events:
    """The polarity events of an AEDAT4 file, read with the aedat package (an outside decoder)."""
    try:
        import aedat
    except ImportError as exc:
        need(False, f"aedat is needed to read {path.name} ({exc}): pip install aedat")
    packets = [p["events"] for p in aedat.Decoder(str(path)) if "events" in p]
    raw = np.concatenate(packets)
    return as_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["on"])


@pytest.fixture
def recording(data_dir: Path) -> Events:
    ev = read_aedat4_events(data_dir / "dvs_samples_tonic" / "sample.aedat4").copy()
    assert ev.shape[0] == 111_954 and int(ev["x"].max()) < 320 and int(ev["y"].max()) < 240
    return ev


def random_events(seed: int, n: int, width: int, height: int, t_span: int, t_start: int = 0) -> Events:
    """Time-ordered events with repeated times, bursts at a few pixels and both polarities."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t_start, t_start + t_span, n))
    hot = rng.random(n) < 0.3  # a third of the events at 3 pixels, to exercise repeats
    x = np.where(hot, rng.integers(0, 3, n) % width, rng.integers(0, width, n))
    y = np.where(hot, rng.integers(0, 3, n) % height, rng.integers(0, height, n))
    return as_events(t, x, y, rng.integers(0, 2, n))


def _chunks(ev: Events, cuts: list[int] | set[int]) -> Iterator[Events]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < ev.shape[0]), ev.shape[0]]
    for a, b in itertools.pairwise(bounds):
        yield ev[a:b]


def _ulps(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> int:
    """Largest distance in float32 ulps (both arrays non-negative)."""
    assert a.dtype == b.dtype == np.float32 and (a >= 0).all() and (b >= 0).all()
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max(initial=0))


# --- backend selection ---------------------------------------------------------------------------

def test_backend_follows_environment() -> None:
    if _no_ext_requested():
        assert BACKEND == "numpy"
        assert all(SELECTED[name] is REFS[name] for name in NAMES)
    else:
        assert BACKEND == "ext"
        assert {cls.__module__ for cls in SELECTED.values()} == {"spikeline._ext.evkernels"}


# --- tonic on the real recording -------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize(("name", "arg"), [("RefractoryFilter", 1), ("RefractoryFilter", 1000),
                                           ("RefractoryFilter", 50_000), ("BackgroundActivityFilter", 1000),
                                           ("BackgroundActivityFilter", 10_000)])
def test_filters_equal_tonic_on_recording(recording: Events, name: str, arg: int, relative: bool) -> None:
    tonic = _tonic()
    ev = recording.copy()
    if relative:  # tonic's usual case: times from 0, where the initial memories matter
        ev["t"] -= ev["t"][0]
    ref = (tonic.transforms.RefractoryPeriod(delta=arg) if name == "RefractoryFilter"
           else tonic.transforms.Denoise(filter_time=arg))(ev.copy())
    for cls in (SELECTED[name], REFS[name]):
        k = cls(*SENSOR, arg)
        got = k.filter(ev)
        assert got.dtype == EVENT_DTYPE
        assert np.array_equal(got, ref)
        assert (k.seen, k.kept) == (ev.shape[0], ref.shape[0])
    assert 0 < ref.shape[0] < ev.shape[0] or (name == "RefractoryFilter" and arg == 1)


@pytest.mark.data
def test_time_surface_equals_tonic_on_recording(recording: Events) -> None:
    """tonic's ToTimesurface(dt, tau) = update with each window's events, then sample at its end."""
    tonic = _tonic()
    dt, tau = 50_000, 20_000.0
    ref = tonic.transforms.ToTimesurface(sensor_size=(*SENSOR, 2), dt=dt, tau=tau)(recording.copy())
    t = recording["t"]
    t0 = int(t[0])
    assert ref.shape == ((int(t[-1]) - t0) // dt, 2, 240, 320)
    for cls in (TimeSurface, TimeSurfaceRef):
        ts = cls(*SENSOR, tau)
        out = np.empty((2, 240, 320), np.float32)
        for i in range(ref.shape[0]):
            lo, hi = np.searchsorted(t, [t0 + i * dt, t0 + (i + 1) * dt])
            ts.update(recording[lo:hi])
            got = ts.sample(t0 + (i + 1) * dt, out=out)
            assert got is out
            # tonic computes in float64; ours is the float64 value rounded once (exp() of numpy vs libm: <= 1 ulp)
            assert _ulps(got, ref[i].astype(np.float32)) <= 1
            assert np.array_equal(got > 0, ref[i].astype(np.float32) > 0)  # fired pixels are exactly tonic's


@pytest.mark.data
@pytest.mark.parametrize("window", [10_000, 33_333])
def test_event_frames_equal_tonic_on_recording(recording: Events, window: int) -> None:
    tonic = _tonic()
    ref = tonic.transforms.ToFrame(sensor_size=(*SENSOR, 2), time_window=window)(recording.copy())
    t0 = int(recording["t"][0])
    for cls in (EventFrames, EventFramesRef):
        frames, t_end = cls(*SENSOR, window, t0_us=None).push(recording)
        assert frames.dtype == np.float32 and frames.shape == ref.shape
        assert np.array_equal(frames, ref.astype(np.float32))
        assert np.array_equal(t_end, t0 + window * np.arange(1, ref.shape[0] + 1))
    # tonic's start_time = our explicit window alignment, when the first event starts a window
    ref2 = tonic.transforms.ToFrame(sensor_size=(*SENSOR, 2), time_window=window, start_time=t0)(recording.copy())
    frames2, _ = EventFrames(*SENSOR, window, t0_us=t0).push(recording)
    assert np.array_equal(frames2, ref2.astype(np.float32))


@pytest.mark.data
def test_voxel_grid_equals_tonic_per_window_on_recording(recording: Events) -> None:
    tonic = _tonic()
    window, bins = 20_000, 5
    slices = tonic.slicers.slice_events_by_time(recording, window)
    ref = np.stack([tonic.transforms.ToVoxelGrid(sensor_size=(*SENSOR, 2), n_time_bins=bins)(s)[:, 0]
                    for s in slices])
    for cls in (VoxelGrid, VoxelGridRef):
        grids, t_end = cls(*SENSOR, window, bins, t0_us=None).push(recording)
        assert grids.shape == ref.shape == (len(slices), bins, 240, 320)
        assert np.array_equal(grids, ref.astype(np.float32))
        assert len(t_end) == len(slices)


# --- tonic on random streams (ties, t = 0, pixel repeats, sensor edges) -------------------------

@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), width=st.integers(1, 9),
       height=st.integers(1, 9), span=st.integers(1, 3000), arg=st.integers(0, 500),
       refractory=st.booleans())
def test_filters_equal_tonic_on_random_streams(seed: int, n: int, width: int, height: int, span: int, arg: int,
                                               refractory: bool) -> None:
    """Times from 0 (tonic's warm-up rules are exercised) on a sensor that may be larger than the
    recording's largest x/y (tonic's grid): the outputs are still tonic's."""
    tonic = _tonic()
    ev = random_events(seed, n, width, height, span)
    fn = (tonic.functional.refractory_period_numpy if refractory else tonic.functional.denoise_numpy)
    ref = fn(ev.copy(), arg)
    name = "RefractoryFilter" if refractory else "BackgroundActivityFilter"
    tonic_grid_is_one_pixel = int(ev["x"].max()) == 0 and int(ev["y"].max()) == 0
    for cls in (SELECTED[name], REFS[name]):
        got = cls(width + 2, height + 1, arg).filter(ev)
        if not refractory and tonic_grid_is_one_pixel:
            # the one documented difference: tonic's grid (largest x/y + 1) has no neighbour at all, a
            # real sensor has never-fired neighbours, which count as fired at t = 0 (tonic's initial memory)
            assert ref.shape[0] == 0 and np.array_equal(got, ev[ev["t"] < arg])
            assert cls(1, 1, arg).filter(ev).shape[0] == 0  # on tonic's 1x1 grid: tonic's output
        else:
            assert np.array_equal(got, ref)


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 400), window=st.integers(1, 400),
       bins=st.integers(1, 6))
def test_binning_equals_tonic_on_random_streams(seed: int, n: int, window: int, bins: int) -> None:
    tonic = _tonic()
    ev = random_events(seed, n, 7, 5, 3000, t_start=1000)
    t = ev["t"]
    frames, t_end = EventFrames(7, 5, window, t0_us=None).push(ev)
    if int(t[-1]) - int(t[0]) >= window:
        ref = tonic.transforms.ToFrame(sensor_size=(7, 5, 2), time_window=window)(ev.copy())
        assert np.array_equal(frames, ref.astype(np.float32))
    else:  # tonic returns the one incomplete window; a flush at its end gives it here
        assert frames.shape[0] == 0
        ref = tonic.transforms.ToFrame(sensor_size=(7, 5, 2), time_window=window)(ev.copy())
        k = EventFrames(7, 5, window, t0_us=None)
        k.push(ev)
        more, _ = k.flush_until(int(t[0]) + window)
        assert np.array_equal(more, ref.astype(np.float32))
    grids, _ = VoxelGrid(7, 5, window, bins, t0_us=None).push(ev)
    slices = tonic.slicers.slice_events_by_time(ev, window)
    assert grids.shape[0] == len(t_end)
    for g, s in zip(grids, slices, strict=False):
        if s.shape[0] >= 1 and s["t"][-1] > s["t"][0]:  # tonic divides by the slice's time span
            ref_g = tonic.transforms.ToVoxelGrid(sensor_size=(7, 5, 2), n_time_bins=bins)(s)[:, 0]
            assert np.array_equal(g, ref_g.astype(np.float32))


# --- compiled == reference, and chunk invariance --------------------------------------------------

def _run(name: str, cls: type[Any], ev: Events, cuts: list[int] | set[int]) -> tuple[list[Any], dict[str, Any]]:
    """Outputs of every call and the final state of kernel `name` fed `ev` split at `cuts`."""
    w, h = 11, 7
    outs: list[Any] = []
    if name == "RefractoryFilter":
        k = cls(w, h, 40)
    elif name == "BackgroundActivityFilter":
        k = cls(w, h, 60)
    elif name == "TimeSurface":
        k = cls(w, h, 75.5)
    elif name == "EventFrames":
        k = cls(w, h, 37, t0_us=3)
    else:
        k = cls(w, h, 37, 4, t0_us=3)
    for part in _chunks(ev, cuts):
        if name in ("RefractoryFilter", "BackgroundActivityFilter"):
            outs.append(k.filter(part).copy())
        elif name == "TimeSurface":
            k.update(part)
            if part.shape[0]:
                outs.append(k.sample(int(part["t"][-1]) + 10))
        else:
            outs.append(k.push(part))
    state: dict[str, Any] = {"seen": k.seen}
    if name in ("RefractoryFilter", "BackgroundActivityFilter", "TimeSurface"):
        state["last"] = k.last_times
        if name != "TimeSurface":
            state["kept"] = k.kept
    else:
        outs.append(k.flush_until((int(ev["t"][-1]) if ev.shape[0] else 0) + 100))
        state["windows"] = k.windows
    return outs, state


def _flatten(name: str, outs: list[Any]) -> Any:
    if name in ("RefractoryFilter", "BackgroundActivityFilter"):
        return np.concatenate(outs)
    if name == "TimeSurface":
        return outs[-1]
    return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float32:
        return a.shape == b.shape and b.dtype == np.float32 and bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))
    return a.dtype == b.dtype and bool(np.array_equal(a, b))


@pytest.mark.parametrize("name", NAMES)
def test_compiled_equals_reference(compiled: dict[str, type[Any]], name: str) -> None:
    for seed in range(5):
        ev = random_events(seed, 3000, 11, 7, 20_000, t_start=5)
        cuts = list(np.random.default_rng(seed).integers(0, 3000, 12))
        out_c, st_c = _run(name, compiled[name], ev, cuts)
        out_r, st_r = _run(name, REFS[name], ev, cuts)
        if name == "TimeSurface":  # exp(): numpy vs libm, <= 1 float32 ulp after rounding
            assert all(_ulps(a, b) <= 1 for a, b in zip(out_c, out_r, strict=True))
        else:
            assert all(_same(a, b) for a, b in zip(out_c, out_r, strict=True))
        assert st_c.keys() == st_r.keys() and all(_same(st_c[k], st_r[k]) for k in st_c)


@settings(deadline=None, max_examples=25)
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 600),
       cuts=st.sets(st.integers(0, 600), max_size=30))
def test_chunk_invariance(name: str, seed: int, n: int, cuts: set[int]) -> None:
    ev = random_events(seed, n, 11, 7, 5000, t_start=3)
    whole, st_whole = _run(name, SELECTED[name], ev, [])
    split, st_split = _run(name, SELECTED[name], ev, cuts)
    if whole:
        assert _same(_flatten(name, whole), _flatten(name, split))
    assert st_whole.keys() == st_split.keys() and all(_same(st_whole[k], st_split[k]) for k in st_whole)


@pytest.mark.parametrize("name", NAMES)
def test_one_event_at_a_time_and_reset(name: str) -> None:
    ev = random_events(7, 400, 11, 7, 4000, t_start=3)
    whole, st_whole = _run(name, SELECTED[name], ev, [])
    single, st_single = _run(name, SELECTED[name], ev, list(range(400)))
    assert _same(_flatten(name, whole), _flatten(name, single))
    assert all(_same(st_whole[k], st_single[k]) for k in st_whole)


@pytest.mark.parametrize("name", ["RefractoryFilter", "BackgroundActivityFilter"])
def test_filter_reset_and_out(name: str) -> None:
    ev = random_events(3, 500, 11, 7, 4000)
    k = SELECTED[name](11, 7, 50)
    first = k.filter(ev).copy()
    k.reset()
    assert (k.seen, k.kept) == (0, 0)
    out = np.zeros(600, EVENT_DTYPE)
    got = k.filter(ev, out=out)
    assert np.array_equal(got, first) and np.shares_memory(got, out)
    assert (k.seen, k.kept) == (500, first.shape[0])
    later = ev.copy()
    later["t"] += 10_000
    with pytest.raises(ValueError, match="room for 10 events"):
        k.filter(later, out=np.zeros(10, EVENT_DTYPE))
    assert k.seen == 500  # refused before any state change


def test_time_surface_semantics() -> None:
    """Polarity-aware last times, 0 where never fired, exp(-(t - t_last) / tau), polarities=1 merges."""
    ev = as_events([10, 20, 30, 30], [1, 1, 2, 0], [0, 0, 1, 1], [1, 1, 0, 1])
    for cls in (TimeSurface, TimeSurfaceRef):
        ts = cls(3, 2, 100.0)
        ts.update(ev)
        s = ts.sample(50)
        expect = np.zeros((2, 2, 3), np.float64)
        expect[1, 0, 1] = np.exp(-30 / 100)
        expect[0, 1, 2] = np.exp(-20 / 100)
        expect[1, 1, 0] = np.exp(-20 / 100)
        assert _ulps(s, expect.astype(np.float32)) <= 1
        one = cls(3, 2, 100.0, polarities=1)
        one.update(ev)
        assert _ulps(one.sample(50)[0], expect.max(axis=0).astype(np.float32)) <= 1
        with pytest.raises(ValueError, match="before the last event"):
            ts.sample(29)
        ts.reset()
        assert not ts.sample(50).any() and ts.seen == 0


def test_windows_empty_windows_and_flush() -> None:
    """Empty windows are returned as zero frames; flush_until completes windows ending at or before t."""
    ev = as_events([5, 7, 205, 260], [0, 1, 2, 2], [0, 0, 1, 1], [1, 0, 1, 1])
    for cls in (EventFrames, EventFramesRef):
        k = cls(3, 2, 50, t0_us=0)
        frames, t_end = k.push(ev)
        assert t_end.tolist() == [50, 100, 150, 200, 250]
        assert frames.sum(axis=(1, 2, 3)).tolist() == [2, 0, 0, 0, 1]
        assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 0, 1] == 1
        more, t_more = k.flush_until(299)
        assert t_more.tolist() == [] and more.shape == (0, 2, 2, 3)
        more, t_more = k.flush_until(300)
        assert t_more.tolist() == [300] and more.sum() == 1 and k.windows == 6
        with pytest.raises(ValueError, match="goes backwards"):
            k.push(as_events([299], [0], [0], [0]))
    for cls in (VoxelGrid, VoxelGridRef):
        v = cls(3, 2, 50, 2, t0_us=0)
        grids, t_end = v.push(ev)
        assert t_end.tolist() == [50, 100, 150, 200, 250] and grids.shape == (5, 2, 2, 3)
        # window 0: t 5 and 7 -> normalised 0 and 2: the first is all left (bin 0, ON +1), the last adds nothing
        assert grids[0, 0, 0, 0] == 1 and np.count_nonzero(grids[0]) == 1
        # a window with one event (tonic: 0/0): the event at normalised time 0, +-1 in bin 0
        assert grids[4, 0, 1, 2] == 1 and np.count_nonzero(grids[4]) == 1
        assert not grids[1:4].any()


def test_event_frames_single_polarity(compiled: dict[str, type[Any]]) -> None:
    """polarities=1 counts both polarities in one frame: the sum of the two-polarity frames."""
    ev = random_events(11, 2000, 11, 7, 10_000)
    two, t2 = EventFrames(11, 7, 300, t0_us=None).push(ev)
    for cls in (compiled["EventFrames"], EventFramesRef):
        one, t1 = cls(11, 7, 300, polarities=1, t0_us=None).push(ev)
        assert one.shape == (two.shape[0], 1, 7, 11) and np.array_equal(t1, t2)
        assert np.array_equal(one[:, 0], two.sum(axis=1))


def test_windows_start_at_the_first_event() -> None:
    """t0 aligns the windows; windows before the first event are not returned (a sensor clock far from
    t0 costs nothing); a silence too long for MAX_OUTPUT_BYTES is refused with the state unchanged."""
    t_abs = 1_605_537_493_718_345
    for cls in (EventFrames, EventFramesRef):
        k = cls(320, 240, 10_000)
        frames, t_end = k.push(as_events([t_abs, t_abs + 25_000], [0, 1], [0, 0], [1, 1]))
        first_end = (t_abs // 10_000 + 1) * 10_000
        assert first_end == 1_605_537_493_720_000  # t_abs + 25 ms is in the window ending at ...750_000
        assert t_end.tolist() == [first_end, first_end + 10_000, first_end + 20_000] and frames.sum() == 1
        late = as_events([t_abs + 10**12], [0], [0], [1])
        n_windows = (late["t"][0] // 10_000) - (t_abs + 25_000) // 10_000
        assert n_windows * 2 * 240 * 320 * 4 > MAX_OUTPUT_BYTES
        with pytest.raises(ValueError, match="would complete"):
            k.push(late)
        assert k.windows == 3 and k.seen == 2
        frames, t_end = k.push(as_events([t_abs + 40_000], [0], [0], [1]))
        assert t_end.tolist() == [first_end + 30_000] and frames[0].sum() == 1


# --- bad input -----------------------------------------------------------------------------------

def _call(name: str, k: Any, ev: Any) -> Any:
    if name in ("RefractoryFilter", "BackgroundActivityFilter"):
        return k.filter(ev)
    if name == "TimeSurface":
        return k.update(ev)
    return k.push(ev)


def _make(name: str, cls: type[Any]) -> Any:
    return {"RefractoryFilter": lambda: cls(5, 4, 10), "BackgroundActivityFilter": lambda: cls(5, 4, 10),
            "TimeSurface": lambda: cls(5, 4, 10.0), "EventFrames": lambda: cls(5, 4, 10),
            "VoxelGrid": lambda: cls(5, 4, 10, 3)}[name]()


@pytest.mark.parametrize("impl", ["selected", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_events_are_refused_and_leave_state(name: str, impl: str) -> None:
    cls = SELECTED[name] if impl == "selected" else REFS[name]
    k = _make(name, cls)
    good = as_events([1, 2, 3], [0, 4, 2], [0, 3, 1], [0, 1, 1])
    _call(name, k, good)
    seen = k.seen
    cases: list[tuple[Events, str]] = [
        (as_events([5, 4], [0, 0], [0, 0], [0, 0]), r"events\[1\]: time 4 us goes backwards"),
        (as_events([2], [0], [0], [0]), r"events\[0\]: time 2 us goes backwards \(previous event or flush at 3 us\)"),
        (as_events([5, 6], [0, 5], [0, 0], [0, 0]), r"events\[1\]: x=5 is outside the sensor \(width 5\)"),
        (as_events([5], [0], [4], [0]), r"events\[0\]: y=4 is outside the sensor \(height 4\)"),
    ]
    bad_p = as_events([5], [0], [0], [1])
    bad_p["p"] = -1
    cases.append((bad_p, r"events\[0\]: polarity -1 is not 0"))
    for ev, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _call(name, k, ev)
    assert k.seen == seen
    for wrong in (np.zeros(3, np.int64), np.zeros((2, 2), EVENT_DTYPE), [(1, 0, 0, 1)],
                  np.zeros(3, np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")]))):
        with pytest.raises(ValueError, match=r"1-d spikeline\.chunk\.EVENT_DTYPE array"):
            _call(name, k, wrong)
    # read-only and strided input are fine and never modified
    ro = as_events([10, 11, 12, 13], [1, 2, 3, 4], [1, 1, 1, 1], [0, 1, 0, 1])
    ro.flags.writeable = False
    _call(name, k, ro[::2])
    assert k.seen == seen + 2


@pytest.mark.parametrize("impl", ["selected", "reference"])
def test_bad_constructor_arguments(impl: str) -> None:
    get = (lambda n: SELECTED[n]) if impl == "selected" else (lambda n: REFS[n])
    bad: list[tuple[Callable[[], Any], str]] = [
        (lambda: get("RefractoryFilter")(0, 4, 10), "width must be >= 1"),
        (lambda: get("RefractoryFilter")(5, 70000, 10), "exceeds the uint16"),
        (lambda: get("RefractoryFilter")(5, 4, -1), "refractory_us must be >= 0"),
        (lambda: get("BackgroundActivityFilter")(5, 4, 1.5), "filter_us must be an integer"),
        (lambda: get("TimeSurface")(5, 4, 0.0), "tau_us must be a positive"),
        (lambda: get("TimeSurface")(5, 4, float("nan")), "tau_us must be a positive"),
        (lambda: get("TimeSurface")(5, 4, 1.0, polarities=3), "polarities must be 1"),
        (lambda: get("EventFrames")(5, 4, 0), "window_us must be >= 1"),
        (lambda: get("VoxelGrid")(5, 4, 10, 0), "n_bins must be >= 1"),
    ]
    for make, msg in bad:
        with pytest.raises(ValueError, match=msg):
            make()


def test_reference_module_documents_every_class() -> None:
    for name in NAMES:
        doc = getattr(ref_events, name + "Ref").__doc__
        assert doc is not None and len(doc) > 200
