"""Smartwatch wire formats (spikeline.watch.frames): round trips, every rejection reason, fuzzing.

The SLW1 layout is rebuilt here with struct from the documented table, independently of the encoder.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import time
import zlib
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeline.watch import (
    Frame,
    FrameError,
    decode_csv,
    decode_frame,
    decode_json,
    encode_csv,
    encode_frame,
    encode_json,
)
from spikeline.watch.frames import MAX_SAMPLES, decode_frames

IMU = np.array([[0.01, -0.98, 0.12, 0.5, -1.25, 2.0], [0.02, -0.97, 0.11, 0.4, -1.2, 1.9]], np.float32)


def slw1(n: int, c: int, first: int, t0: int, period: int, dev: bytes, body: bytes | None = None,
         magic: bytes = b"SLW1", dlen: int | None = None) -> bytes:
    """An SLW1 frame written field by field from the documented table."""
    head = (magic + struct.pack("<H", n) + struct.pack("<H", c) + struct.pack("<Q", first) + struct.pack("<q", t0)
            + struct.pack("<I", period) + struct.pack("<B", len(dev) if dlen is None else dlen))
    if body is None:
        body = np.arange(n * c, dtype="<f4").tobytes()
    return head + dev + body


def reason(fn: Any, *a: Any, **kw: Any) -> str:
    with pytest.raises(FrameError) as e:
        fn(*a, **kw)
    assert e.value.message and str(e.value).startswith(e.value.reason)
    return e.value.reason


# ------------------------------------------------------------------------------------------------ binary

def test_binary_layout_matches_the_documented_table() -> None:
    b = encode_frame(IMU, 1234, -5_000_000, 20_000, "w17")
    assert b == slw1(2, 6, 1234, -5_000_000, 20_000, b"w17", IMU.astype("<f4").tobytes())
    assert len(b) == 29 + 3 + 2 * 6 * 4
    f = decode_frame(b, 6)
    assert (f.device, f.first_index, f.t0_us, f.period_us, f.t_us) == ("w17", 1234, -5_000_000, 20_000, None)
    assert f.data.dtype == np.float32 and f.data.flags.c_contiguous and f.data.flags.writeable
    np.testing.assert_array_equal(f.data, IMU)
    np.testing.assert_array_equal(f.times_us(), [-5_000_000, -4_980_000])
    # device id 0 bytes: the transport names the device; bytearray and memoryview inputs too
    g = decode_frame(memoryview(bytearray(slw1(1, 3, 0, 0, 1, b""))))
    assert g.device == "" and g.data.shape == (1, 3)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 64), c=st.integers(1, 64), first=st.integers(0, 2**62),
       t0=st.integers(-(2**62), 2**62), period=st.integers(1, 2**32 - 1),
       dev=st.from_regex(r"[A-Za-z0-9._:-]{0,64}", fullmatch=True), seed=st.integers(0, 2**32 - 1))
def test_binary_round_trip(n: int, c: int, first: int, t0: int, period: int, dev: str, seed: int) -> None:
    data = np.random.default_rng(seed).normal(0, 100, (n, c)).astype(np.float32)
    f = decode_frame(encode_frame(data, first, t0, period, dev), c)
    assert (f.device, f.first_index, f.t0_us, f.period_us) == (dev, first, t0, period)
    np.testing.assert_array_equal(f.data, data)


def test_binary_rejections_one_exact_example_each() -> None:
    ok = slw1(2, 6, 0, 0, 20000, b"w1")
    assert decode_frame(ok).n == 2
    assert reason(decode_frame, b"SLW") == "truncated"
    assert reason(decode_frame, b"") == "truncated"
    assert reason(decode_frame, b"SLX1" + ok[4:]) == "bad_magic"
    assert reason(decode_frame, b"{}") == "bad_magic"
    assert reason(decode_frame, ok[:28]) == "truncated"  # inside the header
    assert reason(decode_frame, ok[:-1]) == "truncated"  # one byte short of the samples
    assert reason(decode_frame, slw1(2, 6, 0, 0, 20000, b"w1", dlen=40)[:60]) == "truncated"
    assert reason(decode_frame, ok + b"\0") == "trailing"
    assert reason(decode_frame, slw1(4097, 1, 0, 0, 1, b"", b"")) == "too_large"
    assert reason(decode_frame, slw1(5, 1, 0, 0, 1, b""), max_samples=4) == "too_large"
    assert reason(decode_frame, slw1(0, 6, 0, 0, 1, b"")) == "bad_shape"
    assert reason(decode_frame, slw1(1, 0, 0, 0, 1, b"")) == "bad_shape"
    assert reason(decode_frame, slw1(1, 65, 0, 0, 1, b"")) == "bad_shape"
    assert reason(decode_frame, ok, 3) == "bad_shape"  # 6 channels, 3 expected
    assert reason(decode_frame, slw1(1, 1, 2**63, 0, 1, b"")) == "bad_index"
    assert reason(decode_frame, slw1(2, 1, 2**63 - 2, 0, 1, b"")) == "bad_index"  # the last index overflows
    assert reason(decode_frame, slw1(1, 1, 0, 0, 0, b"")) == "bad_time"
    assert reason(decode_frame, slw1(2, 1, 0, 2**63 - 1, 1, b"")) == "bad_time"
    assert reason(decode_frame, slw1(1, 1, 0, 0, 1, b"x" * 65)) == "bad_device"
    assert reason(decode_frame, slw1(1, 1, 0, 0, 1, b"w 1")) == "bad_device"
    assert reason(decode_frame, slw1(1, 1, 0, 0, 1, b"w/1")) == "bad_device"
    assert reason(decode_frame, slw1(1, 1, 0, 0, 1, b"\xff\xfe")) == "bad_device"
    assert reason(decode_frame, slw1(1, 1, 0, 0, 1, "wé".encode())) == "bad_device"  # UTF-8, not allowed
    nan = np.array([[1, np.nan]], "<f4").tobytes()
    assert reason(decode_frame, slw1(1, 2, 0, 0, 1, b"", nan)) == "non_finite"
    inf = np.array([[1, 2], [3, -np.inf]], "<f4").tobytes()
    assert reason(decode_frame, slw1(2, 2, 0, 0, 1, b"", inf)) == "non_finite"
    assert reason(decode_frame, "SLW1") == "bad_type"
    assert reason(decode_frame, None) == "bad_type"
    assert reason(decode_frame, memoryview(np.zeros(64, np.uint8))[::2]) == "bad_type"


def test_encoders_refuse_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_frame(IMU, -1, 0, 1)
    with pytest.raises(ValueError):
        encode_frame(IMU, 0, 0, 0)
    with pytest.raises(ValueError):
        encode_frame(IMU, 0, 0, 1, "w/1")
    with pytest.raises(ValueError):
        encode_frame(np.full((1, 2), np.nan), 0, 0, 1)
    with pytest.raises(ValueError):
        encode_frame(np.zeros((1, 65)), 0, 0, 1)
    with pytest.raises(ValueError):
        encode_json(IMU, 0, 0)  # a batch without a period
    with pytest.raises(ValueError):
        encode_csv(IMU[:, :4], [0, 1], "sensorstream")


def test_binary_decode_of_4096_samples_is_vectorised() -> None:
    data = np.random.default_rng(1).normal(size=(MAX_SAMPLES, 6)).astype(np.float32)
    b = encode_frame(data, 7, 0, 20_000)
    f = decode_frame(b, 6)
    np.testing.assert_array_equal(f.data, data)
    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        decode_frame(b, 6)
    per = (time.perf_counter() - t) / reps
    print(f"\ndecode_frame of {MAX_SAMPLES}x6: {per * 1e6:.1f} us ({per / MAX_SAMPLES * 1e9:.1f} ns/sample)")
    assert per < 2e-3  # a Python loop over 4096 samples takes several ms; numpy takes ~tens of µs


# -------------------------------------------------------------------------------------------------- JSON

def test_json_one_sample_and_batch() -> None:
    f = decode_json(b'{"seq": 1234, "t": 1732.5, "values": [0.01, -0.98, 0.12, 0.5, -1.25, 2]}', 6)
    assert (f.device, f.first_index, f.t0_us, f.period_us, f.t_us) == ("", 1234, 1_732_500_000, None, None)
    np.testing.assert_array_equal(f.data, IMU[:1])
    g = decode_json('{"seq": 7, "t": 3, "dt": 0.02, "device": "w17", "values": [[0.01, -0.98, 0.12, 0.5, -1.25, 2.0],'
                    '[0.02, -0.97, 0.11, 0.4, -1.2, 1.9]], "extra": {"ignored": true}}')
    assert (g.device, g.first_index, g.t0_us, g.period_us) == ("w17", 7, 3_000_000, 20_000)
    np.testing.assert_array_equal(g.data, IMU)
    assert json.loads(encode_json(IMU[:1], 5, 1_500_000)) == {"seq": 5, "t": 1.5, "values": IMU[0].tolist()}


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), c=st.integers(1, 64), first=st.integers(0, 2**62), t0=st.integers(-(2**50), 2**50),
       period=st.integers(1, 10**7), dev=st.from_regex(r"[A-Za-z0-9._:-]{0,64}", fullmatch=True),
       seed=st.integers(0, 2**32 - 1))
def test_json_round_trip(n: int, c: int, first: int, t0: int, period: int, dev: str, seed: int) -> None:
    data = np.random.default_rng(seed).normal(0, 1e3, (n, c)).astype(np.float32)
    f = decode_json(encode_json(data, first, t0, period, dev), c)
    assert (f.device, f.first_index, f.t0_us, f.period_us) == (dev, first, t0, period)
    np.testing.assert_array_equal(f.data, data)


def test_json_rejections_one_exact_example_each() -> None:
    def j(**kw: Any) -> str:
        o: dict[str, Any] = {"seq": 1, "t": 2.0, "values": [1.0, 2.0, 3.0]}
        o.update(kw)
        return json.dumps({k: v for k, v in o.items() if v is not ...})

    assert decode_json(j()).n == 1
    assert reason(decode_json, b"{\"seq\": 1,") == "bad_json"
    assert reason(decode_json, b"\xff{}") == "bad_json"
    assert reason(decode_json, "[1, 2, 3]") == "bad_json"
    assert reason(decode_json, "[" * 100_000 + "]" * 100_000) == "bad_json"  # nesting
    assert reason(decode_json, '{"seq": 1, "t": 2, "values": [' + "9" * 5000 + "]}") == "bad_json"  # int digits limit
    assert reason(decode_json, " " * 101, max_bytes=100) == "too_large"
    assert reason(decode_json, j(values=[[1.0]] * 4097, dt=0.02)) == "too_large"
    assert reason(decode_json, j(seq=...)) == "bad_index"
    assert reason(decode_json, j(seq=-1)) == "bad_index"
    assert reason(decode_json, j(seq=2**63)) == "bad_index"
    assert reason(decode_json, j(seq=1.0)) == "bad_index"
    assert reason(decode_json, j(seq=True)) == "bad_index"
    assert reason(decode_json, j(seq="1")) == "bad_index"
    assert reason(decode_json, j(t=...)) == "bad_time"
    assert reason(decode_json, j(t="2.0")) == "bad_time"
    assert reason(decode_json, j(t=False)) == "bad_time"
    assert reason(decode_json, j(t=1e300)) == "bad_time"
    assert reason(decode_json, j(t=10**13)) == "bad_time"
    assert reason(decode_json, j(values=[[1.0], [2.0]])) == "bad_time"  # a batch without dt
    assert reason(decode_json, j(values=[[1.0], [2.0]], dt=0)) == "bad_time"
    assert reason(decode_json, j(values=[[1.0], [2.0]], dt=1e-7)) == "bad_time"  # rounds to 0 µs
    assert reason(decode_json, j(values=[[1.0], [2.0]], dt=-0.02)) == "bad_time"
    assert reason(decode_json, j(dt=True)) == "bad_time"
    assert reason(decode_json, '{"seq": 1, "t": NaN, "values": [1]}') == "non_finite"
    assert reason(decode_json, '{"seq": 1, "t": 1, "values": [Infinity]}') == "non_finite"
    assert reason(decode_json, '{"seq": 1, "t": 1, "values": [-Infinity]}') == "non_finite"
    assert reason(decode_json, '{"seq": 1, "t": 1, "values": [1e999]}') == "non_finite"
    assert reason(decode_json, j(values=[1e39])) == "non_finite"  # beyond float32
    assert reason(decode_json, j(values=[10**400])) == "non_finite"  # an integer beyond float64
    assert reason(decode_json, j(values=...)) == "bad_type"
    assert reason(decode_json, j(values={"ax": 1})) == "bad_type"
    assert reason(decode_json, j(values=[1.0, True])) == "bad_type"
    assert reason(decode_json, j(values=[1.0, "2"])) == "bad_type"
    assert reason(decode_json, j(values=[1.0, None])) == "bad_type"
    assert reason(decode_json, j(values=[1.0, [2.0]])) == "bad_type"
    assert reason(decode_json, j(values=[[[1.0]]], dt=0.02)) == "bad_type"  # nested deeper than a batch
    assert reason(decode_json, 12) == "bad_type"
    assert reason(decode_json, j(values=[])) == "bad_shape"
    assert reason(decode_json, j(values=[[]], dt=0.02)) == "bad_shape"
    assert reason(decode_json, j(values=[1.0] * 65)) == "bad_shape"
    assert reason(decode_json, j(values=[[1.0, 2.0], [1.0]], dt=0.02)) == "bad_shape"
    assert reason(decode_json, j(values=[[1.0], 2.0], dt=0.02)) == "bad_shape"
    assert reason(decode_json, j(), 6) == "bad_shape"  # 3 values, 6 channels expected
    assert reason(decode_json, j(device="w 17")) == "bad_device"
    assert reason(decode_json, j(device="w" * 65)) == "bad_device"
    assert reason(decode_json, j(device=17)) == "bad_device"


# --------------------------------------------------------------------------------------------------- CSV

def test_csv_layouts() -> None:
    (f,) = decode_csv(b"12.5,0.01,-0.98,0.12,0.5,-1.25,2\r\n12.52,0.02,-0.97,0.11,0.4,-1.2,1.9\n\n", "plain", "phone", 6)
    assert (f.device, f.first_index, f.t0_us, f.period_us) == ("phone", None, 12_500_000, None)
    np.testing.assert_array_equal(f.t_us, [12_500_000, 12_520_000])
    np.testing.assert_array_equal(f.data, IMU)
    # Sensorstream IMU+GPS: accelerometer (3), gyroscope (4), magnetometer (5) and a GPS group (1) skipped
    line = b"890.71558, 3, 0.01, -0.98, 0.12, 4, 0.5, -1.25, 2, 5, 33.1, -12.0, 40.2, 1, 48.1, 11.5, 520\n"
    (g,) = decode_csv(line, "sensorstream", "10.0.0.5:5555")
    assert g.t0_us == 890_715_580 and g.data.shape == (1, 6)
    np.testing.assert_array_equal(g.data, IMU[:1])
    (h,) = decode_csv(b"1.0, 4, 0.5, -1.25, 2, 3, 0.01, -0.98, 0.12", "sensorstream", "p")  # any group order
    np.testing.assert_array_equal(h.data, IMU[:1])


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 30), layout=st.sampled_from(["plain", "sensorstream"]), t0=st.integers(-(2**40), 2**40),
       seed=st.integers(0, 2**32 - 1))
def test_csv_round_trip(n: int, layout: str, t0: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 10, (n, 6)).astype(np.float32)
    t = t0 + np.cumsum(rng.integers(0, 40_000, n))
    (f,) = decode_csv(encode_csv(data, t, layout), layout, "d", 6)
    np.testing.assert_array_equal(f.t_us, t)
    np.testing.assert_array_equal(f.data, data)


def test_csv_rejections_one_exact_example_each() -> None:
    assert reason(decode_csv, b"1,2,3", "tsv", "d") == "bad_csv"
    assert reason(decode_csv, b"1,2,3", "plain", "d/e") == "bad_device"
    assert reason(decode_csv, b"\xff,1", "plain", "d") == "bad_csv"
    assert reason(decode_csv, b"1,2,x", "plain", "d") == "bad_csv"
    assert reason(decode_csv, b"1,2,1_0", "plain", "d") == "bad_csv"  # Python's float() would take it
    assert reason(decode_csv, b"1,,3", "plain", "d") == "bad_csv"
    assert reason(decode_csv, b"1", "plain", "d") == "bad_csv"
    assert reason(decode_csv, b"1,nan", "plain", "d") == "non_finite"
    assert reason(decode_csv, b"1,-Infinity", "plain", "d") == "non_finite"
    assert reason(decode_csv, b"1,1e39", "plain", "d") == "non_finite"
    assert reason(decode_csv, b"1,2\n2,3,4", "plain", "d") == "bad_shape"
    assert reason(decode_csv, b"1,2,3", "plain", "d", 6) == "bad_shape"
    assert reason(decode_csv, b"\n \n", "plain", "d") == "bad_shape"
    assert reason(decode_csv, b"1,2\n" * 4097, "plain", "d") == "too_large"
    assert reason(decode_csv, b"1,2\n" * 100, "plain", "d", max_bytes=399) == "too_large"
    assert reason(decode_csv, b"2,1\n1,1", "plain", "d") == "bad_time"
    assert reason(decode_csv, b"1e300,1", "plain", "d") == "bad_time"
    assert reason(decode_csv, b"1, 3, 1, 2, 3", "sensorstream", "d") == "bad_csv"  # no gyroscope
    assert reason(decode_csv, b"1, 4, 1, 2, 3, 5, 1, 2, 3", "sensorstream", "d") == "bad_csv"  # no accelerometer
    assert reason(decode_csv, b"1, 3, 1, 2, 3, 4, 1, 2", "sensorstream", "d") == "bad_csv"  # a group short
    assert reason(decode_csv, b"1, x, 1, 2, 3, 4, 1, 2, 3", "sensorstream", "d") == "bad_csv"
    assert reason(decode_csv, b"1, 3, 1, 2, 3, 3, 1, 2, 3, 4, 1, 2, 3", "sensorstream", "d") == "bad_csv"
    assert reason(decode_csv, 3, "plain", "d") == "bad_type"


# --------------------------------------------------------------------------------------------------- fuzz

def _check(result: Any, counts: Counter[str]) -> None:
    frames = result if isinstance(result, list) else [result]
    for f in frames:
        assert isinstance(f, Frame)
        d = f.data
        assert d.dtype == np.float32 and d.ndim == 2 and d.flags.c_contiguous and np.isfinite(d).all()
        assert 1 <= d.shape[0] <= MAX_SAMPLES and 1 <= d.shape[1] <= 64
        assert f.t_us is None or f.t_us.shape == (d.shape[0],)
    counts["frame"] += 1


def _mutants(valid: list[bytes], cases: int, seed: int) -> list[bytes]:
    """Random bytes, truncations, byte mutations and splices of valid payloads, in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(cases):
        kind = k % 4
        if kind == 0:  # random bytes
            buf = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        else:
            base = valid[int(rng.integers(len(valid)))]
            if kind == 1:  # truncation
                buf = base[:int(rng.integers(0, len(base) + 1))]
            elif kind == 2:  # byte mutations
                b = bytearray(base)
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(len(b)))] = int(rng.integers(256))
                buf = bytes(b)
            else:  # splice: insert or delete a run
                i = int(rng.integers(len(base)))
                if rng.random() < 0.5:
                    buf = base[:i] + rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes() + base[i:]
                else:
                    buf = base[:i] + base[i + int(rng.integers(1, 9)):]
        out.append(buf)
    return out


