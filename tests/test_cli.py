"""The commands a user types: the demo runs and exits 0; `run` reports a missing stream clearly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lsl, pytest.mark.slow]


def spikeline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "spikeline", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def test_demo_runs_publishes_and_exits_cleanly() -> None:
    r = spikeline("demo", "--duration", "4", "--channels", "16")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "embedded amqtt" in r.stdout
    m = re.search(r"done: (\d+) samples in, (\d+) results published, (\d+) received by the viewer, "
                  r"(\d+) deadline misses, (\d+) samples dropped", r.stdout)
    assert m, r.stdout
    samples, published, received = int(m[1]), int(m[2]), int(m[3])
    assert samples > 500 and published >= 20
    assert received == published  # every published result reached the subscriber
    assert re.search(r"runtime p50 +\d+\.\d+ p99 +\d+\.\d+ ms", r.stdout)


@pytest.mark.broker
def test_demo_with_external_broker_uses_mqtt5(mosquitto) -> None:  # type: ignore[no-untyped-def]
    r = spikeline("demo", "--duration", "3", "--channels", "8", "--mqtt", mosquitto.url)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mqtt 5 received" in r.stdout


def test_run_reports_a_missing_stream_and_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[pipeline]]\nname = "p"\nbudget_ms = 10\n'
                   'source = { type = "lsl", name = "no-such-stream", resolve_timeout_s = 0.5 }\n'
                   'sinks = [{ type = "stdout" }]\n')
    r = spikeline("run", str(cfg), timeout=30)
    assert r.returncode == 1
    assert "no LSL stream matching name='no-such-stream' within 0.5 s" in r.stderr


def test_check_exits_nonzero_on_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[pipeline]]\nname = "p"\nbudget_ms = "fast"\n')
    r = spikeline("check", str(cfg))
    assert r.returncode == 2
    assert 'pipeline[0].budget_ms: expected a number, got "fast"' in r.stderr
