"""Fleet scale-out without clustering of our own (docs/fleet.md): every device runs spikeline and a local
mosquitto that bridges spikeline/<node>/# upstream (deploy/mosquitto/bridge.conf); consumers share the load with
an MQTT shared subscription ($share/<group>/spikeline/+/+/result) on the upstream broker.

Three real mosquittos on loopback: U (upstream) and one edge broker per node, each edge bridged to U with the
shipped bridge.conf (node name and address filled in). Two spikeline daemons, separate processes, nodes
fleet-a and fleet-b, each with two pipelines replaying a CSV written by the test (replay source, paced at
500 Hz; no stages, so one result per sample: a known number),
publish QoS 1 to their own edge broker; every result also goes to a JSON-lines file, the ledger of what each
daemon produced, independent of MQTT. Three consumers (MQTT 5 and 3.1.1) in one shared-subscription group on U,
and one plain subscriber on U as a witness.

- The union over the consumers of (node, pipeline, seq) is exactly the ledger: none lost, none duplicated
  (neither within a consumer nor across consumers); every consumer got a share; both nodes arrived.
- Per consumer, each (node, pipeline)'s seqs increase (MQTT orders the messages of one topic from one publisher
  for each subscription; a shared group as a whole is not ordered, a consumer's part of it is).
- The witness got every result once, in order per (node, pipeline).

With the upstream broker restarted while the daemons publish (persistence on, bridges cleansession false, the
consumers and the witness persistent sessions that reconnect), QoS 1 is at least once: the ledger still arrives
in full at the group and at the witness; duplicates and out-of-order arrivals are counted and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from conftest import ROOT, Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]

NODES = ("fleet-a", "fleet-b")
PIPELINES = ("p1", "p2")
GROUP = "fleet"
SHARED = f"$share/{GROUP}/spikeline/+/+/result"
Key = tuple[str, str, int]  # (node, pipeline, seq)


def report(msg: str) -> None:
    print(f"[fleet] {msg}", file=sys.stderr)


def bridge_section(node: str, upstream_port: int) -> list[str]:
    """deploy/mosquitto/bridge.conf's bridge (from `connection` on, comments dropped) for `node`, pointed at the
    upstream broker on loopback. Its global options are the test broker's own (conftest.Mosquitto)."""
    lines = [ln.strip() for ln in (ROOT / "deploy" / "mosquitto" / "bridge.conf").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("connection "))
    section = [ln.replace("lab-pi", node) for ln in lines[start:]]
    assert f"topic spikeline/{node}/# out 1" in section and "cleansession false" in section
    return [f"address 127.0.0.1:{upstream_port}" if ln.startswith("address ") else ln for ln in section]


def start_fleet(factory: Any, upstream_persistence: bool = False) -> tuple[Mosquitto, dict[str, Mosquitto]]:
    up = factory(persistence=upstream_persistence).start()
    edges = {n: factory(extra=bridge_section(n, up.port)).start() for n in NODES}
    return up, edges


def write_config(tmp: Path, node: str, edge: Mosquitto, recording: Path, rate_hz: float) -> Path:
    pipes = "".join(f"""
[[pipeline]]
name = "{p}"
budget_ms = 1000
policy = "mark_late"
[pipeline.source]
type = "replay"
file = "{recording}"
rate_hz = {rate_hz}
speed = 1
[[pipeline.sinks]]
type = "mqtt"
expiry_s = 0
[[pipeline.sinks]]
type = "jsonl"
path = "{tmp / f"{node}-{p}.jsonl"}"
""" for p in PIPELINES)
    cfg = tmp / f"{node}.toml"
    cfg.write_text(f"""
[node]
name = "{node}"
metrics_interval_s = 1
drain_s = 10

[mqtt]
url = "{edge.url}"
qos = 1
offline_buffer = 100000
reconnect_min_s = 0.05
reconnect_max_s = 0.5
""" + pipes)
    return cfg


def recording(tmp: Path, rows: int) -> Path:
    path = tmp / "rec.csv"
    path.write_text("a,b\n" + "".join(f"{k % 13},{k % 7}\n" for k in range(rows)))
    return path


def ledger(tmp: Path) -> list[Key]:
    out: list[Key] = []
    for node in NODES:
        for p in PIPELINES:
            for line in (tmp / f"{node}-{p}.jsonl").read_text().splitlines():
                r = json.loads(line)
                out.append((r["node"], r["pipeline"], r["seq"]))
    return out


def key(payload: Any) -> Key:
    r = json.loads(payload)
    return r["node"], r["pipeline"], r["seq"]


