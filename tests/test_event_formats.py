"""Event-camera file readers and writers (spikeline.events.formats) and the word decoders
(spikeline._ext.evio, numpy references in formats).

Outside references: expelliarmus (EVT2, EVT3, DAT), aedat (AEDAT4 events and IMU), tonic (N-MNIST). The
decoder tests are `kernel` tests: run once with the compiled decoders and once with SPIKELINE_NO_EXT=1;
the compiled-vs-reference tests compare both directly whatever the backend.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeline.chunk import EVENT_DTYPE
from spikeline.events import formats as F
from spikeline.events.formats import EventFormatError

PROPHESEE = "prophesee_samples_expelliarmus"
# SPIKELINE_FUZZ_EXAMPLES scales the fuzz tests up for a longer campaign
FUZZ_EXAMPLES = int(os.environ.get("SPIKELINE_FUZZ_EXAMPLES", "150"))
TONIC = "dvs_samples_tonic"

evio: Any
try:
    from spikeline._ext import evio
except ImportError:  # pragma: no cover - the extension is built in CI
    evio = None

REF = {"evt2": F._Evt2DecoderRef, "evt3": F._Evt3DecoderRef, "dat": F._DatDecoderRef}
EXT = {} if evio is None else {"evt2": evio.Evt2Decoder, "evt3": evio.Evt3Decoder, "dat": evio.DatDecoder}
SAMPLES = {"evt2": ("evt2_sample.raw", (640, 480)), "evt3": ("evt3_sample.raw", (1280, 720)),
           "dat": ("NCARS_obj_004397_td.dat", (54, 61))}


def _as64(a: Any) -> Any:
    return np.asarray(a).astype(np.int64)


def _same_events(ours: Any, ref: Any, fields: tuple[str, ...] = ("t", "x", "y", "p"),
                 ref_names: tuple[str, ...] | None = None) -> None:
    assert len(ours) == len(ref)
    for f, g in zip(fields, ref_names or fields, strict=True):
        np.testing.assert_array_equal(_as64(ours[f]), _as64(ref[g]), err_msg=f)


def _key(ev: Any) -> bytes:
    """The event fields as bytes (the 3 padding bytes of EVENT_DTYPE are not data)."""
    return np.stack([_as64(ev[f]) for f in ("t", "x", "y", "p")]).tobytes() if len(ev) else b""


def _payload(path: Path, fmt: str) -> tuple[bytes, int]:
    """The data bytes after the header (DAT: after the 2 type/size bytes) and where they start."""
    raw = path.read_bytes()
    hdr = F._prophesee_header(raw[: F.MAX_HEADER_BYTES])
    assert hdr is not None
    start = hdr[1] + (2 if fmt == "dat" else 0)
    return raw[start:], start


def _decode_pieces(cls: Any, sensor: tuple[int, int], data: bytes, cuts: list[int], cap: int,
                   start: int = 0) -> tuple[Any, dict[str, Any]]:
    """Feed `data` split at `cuts` through a decoder with an output of `cap` events per call, keeping the
    partial trailing word between pieces (what the streamed reader does). A decoder makes progress with
    room for 12 events (an EVT3 VECT_12 word); smaller outputs are the reader's business."""
    cap = max(cap, 12)
    dec = cls(sensor[0], sensor[1], start)
    out = np.empty(cap, dtype=EVENT_DTYPE)
    parts, pending = [], b""
    bounds = [0, *sorted(set(cuts)), len(data)]
    for a, b in itertools.pairwise(bounds):
        pending += data[a:b]
        pos = 0
        while True:
            n, c = dec.decode(memoryview(pending)[pos:], out)
            parts.append(out[:n].copy())
            pos += c
            if c == 0:
                break
        pending = pending[pos:]
    assert len(pending) < dec.word_bytes
    return (np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)), dec.state


# ---------------------------------------------------------------------------------------------
# Equal to the outside readers on every sample file
# ---------------------------------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.kernel
def test_evt2_equals_expelliarmus(data_dir: Path) -> None:
    import expelliarmus

    p = data_dir / PROPHESEE / "evt2_sample.raw"
    f = F.read(p)
    ref = expelliarmus.Wizard(encoding="evt2").read(str(p))
    assert (f.format, f.sensor, f.info["sensor"], f.info["plugin_name"]) == (
        "evt2", (640, 480), "plugin", "hal_plugin_gen3_fx3")
    assert len(f.events) == 539_481
    _same_events(f.events, ref)


