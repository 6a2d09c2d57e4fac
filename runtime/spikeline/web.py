"""The live operator page: a small HTTP server in the daemon's event loop (asyncio streams, no dependency).

`[node] web_port = 8080` (0: off) serves on `web_host` (127.0.0.1 by default):

- `GET /`            the page (HTML, CSS and plain JS in one document, nothing fetched from elsewhere)
- `GET /api/state`   a JSON snapshot: the node, MQTT, and per pipeline its state, health, rates, counters, queue,
                     runtime latency percentiles and histogram, and the last results
- `GET /api/events`  Server-Sent Events: the same snapshot every `INTERVAL_S`, built once per tick for every client

At most `MAX_CLIENTS` event streams at once (more get 503, counted). A client that does not read is dropped when
a write has not drained within `DRAIN_TIMEOUT_S` or its buffer exceeds `MAX_BUFFERED`: it never blocks the loop.
Bound to loopback, requests whose Host header names another host are refused (a DNS-rebinding guard).
A snapshot of a few pipelines takes well under a millisecond (tests/test_web.py measures it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import math
import time
import weakref
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from .httpd import read_request
from .metrics import _UPPER, LatencyHistogram
from .prometheus import COUNTERS

log = logging.getLogger("spikeline.web")

INTERVAL_S = 1.0  # one event per second on /api/events
MAX_CLIENTS = 8  # concurrent event streams
DRAIN_TIMEOUT_S = 2.0  # a client whose socket has not taken an event within this is dropped
MAX_BUFFERED = 1 << 20  # bytes waiting for one client before it is dropped
RECENT_ROWS = 10  # results listed per pipeline
VALUES_SHOWN = 6  # values shown per result row (the rest is counted)
_GROUP = 4  # display histogram: LatencyHistogram's ≈4.4 % buckets summed 4 at a time (≈19 %, 4 per octave)

# every counter Prometheus exports, and age_misses (PipelineMetrics attribute -> shown as is)
SNAPSHOT_COUNTERS = (*COUNTERS, "age_misses")
DROP_COUNTERS = ("dropped_queue", "dropped_stale", "skipped_late", "non_finite", "dropped_error", "dropped_rate")


class Snapshots:
    """Builds the /api/state document from a daemon's live objects. Rates are counted between snapshots: each
    pipeline keeps a few marks (time, counters, histogram counts), and a rate is taken against the newest mark
    at least `INTERVAL_S` old (the oldest while younger)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.seq = 0
        self.web: dict[str, int] = {"clients": 0, "refused": 0, "dropped_slow": 0, "events": 0}
        self._marks: weakref.WeakKeyDictionary[Any, deque[tuple[float, tuple[int, ...], npt.NDArray[np.int64]]]] \
            = weakref.WeakKeyDictionary()

    def build(self) -> dict[str, Any]:
        d = self.daemon
        now = time.monotonic()
        self.seq += 1
        pub = d.publisher
        mqtt: dict[str, Any] | None = None
        if pub is not None:
            s = pub.stats
            mqtt = {"connected": s.connected, "protocol": s.protocol, "published": s.published,
                    "backlog": pub.backlog, "dropped_offline": s.dropped_offline, "connects": s.connects,
                    "connect_failures": s.connect_failures, "last_error": s.last_error}
        return {
            "v": 1, "seq": self.seq, "time": time.time(), "node": d.cfg.node,
            "uptime_s": round(now - self.t0, 1), "status": d.status_line(), "mqtt": mqtt,
            "reloads": {"applied": d.reloads, "rejected": d.reloads_rejected},
            "web": dict(self.web),
            "pipelines": [self._pipeline(p, now, mqtt) for p in d.pipelines],
        }

    def _pipeline(self, p: Any, now: float, mqtt: dict[str, Any] | None) -> dict[str, Any]:
        m = p.metrics
        counters = {k: int(getattr(m, k)) for k in SNAPSHOT_COUNTERS}
        dropped = sum(counters[k] for k in DROP_COUNTERS)
        h: LatencyHistogram = m.runtime
        mark = (counters["samples_in"], counters["results"], counters["deadline_misses"], dropped)
        ref = self._mark(p, now, mark, h.counts)
        rates: dict[str, Any] = {"window_s": None, "samples_per_s": None, "results_per_s": None,
                                 "misses": 0, "dropped": 0}
        window = LatencyHistogram()
        if ref is not None:
            t_ref, c_ref, counts_ref = ref
            dt = now - t_ref
            rates = {"window_s": round(dt, 2), "samples_per_s": round((mark[0] - c_ref[0]) / dt, 1),
                     "results_per_s": round((mark[1] - c_ref[1]) / dt, 2),
                     "misses": mark[2] - c_ref[2], "dropped": mark[3] - c_ref[3]}
            window.counts = h.counts - counts_ref
            window.count = mark[1] - c_ref[1]
            window.max = h.max
        cfg = p.cfg
        uses_mqtt = any(k.kind == "mqtt" for k in cfg.sinks)
        meta = p.meta_in
        q = p.queue
        return {
            "name": p.name, "state": p.state.value, "error": p.error,
            "health": _health(p.state.value, p.error, rates, uses_mqtt and mqtt is not None and not mqtt["connected"]),
            "source": cfg.source.kind,
            "stream": None if meta is None else {"name": meta.name, "type": meta.type, "channels": meta.n_channels,
                                                 "rate_hz": meta.nominal_rate, "events": meta.is_events},
            "stages": [{"name": s.name, "kind": s.kind} for s in cfg.stages],
            "sinks": [k.kind for k in cfg.sinks],
            "classes": list(p.meta_out.classes) if p.meta_out is not None else [],
            "budget_ms": cfg.budget_ms, "policy": cfg.policy, "tier": m.tier, "tiers": len(p.tiers),
            "rates": rates, "counters": counters, "dropped": dropped,
            "queue": None if q is None else {"samples": len(q), "capacity": q.capacity, "high_water": q.high_water},
            "latency_ms": _summary(h), "latency_ms_window": _summary(window),
            "histogram": histogram(h),
            "recent": recent_rows(p.recent, RECENT_ROWS),
        }

    def _mark(self, p: Any, now: float, mark: tuple[int, ...], counts: npt.NDArray[np.int64]
              ) -> tuple[float, tuple[int, ...], npt.NDArray[np.int64]] | None:
        """The reference mark for this pipeline's rates (None on its first snapshot); records a new one every
        half interval."""
        marks = self._marks.get(p)
        if marks is None:
            marks = self._marks[p] = deque(maxlen=8)
        ref = None
        for t, c, k in marks:  # oldest first: keep the newest one old enough
            if ref is None or now - t >= INTERVAL_S * 0.95:
                ref = (t, c, k)
        if not marks or now - marks[-1][0] >= INTERVAL_S / 2:
            marks.append((now, mark, counts.copy()))
        return ref if ref is not None and now > ref[0] else None


