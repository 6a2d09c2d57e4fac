"""SIGHUP reload, through the real command line and real signals: a config that does not validate is rejected
and everything keeps running; a good one keeps unchanged pipelines running untouched (same sequence, no
restart), restarts changed ones, starts new ones and drains removed ones. systemd hears RELOADING=1 then READY=1;
the logs are JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from notify import NotifyListener
from spikeline.config import parse
from spikeline.daemon import Daemon

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _pipeline(name: str, spar: str, out: Path, budget_ms: float = 50.0) -> str:
    return (f'[[pipeline]]\nname = "{name}"\nbudget_ms = {budget_ms}\npolicy = "mark_late"\n'
            f'[pipeline.source]\ntype = "replay"\nfile = "{spar}"\nspeed = 1.0\nloop = true\n'
            f'[[pipeline.sinks]]\ntype = "jsonl"\npath = "{out / (name + ".jsonl")}"\n')


def _seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["seq"] for line in path.read_text().splitlines() if line.endswith("}")]


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sighup_rejects_a_bad_config_and_applies_a_good_one(data_dir: Path, tmp_path: Path) -> None:
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    out = tmp_path / "out"
    cfg = tmp_path / "spikeline.toml"
    head = '[node]\nname = "hup"\nmetrics_interval_s = 1\n'
    cfg.write_text(head + _pipeline("a", spar, out) + _pipeline("b", spar, out) + _pipeline("d", spar, out))
    lis = NotifyListener()
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "NOTIFY_SOCKET": lis.name, "SPIKELINE_LOG_FORMAT": "json"}
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "spikeline", "run", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        lis.wait_for("READY", 1, 30)
        _wait(lambda: min(len(_seqs(out / f"{n}.jsonl")) for n in "abd") >= 50, 20, "results from a, b, d")

        # 1. a config that does not validate: rejected with its problem, nothing stops or restarts
        cfg.write_text(head + _pipeline("a", spar, out, budget_ms=-5) + _pipeline("b", spar, out))
        proc.send_signal(signal.SIGHUP)
        lis.wait_for("RELOADING", 1, 10)
        lis.wait_for("READY", 2, 10)
        n_a, n_d = len(_seqs(out / "a.jsonl")), len(_seqs(out / "d.jsonl"))
        _wait(lambda: len(_seqs(out / "d.jsonl")) > n_d + 50 and len(_seqs(out / "a.jsonl")) > n_a + 50, 20,
              "a and d going on after the rejected reload")

        # 2. a good one: a unchanged (moved), b changed, c new, d gone
        cfg.write_text(head + _pipeline("c", spar, out) + _pipeline("a", spar, out)
                       + _pipeline("b", spar, out, budget_ms=40))
        proc.send_signal(signal.SIGHUP)
        lis.wait_for("RELOADING", 2, 10)
        lis.wait_for("READY", 3, 20)
        n_d = len(_seqs(out / "d.jsonl"))
        n_a = len(_seqs(out / "a.jsonl"))
        _wait(lambda: len(_seqs(out / "c.jsonl")) >= 50 and len(_seqs(out / "a.jsonl")) > n_a + 50, 20,
              "c started, a going on")
        d_after = len(_seqs(out / "d.jsonl"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lis.close()
    logs = [json.loads(line) for line in log_path.read_text().splitlines()]
    msgs = [r["msg"] for r in logs]
    rejected = [r for r in logs if r["msg"].startswith("reload of") and "rejected" in r["msg"]]
    assert len(rejected) == 1 and rejected[0]["level"] == "error"
    assert "pipeline[0].budget_ms: must be > 0, got -5" in rejected[0]["msg"]
    applied = [m for m in msgs if m.startswith("reload of") and "kept" in m]
    assert applied == [f"reload of {cfg}: kept a; restarted b; added c; removed d"], applied
    started = [m.split()[1] for m in msgs if m.startswith("pipeline ") and " running: " in m]
    assert sorted(started) == ["a", "b", "b", "c", "d"], "a must not restart; b restarts once"
    # a ran untouched: one unbroken sequence (no restart from 0, nothing lost) across both reloads
    a = _seqs(out / "a.jsonl")
    assert a[0] == 0 and a == list(range(a[0], a[0] + len(a)))
    # b restarted from the beginning once, with its new budget
    b = _seqs(out / "b.jsonl")
    restarts = [i for i in range(1, len(b)) if b[i] != b[i - 1] + 1]
    assert len(restarts) == 1 and b[restarts[0]] == 0
    assert d_after == n_d, "d published after it was removed"
    assert len(_seqs(out / "c.jsonl")) >= 50
    kinds = [next(iter(m)) for _, m in lis.snapshot() if "WATCHDOG" not in m]
    assert kinds == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"], kinds


async def test_reload_without_a_file_or_with_an_mqtt_sink_and_no_connection_is_rejected(
        data_dir: Path, tmp_path: Path) -> None:
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    doc = {"node": {"name": "mem"}, "pipeline": [
        {"name": "a", "budget_ms": 50, "source": {"type": "replay", "file": spar, "speed": 1.0, "loop": True},
         "sinks": [{"type": "jsonl", "path": str(tmp_path / "a.jsonl")}]}]}
    d = Daemon(parse(doc))
    task = asyncio.create_task(d.run())
    try:
        await asyncio.sleep(0.5)
        r = await d.reload()
        assert not r["ok"] and "not a file" in r["problems"][0]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[[pipeline]]\nname = "a"\nbudget_ms = 50\n[pipeline.source]\ntype = "replay"\n'
                       f'file = "{spar}"\n[[pipeline.sinks]]\ntype = "mqtt"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n')
        d.cfg.origin = str(cfg)
        first = d.pipelines[0]
        r = await d.reload()
        assert not r["ok"] and "restart it to add one" in r["problems"][0], r
        assert d.pipelines == [first] and d.reloads_rejected == 2 and d.reloads == 0
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 10)


async def test_reload_retries_a_failed_pipeline_and_keeps_the_others(data_dir: Path, tmp_path: Path) -> None:
    """An unchanged pipeline that failed (here: a channel the recording does not have) is started again by a
    reload, as `systemctl reload` after fixing what it needed; the running one is kept."""
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[node]\nname = "retry"\n' + _pipeline("a", spar, tmp_path)
                   + _pipeline("f", spar, tmp_path) + '[[pipeline.stages]]\ntype = "select"\nchannels = ["nope"]\n')
    from spikeline.config import load

    d = Daemon(load(str(cfg)))
    task = asyncio.create_task(d.run())
    try:
        async with asyncio.timeout(10):
            while [p.state.value for p in d.pipelines] != ["running", "failed"]:
                await asyncio.sleep(0.05)
        a, f = d.pipelines
        r = await d.reload()
        assert r["ok"] and r["kept"] == ["a"] and r["restarted"] == ["f"], r
        assert d.pipelines[0] is a and d.pipelines[1] is not f
        async with asyncio.timeout(10):
            while d.pipelines[1].state.value != "failed":
                await asyncio.sleep(0.05)
        assert "nope" in str(d.pipelines[1].error) and a.state.value == "running"
        r = await d.reload()
        assert r["restarted"] == ["f"] and d.reloads == 2
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 10) == 1  # f failed