def _evt3_time_low_steps_back(data: bytes) -> Any:
    """Per event of the file: how many EVT_TIME_LOW words so far were smaller than the previous one."""
    w = np.frombuffer(data, dtype="<u2").astype(np.int64)
    ty = w >> 12
    tl = w[ty == 6] & 0xFFF
    back = np.zeros(w.shape[0], dtype=np.int64)
    back[np.flatnonzero(ty == 6)[1:]] = tl[1:] < tl[:-1]
    m = np.where(ty == 4, w & 0xFFF, np.where(ty == 5, w & 0xFF, 0))
    per_word = np.where(ty == 2, 1, np.bitwise_count(m).astype(np.int64))
    return np.repeat(np.cumsum(back), per_word)


@pytest.mark.data
@pytest.mark.kernel
def test_evt3_equals_expelliarmus(data_dir: Path) -> None:
    """x, y, p and the count are exact. expelliarmus 1.1.12 adds 4096 us each time an EVT_TIME_LOW is
    smaller than the previous one (its "time low overflow"), even when TIME_HIGH did not change: the real
    Gen4.1 file steps back a few microseconds after each repeated TIME_HIGH, 11 times. Our times equal
    expelliarmus's minus exactly that, and agree with the file's own TIME_HIGH words; expelliarmus's do not."""
    import expelliarmus

    p = data_dir / PROPHESEE / "evt3_sample.raw"
    f = F.read(p)
    ref = expelliarmus.Wizard(encoding="evt3").read(str(p))
    assert (f.format, f.sensor, f.info["sensor"]) == ("evt3", (1280, 720), "plugin")
    assert len(f.events) == 219_596
    _same_events(f.events, ref, ("x", "y", "p"))
    data, _ = _payload(p, "evt3")
    steps = _evt3_time_low_steps_back(data)
    assert steps[-1] == 11
    np.testing.assert_array_equal(f.events["t"] + 4096 * steps, _as64(ref["t"]))
    # the stored reference decode is expelliarmus's
    npy = np.load(data_dir / PROPHESEE / "evt3_sample.npy", allow_pickle=False)
    _same_events(npy, ref)
    # every event's time high is one the file sent (2861..2863); expelliarmus reaches 2874
    w = np.frombuffer(data, dtype="<u2")
    sent = set((w[(w >> 12) == 8] & 0xFFF).tolist())
    assert set((f.events["t"] >> 12).tolist()) <= sent
    assert not set((_as64(ref["t"]) >> 12).tolist()) <= sent


@pytest.mark.data
@pytest.mark.kernel
@pytest.mark.parametrize("name", [f"{PROPHESEE}/NCARS_obj_004397_td.dat", f"{TONIC}/sample_ncars.dat"])
def test_dat_equals_expelliarmus(data_dir: Path, name: str) -> None:
    import expelliarmus

    p = data_dir / name
    f = F.read(p)
    ref = expelliarmus.Wizard(encoding="dat").read(str(p))
    _same_events(f.events, ref)
    assert f.format == "dat" and f.info["sensor"] == "inferred"
    assert (f.info["event_type"], f.info["event_size"], f.info["Version"]) == ("0", "8", "2")
    assert f.sensor == (int(ref["x"].max()) + 1, int(ref["y"].max()) + 1)
    if name.startswith(PROPHESEE):
        _same_events(f.events, np.load(data_dir / PROPHESEE / "NCARS_obj_004397_td.reference.npy"))


@pytest.mark.data
def test_aedat4_equals_aedat(data_dir: Path) -> None:
    import aedat

    p = data_dir / TONIC / "sample.aedat4"
    f = F.read(p)
    packets = list(aedat.Decoder(str(p)))
    ev = np.concatenate([q["events"] for q in packets if "events" in q])
    imu = np.concatenate([q["imus"] for q in packets if "imus" in q])
    assert (f.format, f.sensor, f.info["compression"], f.info["source"]) == (
        "aedat4", (320, 240), "lz4", "DVXplorer_DXB00010")
    assert len(f.events) == 111_954
    _same_events(f.events, ev, ("t", "x", "y", "p"), ("t", "x", "y", "on"))
    assert f.imu is not None and len(f.imu) == len(imu) == 475
    assert f.imu.dtype.names == ("t", *imu.dtype.names[1:])
    for name in imu.dtype.names:
        np.testing.assert_array_equal(f.imu[name].astype(np.float64), imu[name].astype(np.float64), err_msg=name)
    # streamed in small pieces: same events, and the IMU samples passed over
    with F.open_reader(p) as r:
        parts = [r.read(777) for _ in range(200)]
        assert len(r.read(5)) == 0
        imu2 = r.imu()
    _same_events(np.concatenate(parts), f.events)
    assert imu2 is not None and np.array_equal(imu2, f.imu)


NMNIST_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