async def run_daemons(tmp: Path, edges: dict[str, Mosquitto], rec: Path, rate_hz: float,
                      during: Any = None) -> float:
    """Both daemons as separate processes until their recordings end; `during()` runs meanwhile."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    procs = []
    try:
        for n in NODES:
            with (tmp / f"{n}.log").open("wb") as log:
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "spikeline", "run", str(write_config(tmp, n, edges[n], rec, rate_hz)),
                    stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env, cwd=ROOT))
        if during is not None:
            await during()
        rcs = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for n, rc in zip(NODES, rcs, strict=True):
        assert rc == 0, (tmp / f"{n}.log").read_text()[-3000:]
    return time.monotonic() - t0


async def bridges_up(up: Mosquitto, edges: dict[str, Mosquitto], timeout: float = 15.0) -> None:
    """Wait until each bridge reports itself connected upstream ($SYS/broker/connection/<remote_clientid>/state
    = 1, retained: bridge.conf's notifications) and a probe published on each edge broker arrives upstream."""
    pending = {*(f"probe {n}" for n in NODES), *(f"state {n}" for n in NODES)}
    async with contextlib.AsyncExitStack() as stack:
        probe = await stack.enter_async_context(aiomqtt.Client("127.0.0.1", up.port, identifier="probe-up"))
        await probe.subscribe("spikeline/+/probe", qos=1)
        await probe.subscribe("$SYS/broker/connection/+/state", qos=1)
        pubs = {n: await stack.enter_async_context(aiomqtt.Client("127.0.0.1", e.port, identifier=f"probe-{n}"))
                for n, e in edges.items()}

        async def send() -> None:
            while any(p.startswith("probe") for p in pending):
                for n in NODES:
                    if f"probe {n}" in pending:
                        await pubs[n].publish(f"spikeline/{n}/probe", b"1", qos=1)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(timeout):
                async for m in probe.messages:
                    levels = str(m.topic).split("/")
                    if levels[0] == "spikeline":
                        pending.discard(f"probe {levels[1]}")
                    elif m.payload == b"1":
                        pending.discard(f"state {levels[3].removeprefix('spikeline-')}")
                    if not pending:
                        break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


async def consume(client: aiomqtt.Client, into: list[Key]) -> None:
    async for m in client.messages:
        into.append(key(m.payload))


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def steps_back(keys: list[Key]) -> int:
    """How often a (node, pipeline)'s seq is not above the previous one of the same (node, pipeline)."""
    last: dict[tuple[str, str], int] = {}
    back = 0
    for node, pipe, seq in keys:
        if seq <= last.get((node, pipe), -1):
            back += 1
        last[(node, pipe)] = max(seq, last.get((node, pipe), -1))
    return back


def ordered(keys: list[Key]) -> bool:
    return steps_back(keys) == 0


@pytest.mark.timeout(120)
async def test_two_bridged_nodes_one_shared_subscription_group_none_lost_none_duplicated(
        tmp_path: Path, mosquitto_factory: Any) -> None:
    rows, rate = 1500, 500.0  # 3 s of recording, 1500 results per pipeline
    up, edges = start_fleet(mosquitto_factory)
    rec = recording(tmp_path, rows)
    got: list[list[Key]] = [[], [], []]
    witness: list[Key] = []
    t0 = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(len(got)):
            c = aiomqtt.Client("127.0.0.1", up.port, identifier=f"consumer-{i}-{uuid.uuid4().hex[:4]}",
                               protocol=MQTTProtocolVersion.MQTTv5 if i % 2 == 0 else MQTTProtocolVersion.MQTTv311,
                               max_queued_incoming_messages=100_000)
            await stack.enter_async_context(c)
            await c.subscribe(SHARED, qos=1)
            clients.append(c)
        w = await stack.enter_async_context(aiomqtt.Client("127.0.0.1", up.port, identifier="witness",
                                                           max_queued_incoming_messages=100_000))
        await w.subscribe("spikeline/+/+/result", qos=1)
        await bridges_up(up, edges)
        t_bridges = time.monotonic() - t0
        tasks = [asyncio.create_task(consume(c, into)) for c, into in zip(clients, got, strict=True)]
        tasks.append(asyncio.create_task(consume(w, witness)))
        try:
            run_s = await run_daemons(tmp_path, edges, rec, rate)
            want = ledger(tmp_path)
            await wait_until(lambda: sum(map(len, got)) >= len(want) and len(witness) >= len(want), 20,
                             "every result at the consumers and the witness")
            await asyncio.sleep(0.5)  # room for a duplicate to show up
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    union = [k for g in got for k in g]
    per_node = Counter(n for n, _, _ in want)
    report(f"3 brokers (U + 2 bridged edges), bridges up {t_bridges:.2f} s; 2 daemons ran {run_s:.2f} s; total "
           f"{time.monotonic() - t0:.2f} s")
    report(f"ledger {len(want)} results ({dict(per_node)}); consumers {[len(g) for g in got]} "
           f"(sum {len(union)}, distinct {len(set(union))}); witness {len(witness)}")
    report("per consumer and node: " + "; ".join(
        f"c{i}: " + ", ".join(f"{n} {sum(1 for k in g if k[0] == n)}" for n in NODES) for i, g in enumerate(got)))
    # the results came through the bridges: each edge connected to U as a bridge, clean session false
    for n in NODES:
        assert f"as spikeline-{n} (p2, c0," in up.log.read_text()
    # the ledger is what each daemon produced: every sample of the recording, on both pipelines, on both nodes
    assert sorted(want) == sorted((n, p, s) for n in NODES for p in PIPELINES for s in range(rows))
    assert len(set(want)) == len(want)
    # none lost, none duplicated: the group as a whole got the ledger exactly once
    assert len(union) == len(set(union)), [k for k, c in Counter(union).items() if c > 1][:10]
    assert set(union) == set(want), (sorted(set(want) - set(union))[:10], sorted(set(union) - set(want))[:10])
    # the load is shared, and both nodes reach the group
    assert all(len(g) > 0 for g in got), [len(g) for g in got]
    assert {n for n, _, _ in union} == set(NODES)
    # per consumer, per (node, pipeline): in order
    for i, g in enumerate(got):
        assert ordered(g), f"consumer {i} got a (node, pipeline) out of order"
    # the witness (a plain subscription) got everything once, in order per (node, pipeline)
    assert sorted(witness) == sorted(want) and ordered(witness)


async def keep_consuming(port: int, ident: str, topic: str, into: list[Key], sessions: list[int], i: int) -> None:
    """A persistent session (MQTT 3.1.1, clean_session false) that reconnects whenever the broker goes away: what
    the broker queued for it meanwhile arrives on reconnect."""
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=False,
                                      max_queued_incoming_messages=100_000) as c:
                await c.subscribe(topic, qos=1)
                sessions[i] += 1
                async for m in c.messages:
                    into.append(key(m.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_upstream_broker_restarted_while_publishing_at_least_once(tmp_path: Path, mosquitto_factory: Any) -> None:
    rows, rate = 3000, 500.0  # 6 s of recording
    up, edges = start_fleet(mosquitto_factory, upstream_persistence=True)
    rec = recording(tmp_path, rows)
    n_consumers = 3
    got: list[list[Key]] = [[] for _ in range(n_consumers + 1)]  # the group's consumers, then the witness
    sessions = [0] * (n_consumers + 1)
    idents = [f"consumer-{i}" for i in range(n_consumers)] + ["witness"]
    topics = [SHARED] * n_consumers + ["spikeline/+/+/result"]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(keep_consuming(up.port, idents[i], topics[i], got[i], sessions, i))
             for i in range(n_consumers + 1)]
    witness = got[-1]
    down: dict[str, float] = {}

    async def restart_upstream() -> None:
        await wait_until(lambda: len(witness) >= 1000, 20, "results flowing")
        t = time.monotonic()
        await asyncio.to_thread(up.stop)  # SIGTERM: mosquitto saves its sessions and queues
        down["at_results"] = len(witness)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(up.start)
        down["down_s"] = time.monotonic() - t

    try:
        await wait_until(lambda: all(sessions), 10, "the consumers' sessions")
        await bridges_up(up, edges)
        run_s = await run_daemons(tmp_path, edges, rec, rate, restart_upstream)
        want = set(ledger(tmp_path))
        await wait_until(lambda: want <= set(witness) and want <= {k for g in got[:-1] for k in g}, 40,
                         "every result, after the bridges reconnect")
        await asyncio.sleep(0.5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    union = [k for g in got[:-1] for k in g]
    dup_group = len(union) - len(set(union))
    dup_witness = len(witness) - len(set(witness))
    reconnects = {n: e.log.read_text().count("Connecting bridge (step 1)") for n, e in edges.items()}
    disorder = [steps_back(g) for g in got]
    report(f"upstream stopped after {down['at_results']} results at the witness, back {down['down_s']:.2f} s "
           f"later; daemons ran {run_s:.2f} s, total {time.monotonic() - t0:.2f} s; bridge connects {reconnects}")
    report(f"ledger {len(want)}; group {[len(g) for g in got[:-1]]} (distinct {len(set(union))}, duplicates "
           f"{dup_group}); witness {len(witness)} (duplicates {dup_witness}); consumer sessions {sessions}; seq steps back per consumer "
           f"(witness last) {disorder}")
    assert len(want) == len(NODES) * len(PIPELINES) * rows
    # at least once: none lost, at the group and at the witness; duplicates are allowed and counted above
    assert set(union) == want and set(witness) == want
    assert all(n >= 2 for n in sessions)  # every consumer really was cut off and came back
    assert all(n >= 2 for n in reconnects.values()), reconnects  # and so were the bridges