def _health(state: str, error: str, rates: dict[str, Any], mqtt_down: bool) -> dict[str, Any]:
    """ok | warn | error | idle, with the reasons in words (the page shows them: not only a colour)."""
    if state == "failed":
        return {"level": "error", "text": "failed", "reasons": [error] if error else []}
    if state in ("created", "opening"):
        return {"level": "idle", "text": "starting", "reasons": []}
    if state in ("stopped", "draining"):
        return {"level": "idle", "text": state, "reasons": []}
    reasons = []
    w = rates["window_s"]
    during = f"in the last {w:.1f} s" if w else "recently"
    if n := rates["misses"]:
        reasons.append(f"{n} budget miss{'' if n == 1 else 'es'} {during}")
    if n := rates["dropped"]:
        reasons.append(f"{n} sample{'' if n == 1 else 's'} dropped {during}")
    if mqtt_down:
        reasons.append("MQTT disconnected: results wait in the offline buffer")
    return {"level": "warn" if reasons else "ok", "text": "warning" if reasons else "ok", "reasons": reasons}


def _summary(h: LatencyHistogram) -> dict[str, float | None]:
    if h.count <= 0:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": h.count, "p50": round(h.percentile(50) * 1e3, 4), "p99": round(h.percentile(99) * 1e3, 4),
            "max": round(h.max * 1e3, 4)}


def histogram(h: LatencyHistogram) -> dict[str, Any]:
    """The runtime latency histogram for drawing: LatencyHistogram's buckets summed `_GROUP` at a time, from the
    first to the last populated group. `edges_ms` has one more entry than `counts`."""
    grouped = h.counts.reshape(-1, _GROUP).sum(axis=1)
    nz = np.flatnonzero(grouped)
    if nz.size == 0:
        return {"edges_ms": [], "counts": [], "n": 0}
    a, b = int(nz[0]), int(nz[-1]) + 1
    upper = _UPPER[_GROUP - 1::_GROUP]  # upper edge of each group, seconds
    lower = upper[a - 1] if a > 0 else _UPPER[0] / 2.0  # group 0 also holds everything below 1 µs
    edges = [lower, *upper[a:b].tolist()]
    return {"edges_ms": [round(e * 1e3, 5) for e in edges], "counts": grouped[a:b].tolist(), "n": h.count}


