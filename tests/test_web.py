"""The live operator page: /api/state against a daemon's real pipelines, the event stream (live, bounded, never
blocked by a slow client), and the page itself in Debian's headless Chromium (numbers update live, histogram drawn,
recent decisions and misses as in the JSON, config strings shown as text, disconnection shown; a screenshot)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, need
from spikeline import web
from spikeline.broker import free_port, wait_port
from spikeline.config import parse
from spikeline.daemon import Daemon
from spikeline.params import ConfigError
from spikeline.pipeline import State

pytestmark = [pytest.mark.data]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EEG_STAGES = [{"type": "bandpass", "low_hz": 8, "high_hz": 30}, {"type": "select", "channels": ["C3", "C4"]},
              {"type": "bandpower", "window_s": 0.5, "every": 16}, {"type": "laterality", "threshold": 0.2}]
HAR_CLASSES = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
EVIL = '<img src=x onerror="window.pwned=1">'


def _pipelines(data: Path, out: Path, browser: bool = False) -> list[dict[str, Any]]:
    """eeg-live: an EEG recording looping in real time (keeps the daemon up, ~10 decisions/s); eeg-burst: the same
    recording once as fast as possible with a budget it cannot hold (ends within a second: its counters are then
    fixed, so page, JSON and metrics can be compared exactly). For the browser also har-live (IMU activity
    decisions over a tight budget: live misses, a warning) and one that fails on a file named like markup."""
    edf = str(data / "eegmmidb_S001" / "S001R04.edf")
    ps: list[dict[str, Any]] = [
        {"name": "eeg-live", "budget_ms": 20,
         "source": {"type": "replay", "file": edf, "loop": True, "stream_name": "<b>eeg</b>"},
         "stages": EEG_STAGES, "sinks": [{"type": "jsonl", "path": str(out / "live.jsonl")}]},
        {"name": "eeg-burst", "budget_ms": 0.05, "policy": "mark_late",
         "source": {"type": "replay", "file": edf, "speed": 0},
         "stages": EEG_STAGES, "sinks": [{"type": "jsonl", "path": str(out / "burst.jsonl")}]}]
    if browser:
        spar = str(data / "spar_applewatch" / "spar_watch.npz")
        ps += [{"name": "har-live", "budget_ms": 0.3, "policy": "mark_late",
                "source": {"type": "replay", "file": spar, "speed": 4, "loop": True, "series": "0"},
                "stages": [{"type": "l2mu", "model": "har-spar-l2mu", "readout": "window", "window_s": 2, "every": 5},
                           {"type": "decide", "classes": HAR_CLASSES}],
                "sinks": [{"type": "jsonl", "path": str(out / "har.jsonl")}]},
               {"name": "broken", "budget_ms": 10, "source": {"type": "replay", "file": str(out / f"{EVIL}.csv")},
                "sinks": [{"type": "jsonl", "path": str(out / "broken.jsonl")}]}]
    return ps


async def _request(port: int, path: str, method: str = "GET", host: str = "127.0.0.1") -> tuple[str, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


async def _state(port: int) -> dict[str, Any]:
    head, body = await _request(port, "/api/state")
    assert head.startswith("HTTP/1.1 200") and "application/json" in head, head
    doc: dict[str, Any] = json.loads(body)
    return doc


async def _sse(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /api/events HTTP/1.1\r\nHost: localhost:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    head = (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)).decode()
    return r, w, head


async def _next_event(r: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """The next `data:` event of a stream (its id and the snapshot)."""
    ident = -1
    while True:
        line = (await asyncio.wait_for(r.readline(), 10)).decode()
        assert line, "event stream ended"
        if line.startswith("id: "):
            ident = int(line[4:])
        elif line.startswith("data: "):
            return ident, json.loads(line[6:])


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["pipelines"]}


async def _until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


async def test_state_is_the_pipelines_own_numbers(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(parse({"node": {"name": "webnode", "web_port": port, "drain_s": 2},
                      "pipeline": _pipelines(data_dir, tmp_path)}))
    task = asyncio.create_task(d.run())
    try:
        live, burst = d.pipelines
        await _until(lambda: burst.state == State.STOPPED and live.metrics.results >= 5)
        before = live.metrics.results
        doc = await _state(port)
        after = live.metrics.results
        page_head, page = await _request(port, "/")
        missing, _ = await _request(port, "/nope")
        posted, _ = await _request(port, "/api/state", method="POST")
        rebound, _ = await _request(port, "/api/state", host="evil.example")
        head_only, head_body = await _request(port, "/api/state", method="HEAD")

    finally:
        d.request_stop()
        await asyncio.wait_for(task, 15)

    assert doc["node"] == "webnode" and doc["mqtt"] is None and doc["uptime_s"] > 0
    ps = _by_name(doc)
    assert before <= ps["eeg-live"]["counters"]["results"] <= after
    assert ps["eeg-live"]["state"] == "running" and ps["eeg-live"]["stream"]["name"] == "<b>eeg</b>"

    b, m = ps["eeg-burst"], burst.metrics
    lines = [json.loads(x) for x in (tmp_path / "burst.jsonl").read_text().splitlines()]
    assert b["state"] == "stopped" and b["health"]["level"] == "idle"
    assert b["counters"] == {k: getattr(m, k) for k in web.SNAPSHOT_COUNTERS}
    assert b["counters"]["results"] == len(lines) == m.results > 100
    late = sum(1 for x in lines if x.get("late"))
    assert b["counters"]["deadline_misses"] == m.deadline_misses == late > 0
    assert b["budget_ms"] == 0.05 and b["policy"] == "mark_late" and b["source"] == "replay"
    assert [s["kind"] for s in b["stages"]] == ["bandpass", "select", "bandpower", "laterality"]
    assert b["classes"] == ["left", "rest", "right"] and b["stream"]["channels"] == 64
    assert b["latency_ms"]["p99"] == round(m.runtime.percentile(99) * 1e3, 4)
    assert b["latency_ms"]["max"] == round(m.runtime.max * 1e3, 4)
    hist = b["histogram"]
    assert sum(hist["counts"]) == hist["n"] == m.results and len(hist["edges_ms"]) == len(hist["counts"]) + 1
    assert hist["edges_ms"] == sorted(hist["edges_ms"]) and hist["edges_ms"][-1] >= b["latency_ms"]["max"]
    # the recent results are the last lines the sink wrote, newest first
    recent = b["recent"]
    assert len(recent) == web.RECENT_ROWS
    assert [(r["seq"], r["label"]) for r in recent] == [(x["seq"], x["label"]) for x in reversed(lines[-10:])]
    for r, x in zip(recent, reversed(lines[-10:]), strict=True):
        assert r["latency_ms"] <= x["latency_ms"]["runtime"] + 1e-3  # t_done comes before t_pub
        assert not r.get("late") or x.get("late")

    assert page_head.startswith("HTTP/1.1 200") and "text/html" in page_head
    script = re.search(rb"<script>(.*)</script>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1)).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page_head  # the policy lets exactly this script run
    assert missing.startswith("HTTP/1.1 404") and posted.startswith("HTTP/1.1 405")
    assert rebound.startswith("HTTP/1.1 421")
    assert head_only.startswith("HTTP/1.1 200") and head_body == b""


async def test_event_stream_is_live_bounded_and_ends_with_the_daemon(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(parse({"node": {"name": "n", "web_port": port, "drain_s": 1},
                      "pipeline": _pipelines(data_dir, tmp_path)[:1]}))
    task = asyncio.create_task(d.run())
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await _until(lambda: d.pipelines[0].metrics.results >= 1)
        r, w, head = await _sse(port)
        assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head
        events = [await _next_event(r) for _ in range(4)]  # the first at once, then one a second
        ids = [i for i, _ in events]
        results = [_by_name(e)["eeg-live"]["counters"]["results"] for _, e in events]
        times = [e["time"] for _, e in events]
        assert ids == sorted(set(ids)) and results == sorted(results) and results[1] < results[2] < results[3]
        assert all(0.8 < b - a < 1.3 for a, b in itertools.pairwise(times[1:])), times
        rate = _by_name(events[-1][1])["eeg-live"]["rates"]["results_per_s"]
        assert 7 < rate < 13  # 160 Hz / every 16
        streams.append((r, w))
        for _ in range(web.MAX_CLIENTS - 1):
            r2, w2, head = await _sse(port)
            assert head.startswith("HTTP/1.1 200")
            streams.append((r2, w2))
        _, w9, head9 = await _sse(port)
        assert head9.startswith("HTTP/1.1 503"), head9
        w9.close()
        doc = await _state(port)
        assert doc["web"]["clients"] == web.MAX_CLIENTS and doc["web"]["refused"] == 1
        for _, w_ in streams[1:]:  # seven leave: their places are free again at the next event
            w_.close()
        streams = streams[:1]
        async with asyncio.timeout(10):
            while (await _state(port))["web"]["clients"] > 1:
                await asyncio.sleep(0.2)
        r10, w10, head10 = await _sse(port)
        assert head10.startswith("HTTP/1.1 200")
        streams.append((r10, w10))
        # stopping the daemon ends the open streams (the server's close does not wait on them)
        d.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        for r_, _ in streams:
            async with asyncio.timeout(5):
                while await r_.read(65536):
                    pass
    finally:
        d.request_stop()
        for _, w_ in streams:
            w_.close()
        await asyncio.wait_for(task, 15)


async def test_a_client_that_does_not_read_is_dropped_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "DRAIN_TIMEOUT_S", 0.3)

    class Stuck:  # a peer whose socket never takes the data
        class transport:
            @staticmethod
            def get_write_buffer_size() -> int:
                return 100

        def is_closing(self) -> bool:
            return False

        writes = 0

        def write(self, data: bytes) -> None:
            Stuck.writes += 1

        async def drain(self) -> None:
            await asyncio.Event().wait()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    t0 = time.monotonic()
    assert await web.send(Stuck(), b"data: {}\n\n") is False  # type: ignore[arg-type]
    waited = time.monotonic() - t0
    t.cancel()
    assert waited >= 0.25 and ticks >= 15  # given up after DRAIN_TIMEOUT_S; the loop went on meanwhile
    assert Stuck.writes == 1
    monkeypatch.setattr(web, "MAX_BUFFERED", 50)
    assert await web.send(Stuck(), b"x") is False  # type: ignore[arg-type]
    assert Stuck.writes == 1  # too much already waiting: dropped without writing or waiting for it


async def test_health_says_why_in_words(data_dir: Path, tmp_path: Path) -> None:
    """A running pipeline publishing over a disconnected MQTT connection is a warning, with the reason; a failed
    one an error with its message; one that has not opened yet is starting (no network needed: nothing runs)."""
    live = _pipelines(data_dir, tmp_path)[0]
    d = Daemon(parse({"node": {"name": "h"}, "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"}, "pipeline": [
        {**live, "name": n, "sinks": [{"type": "mqtt" if n == "a" else "stdout"}]} for n in "abc"]}))
    a, b, _ = d.pipelines
    a.state = State.RUNNING
    b.state, b.error = State.FAILED, "source went away"
    doc = web.Snapshots(d).build()
    ps = _by_name(doc)
    assert doc["mqtt"]["connected"] is False and doc["mqtt"]["backlog"] == 0
    assert ps["a"]["health"] == {"level": "warn", "text": "warning",
                                 "reasons": ["MQTT disconnected: results wait in the offline buffer"]}
    assert ps["b"]["health"] == {"level": "error", "text": "failed", "reasons": ["source went away"]}
    assert ps["c"]["health"]["text"] == "starting" and ps["c"]["stream"] is None and ps["c"]["queue"] is None
    assert ps["c"]["histogram"] == {"edges_ms": [], "counts": [], "n": 0} and ps["c"]["recent"] == []
    json.dumps(doc, allow_nan=False)


def test_names_cannot_carry_markup() -> None:
    """Pipeline names are topic-safe, so only other strings (paths, stream names, errors, labels) can hold
    markup: the page sets them as text (checked in the browser below)."""
    with pytest.raises(ConfigError, match="name"):
        parse({"pipeline": [{"name": "<b>x</b>", "budget_ms": 5, "source": {"type": "replay", "file": "f.csv"},
                             "sinks": [{"type": "stdout"}]}]})


def _json(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as f:
        doc: dict[str, Any] = json.loads(f.read())
    return doc


def _count(text: str) -> int:
    digits = re.sub(r"[^0-9]", "", text)
    assert digits, text
    return int(digits)


@pytest.mark.browser
@pytest.mark.slow
def test_operator_page_in_chromium(data_dir: Path, tmp_path: Path) -> None:
    need(os.access(CHROMIUM, os.X_OK) or shutil.which("chromium") is not None,
         "Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (pip) is not installed")
        raise
    artefacts = Path(os.environ.get("SPIKELINE_ARTEFACTS", ROOT / "test-artefacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = tmp_path / "web.toml"
    # TOML by hand from the same pipelines (JSON strings are valid TOML basic strings)
    lines = ['[node]', 'name = "lab-pi"', f"web_port = {port}", "drain_s = 1", "metrics_interval_s = 1"]
    for p in _pipelines(data_dir, tmp_path, browser=True):
        lines += ["[[pipeline]]"] + [f"{k} = {json.dumps(v)}" for k, v in p.items() if not isinstance(v, (dict, list))]
        lines += ["[pipeline.source]"] + [f"{k} = {json.dumps(v)}" for k, v in p["source"].items()]
        for s in p.get("stages", []):
            lines += ["[[pipeline.stages]]"] + [f"{k} = {json.dumps(v)}" for k, v in s.items()]
        for s in p["sinks"]:
            lines += ["[[pipeline.sinks]]"] + [f"{k} = {json.dumps(v)}" for k, v in s.items()]
    cfg.write_text("\n".join(lines) + "\n")
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "spikeline", "run", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=20)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#conn[data-state=live]", timeout=10000)
            page.wait_for_selector("[data-pipeline=eeg-burst] [data-field=health]:has-text('stopped')", timeout=15000)
            live = page.locator("[data-pipeline=eeg-live]")
            first = _count(live.locator("[data-counter=results] dd").inner_text())
            stamp = page.locator("#updated").inner_text()
            page.wait_for_timeout(3000)
            second = _count(live.locator("[data-counter=results] dd").inner_text())
            assert second > first, (first, second)  # the numbers move without a reload
            assert page.locator("#updated").inner_text() != stamp

            doc = _json(port)
            ps = _by_name(doc)
            # a finished pipeline: page and JSON must agree exactly
            burst = page.locator("[data-pipeline=eeg-burst]")
            b = ps["eeg-burst"]
            assert _count(burst.locator("[data-field=deadline_misses]").inner_text()) == \
                b["counters"]["deadline_misses"] > 0
            assert _count(burst.locator("[data-counter=results] dd").inner_text()) == b["counters"]["results"]
            rows = burst.locator("[data-field=recent] tbody tr")
            shown = [(int(rows.nth(i).get_attribute("data-seq") or -1), rows.nth(i).locator("td").nth(1).inner_text())
                     for i in range(rows.count())]
            assert shown == [(r["seq"], r["label"]) for r in b["recent"]]
            # the live decisions are labels of the stream's classes, as in the JSON
            labels = {t.strip() for t in live.locator("[data-field=recent] td.lab").all_inner_texts()}
            assert labels and labels <= set(ps["eeg-live"]["classes"]) == {"left", "rest", "right"}
            har = {t.strip() for t in page.locator("[data-pipeline=har-live] td.lab").all_inner_texts()}
            assert har and har <= set(HAR_CLASSES)
            assert {r["label"] for r in ps["har-live"]["recent"]} <= set(HAR_CLASSES)
            # the histogram is drawn: bars and pixels
            for name in ("eeg-live", "eeg-burst"):
                canvas = page.locator(f"[data-pipeline={name}] canvas[data-field=histogram]")
                assert int(canvas.get_attribute("data-bars") or 0) >= 1
                blue, red = canvas.evaluate("""c => {
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let b = 0, r = 0;
                    for (let i = 0; i < d.length; i += 4) {
                      if (d[i + 3] > 200 && d[i + 2] - d[i] > 80) b++;
                      if (d[i + 3] > 200 && d[i] - d[i + 2] > 80) r++;
                    }
                    return [b, r]; }""")
                print(name, "bar pixels: blue", blue, "red", red)
                # under the budget the bars are blue, over it red; the tallest bar alone is ~128 px x 7 px (the
                # budget line and its label are red too: ~300 px)
                assert (blue if name == "eeg-live" else red - 400) > 600, (name, blue, red)
            # strings from the configuration and errors are text, never markup
            broken = page.locator("[data-pipeline=broken]")
            assert "Failed" in broken.locator("[data-field=health]").inner_text()
            assert EVIL in broken.locator("[data-field=error]").inner_text()
            assert "(<b>eeg</b>)" in live.locator(".chain").first.inner_text()
            assert page.locator("main img, main b").count() == 0
            assert page.evaluate("window.pwned") is None and not errors, errors
            # words, not only colours
            assert live.locator("[data-field=health]").inner_text().strip() in ("✓ OK", "⚠ Warning")
            page.screenshot(path=str(artefacts / "operator-page.png"), full_page=True)

            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 1  # drained; 1: the "broken" pipeline failed
            page.wait_for_selector("#conn[data-state=disconnected]", timeout=10000)
            assert page.locator("#banner").is_visible()
            assert "disconnected" in page.locator("#conn").inner_text()
            page.screenshot(path=str(artefacts / "operator-page-disconnected.png"))
            browser.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
