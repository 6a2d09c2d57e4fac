"""Home Assistant MQTT discovery against a real mosquitto: the retained configs point at the topics the results
really arrive on, and their templates (rendered with Jinja2, the template language Home Assistant uses) give the
label, the values and the miss counter of real messages. Off by default."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import pytest

from spikeline.config import parse
from spikeline.daemon import Daemon

pytestmark = [pytest.mark.broker, pytest.mark.data, pytest.mark.slow]


def _doc(url: str, spar: str, node: str, **mqtt: Any) -> dict[str, Any]:
    src = {"type": "replay", "file": spar, "speed": 20.0, "series": "0"}
    return {"node": {"name": node, "metrics_interval_s": 0.5}, "mqtt": {"url": url, **mqtt}, "pipeline": [
        {"name": "har", "budget_ms": 100, "policy": "mark_late", "source": src,
         "stages": [{"type": "l2mu", "model": "har-spar-l2mu", "readout": "window", "window_s": 2, "every": 5},
                    {"type": "decide", "classes": ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]}],
         "sinks": [{"type": "mqtt"}]},
        {"name": "imu", "budget_ms": 100, "policy": "mark_late", "source": src, "sinks": [{"type": "mqtt"}]}]}


async def _run(url: str, doc: dict[str, Any], seconds: float, topics: list[str]) -> dict[str, list[bytes]]:
    """Run a daemon for `seconds` while one client collects every message on `topics` (per topic, in order)."""
    host, port = url.removeprefix("mqtt://").split(":")
    got: dict[str, list[bytes]] = {}
    async with aiomqtt.Client(host, int(port), identifier=f"ha-{uuid.uuid4().hex[:6]}") as sub:
        for t in topics:
            await sub.subscribe(t, qos=1)
        d = Daemon(parse(doc))
        task = asyncio.create_task(d.run())

        async def read() -> None:
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                got.setdefault(str(msg.topic), []).append(msg.payload)

        reader = asyncio.create_task(read())
        await asyncio.sleep(seconds)
        d.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
        await asyncio.sleep(0.3)
        reader.cancel()
    return got


async def test_discovery_configs_render_the_published_results(mosquitto: Any, data_dir: Path) -> None:
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    got = await _run(mosquitto.url, _doc(mosquitto.url, spar, "hass", homeassistant=True,
                                         homeassistant_prefix="ha-test"),
                     4.0, ["ha-test/#", "spikeline/hass/#"])
    configs = {t: json.loads(p[0]) for t, p in got.items() if t.startswith("ha-test/")}
    assert set(configs) == {
        "ha-test/sensor/spikeline_hass/har_decision/config", "ha-test/sensor/spikeline_hass/har_budget_misses/config",
        "ha-test/sensor/spikeline_hass/imu_budget_misses/config",
        *(f"ha-test/sensor/spikeline_hass/imu_value_{i}/config" for i in range(6))}
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    env = jinja2.Environment(autoescape=False)

    def render(cfg: dict[str, Any], payload: bytes, key: str = "value_template") -> str:
        return env.from_string(cfg[key]).render(value_json=json.loads(payload))

    for c in configs.values():
        assert c["availability_topic"] == "spikeline/hass/status"
        assert got["spikeline/hass/status"][0] == c["payload_available"].encode()
        assert c["device"]["identifiers"] == ["spikeline_hass"]
        assert c["state_topic"] in got, f"no message on {c['state_topic']}"
    # decisions: the state is the label, one of the announced options, for every result published
    dec = configs["ha-test/sensor/spikeline_hass/har_decision/config"]
    results = got[dec["state_topic"]]
    assert len(results) >= 5
    info = json.loads(got["spikeline/hass/har/info"][0])
    assert dec["device_class"] == "enum" and dec["options"] == info["classes"]
    for payload in results:
        r = json.loads(payload)
        assert render(dec, payload) == r["label"] and r["label"] in dec["options"]
        attrs = json.loads(render(dec, payload, "json_attributes_template"))
        assert attrs == {"seq": r["seq"], "latency_ms": r["latency_ms"]["runtime"], "late": r.get("late", False)}
    # values: sensor i renders values[i] of each message, with the stream's unit
    imu_info = json.loads(got["spikeline/hass/imu/info"][0])
    imu = got["spikeline/hass/imu/result"]
    for i in range(6):
        c = configs[f"ha-test/sensor/spikeline_hass/imu_value_{i}/config"]
        assert c["name"] == f"imu {imu_info['channels'][i]}"
        assert c.get("unit_of_measurement", "") == imu_info["units"][i]
        for payload in imu[:50]:
            assert float(render(c, payload)) == pytest.approx(json.loads(payload)["values"][i], rel=1e-6)
    # the miss counter comes from the metrics topic
    misses = configs["ha-test/sensor/spikeline_hass/har_budget_misses/config"]
    last = got[misses["state_topic"]][-1]
    assert render(misses, last) == str(json.loads(last)["counters"]["deadline_misses"])
    for t, payloads in got.items():  # the retained configs are not repeated per result
        if t.startswith("ha-test/"):
            assert len(payloads) == 1, t


async def test_off_by_default(mosquitto: Any, data_dir: Path) -> None:
    spar = str(data_dir / "spar_applewatch" / "spar_watch.npz")
    got = await _run(mosquitto.url, _doc(mosquitto.url, spar, "quiet"), 1.5, ["homeassistant/#", "spikeline/quiet/#"])
    assert "spikeline/quiet/har/info" in got  # it ran and published
    assert not [t for t in got if t.startswith("homeassistant/")]


def test_bad_prefix_is_a_config_error() -> None:
    from spikeline.params import ConfigError

    with pytest.raises(ConfigError, match="homeassistant_prefix"):
        parse({"mqtt": {"url": "mqtt://127.0.0.1:1883", "homeassistant_prefix": "ha/#"},
               "pipeline": [{"name": "p", "budget_ms": 10, "source": {"type": "lsl", "name": "x"},
                             "sinks": [{"type": "mqtt"}]}]})
