"""tools/bench_gateway.py on a tiny configuration: the report's structure and that its rates are positive and
finite. No timing thresholds (the machine is shared)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture
def bench(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SPIKELINE_DATA", str(data_dir))
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    sys.modules.pop("bench_gateway", None)
    import bench_gateway

    return bench_gateway


def test_tiny_run_gives_the_report(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.main(["--quick", "--counts", "20", "--k1-counts", "", "--per-device", "4", "--duration", "2",
                     "--warmup", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    doc, _, text = out.partition("\n}\n")
    report = json.loads(doc + "\n}")
    assert report["benchmark"] == "gateway" and report["machine"]["cpu"]
    res = report["results"]
    (g,) = res["gateway"]
    assert (g["mode"], g["n"], g["batch"]) == ("gateway", 20, 5)
    for k in ("samples_per_s", "results_per_s", "cpu_pct", "us_per_sample", "cpu_s", "window_s"):
        assert _positive(g[k]), (k, g[k])
    for k in ("p50", "p99", "max"):
        assert _positive(g["runtime_ms"][k]), k
        assert g["lateness_ms"][k] is not None and math.isfinite(g["lateness_ms"][k])
    assert set(g["profile_pct_of_core"]) == {"l2mu", "decide", "ingest", "sink", "rest"}
    assert all(math.isfinite(v) and v >= 0 for v in g["profile_pct_of_core"].values())
    assert set(g["table"]) == {"samples", "lost", "duplicates", "rejected"}
    assert g["table"]["samples"] > 0 and g["table"]["rejected"] == 0 and g["table"]["duplicates"] == 0
    assert isinstance(g["zero_misses"], bool) and isinstance(g["ok"], bool)
    assert g["sim"]["samples_sent"] > 0
    (p,) = res["per_device"]
    assert (p["mode"], p["n"]) == ("per_device", 4)
    for k in ("samples_per_s", "results_per_s", "cpu_pct", "us_per_sample"):
        assert _positive(p[k]), (k, p[k])
    f = res["figure"]
    assert f["target_watches"] == 2000 and isinstance(f["target_met"], bool) and isinstance(f["limit"], str)
    assert f["max_watches_zero_misses_zero_drops"] in (0, 20)
    assert "Gateway mode" in text and "Figure:" in text


@pytest.mark.broker
def test_tiny_mqtt_run(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--mqtt-counts: the benchmark starts its own mosquitto, the watch_mqtt source serves the simulator's
    watches, and the rows are kept apart from the UDP figure."""
    from conftest import mosquitto_binary, need

    need(mosquitto_binary() is not None, "mosquitto not installed (tools/test.sh installs it)")
    rc = bench.main(["--counts", "", "--k1-counts", "", "--per-device", "", "--mqtt-counts", "20", "--duration", "2",
                     "--warmup", "1"])
    assert rc == 0
    doc, _, _ = capsys.readouterr().out.partition("\n}\n")
    res = json.loads(doc + "\n}")["results"]
    (g,) = res["gateway"]
    assert (g["transport"], g["n"]) == ("mqtt", 20)
    assert g["table"]["samples"] > 0 and g["table"]["rejected"] == 0 and _positive(g["samples_per_s"])
    assert res["figure"]["max_watches_zero_misses_zero_drops"] == 0  # MQTT rows are not the UDP figure