def _num(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def recent_rows(chunks: Any, n: int) -> list[dict[str, Any]]:
    """The last `n` result rows of the pipeline's recent chunks, newest first: seq (as in the result message),
    label (decision streams) or the first values, the device (gateway), `latency_ms` = t_done - t_recv (the
    chunk does not keep t_pub, which the sink stamps a moment later), age and `late` when that alone already
    exceeds the budget."""
    rows: list[dict[str, Any]] = []
    for chunk in reversed(chunks):
        k = len(chunk)
        if k == 0:
            continue
        take = min(k, n - len(rows))
        idx = range(k - 1, k - 1 - take, -1)
        seqs = chunk.seqs()
        classes = chunk.meta.classes
        table = chunk.meta.devices if chunk.streams is not None else None
        for i in idx:
            t_recv = float(chunk.t_recv[i])
            lat = chunk.t_done - t_recv
            row: dict[str, Any] = {"seq": int(seqs[i]), "latency_ms": _num(lat * 1e3),
                                   "age_ms": _num((chunk.t_done - float(chunk.t[i])) * 1e3)}
            if chunk.label is not None:
                row["label"] = classes[int(chunk.label[i])]
            else:
                vals = chunk.data[i, :VALUES_SHOWN].tolist()
                row["values"] = [_num(v) for v in vals]
                if chunk.data.shape[1] > VALUES_SHOWN:
                    row["more"] = int(chunk.data.shape[1] - VALUES_SHOWN)
            if table is not None and chunk.streams is not None:
                row["device"] = table.name(int(chunk.streams[i]))
            if chunk.tier >= 0:
                row["tier"] = chunk.tier
            if chunk.budget_s > 0 and lat > chunk.budget_s:
                row["late"] = True
            rows.append(row)
        if len(rows) >= n:
            break
    return rows


# --- HTTP ---------------------------------------------------------------------------------------------------

def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_ok(bound_loopback: bool, host_header: str | None) -> bool:
    """Bound to loopback: only requests addressed to a loopback name (a page elsewhere that rebinds its DNS name
    to 127.0.0.1 cannot read the snapshot)."""
    if not bound_loopback or host_header is None:
        return True
    h = host_header.strip()
    if h.startswith("["):  # [::1]:8080
        return _loopback(h[: h.find("]") + 1])
    return _loopback(h.rsplit(":", 1)[0] if h.count(":") == 1 else h)


def _response(status: str, body: bytes, ctype: str, head_only: bool = False, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}Connection: close\r\n\r\n")
    return head.encode() + (b"" if head_only else body)


class _Server:
    def __init__(self, daemon: Any, bound_loopback: bool) -> None:
        self.snaps = Snapshots(daemon)
        self.bound_loopback = bound_loopback
        self.clients: set[asyncio.StreamWriter] = set()
        self.latest = b""
        self._tick = asyncio.Event()
        self._closing = False
        self.server: asyncio.Server | None = None
        self.task: asyncio.Task[None] | None = None

    def state_json(self) -> bytes:
        return json.dumps(self.snaps.build(), separators=(",", ":"), allow_nan=False).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            if request is None:
                return
            method, path, headers = request
            host = headers.get("host")
            head_only = method == "HEAD"
            if method not in ("GET", "HEAD"):
                writer.write(_response("405 Method Not Allowed", b"", "text/plain", extra="Allow: GET, HEAD\r\n"))
            elif not _host_ok(self.bound_loopback, host):
                writer.write(_response("421 Misdirected Request", b"unknown host\n", "text/plain"))
            elif path in ("/", "/index.html"):
                writer.write(_response("200 OK", PAGE_BYTES, "text/html; charset=utf-8", head_only, CSP))
            elif path == "/favicon.ico":
                writer.write(_response("204 No Content", b"", "text/plain", head_only))
            elif path == "/api/state":
                try:
                    body = self.state_json()
                except Exception:
                    log.exception("web: snapshot failed")
                    writer.write(_response("500 Internal Server Error", b"snapshot failed\n", "text/plain"))
                else:
                    writer.write(_response("200 OK", body, "application/json", head_only))
            elif path == "/api/events":
                if head_only:
                    writer.write(_response("200 OK", b"", "text/event-stream"))
                else:
                    await self._events(writer)
                    return
            else:
                writer.write(_response("404 Not Found", b"not found\n", "text/plain", head_only))
            await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
        except (TimeoutError, ConnectionError, ValueError, UnicodeError, asyncio.IncompleteReadError) as e:
            log.debug("web: request dropped: %s", e)
        except asyncio.CancelledError:
            # the loop is ending with this connection open (an event stream): asyncio's streams would log the
            # cancelled handler as an unhandled error; nobody awaits this task, so it simply ends here
            pass
        finally:
            writer.close()

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        web = self.snaps.web
        if len(self.clients) >= MAX_CLIENTS or self._closing:
            web["refused"] += 1
            writer.write(_response("503 Service Unavailable", b"too many event streams\n", "text/plain",
                                   extra="Retry-After: 5\r\n"))
            await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
            return
        self.clients.add(writer)
        web["clients"] = len(self.clients)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                         b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 2000\n\n")
            data = self._event(self.state_json())  # the first one at once: the page fills in immediately
            while not self._closing:
                if not await send(writer, data):
                    web["dropped_slow"] += 1
                    log.info("web: event stream client dropped: it did not keep up")
                    return
                tick = self._tick
                await tick.wait()
                data = self.latest
        finally:
            self.clients.discard(writer)
            web["clients"] = len(self.clients)

    def _event(self, body: bytes) -> bytes:
        self.snaps.web["events"] += 1
        return b"id: %d\ndata: %s\n\n" % (self.snaps.seq, body)

    async def run(self) -> None:
        """Once per interval, while event streams are open: one snapshot for all of them. Ends (closing the
        streams) when the server stops serving."""
        assert self.server is not None
        next_t = 0.0
        try:
            while self.server.is_serving():
                now = time.monotonic()
                if now >= next_t:  # a steady beat: a new client gets its first event at once, the next on it
                    next_t = max(next_t + INTERVAL_S, now)
                    if self.clients:
                        try:
                            self.latest = self._event(self.state_json())
                        except Exception:  # a bug here must not end the streams (nor touch the pipelines)
                            log.exception("web: snapshot failed")
                        else:
                            self._wake()
                await asyncio.sleep(min(0.1, INTERVAL_S))
        finally:
            self._closing = True
            self._wake()
            for w in list(self.clients):
                w.close()

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()


async def send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write one event; False when the client is gone or too slow (more than MAX_BUFFERED waiting, or the write
    did not drain within DRAIN_TIMEOUT_S)."""
    if writer.is_closing():
        return False
    transport = writer.transport
    if transport.get_write_buffer_size() > MAX_BUFFERED:
        return False
    try:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        return False
    return True


async def serve(host: str, port: int, daemon: Any) -> asyncio.Server:
    """Start serving the operator page for `daemon` (closing the server also ends the event streams)."""
    srv = _Server(daemon, _loopback(host))
    server = await asyncio.start_server(srv.handle, host, port)
    srv.server = server
    srv.task = asyncio.create_task(srv.run(), name="web-events")
    server._spikeline_web = srv  # type: ignore[attr-defined]  # keeps the task referenced while serving
    shown = f"[{host}]" if ":" in host else host
    log.info("operator page on http://%s:%d/", shown, port)
    return server


# --- the page -----------------------------------------------------------------------------------------------

_CSS = """
:root{--bg:#f3f5f8;--card:#fff;--ink:#17202b;--mute:#5b6675;--line:#d9dee6;--ok:#1a7f37;--okbg:#dcf5e3;
--warn:#8a5a00;--warnbg:#fff1cc;--err:#b42318;--errbg:#fde4e1;--idle:#475467;--idlebg:#e8ebf0;--bar:#3467c4;
--late:#d4382c;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
@media (prefers-color-scheme:dark){:root{--bg:#0f141a;--card:#18202a;--ink:#e6ebf1;--mute:#9aa6b5;--line:#2c3744;
--okbg:#12361f;--ok:#6fdc8c;--warnbg:#3b2e0a;--warn:#f5c451;--errbg:#431512;--err:#ff8a80;--idlebg:#27303c;
--idle:#c0c8d2;--bar:#6a9bf4;--late:#ff6b5e}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
header.top{display:flex;flex-wrap:wrap;gap:8px 20px;align-items:center;padding:12px 20px;background:var(--card);
border-bottom:1px solid var(--line)}
h1{font-size:18px;margin:0;font-weight:650}h1 .node{font-weight:500;color:var(--mute)}
.pill{display:inline-flex;align-items:center;gap:6px;padding:2px 10px;border-radius:999px;font-weight:600;
font-size:13px;border:1px solid transparent}
.ok{background:var(--okbg);color:var(--ok)}.warn{background:var(--warnbg);color:var(--warn)}
.error{background:var(--errbg);color:var(--err)}.idle{background:var(--idlebg);color:var(--idle)}
.dot{width:9px;height:9px;border-radius:50%;background:currentColor;display:inline-block}
.spacer{flex:1}.status{flex-basis:100%;font-size:13px}.mute{color:var(--mute)}.num{font-variant-numeric:tabular-nums}
#conn[data-state=live] .dot{animation:pulse 2s infinite}@keyframes pulse{50%{opacity:.35}}
#banner{margin:12px 20px 0;padding:10px 14px;border-radius:8px;background:var(--errbg);color:var(--err);
font-weight:600;border:1px solid var(--err)}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px;padding:16px 20px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;min-width:0}
.card.is-error{border-color:var(--err)}.card.is-warn{border-color:#e0b34a}
.card h2{font-size:17px;margin:0;word-break:break-all}
.head{display:flex;gap:10px;align-items:center;justify-content:space-between}
.chain{margin:4px 0 0;color:var(--mute);font-size:13px;word-break:break-word}
.reasons{margin:8px 0 0;padding:6px 10px;border-radius:6px;font-size:13px}
.msg{margin:8px 0 0;padding:8px 10px;border-radius:6px;font:12px/1.4 var(--mono);white-space:pre-wrap;
word-break:break-word}
.tiles{display:grid;grid-template-columns:repeat(7,1fr);gap:6px;margin:12px 0 6px}
.tile{border:1px solid var(--line);border-radius:8px;padding:6px 8px;min-width:0}
.tile .k{font-size:11px;color:var(--mute);text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.tile .v{font-size:18px;font-weight:650;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile.bad .v{color:var(--late)}
.row{display:grid;grid-template-columns:1.35fr 1fr;gap:14px;align-items:start}
figure{margin:6px 0 0}canvas{width:100%;height:170px;display:block}
figcaption{font-size:12px;color:var(--mute)}
h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute);margin:10px 0 4px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{padding:2px 6px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-weight:600;color:var(--mute);font-size:12px}td.r,th.r{text-align:right}
.recent td.lab{font-weight:650;max-width:180px;overflow:hidden;text-overflow:ellipsis}
.recent td.vals{font:12px var(--mono);max-width:200px;overflow:hidden;text-overflow:ellipsis}
.late{color:var(--late);font-weight:700}
.counters{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:2px 12px;font-size:12px;margin:0}
.counters div{display:flex;justify-content:space-between;gap:6px;border-bottom:1px dotted var(--line)}
.counters dt{color:var(--mute);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.counters dd{margin:0}
.counters .nz dd{color:var(--late);font-weight:700}
.queue{display:flex;align-items:center;gap:8px;font-size:12px;color:var(--mute);margin-top:6px}
.queue .track{flex:1;height:8px;background:var(--idlebg);border-radius:4px;overflow:hidden}
.queue .fill{height:100%;background:var(--bar);width:0}
footer{padding:0 20px 16px;color:var(--mute);font-size:12px}
@media (max-width:700px){main{grid-template-columns:1fr}.tiles{grid-template-columns:repeat(4,1fr)}
.row{grid-template-columns:1fr}}
"""

_HTML_BODY = """
<header class="top">
 <h1>spikeline <span class="node">· node <span id="node">…</span></span></h1>
 <span id="mqtt" class="pill idle" title="the node's MQTT connection">MQTT …</span>
 <span class="mute">up <span id="uptime" class="num">…</span></span>
 <span class="spacer"></span>
 <span id="conn" class="pill idle" data-state="connecting" role="status" aria-live="polite"><span class="dot"></span>
  <span id="conn-text">connecting…</span></span>
 <span class="mute">last update <time id="updated" class="num">never</time></span>
 <div id="status" class="mute status"></div>
</header>
<div id="banner" role="alert" hidden>Disconnected from the daemon: the numbers below are stale. Reconnecting…</div>
<main id="cards" aria-live="off"></main>
<footer>Live from <code>/api/events</code> (one update per second); the same snapshot as JSON at
 <a href="api/state">/api/state</a>. Latency = t_pub &minus; t_recv; recent results: t_done &minus; t_recv.</footer>
"""

_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const cards = new Map();
let last = 0, es = null;
const fmt = (x, d) => x === null || x === undefined ? "\u2013" : Number(x).toFixed(d);
const int = (x) => x === null || x === undefined ? "\u2013" : Number(x).toLocaleString("en-US");
const ms = (x) => x === null || x === undefined ? "\u2013" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1)
  : x >= 1 ? x.toFixed(2) : x.toFixed(3);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}
function uptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : m ? `${m}m ${Math.floor(s % 60)}s` : `${s.toFixed(0)} s`;
}
const TILES = [["samples/s", "samples_per_s", "samples in per second, last interval"],
  ["results/s", "results_per_s", "results per second, last interval"],
  ["p50 ms", "p50", "runtime latency median since start"], ["p99 ms", "p99", "runtime latency p99 since start"],
  ["max ms", "max", "largest runtime latency since start"],
  ["misses", "deadline_misses", "budget misses: results later than the budget, since start"],
  ["dropped", "dropped", "samples dropped or skipped, since start"]];
function makeCard(name) {
  const c = {};
  c.root = el("section", {cls: "card", "data-pipeline": name, "aria-label": "pipeline " + name});
  c.badge = el("span", {cls: "pill idle", "data-field": "health"});
  c.root.append(el("div", {cls: "head"}, el("h2", {text: name}), c.badge));
  c.chain = el("p", {cls: "chain"}); c.cfg = el("p", {cls: "chain"});
  c.reasons = el("p", {cls: "reasons warn", "data-field": "reasons", hidden: ""});
  c.error = el("p", {cls: "msg error", "data-field": "error", hidden: ""});
  c.tiles = {};
  const tiles = el("div", {cls: "tiles"});
  for (const [label, key, title] of TILES) {
    const v = el("div", {cls: "v num", "data-field": key, text: "\u2013"});
    c.tiles[key] = v;
    tiles.append(el("div", {cls: "tile", title}, el("div", {cls: "k", text: label}), v));
  }
  c.canvas = el("canvas", {"data-field": "histogram", role: "img"});
  c.caption = el("figcaption");
  c.qfill = el("div", {cls: "fill"}); c.qtext = el("span", {cls: "num"});
  const left = el("div", {}, el("figure", {}, c.canvas, c.caption),
    el("div", {cls: "queue"}, el("span", {text: "queue"}), el("div", {cls: "track"}, c.qfill), c.qtext));
  c.recent = el("tbody");
  c.recentHead = el("th", {text: "decision"});
  const right = el("div", {}, el("h3", {text: "Recent results"}),
    el("table", {cls: "recent", "data-field": "recent"}, el("thead", {}, el("tr", {},
      el("th", {cls: "r", text: "seq"}), c.recentHead,
      el("th", {cls: "r", text: "latency ms", title: "t_done \u2212 t_recv, milliseconds"}), el("th", {text: ""}))),
    c.recent));
  c.counters = el("dl", {cls: "counters", "data-field": "counters"});
  c.root.append(c.chain, c.cfg, c.reasons, c.error, tiles, el("div", {cls: "row"}, left, right),
    el("h3", {text: "Counters since start"}), c.counters);
  return c;
}
function update(c, p, mqtt) {
  const h = p.health;
  c.root.className = "card" + (h.level === "error" ? " is-error" : h.level === "warn" ? " is-warn" : "");
  c.badge.className = "pill " + h.level;
  c.badge.textContent = {ok: "✓ OK", warn: "⚠ Warning", error: "✕ Failed", idle: "● " + h.text}[h.level];
  c.badge.title = "state: " + p.state;
  const st = p.stream;
  c.chain.textContent = [p.source + (st ? ` (${st.name})` : ""), ...p.stages.map((s) =>
    s.name === s.kind ? s.kind : `${s.name}:${s.kind}`)].join(" → ") + " ⇒ " + p.sinks.join(", ");
  c.cfg.textContent = `state ${p.state} · budget ${p.budget_ms} ms · policy ${p.policy}` +
    (p.tiers > 1 ? ` · tier ${p.tier} of ${p.tiers - 1}` : "") +
    (st ? ` · ${st.events ? "events" : st.channels + " ch"} @ ${st.rate_hz} Hz` : "");
  c.reasons.hidden = !h.reasons.length || h.level === "error";
  c.reasons.textContent = h.reasons.join(" · ");
  c.error.hidden = !p.error; c.error.textContent = p.error;
  const lat = p.latency_ms, cn = p.counters;
  const vals = {samples_per_s: fmt(p.rates.samples_per_s, 1), results_per_s: fmt(p.rates.results_per_s, 1),
    p50: ms(lat.p50), p99: ms(lat.p99), max: ms(lat.max), deadline_misses: int(cn.deadline_misses),
    dropped: int(p.dropped)};
  for (const [k, v] of Object.entries(vals)) c.tiles[k].textContent = v;
  c.tiles.deadline_misses.parentNode.classList.toggle("bad", cn.deadline_misses > 0);
  c.tiles.dropped.parentNode.classList.toggle("bad", p.dropped > 0);
  c.tiles.p99.parentNode.classList.toggle("bad", lat.p99 !== null && lat.p99 > p.budget_ms);
  const q = p.queue;
  c.qfill.style.width = q ? Math.min(100, 100 * q.samples / Math.max(1, q.capacity)) + "%" : "0";
  c.qtext.textContent = q ? `${int(q.samples)} / ${int(q.capacity)} (peak ${int(q.high_water)})` : "\u2013";
  const hist = p.histogram, wl = p.latency_ms_window;
  c.caption.textContent = `runtime latency t_pub \u2212 t_recv, ${int(hist.n)} results (ms, log scale); ` +
    `red line: budget ${p.budget_ms} ms` + (wl.n ? `; last ${fmt(p.rates.window_s, 1)} s: p50 ${ms(wl.p50)}, ` +
    `p99 ${ms(wl.p99)} ms` : "");
  drawHist(c.canvas, hist, p.budget_ms, lat.p99);
  c.canvas.setAttribute("aria-label", `latency histogram: p50 ${ms(lat.p50)} ms, p99 ${ms(lat.p99)} ms, ` +
    `budget ${p.budget_ms} ms`);
  c.recentHead.textContent = p.classes.length ? "decision" : "values";
  c.recent.replaceChildren(...p.recent.map((r) => {
    const what = r.label !== undefined ? r.label
      : r.values.map((v) => v === null ? "NaN" : Number(v).toPrecision(3)).join(", ") + (r.more ? ` … +${r.more}` : "");
    return el("tr", {"data-seq": r.seq}, el("td", {cls: "r num", text: r.seq}),
      el("td", {cls: r.label !== undefined ? "lab" : "vals", text: (r.device ? r.device + ": " : "") + what,
        title: what}),
      el("td", {cls: "r num", text: ms(r.latency_ms)}),
      el("td", {cls: r.late ? "late" : "", text: r.late ? "late" : ""}));
  }));
  if (!p.recent.length) c.recent.replaceChildren(el("tr", {}, el("td", {colspan: "4", cls: "mute",
    text: "no results yet"})));
  const drops = new Set(["dropped_queue", "dropped_stale", "skipped_late", "non_finite", "dropped_error",
    "dropped_rate", "deadline_misses", "age_misses", "stage_errors", "rejected_input", "source_gaps"]);
  c.counters.replaceChildren(...Object.entries(cn).map(([k, v]) => el("div",
    {cls: drops.has(k) && v > 0 ? "nz" : "", "data-counter": k},
    el("dt", {text: k.replace(/_/g, " ")}), el("dd", {cls: "num", text: int(v)}))));
}
function drawHist(cv, hist, budget, p99) {
  const dpr = window.devicePixelRatio || 1, w = cv.clientWidth || 300, hgt = cv.clientHeight || 170;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(hgt * dpr)) {
    cv.width = Math.round(w * dpr); cv.height = Math.round(hgt * dpr);
  }
  const g = cv.getContext("2d"), css = getComputedStyle(document.documentElement);
  const col = (n) => css.getPropertyValue(n).trim();
  g.setTransform(dpr, 0, 0, dpr, 0, 0); g.clearRect(0, 0, w, hgt);
  const L = 38, R = 10, T = 20, B = 22, pw = w - L - R, ph = hgt - T - B;
  g.font = "11px system-ui,sans-serif"; g.fillStyle = col("--mute"); g.strokeStyle = col("--line");
  g.lineWidth = 1;
  g.beginPath(); g.moveTo(L, T + ph + 0.5); g.lineTo(L + pw, T + ph + 0.5); g.stroke();
  const e = hist.edges_ms, n = hist.counts;
  cv.dataset.bars = String(n.filter((x) => x > 0).length);
  if (!n.length) { g.fillText("no results yet", L + 8, T + ph / 2); return; }
  let lo = Math.log10(Math.min(e[0], budget / 2)), hi = Math.log10(Math.max(e[e.length - 1], budget) * 1.25);
  if (hi - lo < 1) lo = hi - 1;
  const X = (v) => L + pw * (Math.log10(v) - lo) / (hi - lo);
  const top = Math.max(...n), Y = (v) => T + ph - ph * v / top;
  let lastX = -1e9;
  for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** d, x = X(v);
      if (x < L - 0.5 || x > L + pw + 0.5) continue;
      g.strokeStyle = col("--line"); g.beginPath(); g.moveTo(x + 0.5, T); g.lineTo(x + 0.5, T + ph); g.stroke();
      if (x - lastX < 30 || x > L + pw - 14) continue;
      lastX = x;
      g.fillStyle = col("--mute"); g.textAlign = "center";
      g.fillText(v >= 1000 ? v / 1000 + " s" : String(+v.toPrecision(1)), x, T + ph + 15);
    }
  }
  g.textAlign = "right"; g.fillText("ms", L + pw + R, T + ph + 15);
  g.textAlign = "right"; g.fillText(int(top), L - 6, T + 8); g.fillText("0", L - 6, T + ph);
  for (let i = 0; i < n.length; i++) {
    if (!n[i]) continue;
    const x0 = X(e[i]), x1 = X(e[i + 1]);
    g.fillStyle = e[i] >= budget ? col("--late") : col("--bar");
    g.fillRect(x0 + 0.5, Y(n[i]), Math.max(1.5, x1 - x0 - 1), T + ph - Y(n[i]));
  }
  const bx = Math.round(X(budget)) + 0.5;
  g.strokeStyle = col("--late"); g.lineWidth = 2; g.setLineDash([5, 3]);
  g.beginPath(); g.moveTo(bx, T - 6); g.lineTo(bx, T + ph); g.stroke(); g.setLineDash([]);
  g.fillStyle = col("--late"); g.font = "600 11px system-ui,sans-serif";
  g.textAlign = bx > L + pw - 90 ? "right" : "left";
  g.fillText(`budget ${budget} ms`, bx + (g.textAlign === "right" ? -5 : 5), T - 7);
  if (p99 !== null) {
    const px = Math.round(X(p99)) + 0.5;
    g.strokeStyle = col("--ink"); g.lineWidth = 1; g.setLineDash([2, 2]);
    g.beginPath(); g.moveTo(px, T + 12); g.lineTo(px, T + ph); g.stroke(); g.setLineDash([]);
    g.font = "11px system-ui,sans-serif";
    const right = px > L + pw - 30 || (px > bx - 30 && px < bx), tx = px + (right ? -24 : 3);
    g.fillStyle = col("--card"); g.fillRect(tx, T + 11, 21, 13);
    g.fillStyle = col("--ink"); g.textAlign = "left"; g.fillText("p99", tx + 1, T + 21);
  }
}
function render(s) {
  last = Date.now();
  setConn(true);
  $("node").textContent = s.node;
  $("uptime").textContent = uptime(s.uptime_s);
  $("status").textContent = s.status;
  const m = $("mqtt");
  if (!s.mqtt) { m.className = "pill idle"; m.textContent = "MQTT not configured"; }
  else if (s.mqtt.connected) {
    m.className = "pill ok"; m.textContent = `✓ MQTT ${s.mqtt.protocol} connected · ${int(s.mqtt.published)} sent`;
  } else {
    m.className = "pill warn";
    m.textContent = `⚠ MQTT disconnected · ${int(s.mqtt.backlog)} buffered` +
      (s.mqtt.last_error ? ` · ${s.mqtt.last_error}` : "");
  }
  $("updated").textContent = new Date(s.time * 1000).toLocaleTimeString("en-GB");
  $("updated").dateTime = new Date(s.time * 1000).toISOString();
  const seen = new Set();
  for (const p of s.pipelines) {
    seen.add(p.name);
    let c = cards.get(p.name);
    if (!c) { c = makeCard(p.name); cards.set(p.name, c); $("cards").append(c.root); }
    update(c, p, s.mqtt);
  }
  for (const [name, c] of cards) if (!seen.has(name)) { c.root.remove(); cards.delete(name); }
  if (!s.pipelines.length && !$("cards").children.length)
    $("cards").replaceChildren(el("p", {cls: "mute", text: "no pipelines"}));
  document.title = `spikeline · ${s.node}`;
}
function setConn(live) {
  const c = $("conn"), st = live ? "live" : "disconnected";
  if (c.dataset.state === st) return;
  c.dataset.state = st;
  c.className = "pill " + (live ? "ok" : "error");
  $("conn-text").textContent = live ? "live" : "disconnected";
  $("banner").hidden = live;
}
function connect() {
  es = new EventSource("api/events");
  es.onmessage = (ev) => render(JSON.parse(ev.data));
  es.onerror = () => { if (es.readyState !== EventSource.OPEN) setConn(false); };
}
setInterval(() => { if (last && Date.now() - last > 3500) setConn(false); }, 500);
connect();
"""

PAGE = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<meta name=\"color-scheme\" content=\"light dark\"><title>spikeline · operator</title>"
        f"<style>{_CSS}</style></head><body>{_HTML_BODY}<script>{_JS}</script></body></html>\n")
PAGE_BYTES = PAGE.encode()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# only this page's own script and style run; it talks to this server only
CSP = (f"Content-Security-Policy: default-src 'none'; script-src {_sha256(_JS)}; style-src {_sha256(_CSS)}; "
       "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
       "Referrer-Policy: no-referrer\r\n")
