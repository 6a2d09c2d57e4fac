"""Stages without the runtime: chunks in, chunks out, compared with offline computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from spikeline.chunk import SampleChunk, StreamMeta
from spikeline.stages import StageError, build_stage
from spikeline.synth import SCRIPT, SyntheticEEG

RATE = 250.0


def stream(x: np.ndarray, labels: tuple[str, ...], rate: float = RATE) -> StreamMeta:
    return StreamMeta("test", "EEG", labels, rate, units=("microvolts",) * len(labels))


def chunks(x: np.ndarray, meta: StreamMeta, sizes: list[int]) -> list[SampleChunk]:
    out, i = [], 0
    t = np.arange(len(x)) / meta.nominal_rate
    for n in sizes:
        out.append(SampleChunk(np.ascontiguousarray(x[i:i + n], dtype=np.float32), t[i:i + n], t[i:i + n].copy(),
                               i, meta))
        i += n
    assert i == len(x)
    return out


def run(kinds: list[tuple[str, dict]], x: np.ndarray, meta: StreamMeta, sizes: list[int]) -> list[SampleChunk]:
    stages = [build_stage(k, p) for k, p in kinds]
    m = meta
    for st in stages:
        m = st.start(m)
    outs = []
    for c in chunks(x, meta, sizes):
        out: SampleChunk | None = c
        for st in stages:
            assert out is not None
            out = st.process(out)
            if out is None:
                break
        if out is not None and len(out):
            outs.append(out)
    return outs


def random_sizes(rng: np.random.Generator, n: int) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(1, 40), n - sum(sizes))))
    return sizes


def test_bandpass_stage_equals_scipy_from_the_primed_state() -> None:
    x = SyntheticEEG(n_channels=4, rate=RATE, seed=3).next(3000)
    meta = stream(x, ("C3", "C4", "Cz", "Pz"))
    outs = run([("bandpass", {"low_hz": 8, "high_hz": 30})], x, meta, [1000, 1, 999, 1000])
    got = np.concatenate([o.data for o in outs])
    sos = scipy.signal.butter(4, [8, 30], btype="bandpass", fs=RATE, output="sos")
    x64 = x.astype(np.float64)
    want, _ = scipy.signal.sosfilt(sos, x64, axis=0, zi=scipy.signal.sosfilt_zi(sos)[:, :, None] * x64[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)  # float32 rounding of input and output only


def test_filterbank_is_every_band_of_every_channel_like_scipy_and_chunk_invariant() -> None:
    x = SyntheticEEG(n_channels=3, rate=RATE, seed=4).next(2000)
    meta = stream(x, ("C3", "C4", "Cz"))
    bands = [8, 12, 12, 16, 16, 24, 24, 30]
    p = {"bands_hz": bands, "order": 4}
    whole = run([("filterbank", p)], x, meta, [2000])
    parts = run([("filterbank", p)], x, meta, random_sizes(np.random.default_rng(1), 2000))
    a = np.concatenate([o.data for o in whole])
    assert np.array_equal(a, np.concatenate([o.data for o in parts]))
    assert whole[0].meta.channels[:4] == ("C3@8-12", "C4@8-12", "Cz@8-12", "C3@12-16")
    x64 = x.astype(np.float64)
    for b, (lo, hi) in enumerate(zip(bands[::2], bands[1::2], strict=True)):
        sos = scipy.signal.butter(4, [lo, hi], btype="bandpass", fs=RATE, output="sos")
        want, _ = scipy.signal.sosfilt(sos, x64, axis=0, zi=scipy.signal.sosfilt_zi(sos)[:, :, None] * x64[0])
        np.testing.assert_allclose(a[:, 3 * b:3 * b + 3], want, rtol=1e-5, atol=1e-4)
    with pytest.raises(Exception, match="pairs"):
        build_stage("filterbank", {"bands_hz": [8, 12, 16]})
    with pytest.raises(StageError, match="160 Hz"):
        build_stage("filterbank", {"bands_hz": [8, 12, 70, 90]}).start(stream(x, ("a", "b", "c"), 160.0))


def test_bandpower_is_chunk_invariant_and_matches_the_offline_smoother() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 3)).astype(np.float32)
    meta = stream(x, ("a", "b", "c"))
    p = {"window_s": 0.2, "every": 7}
    whole = run([("bandpower", p)], x, meta, [2000])
    parts = run([("bandpower", p)], x, meta, random_sizes(rng, 2000))
    a = np.concatenate([o.data for o in whole])
    b = np.concatenate([o.data for o in parts])
    assert np.array_equal(a, b)
    assert np.concatenate([o.seqs() for o in parts]).tolist() == list(range(6, 2000, 7))
    alpha = 1 - np.exp(-1 / (0.2 * RATE))
    want = scipy.signal.lfilter([alpha], [1, -(1 - alpha)], x.astype(np.float64) ** 2, axis=0)[6::7]
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-7)
    assert whole[0].meta.nominal_rate == pytest.approx(RATE / 7)


def test_laterality_follows_the_imagery_script() -> None:
    gen = SyntheticEEG(n_channels=8, rate=RATE, seed=11, epoch_s=4.0)
    n = int(RATE * 4 * 8)  # two full rest/left/rest/right cycles
    x = gen.next(n)
    meta = stream(x, gen.labels)
    outs = run([("bandpass", {"low_hz": 8, "high_hz": 30}), ("select", {"channels": ["C3", "C4"]}),
                ("bandpower", {"window_s": 1.0, "every": 25}), ("laterality", {"threshold": 0.2})],
               x, meta, [50] * (n // 50))
    labels = np.concatenate([o.label for o in outs if o.label is not None])
    seqs = np.concatenate([o.seqs() for o in outs])
    classes = outs[0].meta.classes
    truth = np.array([SCRIPT[int(s / (4 * RATE)) % 4] for s in seqs])
    settled = (seqs % int(4 * RATE)) >= RATE * 1.5  # the 1 s smoother needs time after each switch
    got = np.array(classes)[labels]
    for state in ("left", "right"):
        sel = settled & (truth == state)
        assert np.mean(got[sel] == state) > 0.9, state
    assert np.mean(got[settled & (truth == "rest")] == "rest") > 0.6


def test_stage_errors_name_the_parameter_and_the_stream() -> None:
    meta = stream(np.zeros((1, 2)), ("C3", "C4"))
    with pytest.raises(StageError, match=r"channels \['Oz'\] not in stream") as e:
        build_stage("select", {"channels": ["C3", "Oz"]}).start(meta)
    assert e.value.param == "channels"
    with pytest.raises(StageError, match="runs at 250 Hz"):
        build_stage("bandpass", {"low_hz": 8, "high_hz": 200}).start(meta)
    with pytest.raises(StageError, match="needs a regular sampling rate"):
        build_stage("bandpass", {"low_hz": 8, "high_hz": 30}).start(meta.derive(nominal_rate=0.0))


def test_decide_argmax_smoothing_and_hysteresis_are_chunk_invariant() -> None:
    rng = np.random.default_rng(9)
    n = 600
    base = np.zeros((n, 3), np.float32)
    base[:200, 0] = 1.0
    base[200:400, 1] = 1.0
    base[400:, 2] = 1.0
    x = (base + 0.45 * rng.standard_normal((n, 3))).astype(np.float32)
    meta = StreamMeta("scores", "scores", ("a", "b", "c"), 50.0)
    plain = run([("decide", {"classes": ["a", "b", "c"]})], x, meta, [n])[0]
    assert np.array_equal(plain.label, np.argmax(x, axis=1))
    p = {"classes": ["a", "b", "c"], "smooth_s": 0.3, "hysteresis": 0.2}
    whole = run([("decide", p)], x, meta, [n])
    parts = run([("decide", p)], x, meta, random_sizes(rng, n))
    lw = np.concatenate([o.label for o in whole])
    assert np.array_equal(lw, np.concatenate([o.label for o in parts]))
    switches = lambda lab: int(np.count_nonzero(np.diff(lab)))  # noqa: E731
    assert switches(lw) < switches(plain.label) / 5  # smoothing + hysteresis suppress flicker
    assert switches(lw) >= 2 and [lw[150], lw[350], lw[550]] == [0, 1, 2]  # and still follow the truth
    with pytest.raises(StageError, match="3 classes but the stream"):
        build_stage("decide", {"classes": ["a", "b", "c"]}).start(meta.derive(channels=("a", "b")))


def test_lmu_stage_reads_back_the_delayed_signal_from_a_chunked_stream() -> None:
    from spikeline.kernels.lmu import legendre_decoder

    rate, n = 100.0, 3000
    t = np.arange(n) / rate
    x = np.stack([np.sin(2 * np.pi * 0.2 * t), np.cos(2 * np.pi * 0.3 * t)], axis=1).astype(np.float32)
    meta = StreamMeta("imu", "IMU", ("ax", "ay"), rate)
    p = {"order": 6, "theta_s": 1.0}
    rng = np.random.default_rng(4)
    whole = np.concatenate([o.data for o in run([("lmu", p)], x, meta, [n])])
    parts = run([("lmu", p)], x, meta, random_sizes(rng, n))
    assert np.array_equal(whole, np.concatenate([o.data for o in parts]))
    assert parts[0].meta.channels[:2] == ("ax.m0", "ax.m1") and parts[0].meta.n_channels == 12
    # The memory holds the last second: decoding it at the window's end gives x one second ago.
    dec = legendre_decoder(6, 1.0)
    delayed = whole[:, :6] @ dec
    k = int(rate)
    err = np.abs(delayed[2 * k:] - x[k:n - k, 0])
    assert err.max() < 0.02
    with pytest.raises(StageError, match="less than one sample"):
        build_stage("lmu", {"theta_s": 0.001}).start(meta)


@pytest.mark.parametrize("p", [{"method": "delta", "delta_threshold": 0.05},
                               {"method": "lif", "neurons": 4, "gain_range": [0.2, 1.0], "beta": 0.8}])
def test_encode_stage_is_chunk_invariant_and_counts_its_spikes(p: dict) -> None:
    rng = np.random.default_rng(6)
    x = np.cumsum(rng.standard_normal((800, 3)) * 0.05, axis=0).astype(np.float32) + 1.0
    meta = StreamMeta("imu", "IMU", ("a", "b", "c"), 50.0)
    whole = run([("encode", p)], x, meta, [800])
    st = build_stage("encode", p)
    st.start(meta)
    parts = []
    for c in chunks(x, meta, random_sizes(rng, 800)):
        parts.append(st.process(c).data)
    a, b = whole[0].data, np.concatenate(parts)
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 1.0}
    c = st.counters()
    assert c["samples"] == 800 and c["spikes"] == int(a.sum()) > 0
    assert c["activity"] == pytest.approx(a.mean(), abs=1e-6)
    if p["method"] == "delta":
        assert whole[0].meta.channels == ("a+", "b+", "c+", "a-", "b-", "c-")
        # each UP minus DOWN spike moves the reference by one threshold: the net count tracks the signal,
        # within a few thresholds (at most one spike per sample: a fast step lags until it is caught up)
        net = (a[:, :3] - a[:, 3:]).sum(axis=0) * 0.05
        np.testing.assert_allclose(net, x[-1] - x[0], atol=3 * 0.05)
    else:
        assert whole[0].meta.n_channels == 12


def test_lif_stage_matches_the_reference_populations() -> None:
    from spikeline.kernels.neurons import CubaLIFPopulationRef, LIFPopulationRef

    rng = np.random.default_rng(8)
    x = (rng.random((500, 4)) * 0.6).astype(np.float32)
    meta = StreamMeta("cur", "current", ("a", "b", "c", "d"), 100.0)
    out = np.concatenate([o.data for o in run([("lif", {"beta": 0.8, "threshold": 1.0})], x, meta, [37] * 13 + [19])])
    assert np.array_equal(out, LIFPopulationRef(4, 0.8, 1.0).step(x))
    out = np.concatenate([o.data for o in run([("lif", {"beta": 0.8, "alpha": 0.5})], x, meta, [500])])
    assert np.array_equal(out, CubaLIFPopulationRef(4, 0.5, 0.8, 1.0).step(x))


def test_delta_gru_and_readout_stages_from_model_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import need
    from spikeline.modelfile import save

    try:
        import torch
    except ImportError:
        need(False, "torch is not installed (pip install 'spikeline[test]')")
    torch.manual_seed(3)
    cell = torch.nn.GRUCell(3, 16)
    sd = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    gru = save(tmp_path / "gru", "delta_gru", sd)
    rng = np.random.default_rng(12)
    ro_w = rng.standard_normal((4, 16)).astype(np.float32)
    readout = save(tmp_path / "ro", "delta_dense", {"weight": ro_w, "bias": np.zeros(4, np.float32)},
                   {"classes": ["a", "b", "c", "d"], "outputs": ["a", "b", "c", "d"]})
    n = 400
    x = np.cumsum(rng.standard_normal((n, 3)) * 0.1, axis=0).astype(np.float32)
    meta = StreamMeta("imu", "IMU", ("x", "y", "z"), 50.0)
    kinds = [("delta_gru", {"model": str(gru)}), ("delta_dense", {"model": str(readout)}),
             ("decide", {"classes": ["a", "b", "c", "d"]})]
    whole = run(kinds, x, meta, [n])
    parts = run(kinds, x, meta, random_sizes(rng, n))
    scores = np.concatenate([o.data for o in parts])
    assert np.array_equal(whole[0].data, scores)
    h = torch.zeros(1, 16)
    want = []
    with torch.no_grad():
        for row in torch.from_numpy(x):
            h = cell(row[None], h)
            want.append(h[0].numpy() @ ro_w.T)
    np.testing.assert_allclose(scores, np.array(want), atol=1e-4)  # the stated GRUCell tolerance, through W_o
    assert parts[-1].meta.classes == ("a", "b", "c", "d")
    # temporal sparsity is counted: at theta_x = 0.05 most small input steps are not sent
    st = build_stage("delta_gru", {"model": str(gru), "theta_x": 0.05, "theta_h": 0.02})
    st.start(meta)
    st.process(chunks(x, meta, [n])[0])
    c = st.counters()
    assert c["steps"] == n and 0 < c["x_sent_fraction"] < 1 and c["macs"] < c["macs_dense"]
    with pytest.raises(StageError, match="is a 'delta_dense' model, expected 'delta_gru'"):
        build_stage("delta_gru", {"model": str(readout)}).start(meta)
    with pytest.raises(StageError, match=r"weight_ih must be \(3H, 2\)"):
        build_stage("delta_gru", {"model": str(gru)}).start(meta.derive(channels=("x", "y")))


@pytest.mark.parametrize("readout", ["window", "leaky"])
def test_l2mu_stage_counts_output_spikes_like_the_offline_model(tmp_path, readout: str) -> None:  # type: ignore[no-untyped-def]
    import sys

    from conftest import ROOT, need

    try:
        import torch
    except ImportError:
        need(False, "torch/snntorch not installed (pip install 'spikeline[test]')")
    sys.path.insert(0, str(ROOT / "tools"))
    from l2mu_torch import L2MU, L2MUConfig, export

    model = L2MU(L2MUConfig(n_inputs=3, n_outputs=4, enc=4, memory=4, order=4, theta=20, hidden=32, beta=0.8,
                            threshold=0.5), seed=2)
    path = export(model, tmp_path / "l2mu", {"classes": ["w", "x", "y", "z"]})
    rng = np.random.default_rng(5)
    n, rate = 500, 50.0
    x = (np.cumsum(rng.standard_normal((n, 3)) * 0.3, axis=0)).astype(np.float32)
    with torch.no_grad():
        spikes = model(torch.from_numpy(x)[None])[0][0].numpy().astype(np.float64)
    assert spikes.sum() > 20, "the model should be active for the comparison to mean something"
    meta = StreamMeta("imu", "IMU", ("a", "b", "c"), rate)
    p = {"model": str(path), "readout": readout, "window_s": 0.4, "every": 5}
    whole = run([("l2mu", p)], x, meta, [n])
    parts = run([("l2mu", p)], x, meta, random_sizes(rng, n))
    got = np.concatenate([o.data for o in parts])
    assert np.array_equal(np.concatenate([o.data for o in whole]), got)
    assert np.concatenate([o.seqs() for o in parts]).tolist() == list(range(4, n, 5))
    assert parts[0].meta.classes == ("w", "x", "y", "z") and parts[0].meta.nominal_rate == rate / 5
    if readout == "window":
        w = 20
        padded = np.vstack([np.zeros((w, 4)), spikes])
        want = np.stack([padded[i + 1:i + w + 1].sum(axis=0) for i in range(n)])[4::5]
        assert np.array_equal(got, want)
    else:
        lam = np.exp(-1 / 20)
        want = scipy.signal.lfilter([1.0], [1.0, -lam], spikes, axis=0)[4::5]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(StageError, match="the model takes 3 inputs"):
        build_stage("l2mu", p).start(meta.derive(channels=("a", "b")))
