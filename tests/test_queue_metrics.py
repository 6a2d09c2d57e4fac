"""Bounded queue (drop_oldest, counted) and latency histograms."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.metrics import LatencyHistogram, PipelineMetrics
from spikeline.queue import SampleQueue

META = StreamMeta("s", "EEG", ("a", "b"), 100.0)


def chunk(seq: int, n: int) -> SampleChunk:
    data = np.arange(seq, seq + n, dtype=np.float32)[:, None].repeat(2, axis=1)
    t = np.arange(seq, seq + n, dtype=np.float64) / 100
    return SampleChunk(np.ascontiguousarray(data), t, t.copy(), seq, META)


async def drain(q: SampleQueue) -> list[SampleChunk]:
    q.close()
    out = []
    while (c := await q.get()) is not None:
        out.append(c)
    return out


async def test_queue_keeps_newest_and_counts_every_drop() -> None:
    q = SampleQueue(10)
    q.put(chunk(0, 4))
    q.put(chunk(4, 4))
    q.put(chunk(8, 5))  # 13 > 10: the 3 oldest go, partly from the head chunk
    assert (len(q), q.dropped) == (10, 3)
    got = await drain(q)
    seqs = np.concatenate([c.seqs() for c in got])
    assert seqs.tolist() == list(range(3, 13))
    assert np.concatenate([c.data[:, 0] for c in got]).tolist() == list(range(3, 13))


async def test_queue_oversized_chunk_keeps_its_newest_samples() -> None:
    q = SampleQueue(5)
    q.put(chunk(0, 12))
    assert q.dropped == 7
    (c,) = await drain(q)
    assert (c.seq, len(c), c.data[0, 0]) == (7, 5, 7.0)


async def test_queue_get_waits_for_put() -> None:
    q = SampleQueue(100)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.put(chunk(0, 3))
    c = await asyncio.wait_for(getter, 1)
    assert c is not None and len(c) == 3


def test_queue_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SampleQueue(0)


def test_histogram_percentiles_within_bucket_resolution() -> None:
    rng = np.random.default_rng(1)
    v = rng.lognormal(np.log(5e-4), 0.6, 100_000)
    h = LatencyHistogram()
    for part in np.array_split(v, 7):
        h.record(part)
    for q in (50, 99, 99.9):
        exact = np.percentile(v, q, method="inverted_cdf")
        # reported as the upper edge of the bucket holding it: never below, at most one bucket (4.4 %) above
        assert exact <= h.percentile(q) <= exact * 2 ** (1 / 16) * 1.0001
    assert h.max == v.max() and h.count == v.size and h.sum == pytest.approx(v.sum())
    w = h.window()
    assert (w.count, w.percentile(50)) == (h.count, h.percentile(50))
    h.record([0.25] * 3)
    w = h.window()
    assert (w.count, w.max, w.percentile(50)) == (3, 0.25, 0.25)


def test_histogram_scalar_and_vector_paths_agree() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    vals = [0.0, 1e-7, 3e-6, 4.2e-4, 0.013, 2.5, 1e6]
    a.record(vals)
    for v in vals:
        b.record_one(v)
    assert np.array_equal(a.counts, b.counts)
    assert LatencyHistogram().summary_ms()["p50"] is None


def test_metrics_count_misses_against_the_budget() -> None:
    m = PipelineMetrics("p", budget_s=0.010, max_age_s=0.020)
    t_recv = np.array([0.0, 0.0, 0.0, 0.0])
    t_sample = np.array([-0.001, -0.001, -0.015, -0.001])
    t_pub = np.array([0.005, 0.0101, 0.009, 0.0099])
    m.record_published(t_recv, t_sample, t_pub)
    assert (m.results, m.deadline_misses, m.age_misses) == (4, 1, 1)
    r = m.report(1.0)
    assert r["counters"]["deadline_misses"] == 1 and r["latency_ms"]["runtime"]["n"] == 4
    assert m.report(2.0)["latency_ms"]["runtime"]["n"] == 0  # a new window


def test_result_payload_is_valid_json_and_round_trips_float32() -> None:
    from spikeline.result import decode_result, encode_result

    rng = np.random.default_rng(2)
    data = (rng.standard_normal((3, 2)) * 1e3).astype(np.float32)
    data[1, 0] = np.nan
    data[2, 1] = -np.inf
    t = np.array([1.0, 2.0, 3.0])
    c = SampleChunk(data, t, t + 0.001, 40, META.derive(classes=("a", "b")), label=np.array([1, 0, 1], np.int16),
                    stride=5, t_done=3.5)
    msgs = [decode_result(encode_result({"node": "n", "pipeline": "p"}, c, i, 4.0)) for i in range(3)]
    assert [m["seq"] for m in msgs] == [40, 45, 50]
    assert [m["label"] for m in msgs] == ["b", "a", "b"]
    assert np.array(msgs[0]["values"], dtype=np.float32).tobytes() == data[0].tobytes()
    assert msgs[1]["values"][0] is None and msgs[2]["values"][1] is None
    assert msgs[0]["latency_ms"] == {"runtime": pytest.approx(2999.0), "age": pytest.approx(3000.0)}
    assert (msgs[0]["t_sample"], msgs[0]["t_recv"], msgs[0]["t_done"], msgs[0]["t_pub"]) == (1.0, 1.001, 3.5, 4.0)
    with pytest.raises(ValueError, match="missing"):
        decode_result(b'{"seq": 1}')
