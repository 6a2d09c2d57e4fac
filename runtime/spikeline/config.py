"""Pipeline configuration: a TOML file, validated completely before anything starts.

Every problem is reported at once, each with the key path of the bad value, e.g.
`pipeline[1].stages[0].low_hz: expected a number, got "abc"`.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mqtt import MQTT_PARAMS, MqttSettings, settings_from_params
from .params import ConfigError, Param, check_table
from .sinks import SINKS
from .sources import SOURCES
from .stages import STAGES

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _topic_safe(v: str) -> str | None:
    return None if _NAME.match(v) else (
        f'"{v}" is not usable in an MQTT topic level: use 1-64 letters, digits, "_" or "-"')


def default_node_name() -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
    return name or "node"


NODE_PARAMS = {
    "name": Param("str", "", check=lambda v: _topic_safe(v) if v else None,
                  help="this device's name in topics (default: the host name)"),
    "metrics_interval_s": Param("number", 5.0, min=0.1),
    "drain_s": Param("number", 3.0, min=0, help="how long SIGTERM may take to flush results"),
    "prometheus_port": Param("int", 0, min=0, max=65535, help="serve Prometheus metrics on this port (0: off)"),
    "prometheus_host": Param("str", "127.0.0.1", help="address for the Prometheus port (loopback by default)"),
    "web_port": Param("int", 0, min=0, max=65535, help="serve the live operator page on this port (0: off)"),
    "web_host": Param("str", "127.0.0.1", help="address for the operator page (loopback by default)"),
}
LSL_PARAMS = {"config": Param("str", "loopback",
                              help='"loopback" (this host only), "system" (liblsl default: LAN), or a file')}
PIPELINE_PARAMS = {
    "name": Param("str", check=_topic_safe),
    "budget_ms": Param("number", min=0, min_exclusive=True, help="latency budget for t_pub - t_recv"),
    "max_age_ms": Param("number", 0.0, min=0, help="also count results whose t_pub - t_sample exceeds this (0: off)"),
    "stale_ms": Param("number", -1.0, min=-1,
                      help="skip samples older than this on arrival (-1: budget + 250 ms; 0: off)"),
    "queue_s": Param("number", 1.0, min=0, min_exclusive=True, help="bounded queue size in seconds of signal"),
    "queue_samples": Param("int", 0, min=0, help="bounded queue size in samples (0: from queue_s)"),
    "policy": Param("str", "drop_oldest", choices=("drop_oldest", "mark_late", "degrade"),
                    help="when input can no longer make the budget: drop_oldest skips it to the newest (counted "
                         "skipped_late); mark_late computes it and publishes late results with late: true; degrade "
                         "also switches stages to cheaper tiers under load"),
    "degrade_at": Param("number", 0.5, min=0, max=1, min_exclusive=True,
                        help="degrade: one tier down when a chunk finishes later than this fraction of the budget "
                             "after its oldest sample arrived (or input was skipped as late)"),
    "recover_at": Param("number", 0.2, min=0, max=1, min_exclusive=True,
                        help="degrade: one tier up when every chunk has finished within this fraction of the "
                             "budget for recover_s"),
    "recover_s": Param("number", 2.0, min=0, help="degrade: how long the load must stay low before a tier up"),
    "switch_min_s": Param("number", 0.25, min=0, help="degrade: at least this long between two tier switches"),
    "on_error": Param("str", "stop", choices=("stop", "restart"),
                      help="a stage raises: stop the pipeline (reported; the others go on), or restart its stages "
                           "(state reset, the failing chunk dropped and counted) up to max_restarts per minute"),
    "max_restarts": Param("int", 5, min=0, help="on_error = restart: restarts allowed per 60 s before it stops"),
}


@dataclass
class ComponentConfig:
    kind: str
    name: str
    params: dict[str, Any]
    path: str  # where it is in the file, for errors raised when it is built
    # policy = "degrade": the params of each cheaper tier (1, 2, ...), the stage's own params with the tier's
    # overrides (`tiers = [{threshold = 0.2}, {model = "..."}]` in the stage's table)
    tiers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PipelineConfig:
    name: str
    budget_ms: float
    max_age_ms: float
    stale_ms: float
    queue_s: float
    queue_samples: int
    policy: str
    degrade_at: float
    recover_at: float
    recover_s: float
    switch_min_s: float
    on_error: str
    max_restarts: int
    source: ComponentConfig
    stages: list[ComponentConfig]
    sinks: list[ComponentConfig]
    path: str

    @property
    def budget_s(self) -> float:
        return self.budget_ms / 1e3

    @property
    def stale_s(self) -> float:
        return (self.budget_ms + 250.0) / 1e3 if self.stale_ms < 0 else self.stale_ms / 1e3


@dataclass
class Config:
    node: str
    metrics_interval_s: float
    drain_s: float
    lsl_config: str
    mqtt: MqttSettings | None
    pipelines: list[PipelineConfig] = field(default_factory=list)
    origin: str = "<memory>"
    prometheus_port: int = 0
    prometheus_host: str = "127.0.0.1"
    web_port: int = 0
    web_host: str = "127.0.0.1"


def _component(table: object, registry: dict[str, Any], what: str, path: str,
               problems: list[str], named: bool = True) -> ComponentConfig | None:
    """A typed table: `type` picks the component, `name` (stages and sinks) labels it, the rest are params."""
    if not isinstance(table, dict):
        problems.append(f"{path}: expected a table, got {type(table).__name__}")
        return None
    kind = table.get("type")
    if kind is None:
        problems.append(f"{path}.type: required key is missing (one of: {', '.join(sorted(registry))})")
        return None
    if kind not in registry:
        problems.append(f'{path}.type: unknown {what} type "{kind}"; known: {", ".join(sorted(registry))}')
        return None
    name = table.get("name", kind) if named else kind
    if not isinstance(name, str) or _topic_safe(name):
        problems.append(f"{path}.name: expected a short name (letters, digits, _ or -), got {name!r}")
        name = kind
    params = check_table(table, registry[kind].params, path, problems,
                         ignore=("type", "name", "tiers") if named else ("type",))
    tiers: list[dict[str, Any]] = []
    raw = table.get("tiers") if named else None
    if raw is not None:
        if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) and t for t in raw):
            problems.append(f"{path}.tiers: expected a non-empty array of tables of parameter overrides, "
                            "e.g. tiers = [{ threshold = 0.2 }]")
        else:
            base = {k: v for k, v in table.items() if k not in ("type", "name", "tiers")}
            for j, t in enumerate(raw):
                bad = [k for k in t if k in ("type", "name", "tiers")]
                if bad:
                    problems.append(f"{path}.tiers[{j}].{bad[0]}: a tier overrides parameters only")
                    continue
                tiers.append(check_table({**base, **t}, registry[kind].params, f"{path}.tiers[{j}]", problems))
    return ComponentConfig(kind, name, params, path, tiers)


def parse(doc: dict[str, Any], origin: str = "<memory>") -> Config:
    """Validate a parsed TOML document. Raises ConfigError listing every problem."""
    problems: list[str] = []
    known = {"node", "lsl", "mqtt", "pipeline"}
    for key in doc:
        if key not in known:
            problems.append(f"{key}: unknown top-level key; known: {', '.join(sorted(known))}")
    node = check_table(doc.get("node", {}), NODE_PARAMS, "node", problems)
    lsl = check_table(doc.get("lsl", {}), LSL_PARAMS, "lsl", problems)
    mqtt_p = check_table(doc.get("mqtt", {}), MQTT_PARAMS, "mqtt", problems)

    pipelines: list[PipelineConfig] = []
    raw = doc.get("pipeline")
    if raw is None:
        problems.append("pipeline: no pipeline defined (add a [[pipeline]] table)")
        raw = []
    elif not isinstance(raw, list):
        problems.append("pipeline: expected an array of tables ([[pipeline]])")
        raw = []
    seen: set[str] = set()
    for i, pt in enumerate(raw):
        path = f"pipeline[{i}]"
        if not isinstance(pt, dict):
            problems.append(f"{path}: expected a table")
            continue
        p = check_table(pt, PIPELINE_PARAMS, path, problems, ignore=("source", "stages", "sinks"))
        if "name" in p:
            if p["name"] in seen:
                problems.append(f'{path}.name: duplicate pipeline name "{p["name"]}"')
            seen.add(p["name"])
        source = None
        if "source" not in pt:
            problems.append(f"{path}.source: required table is missing ([pipeline.source])")
        else:
            source = _component(pt["source"], SOURCES, "source", f"{path}.source", problems, named=False)
        stages_raw = pt.get("stages", [])
        if not isinstance(stages_raw, list):
            problems.append(f"{path}.stages: expected an array of tables ([[pipeline.stages]])")
            stages_raw = []
        stages = [_component(s, STAGES, "stage", f"{path}.stages[{j}]", problems) for j, s in enumerate(stages_raw)]
        sinks_raw = pt.get("sinks")
        if not sinks_raw:
            problems.append(f"{path}.sinks: at least one sink is required ([[pipeline.sinks]], e.g. type = \"mqtt\")")
            sinks_raw = []
        elif not isinstance(sinks_raw, list):
            problems.append(f"{path}.sinks: expected an array of tables ([[pipeline.sinks]])")
            sinks_raw = []
        sinks = [_component(s, SINKS, "sink", f"{path}.sinks[{j}]", problems) for j, s in enumerate(sinks_raw)]
        names = [s.name for s in stages if s is not None]
        for dup in {n for n in names if names.count(n) > 1}:
            problems.append(f'{path}.stages: two stages are named "{dup}"; give them distinct name = "..."')
        tiered = [s for s in stages if s is not None and s.tiers]
        if p.get("policy") == "degrade" and not tiered:
            problems.append(f'{path}.policy: "degrade" needs cheaper tiers: give a stage tiers = [{{...}}] (e.g. a '
                            "higher delta threshold, or another model)")
        elif tiered and p.get("policy") != "degrade":
            problems.append(f'{tiered[0].path}.tiers: tiers are used by policy = "degrade" only')
        elif len({len(s.tiers) for s in tiered}) > 1:
            problems.append(f"{path}.stages: every stage with tiers must list the same number of tiers "
                            f"({', '.join(f'{s.name}: {len(s.tiers)}' for s in tiered)})")
        if source is None or any(s is None for s in stages) or any(s is None for s in sinks) or len(p) < len(PIPELINE_PARAMS):
            continue
        pipelines.append(PipelineConfig(
            source=source, stages=[s for s in stages if s], sinks=[s for s in sinks if s], path=path, **p))

    mqtt = None
    if any(s.kind == "mqtt" for pc in pipelines for s in pc.sinks) or "mqtt" in doc:
        # the password (password_env / password_file) is read and the TLS files loaded here
        mqtt = settings_from_params(mqtt_p, problems)
    if problems:
        raise ConfigError(problems)
    return Config(node=node["name"] or default_node_name(), metrics_interval_s=node["metrics_interval_s"],
                  drain_s=node["drain_s"], lsl_config=lsl["config"], mqtt=mqtt, pipelines=pipelines,
                  origin=origin, prometheus_port=node["prometheus_port"], prometheus_host=node["prometheus_host"],
                  web_port=node["web_port"], web_host=node["web_host"])


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file. Raises ConfigError (with the TOML syntax error, if any)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start}): a TOML file is UTF-8"]) from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from e
    return parse(doc, origin=str(p))