def _fuzz(decode: Any, valid: list[bytes], cases: int, seed: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for buf in _mutants(valid, cases, seed):
        try:
            _check(decode(buf), counts)
        except FrameError as e:
            counts[e.reason] += 1
    return counts


def _valid_payloads() -> dict[str, list[bytes]]:
    rng = np.random.default_rng(3)
    out: dict[str, list[bytes]] = {"binary": [], "json": [], "plain": [], "sensorstream": []}
    for n in (1, 2, 5, 10):
        d = rng.normal(size=(n, 6)).astype(np.float32)
        t = 1_000_000 + np.arange(n) * 20_000
        out["binary"] += [encode_frame(d, 10, 1_000_000, 20_000, "w3"), encode_frame(d, 0, 0, 20_000)]
        out["json"] += [encode_json(d, 10, 1_000_000, 20_000, "w3")]
        out["plain"].append(encode_csv(d, t, "plain"))
        out["sensorstream"].append(encode_csv(d, t, "sensorstream"))
    out["json"].append(encode_json(d[:1], 10, 1_000_000))
    return out


@pytest.mark.parametrize("fmt", ["binary", "json", "plain", "sensorstream"])
def test_fuzz_gives_only_frames_or_frame_errors(fmt: str) -> None:
    decoders: dict[str, Any] = {
        "binary": lambda b: decode_frame(b, 6),
        "json": lambda b: decode_json(b, 6),
        "plain": lambda b: decode_csv(b, "plain", "d", 6),
        "sensorstream": lambda b: decode_csv(b, "sensorstream", "d", 6),
    }
    cases = 8000
    counts = _fuzz(decoders[fmt], _valid_payloads()[fmt], cases, seed=zlib.crc32(fmt.encode()))
    assert sum(counts.values()) == cases
    print(f"\nfuzz {fmt}: {cases} cases: {dict(counts.most_common())}", file=sys.stderr)
    assert counts["frame"] > 0 and len(counts) > 2  # both outcomes seen, several reasons


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_hypothesis_fuzz_any_bytes(buf: bytes) -> None:
    counts: Counter[str] = Counter()
    for dec in (decode_frame, decode_json, lambda b: decode_csv(b, "plain", "d"),
                lambda b: decode_csv(b, "sensorstream", "d")):
        with contextlib.suppress(FrameError):
            _check(dec(buf), counts)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["seq", "t", "dt", "values", "device", "x"]), inner, max_size=5),
                    max_leaves=20))
