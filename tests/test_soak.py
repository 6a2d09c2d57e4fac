"""tools/soak.py for half a minute on every example pipeline (one daemon, real mosquitto, LSL outlets, UDP events,
simulated watches, replayed real recordings): the report's structure, every pipeline producing results, nothing it
started left running, and the docs rendered from the saved report. No timing thresholds (the machine is shared):
the verdict may be PASS or FAIL this early, latencies and misses are only checked to be reported."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, REQUIRE_ALL, ROOT, mosquitto_binary, need

# the soak (about 45 s with start-up and shutdown) runs in the first test's set-up
pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.data, pytest.mark.lsl, pytest.mark.timeout(240)]

TOOL = ROOT / "tools" / "soak.py"


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """One short soak for every test of this module: (report, stdout, its directory)."""
    # as conftest's mosquitto and data_dir fixtures decide (they are function-scoped; this soak runs once)
    need(mosquitto_binary() is not None, "mosquitto is not installed (tools/test.sh installs it)")
    need(DATA.is_dir(), f"recordings not found at {DATA} (set SPIKELINE_DATA or provide ../shared/data)",
         required=REQUIRE_ALL and os.environ.get("SPIKELINE_REQUIRE_DATA") != "0")
    out = tmp_path_factory.mktemp("soak")
    proc = subprocess.run([sys.executable, str(TOOL), "--minutes", "0.5", "--interval", "1", "--watches", "5",
                           "--data", str(DATA), "--json", str(out / "soak.json"), "--plot", str(out / "soak.png"),
                           "--quiet"], capture_output=True, text=True, timeout=200, cwd=ROOT)
    report = json.loads((out / "soak.json").read_text()) if (out / "soak.json").exists() else {}
    # 0: PASS, 1: FAIL (RSS growth: not judged this early), 2: a pipeline failed or published nothing
    assert proc.returncode in (0, 1), (
        f"exit {proc.returncode}: {report.get('summary', {}).get('problems')}\ndaemon log: "
        + "\n".join(report.get("daemon_log", {}).get("tail", [])) + f"\n{proc.stderr[-3000:]}")
    return report, proc.stdout, out


def test_every_example_pipeline_runs_in_one_daemon_and_produces_results(soak: Any) -> None:
    report, stdout, _ = soak
    want = []
    for cfg in sorted((ROOT / "deploy" / "examples").glob("*.toml")):
        want += [(cfg.name, p["name"]) for p in tomllib.loads(cfg.read_text())["pipeline"]]
    assert sorted((p["config"], p["original_name"]) for p in report["pipelines"]) == sorted(want)
    names = [p["pipeline"] for p in report["pipelines"]]
    assert len(set(names)) == len(names) == len(want)
    sm = report["summary"]
    assert sm["problems"] == [] and not report["interrupted"] and report["daemon_exit_code"] == 0
    assert set(sm["pipelines"]) == set(names)
    for name, r in sm["pipelines"].items():
        assert r["state"] == "running", (name, r["state"], r["error"])
        assert r["results_received"] > 0 and r["results_published"] > 0, name
        for k in ("p50", "p99", "p999", "max"):
            assert _number(r["runtime_ms"][k]) and r["runtime_ms"][k] > 0, (name, k)
        assert r["runtime_ms"]["p50"] <= r["runtime_ms"]["p99"] <= r["runtime_ms"]["max"], name
        assert isinstance(r["deadline_misses"], int) and r["deadline_misses"] >= 0, name
        assert set(r["drops"]) >= {"queue", "stale", "offline", "source_gaps", "rate", "rejected_input"}
        assert all(v is None or (isinstance(v, int) and v >= 0) for v in r["drops"].values()), (name, r["drops"])
        assert isinstance(r["reconnects"], int) and r["reconnects"] >= 0, name
        assert report["metrics"][name], name  # its metrics windows over time
        assert f"\n{name} " in stdout  # a row of the table
    assert sm["verdict"] in ("PASS", "FAIL") and f"{sm['verdict']}: RSS growth" in stdout
    # every feeder had a pipeline, every pipeline without a source of its own had a feeder
    fed = {p for f in report["feeds"] for p in f["pipelines"]}
    own = {p["pipeline"] for p in report["pipelines"] if p["source"] in ("event_file", "replay")}
    assert fed | own == set(names) and not fed & own


def test_memory_cpu_and_load_are_sampled_over_time(soak: Any) -> None:
    report, _, out = soak
    samples = report["samples"]
    assert len(samples) >= 20  # 30 s at one per second
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and ts[-1] >= 29
    names = [p["pipeline"] for p in report["pipelines"]]
    for s in samples[3:]:
        assert _number(s["rss_mb"]) and s["rss_mb"] > 0
        assert _number(s["cpu_pct"]) and s["cpu_pct"] >= 0
        assert s["threads"] > 0 and s["fds"] > 0 and _number(s["load1"])
        assert _number(s["machine_busy_cores"]) and _number(s["others_busy_cores"])
        assert set(s["results"]) == set(names)
    for a, b in itertools.pairwise(samples):  # results received only ever add up
        assert all(b["results"][n] >= a["results"][n] for n in names)
    r = report["summary"]["rss"]
    for k in ("start_mb", "after_warmup_mb", "end_mb", "max_mb", "growth_pct", "warmup_s", "window_s"):
        assert _number(r[k]), k
    assert r["warmup_s"] == pytest.approx(0.2 * report["summary"]["duration_s"], rel=0.05)
    assert r["growth_pct"] == pytest.approx((r["end_mb"] / r["after_warmup_mb"] - 1) * 100, abs=0.01)
    assert report["git"]["commit"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_it_started_is_left_running(soak: Any) -> None:
    report, _, _ = soak
    started = {p["name"] for p in report["processes"]}
    assert {"mosquitto", "daemon", "lsl-eeg", "lsl-imu", "watch-sim-watch_mqtt"} <= started
    assert any(n.startswith("udp-events") for n in started)
    for p in report["processes"]:
        assert p["exit_code"] is not None, p
        assert not _alive(p["pid"]), p
    daemon = next(p for p in report["processes"] if p["name"] == "daemon")
    assert daemon["exit_code"] == 0 and not daemon["killed"]  # it drained and exited on SIGINT


def test_docs_render_from_the_saved_report(soak: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    report, _, out = soak
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    sys.modules.pop("soak", None)
    import soak as tool

    monkeypatch.setattr(tool, "DOCS", tmp_path / "soak.md")
    rc = tool.main(["--render", str(out / "soak.json"), "--write-docs", "--plot", str(tmp_path / "soak.png")])
    assert rc in (0, 1)
    text = (tmp_path / "soak.md").read_text()
    assert f"**{report['summary']['verdict']}: RSS growth after warm-up" in text and "](soak.png)" in text
    assert "python tools/soak.py --minutes 0.5" in text
    for p in report["pipelines"]:
        assert f"| {p['pipeline']} " in text and f"`{p['pipeline']}`" in text
    assert "## Observations" in text
    assert "PASS" in capsys.readouterr().out or report["summary"]["verdict"] == "FAIL"