@pytest.mark.data
def test_nmnist_equals_tonic(data_dir: Path) -> None:
    import tonic

    files = [data_dir / TONIC / "sample_nmnist.bin", *sorted((data_dir / "nmnist_small_slayer").glob("*.bs2"))]
    assert len(files) == 1101
    for p in files:
        f = F.read(p)
        ref = tonic.io.read_mnist_file(str(p), dtype=NMNIST_DTYPE)
        assert f.format == "nmnist" and f.sensor == (34, 34)
        _same_events(f.events, ref)


# ---------------------------------------------------------------------------------------------
# Compiled decoders == numpy references; any split of the bytes == the whole-file decode
# ---------------------------------------------------------------------------------------------

needs_ext = pytest.mark.skipif(evio is None, reason="spikeline._ext.evio not built")


@pytest.mark.data
@pytest.mark.kernel
@needs_ext
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
def test_compiled_equals_reference_on_samples(data_dir: Path, fmt: str) -> None:
    name, sensor = SAMPLES[fmt]
    data, start = _payload(data_dir / PROPHESEE / name, fmt)
    a, sa = _decode_pieces(EXT[fmt], sensor, data, [], 1 << 22, start)
    b, sb = _decode_pieces(REF[fmt], sensor, data, [], 1 << 22, start)
    assert _key(a) == _key(b) and sa == sb and len(a) > 0


@pytest.mark.data
@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["ext", "numpy"])
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut_frac=st.lists(st.floats(0, 1), max_size=12), cap=st.integers(1, 5000), lead=st.integers(0, 7))
def test_any_split_gives_the_whole_decode(data_dir: Path, fmt: str, backend: str, cut_frac: list[float],
                                          cap: int, lead: int) -> None:
    if backend == "ext" and evio is None:
        pytest.skip("spikeline._ext.evio not built")
    cls = (EXT if backend == "ext" else REF)[fmt]
    name, sensor = SAMPLES[fmt]
    data, start = _payload(data_dir / PROPHESEE / name, fmt)
    data = data[: 24_000 + lead]  # a prefix keeps it quick; `lead` makes the end a partial word
    data = data[: len(data) // {"evt2": 4, "evt3": 2, "dat": 8}[fmt] * {"evt2": 4, "evt3": 2, "dat": 8}[fmt]]
    whole, s_whole = _decode_pieces(cls, sensor, data, [], 1 << 20, start)
    cuts = [int(c * len(data)) for c in cut_frac]
    split, s_split = _decode_pieces(cls, sensor, data, cuts, cap, start)
    assert _key(whole) == _key(split) and s_whole == s_split


@pytest.mark.data
@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.integers(1, 5000), max_events=st.integers(1, 3000))
def test_open_reader_streams_the_same_events(data_dir: Path, tmp_path: Path, fmt: str, block: int,
                                             max_events: int) -> None:
    name, _ = SAMPLES[fmt]
    raw = (data_dir / PROPHESEE / name).read_bytes()
    _, start = _payload(data_dir / PROPHESEE / name, fmt)
    p = tmp_path / ("part.raw" if fmt != "dat" else "part.dat")
    p.write_bytes(raw[: start + 40_000])  # a whole number of words of every format
    whole = F.read(p)
    r = F.open_reader(p)
    assert isinstance(r, F._WordReader)
    r._block = block
    with r:
        parts = []
        while len(ev := r.read(max_events)):
            assert len(ev) <= max_events
            parts.append(ev)
    assert len(whole.events) > 1000
    assert np.array_equal(np.concatenate(parts), whole.events)
    assert (r.sensor, r.format) == (whole.sensor, whole.format)


@pytest.mark.kernel
@needs_ext
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
@settings(deadline=None, max_examples=2 * FUZZ_EXAMPLES)
@given(data=st.binary(min_size=0, max_size=600), cap=st.integers(1, 64), w=st.integers(1, 2048),
       h=st.integers(1, 2048), cut=st.integers(0, 600))
def test_compiled_equals_reference_on_random_bytes(fmt: str, data: bytes, cap: int, w: int, h: int, cut: int) -> None:
    """Same events, state, bytes consumed and error (message and offset) on arbitrary input."""
    results = []
    for cls in (EXT[fmt], REF[fmt]):
        try:
            ev, state = _decode_pieces(cls, (w, h), data[: len(data) // 8 * 8], [cut], cap, 100)
            results.append(("ok", _key(ev), state))
        except ValueError as exc:
            results.append(("error", str(exc), None))
    assert results[0] == results[1]


def _mutations_of_real_data(fmt: str) -> Any:
    """Words of the real sample file with a few bit flips (mostly decodable, sometimes not)."""
    return st.tuples(st.integers(0, 10_000), st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 7)),
                                                       min_size=1, max_size=6))