def test_hypothesis_fuzz_json_structures(obj: Any) -> None:
    try:
        text = json.dumps(obj)  # NaN/Infinity written as tokens: must be refused
    except (ValueError, TypeError):
        return
    with contextlib.suppress(FrameError):
        _check(decode_json(text), Counter())


def test_batch_decode_accepts_exactly_what_decode_frame_accepts() -> None:
    """decode_frames (the gateway's vectorised path) against decode_frame, payload by payload: valid frames of
    many sizes, device ids and channel counts, non-finite values, and 6000 mutants of them, shuffled into
    batches of every size."""
    rng = np.random.default_rng(11)
    valid = []
    for n in (1, 2, 5, 5, 5, 10, 50):
        for dev in ("", "w3", "watch-0042", "a" * 64):
            d = rng.normal(size=(n, 6)).astype(np.float32)
            valid.append(encode_frame(d, int(rng.integers(0, 1 << 40)), int(rng.integers(-(1 << 40), 1 << 40)),
                                      int(rng.integers(1, 1 << 20)), dev))
    valid.append(encode_frame(rng.normal(size=(5, 3)).astype(np.float32), 0, 0, 20_000, "w3"))  # 3 channels
    nan = bytearray(valid[3])
    nan[-4:] = np.float32(np.nan).tobytes()
    payloads = valid * 3 + [bytes(nan), slw1(5, 6, (1 << 63) - 3, 0, 1, b""), slw1(5, 6, 0, 0, 0, b"w1"),
                            slw1(2, 6, 0, 0, 1, b"w\x001"), slw1(2, 6, 0, 0, 1, b"w\xe91"), b"SLW1"]
    payloads += _mutants(valid, 6000, seed=12)
    order = rng.permutation(len(payloads))
    payloads = [payloads[i] for i in order]
    accepted = 0
    start = 0
    for size in (1, 7, 100, 1000, len(payloads) - 1108):
        part = payloads[start:start + size]
        start += size
        b = decode_frames(part, 6, max_samples=20)
        assert b.data.dtype == np.float32 and b.data.flags.c_contiguous
        for j, p in enumerate(part):
            try:
                f = decode_frame(p, 6, max_samples=20)
            except FrameError:
                assert not b.ok[j], p
                continue
            assert b.ok[j], p
            accepted += 1
            assert (b.device[j], b.first_index[j], b.t0_us[j], b.period_us[j], b.n[j]) == (
                f.device, f.first_index, f.t0_us, f.period_us, f.n)
            np.testing.assert_array_equal(b.data[b.offset[j]:b.offset[j] + b.n[j]], f.data)
    assert start == len(payloads)
    assert 100 < accepted < len(payloads) - 1000  # both outcomes, many of each
    big = decode_frames([valid[0], valid[0]], 6, max_size=len(valid[0]) - 1)
    assert not big.ok.any()
    empty = decode_frames([], 6)
    assert empty.data.shape == (0, 6) and len(empty.ok) == 0
