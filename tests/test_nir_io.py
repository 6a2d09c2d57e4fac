"""NIR graphs in and out: snnTorch's exporter's conventions, round trips, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import need

try:
    import nir
except ImportError:  # pragma: no cover - the test extra installs it
    nir = None

from spikeline.nir_io import Dense, Neurons, NIRError, from_nir, to_nir


@pytest.fixture(autouse=True)
def _need_nir() -> None:
    need(nir is not None, "the nir package is not installed (pip install 'spikeline[test]')")


def snntorch_net():  # type: ignore[no-untyped-def]
    import snntorch as snn
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        snn.Leaky(beta=torch.rand(16) * 0.5 + 0.4, threshold=torch.rand(16) + 0.5, init_hidden=True),
        torch.nn.Linear(16, 4, bias=False),
        # per-neuron parameters: snnTorch 1.0's exporter cannot type-check scalar ones
        snn.Synaptic(alpha=torch.full((4,), 0.7), beta=torch.full((4,), 0.85), threshold=torch.ones(4),
                     init_hidden=True, output=True),
    )


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning")
def test_snntorch_export_imports_with_its_parameters() -> None:
    try:
        import torch
        from snntorch.export_nir import export_to_nir
    except ImportError:
        need(False, "torch/snntorch/nirtorch not installed (pip install 'spikeline[test]')")
    net = snntorch_net()
    graph = export_to_nir(net, torch.zeros(6))
    layers = from_nir(graph)
    assert [type(layer).__name__ for layer in layers] == ["Dense", "Neurons", "Dense", "Neurons"]
    d0, n1, d2, n3 = layers
    assert isinstance(d0, Dense) and isinstance(n1, Neurons) and isinstance(d2, Dense) and isinstance(n3, Neurons)
    np.testing.assert_array_equal(d0.weight, net[0].weight.detach().numpy())
    np.testing.assert_array_equal(d0.bias, net[0].bias.detach().numpy())
    np.testing.assert_allclose(n1.beta, net[1].beta.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(n1.threshold, net[1].threshold.detach().numpy())
    np.testing.assert_allclose(n1.gain, 1.0, atol=1e-6)
    assert n1.alpha is None and n3.alpha is not None
    np.testing.assert_allclose(n3.alpha, 0.7, atol=1e-6)
    np.testing.assert_allclose(n3.beta, 0.85, atol=1e-6)
    np.testing.assert_allclose(n3.gain, 1.0, atol=1e-6)
    np.testing.assert_array_equal(d2.bias, 0.0)


def test_round_trip_through_a_nir_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    layers = [Dense(rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(8).astype(np.float32)),
              Neurons(np.full(8, 0.9, np.float32), np.full(8, 1.2, np.float32), np.full(8, 0.5, np.float32)),
              Dense(rng.standard_normal((2, 8)).astype(np.float32), np.zeros(2, np.float32)),
              Neurons(np.full(2, 0.8, np.float32), np.ones(2, np.float32), np.ones(2, np.float32),
                      alpha=np.full(2, 0.6, np.float32))]
    path = tmp_path / "net.nir"
    nir.write(str(path), to_nir(layers, n_inputs=3))
    back = from_nir(path)
    for a, b in zip(layers, back, strict=True):
        for field in ("weight", "bias", "beta", "threshold", "gain", "alpha"):
            va, vb = getattr(a, field, None), getattr(b, field, None)
            if va is None:
                assert vb is None
            else:
                np.testing.assert_allclose(vb, va, rtol=1e-6, atol=1e-7, err_msg=field)


def test_unsupported_graphs_are_refused_clearly() -> None:
    inp = nir.Input(input_type={"input": np.array([2])})
    out = nir.Output(output_type={"output": np.array([2])})
    lif = nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    w = nir.Linear(weight=np.eye(2))
    rec = nir.NIRGraph(nodes={"input": inp, "lif": lif, "w": w, "output": out},
                       edges=[("input", "lif"), ("lif", "w"), ("w", "lif"), ("lif", "output")], type_check=False)
    with pytest.raises(NIRError, match=r"successors|inputs"):
        from_nir(rec)
    conv = nir.NIRGraph(nodes={"input": inp, "c": nir.Threshold(threshold=np.ones(2)), "output": out},
                        edges=[("input", "c"), ("c", "output")], type_check=False)
    with pytest.raises(NIRError, match="Threshold is not supported"):
        from_nir(conv)
    leak = nir.NIRGraph(nodes={"input": inp, "lif": nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.ones(2),
                                                            v_threshold=np.ones(2)), "output": out},
                        edges=[("input", "lif"), ("lif", "output")], type_check=False)
    with pytest.raises(NIRError, match="v_leak"):
        from_nir(leak)
    bad = [Dense(np.zeros((4, 3), np.float32), np.zeros(4, np.float32)),
           Neurons(np.zeros(5, np.float32), np.ones(5, np.float32), np.ones(5, np.float32))]
    with pytest.raises(NIRError, match="layer 1 expects 5 inputs but the layer before it gives 4"):
        to_nir(bad, 3)


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning")
def test_snn_stage_runs_an_snntorch_export_like_snntorch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    try:
        import torch
        from snntorch.export_nir import export_to_nir
    except ImportError:
        need(False, "torch/snntorch/nirtorch not installed (pip install 'spikeline[test]')")
    from spikeline.chunk import SampleChunk, StreamMeta
    from spikeline.stages import build_stage

    net = snntorch_net()
    with torch.no_grad():
        net[2].weight.mul_(4.0)  # enough drive for the output population to be active
    path = tmp_path / "net.nir"
    nir.write(str(path), export_to_nir(net, torch.zeros(6)))
    rng = np.random.default_rng(3)
    n = 300
    x = (rng.random((n, 6)) * 3.0).astype(np.float32)
    meta = StreamMeta("imu", "IMU", tuple("abcdef"), 100.0)
    st = build_stage("snn", {"nir": str(path)})
    out_meta = st.start(meta)
    assert out_meta.n_channels == 4
    t = np.arange(n, dtype=np.float64)
    got = np.concatenate([st.process(SampleChunk(x[i:i + 50].copy(), t[i:i + 50], t[i:i + 50], i, meta)).data
                          for i in range(0, n, 50)])
    # snnTorch, one step at a time, float32
    for m in net:
        if hasattr(m, "reset_hidden"):
            m.reset_hidden()
    with torch.no_grad():
        want = np.stack([net(torch.from_numpy(row))[0].numpy() for row in x])
    agree = float(np.mean(got == want))
    # Float32 sums in another order can move a membrane sitting exactly at its threshold by one ulp;
    # over 1200 neuron-steps we require at least 99 % identical spikes and equal total activity +-2 %.
    assert agree >= 0.99, agree
    assert abs(got.sum() - want.sum()) <= 0.02 * max(want.sum(), 1)
    assert want.sum() > 20  # the network is active, so the comparison means something
    assert 0 < st.counters()["macs_fraction"] <= 1