@pytest.mark.data
@pytest.mark.kernel
@needs_ext
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
@settings(deadline=None, max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=_mutations_of_real_data("x"))
def test_compiled_equals_reference_on_bit_flips(data_dir: Path, fmt: str, m: Any) -> None:
    name, sensor = SAMPLES[fmt]
    data, start = _payload(data_dir / PROPHESEE / name, fmt)
    off, flips = m
    chunk = bytearray(data[off * 8 : off * 8 + 4096])
    for pos, bit in flips:
        if pos < len(chunk):
            chunk[pos] ^= 1 << bit
    results = []
    for cls in (EXT[fmt], REF[fmt]):
        try:
            ev, state = _decode_pieces(cls, sensor, bytes(chunk), [1000], 97, start)
            results.append(("ok", _key(ev), state))
        except ValueError as exc:
            results.append(("error", str(exc), None))
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------------
# Bad input: EventFormatError with the offset and what was wrong, never a crash or garbage
# ---------------------------------------------------------------------------------------------

def _evt2_file(tmp_path: Path, words: list[int], header: str = "% evt 2.0\n% geometry 640x480\n") -> Path:
    p = tmp_path / "x.raw"
    p.write_bytes(header.encode() + np.array(words, dtype="<u4").tobytes())
    return p


def _evt3_file(tmp_path: Path, words: list[int], header: str = "% evt 3.0\n% geometry 1280x720\n") -> Path:
    p = tmp_path / "x.raw"
    p.write_bytes(header.encode() + np.array(words, dtype="<u2").tobytes())
    return p


