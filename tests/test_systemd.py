"""systemd integration: READY=1 only once every pipeline is up, WATCHDOG=1 pings from the event loop (none while
it stalls), STOPPING=1 on drain, STATUS lines; the log formats (text, json, journal)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from notify import NotifyListener
from spikeline import logs
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.pipeline import State
from spikeline.synth import LslEEGOutlet
from spikeline.systemd import Notifier, watchdog_interval


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None
    assert n.ready("x") is False and n.sent == 0


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_notifier_sends_to_an_abstract_socket_and_counts_failures() -> None:
    lis = NotifyListener()
    try:
        n = Notifier({"NOTIFY_SOCKET": lis.name})
        assert n.enabled
        assert n.ready("2 running") and n.watchdog() and n.stopping()
        assert lis.wait_for("STOPPING") == {"STOPPING": "1", "STATUS": "draining"}
        msgs = [m for _, m in lis.snapshot()]
        assert msgs[:2] == [{"READY": "1", "STATUS": "2 running"}, {"WATCHDOG": "1"}]
        assert n.sent == 3 and n.failures == 0
        n.close()
    finally:
        lis.close()
    gone = Notifier({"NOTIFY_SOCKET": lis.name})  # nobody listens any more: refused, counted, never raised
    assert gone.ready("x") is False and gone.failures == 1
    gone.close()


@pytest.mark.lsl
@pytest.mark.data
@pytest.mark.slow
async def test_ready_after_every_pipeline_is_up_watchdog_stops_while_the_loop_stalls(
        data_dir: Path, tmp_path: Path) -> None:
    """Two pipelines; the LSL one cannot open until its outlet appears 1.5 s after start. READY=1 comes after
    that, with both running. WATCHDOG=1 comes every 0.1 s (WATCHDOG_USEC 0.2 s) and not at all while a callback
    blocks the loop for 0.6 s (systemd would restart the service); STOPPING=1 when the drain starts."""
    sid = f"sd-{uuid.uuid4().hex[:8]}"
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    cfg = parse({"node": {"name": "sdnode"}, "pipeline": [
        {"name": "watch", "budget_ms": 50, "source": {"type": "replay", "file": spar, "speed": 1.0, "loop": True},
         "sinks": [{"type": "jsonl", "path": str(tmp_path / "watch.jsonl")}]},
        {"name": "eeg", "budget_ms": 50, "source": {"type": "lsl", "source_id": sid, "resolve_timeout_s": 15},
         "sinks": [{"type": "jsonl", "path": str(tmp_path / "eeg.jsonl")}]}]})
    lis = NotifyListener()
    d = Daemon(cfg, notifier=Notifier({"NOTIFY_SOCKET": lis.name, "WATCHDOG_USEC": "200000"}))
    outlet: list[LslEEGOutlet] = []
    created: list[float] = []

    def make_outlet() -> None:
        time.sleep(1.5)
        created.append(time.monotonic())
        outlet.append(LslEEGOutlet(f"sd-{sid}", n_channels=4, rate=100.0, source_id=sid).start())

    maker = threading.Thread(target=make_outlet, daemon=True)
    t0 = time.monotonic()
    task = asyncio.create_task(d.run())
    maker.start()
    stall: list[float] = []
    try:
        ready = await asyncio.to_thread(lis.wait_for, "READY", 1, 30.0)
        states_at_ready = [p.state for p in d.pipelines]
        await asyncio.sleep(1.0)

        def block() -> None:
            stall.append(time.monotonic())
            time.sleep(0.6)  # a stage or callback holding the event loop
            stall.append(time.monotonic())

        asyncio.get_running_loop().call_soon(block)
        await asyncio.sleep(1.0)
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
        maker.join()
        for o in outlet:
            o.close()
        await asyncio.sleep(0.1)
        lis.close()
    t_ready = lis.times("READY")[0]
    assert created and t_ready > created[0], "READY=1 before the LSL pipeline could open"
    assert states_at_ready == [State.RUNNING, State.RUNNING]
    assert ready["STATUS"].startswith("2 running;"), ready
    pings = lis.times("WATCHDOG")
    assert pings and pings[0] < t_ready, "the watchdog pings from the start, before READY"
    before = [t for t in pings if t0 + 0.2 < t < stall[0]]
    assert len(before) >= 0.5 * (stall[0] - t0 - 0.2) / 0.1, f"{len(before)} pings in {stall[0] - t0:.1f} s"
    during = [t for t in pings if stall[0] + 0.05 < t < stall[1]]
    assert during == [], "pings while the loop was blocked"
    gap = max(b - a for a, b in itertools.pairwise(pings))
    assert gap >= 0.55, f"largest gap between pings {gap:.2f} s: the stall did not show"
    assert [t for t in pings if t > stall[1]], "pings did not resume after the stall"
    stopping = lis.times("STOPPING")
    assert len(stopping) == 1 and stopping[0] > stall[1]


def _records() -> list[logging.LogRecord]:
    log = logging.getLogger("spikeline.test")
    return [log.makeRecord(log.name, logging.WARNING, __file__, 1, "pipeline %s: %d late\nsecond line",
                           ("eeg", 3), None, extra={"pipeline": "eeg"}),
            log.makeRecord(log.name, logging.ERROR, __file__, 2, 'quote " and ünïcode', (), None)]


def test_json_log_lines_are_one_object_each_with_extras_and_tracebacks() -> None:
    fmt = logs.JsonFormatter()
    lines = [fmt.format(r) for r in _records()]
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 3, "failed", (), sys.exc_info())
    lines.append(fmt.format(rec))
    assert all("\n" not in line for line in lines)
    objs = [json.loads(line) for line in lines]
    assert objs[0]["level"] == "warning" and objs[0]["logger"] == "spikeline.test"
    assert objs[0]["msg"] == "pipeline eeg: 3 late\nsecond line" and objs[0]["pipeline"] == "eeg"
    assert objs[1]["msg"] == 'quote " and ünïcode' and "pipeline" not in objs[1]
    assert objs[2]["exc"].startswith("Traceback") and "ValueError: boom" in objs[2]["exc"]
    assert objs[0]["ts"].endswith("Z") and objs[0]["pid"] == os.getpid()


def test_journal_format_prefixes_every_line_with_its_priority() -> None:
    out = [logs.JournalFormatter().format(r) for r in _records()]
    assert out[0] == "<4>spikeline.test: pipeline eeg: 3 late\n<4>second line"
    assert out[1].startswith("<3>spikeline.test: quote")


def test_auto_picks_journal_only_on_the_journal_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = (tmp_path / "stream").open("w")
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        assert logs.setup("info", "auto", f) == "journal"
        assert logs.setup("info", "auto", io.StringIO()) == "text"
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert logs.setup("info", "auto", f) == "text"
        buf = io.StringIO()
        assert logs.setup("warning", "json", buf) == "json"
        logging.getLogger("spikeline.x").info("hidden")
        logging.getLogger("spikeline.x").warning("shown %d", 1)
        assert [json.loads(line)["msg"] for line in buf.getvalue().splitlines()] == ["shown 1"]
        with pytest.raises(ValueError, match="log format"):
            logs.setup("info", "xml")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        f.close()
