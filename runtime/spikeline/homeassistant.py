"""Home Assistant MQTT discovery (`[mqtt] homeassistant = true`, off by default).

With its first result, a pipeline's MQTT sink publishes (retained, QoS 1) one discovery config per entity under
`<prefix>/sensor/spikeline_<node>/<pipeline>_<what>/config`, and Home Assistant creates them as sensors of one
device per node ("spikeline <node>"), available while `spikeline/<node>/status` says `online`:
- a decision stream (results carry a `label`, e.g. after `decide`): one `enum` sensor whose state is the label
  (options: the classes), with seq, runtime latency and `late` as attributes;
- a value stream (class scores included): one `measurement` sensor per channel (the first MAX_VALUE_SENSORS), state `values[i]`, unit
  from the stream;
- always: a diagnostic counter of the pipeline's budget misses, from the metrics topic.
Gateway pipelines (one result topic per watch) are not announced: their devices come and go.

Home Assistant records every state change: a decision stream changes rarely, but a value stream at 50 Hz writes
50 rows a second to its recorder — exclude such sensors from the recorder or announce decision streams only.
"""

from __future__ import annotations

import json
from typing import Any

from . import __version__
from .chunk import StreamMeta

MAX_VALUE_SENSORS = 8


def discovery_messages(prefix: str, node: str, pipeline: str, meta: StreamMeta, decisions: bool, result_topic: str,
                       metrics_topic: str, status_topic: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every discovery config for this pipeline's result stream; `decisions`: its results
    carry a label."""
    device = {"identifiers": [f"spikeline_{node}"], "name": f"spikeline {node}", "manufacturer": "spikeline",
              "model": "spikeline daemon", "sw_version": __version__}
    common: dict[str, Any] = {
        "availability_topic": status_topic, "payload_available": "online", "payload_not_available": "offline",
        "device": device, "origin": {"name": "spikeline", "sw_version": __version__},
    }
    entities: list[tuple[str, dict[str, Any]]] = []
    if decisions and meta.classes:
        entities.append(("decision", {
            "name": f"{pipeline} decision", "state_topic": result_topic, "value_template": "{{ value_json.label }}",
            "device_class": "enum", "options": list(meta.classes), "icon": "mdi:brain",
            "json_attributes_topic": result_topic,
            # `values` is also a dict method in the template language: always index it as value_json['values']
            "json_attributes_template": "{{ {'seq': value_json.seq, 'latency_ms': value_json.latency_ms.runtime, "
                                        "'late': value_json.late | default(false)} | tojson }}",
        }))
    else:
        for i, ch in enumerate(meta.channels[:MAX_VALUE_SENSORS]):
            unit = meta.units[i] if i < len(meta.units) else ""
            entities.append((f"value_{i}", {
                "name": f"{pipeline} {ch}", "state_topic": result_topic,
                "value_template": f"{{{{ value_json['values'][{i}] }}}}", "state_class": "measurement",
                **({"unit_of_measurement": unit} if unit else {}),
            }))
    entities.append(("budget_misses", {
        "name": f"{pipeline} budget misses", "state_topic": metrics_topic,
        "value_template": "{{ value_json.counters.deadline_misses }}", "state_class": "total_increasing",
        "entity_category": "diagnostic", "icon": "mdi:timer-alert-outline",
    }))
    out = []
    for what, cfg in entities:
        uid = f"spikeline_{node}_{pipeline}_{what}"
        payload = {**cfg, "unique_id": uid, "object_id": uid, **common}
        out.append((f"{prefix}/sensor/spikeline_{node}/{pipeline}_{what}/config", json.dumps(payload).encode()))
    return out