@pytest.mark.kernel
def test_evt2_errors_name_the_offset(tmp_path: Path) -> None:
    h = len("% evt 2.0\n% geometry 640x480\n")
    th = (8 << 28) | 100
    cd = (1 << 28) | (5 << 22) | (10 << 11) | 20
    assert F.read(_evt2_file(tmp_path, [th, cd])).events.tolist() == [((100 << 6) | 5, 10, 20, 1)]
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 4}: unknown EVT 2.0 word type 0x3"):
        F.read(_evt2_file(tmp_path, [th, 3 << 28]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 8}: x = 700 outside the sensor \(width 640\)"):
        F.read(_evt2_file(tmp_path, [th, cd, (1 << 28) | (700 << 11)]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 4}: y = 480 outside"):
        F.read(_evt2_file(tmp_path, [th, 480]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 8}: time goes backwards"):
        F.read(_evt2_file(tmp_path, [th, cd, (8 << 28) | 99]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h}: EVT 2.0 event before the first time base"):
        F.read(_evt2_file(tmp_path, [cd, th]))
    p = _evt2_file(tmp_path, [th, cd])
    p.write_bytes(p.read_bytes() + b"\x01\x02")
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 8}: truncated trailing evt2 word \(2 of 4"):
        F.read(p)
    # a wrap of the 28-bit time high is not an error: it continues the time
    f = F.read(_evt2_file(tmp_path, [(8 << 28) | 0xFFFFFFF, cd, (8 << 28) | 1, cd]))
    assert f.events["t"].tolist() == [(0xFFFFFFF << 6) | 5, (((1 << 28) | 1) << 6) | 5]


@pytest.mark.kernel
def test_evt3_errors_name_the_offset(tmp_path: Path) -> None:
    h = len("% evt 3.0\n% geometry 1280x720\n")
    ok = [0x8000 | 5, 0x6000 | 7, 0x0000 | 3, 0x2000 | 0x800 | 9, 0x3000 | 100, 0x4000 | 0b101, 0x5000 | 0x80]
    f = F.read(_evt3_file(tmp_path, ok))
    t = (5 << 12) | 7
    assert f.events.tolist() == [(t, 9, 3, 1), (t, 100, 3, 0), (t, 102, 3, 0), (t, 119, 3, 0)]
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 2}: unknown EVT 3.0 word type 0x9"):
        F.read(_evt3_file(tmp_path, [0x8000, 0x9000]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 6}: x = 1290 outside"):
        F.read(_evt3_file(tmp_path, [0x8000, 0x0001, 0x3000 | 1280, 0x4000 | (1 << 10)]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 2}: EVT 3.0 event before the first EVT_ADDR_Y"):
        F.read(_evt3_file(tmp_path, [0x8000, 0x2001]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 4}: EVT 3.0 vector event before the first"):
        F.read(_evt3_file(tmp_path, [0x8000, 0x0001, 0x4001]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 2}: time goes backwards"):
        F.read(_evt3_file(tmp_path, [0x8000 | 10, 0x8000 | 9]))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 4}: y = 720 outside"):
        F.read(_evt3_file(tmp_path, [0x8000, 720, 0x2000]))
    p = _evt3_file(tmp_path, ok)
    p.write_bytes(p.read_bytes() + b"\x01")
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 14}: truncated trailing evt3 word"):
        F.read(p)


def _dat_file(tmp_path: Path, recs: list[tuple[int, int]], two: bytes = b"\x00\x08",
              header: str = "% Data file containing Event2D events.\n% Version 2\n% Width 64\n% Height 48\n") -> Path:
    p = tmp_path / "x.dat"
    p.write_bytes(header.encode() + two + np.array(recs, dtype="<u4").reshape(-1, 2).tobytes())
    return p


@pytest.mark.kernel
def test_dat_errors_name_the_offset(tmp_path: Path) -> None:
    h = len("% Data file containing Event2D events.\n% Version 2\n% Width 64\n% Height 48\n") + 2
    ev = (1 << 28) | (7 << 14) | 5
    f = F.read(_dat_file(tmp_path, [(10, ev), (12, ev)]))
    assert f.sensor == (64, 48) and f.info["sensor"] == "header"
    assert f.events.tolist() == [(10, 5, 7, 1), (12, 5, 7, 1)]
    with pytest.raises(EventFormatError, match=f"byte offset {h - 1}: DAT event size 16 does not match"):
        F.read(_dat_file(tmp_path, [(10, ev)], two=b"\x00\x10"))
    with pytest.raises(EventFormatError, match=rf"byte offset {h + 8}: time goes backwards \(9 -> 8\)"):
        F.read(_dat_file(tmp_path, [(9, ev), (8, ev)]))
    with pytest.raises(EventFormatError, match=f"byte offset {h + 8}: x = 64 outside"):
        F.read(_dat_file(tmp_path, [(9, ev), (10, 64)]))
    with pytest.raises(EventFormatError, match=f"byte offset {h}: polarity field 2 is not 0 or 1"):
        F.read(_dat_file(tmp_path, [(9, 2 << 28)]))
    p = _dat_file(tmp_path, [(9, ev)])
    p.write_bytes(p.read_bytes() + b"\x00" * 5)
    with pytest.raises(EventFormatError, match=f"byte offset {h + 8}: truncated trailing dat word"):
        F.read(p)
    # the 32-bit time wraps
    f = F.read(_dat_file(tmp_path, [(0xFFFFFFF0, ev), (5, ev)]))
    assert f.events["t"].tolist() == [0xFFFFFFF0, (1 << 32) | 5]


def test_format_detection_and_mislabelled_files(tmp_path: Path) -> None:
    p = _evt3_file(tmp_path, [0x8000])
    assert F.read(p).format == "evt3"
    with pytest.raises(EventFormatError, match="mislabelled: format='evt2' but the file's header says 'evt3'"):
        F.read(p, format="evt2")
    with pytest.raises(EventFormatError, match="mislabelled"):
        F.read(p, format="dat")
    q = tmp_path / "noheader.raw"
    q.write_bytes(b"\x00" * 8)
    with pytest.raises(EventFormatError, match="needs a Prophesee header"):
        F.read(q)
    with pytest.raises(EventFormatError, match="without a Prophesee '%' header"):
        F.read(q, format="evt2")
    r = tmp_path / "x.raw"
    r.write_bytes(b"% format EVT21;height=720;width=1280\n")
    with pytest.raises(EventFormatError, match="unsupported Prophesee encoding 'EVT21'"):
        F.read(r)
    r.write_bytes(b"% format EVT3;height=72;width=128\n" + np.array([0x8000, 0x0001, 0x2005], "<u2").tobytes())
    f = F.read(r)
    assert (f.format, f.sensor, f.info["sensor"]) == ("evt3", (128, 72), "header")
    with pytest.raises(ValueError, match="unknown event file format 'evt4'"):
        F.read(r, format="evt4")
    u = tmp_path / "x.unknown"
    u.write_bytes(b"abc")
    with pytest.raises(EventFormatError, match="unknown event file format"):
        F.read(u)
    # a sensor from nothing but the data: largest coordinate + 1
    s = _evt2_file(tmp_path, [(8 << 28), (1 << 28) | (33 << 11) | 44], header="% evt 2.0\n")
    f = F.read(s)
    assert (f.sensor, f.info["sensor"]) == ((34, 45), "inferred")


@pytest.mark.data
def test_aedat4_bad_input(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (data_dir / TONIC / "sample.aedat4").read_bytes()
    p = tmp_path / "x.aedat4"
    p.write_bytes(b"#!AER-DAT4.1\r\n" + raw[14:])
    with pytest.raises(EventFormatError, match="byte offset 0: bad magic"):
        F.read(p, format="aedat4")
    hsize = struct.unpack_from("<i", raw, 14)[0]
    first = 18 + hsize
    bad = bytearray(raw)
    struct.pack_into("<i", bad, first + 4, len(raw))
    p.write_bytes(bytes(bad))
    with pytest.raises(EventFormatError, match=f"byte offset {first}: packet size {len(raw)} beyond the file"):
        F.read(p)
    bad = bytearray(raw)
    struct.pack_into("<i", bad, 14, 1 << 30)
    p.write_bytes(bytes(bad))
    with pytest.raises(EventFormatError, match="IOHeader size 1073741824 beyond the file"):
        F.read(p)
    p.write_bytes(raw[: first + 8 + 100])
    with pytest.raises(EventFormatError, match=f"byte offset {first}: packet size"):
        F.read(p)
    p.write_bytes(raw[: first + 3])
    with pytest.raises(EventFormatError, match=f"byte offset {first}: truncated packet header"):
        F.read(p)
    # a root offset pointing outside the header flatbuffer
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 18, 1 << 20)
    p.write_bytes(bytes(bad))
    with pytest.raises(EventFormatError, match="flatbuffer offset out of range"):
        F.read(p)
    monkeypatch.setattr(F, "MAX_PACKET_BYTES", 1000)
    with pytest.raises(EventFormatError, match="larger than 1000 bytes decompressed"):
        F.read(data_dir / TONIC / "sample.aedat4")


@pytest.mark.data
def test_aedat4_zstd_needs_zstandard(data_dir: Path, tmp_path: Path) -> None:
    raw = bytearray((data_dir / TONIC / "sample.aedat4").read_bytes())
    hsize = struct.unpack_from("<i", raw, 14)[0]
    fb = F._FlatBuffer(bytes(raw[18 : 18 + hsize]), "header")
    pos = fb.field(fb.root(), 0)
    assert pos is not None
    struct.pack_into("<i", raw, 18 + pos, 3)  # compression = ZSTD
    p = tmp_path / "z.aedat4"
    p.write_bytes(bytes(raw))
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(EventFormatError, match="install the 'zstandard' package"):
            F.read(p)
    else:  # the packets are really LZ4: a corrupt ZSTD packet
        with pytest.raises(EventFormatError, match=r"(?i)zstd"):
            F.read(p)


def test_nmnist_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    good = bytes([3, 4, 0x80, 0, 9, 1, 240, 0, 0, 0, 5, 6, 0, 0, 1])
    p.write_bytes(good)
    assert F.read(p).events.tolist() == [(9, 3, 4, 1), (8192 + 1, 5, 6, 0)]
    p.write_bytes(good + b"\x00\x01")
    with pytest.raises(EventFormatError, match="byte offset 15: truncated trailing N-MNIST event"):
        F.read(p)
    p.write_bytes(good + bytes([34, 0, 0, 0, 0]))
    with pytest.raises(EventFormatError, match="byte offset 15: x = 34 outside the 34x34"):
        F.read(p)
    p.write_bytes(good + bytes([1, 1, 0, 0, 0]))  # 0 + 8192 (one overflow) after 8193
    with pytest.raises(EventFormatError, match=r"byte offset 15: time goes backwards \(8193 -> 8192\)"):
        F.read(p)


# ---------------------------------------------------------------------------------------------
# Fuzz: arbitrary and mutated files give events inside the sensor or EventFormatError, nothing else
# ---------------------------------------------------------------------------------------------

def _read_or_format_error(p: Path, fmt: str | None = None) -> None:
    try:
        f = F.read(p, fmt)
    except EventFormatError:
        return
    ev = f.events
    assert ev.dtype == EVENT_DTYPE
    if len(ev):
        assert int(ev["x"].max()) < f.sensor[0] and int(ev["y"].max()) < f.sensor[1]
        assert set(np.unique(ev["p"]).tolist()) <= {0, 1}


FUZZ = settings(deadline=None, max_examples=FUZZ_EXAMPLES,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat", "aedat4", "nmnist", "npy", "csv"])
@FUZZ
@given(body=st.binary(max_size=2000))
def test_fuzz_random_bytes(tmp_path: Path, fmt: str, body: bytes) -> None:
    header = {"evt2": b"% evt 2.0\n", "evt3": b"% evt 3.0\n", "dat": b"% Version 2\n",
              "aedat4": b"#!AER-DAT4.0\r\n", "nmnist": b"", "npy": b"", "csv": b""}[fmt]
    ext = {"evt2": ".raw", "evt3": ".raw", "dat": ".dat", "aedat4": ".aedat4", "nmnist": ".bin", "npy": ".npy",
           "csv": ".csv"}[fmt]
    p = tmp_path / f"fuzz{ext}"
    p.write_bytes(header + body)
    _read_or_format_error(p, fmt if fmt != "npy" else None)


SAMPLE_FILES = [f"{PROPHESEE}/evt2_sample.raw", f"{PROPHESEE}/evt3_sample.raw",
                f"{PROPHESEE}/NCARS_obj_004397_td.dat", f"{TONIC}/sample.aedat4", f"{TONIC}/sample_nmnist.bin"]


@pytest.mark.data
@pytest.mark.kernel
@pytest.mark.parametrize("name", SAMPLE_FILES)
@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=8),
       head_flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3))
def test_fuzz_mutated_real_files(data_dir: Path, tmp_path: Path, name: str, cut: float,
                                 flips: list[tuple[float, int]], head_flips: list[tuple[int, int]]) -> None:
    """Truncation at a random offset, bit flips anywhere and byte changes in the header of the real files."""
    raw = bytearray((data_dir / name).read_bytes()[:60_000])
    raw = raw[: max(1, int(cut * len(raw)))] if cut < 0.9 else raw
    for f, bit in flips:
        raw[min(int(f * len(raw)), len(raw) - 1)] ^= 1 << bit
    for pos, val in head_flips:
        if pos < len(raw):
            raw[pos] = val
    p = tmp_path / Path(name).name
    p.write_bytes(bytes(raw))
    _read_or_format_error(p)


# ---------------------------------------------------------------------------------------------
# Writers: round trips
# ---------------------------------------------------------------------------------------------

@st.composite
def event_arrays(draw: Any, sensor: tuple[int, int] = (1280, 720), max_dt: int = 20_000) -> Any:
    """Random events, or (clustered) bursts sharing t, y, p with nearby increasing x, as a sensor's
    row readout produces them (EVT3 writes those as vector words)."""
    n = draw(st.integers(0, 300))
    t0 = draw(st.integers(0, 1 << 30))
    dt = np.array(draw(st.lists(st.integers(0, max_dt), min_size=n, max_size=n)), dtype=np.int64)
    xs = np.array(draw(st.lists(st.integers(0, sensor[0] - 1), min_size=n, max_size=n)), dtype=np.int64)
    ys = np.array(draw(st.lists(st.integers(0, sensor[1] - 1), min_size=n, max_size=n)), dtype=np.int64)
    ps = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int64)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    if draw(st.booleans()):  # clustered
        burst = np.arange(n) // draw(st.integers(1, 16))
        first = np.searchsorted(burst, burst)
        dt = np.where(first == np.arange(n), dt, 0)
        ys, ps = ys[first], ps[first]
        xs = np.minimum(xs[first] + np.cumsum(np.minimum(dt == 0, 1) * (1 + xs % 3)) % 30, sensor[0] - 1)
    ev["t"] = t0 + np.cumsum(dt)
    ev["x"], ev["y"], ev["p"] = xs, ys, ps
    return ev


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat", "npy"])
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ev=event_arrays(), big_gap=st.booleans())
def test_writers_round_trip(tmp_path: Path, fmt: str, ev: Any, big_gap: bool) -> None:
    if big_gap and len(ev) > 1:
        ev["t"][len(ev) // 2 :] += 40_000_000 if fmt != "dat" else 1 << 30  # EVT3: > 2 wraps of 24-bit time
    p = tmp_path / f"rt.{ {'evt2': 'raw', 'evt3': 'raw', 'dat': 'dat', 'npy': 'npy'}[fmt] }"
    F.write(p, ev, (1280, 720), fmt)
    f = F.read(p)
    assert f.format == fmt
    assert _key(f.events) == _key(ev)
    if fmt != "npy":
        assert f.sensor == (1280, 720)


@pytest.mark.data
def test_written_files_read_by_expelliarmus(data_dir: Path, tmp_path: Path) -> None:
    """Our EVT2/DAT writers against an outside reader (exact), and our EVT3 writer (x, y, p; its times
    differ only by expelliarmus's time-low overflow rule, see test_evt3_equals_expelliarmus)."""
    import expelliarmus

    ev = F.read(data_dir / PROPHESEE / "evt3_sample.raw").events
    for fmt in ("evt2", "dat", "evt3"):
        p = tmp_path / f"w.{'dat' if fmt == 'dat' else 'raw'}"
        F.write(p, ev, (1280, 720), fmt)
        ref = expelliarmus.Wizard(encoding=fmt).read(str(p))
        _same_events(ev, ref, ("t", "x", "y", "p") if fmt != "evt3" else ("x", "y", "p"))
        assert _key(F.read(p).events) == _key(ev)
    raw = (tmp_path / "w.raw").read_bytes()
    words = np.frombuffer(raw[raw.index(b"% end\n") + 6 :], dtype="<u2")
    assert ((words >> 12) == 4).sum() > 5_000  # the writer used vector words (6037 here)


def test_writer_rejects_what_the_format_cannot_hold(tmp_path: Path) -> None:
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["t"] = [100, 0]
    with pytest.raises(ValueError, match="non-decreasing"):
        F.write_evt2(tmp_path / "a.raw", ev, (10, 10))
    with pytest.raises(ValueError, match="non-decreasing"):
        F.write_evt3(tmp_path / "a.raw", ev, (10, 10))
    ev["t"] = 0
    ev["x"] = 10
    with pytest.raises(ValueError, match="outside the 10x10 sensor"):
        F.write_dat(tmp_path / "a.dat", ev, (10, 10))
    with pytest.raises(ValueError, match="EVENT_DTYPE"):
        F.write_npy(tmp_path / "a.npy", np.zeros(3))


# ---------------------------------------------------------------------------------------------
# numpy arrays and CSV
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tdt", "xdt", "pdt"), [("<u8", "<i2", "?"), ("<i4", "<u1", "<i1"), ("<i8", "<i8", "<u1")])
def test_npy_with_any_integer_dtypes(tmp_path: Path, tdt: str, xdt: str, pdt: str) -> None:
    arr = np.zeros(4, dtype=[("t", tdt), ("x", xdt), ("y", xdt), ("p", pdt)])
    arr["t"] = [1, 2, 3, 4]
    arr["x"] = [0, 5, 9, 2]
    arr["y"] = [1, 1, 7, 0]
    arr["p"] = [1, 0, 1, 0]
    np.save(tmp_path / "a.npy", arr)
    f = F.read(tmp_path / "a.npy")
    assert (f.format, f.sensor, f.info["sensor"]) == ("npy", (10, 8), "inferred")
    assert f.events.tolist() == [(1, 0, 1, 1), (2, 5, 1, 0), (3, 9, 7, 1), (4, 2, 0, 0)]
    np.savez(tmp_path / "b.npz", events=arr, sensor=np.array([16, 12]))
    g = F.read(tmp_path / "b.npz")
    assert (g.format, g.sensor) == ("npz", (16, 12)) and _key(g.events) == _key(f.events)
    np.savez(tmp_path / "c.npz", events=arr, sensor=np.array([4, 4]))
    with pytest.raises(EventFormatError, match="x = 5 outside the sensor"):
        F.read(tmp_path / "c.npz")


def test_npy_bad_fields_and_polarity(tmp_path: Path) -> None:
    arr = np.zeros(2, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
    arr["p"] = [-1, 1]
    np.save(tmp_path / "a.npy", arr)
    assert F.read(tmp_path / "a.npy").events["p"].tolist() == [0, 1]
    arr["p"] = [2, 1]
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(EventFormatError, match="polarity 2 is not 0/1"):
        F.read(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.zeros(2, dtype=[("t", "<f8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    with pytest.raises(EventFormatError, match="field 't' has dtype float64"):
        F.read(tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.zeros(2, dtype=[("t", "<i8"), ("x", "<i2")]))
    with pytest.raises(EventFormatError, match="without a 'y' field"):
        F.read(tmp_path / "c.npy")


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("x, y ,t,p\n1,2,30,1\n3,4,31,0\n")
    f = F.read(p)
    assert (f.format, f.sensor) == ("csv", (4, 5))
    assert f.events.tolist() == [(30, 1, 2, 1), (31, 3, 4, 0)]
    p.write_text("t,x,y\n1,2,3\n")
    with pytest.raises(EventFormatError, match="line 1: a CSV event file starts with the header 't,x,y,p'"):
        F.read(p)
    p.write_text("t,x,y,p\n1,2,3,1\n1,2,a,1\n")
    with pytest.raises(EventFormatError, match="line 3: not integers"):
        F.read(p)


def test_reader_api(tmp_path: Path) -> None:
    ev = np.zeros(5, dtype=EVENT_DTYPE)
    ev["t"] = np.arange(5) * 100
    ev["x"] = np.arange(5)
    F.write_evt2(tmp_path / "a.raw", ev, (8, 8))
    with F.open_reader(tmp_path / "a.raw") as r:
        assert (r.sensor, r.format, r.info["evt"]) == ((8, 8), "evt2", "2.0")
        assert len(r.read(2)) == 2 and len(r.read(10)) == 3 and len(r.read(10)) == 0
        with pytest.raises(ValueError, match="max_events must be >= 1"):
            r.read(0)
    out = np.zeros(3, dtype=EVENT_DTYPE)
    with pytest.raises(ValueError, match="writable C-contiguous"):
        F.word_decoder("evt2", (8, 8)).decode(b"\x00" * 8, out[::2])
    with pytest.raises(ValueError, match="sensor size must be within"):
        F.word_decoder("evt3", (0, 8))
