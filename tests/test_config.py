"""`spikeline check`: good configs pass, every problem of a bad one is reported with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikeline import config
from spikeline.cli import main
from spikeline.params import ConfigError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[node]
name = "lab-pi"

[mqtt]
url = "mqtt://127.0.0.1:1883"
qos = 1

[[pipeline]]
name = "eeg-mu"
budget_ms = 20

[pipeline.source]
type = "lsl"
stream_type = "EEG"

[[pipeline.stages]]
type = "bandpass"
low_hz = 8
high_hz = 30

[[pipeline.stages]]
type = "bandpower"
every = 25

[[pipeline.sinks]]
type = "mqtt"

[[pipeline]]
name = "eeg-raw"
budget_ms = 10
source = { type = "lsl", name = "amp" }
sinks = [{ type = "stdout" }]
"""

BAD = """
[node]
name = "lab pi"

[mqtt]
url = "http://broker"
qos = 3

[[pipeline]]
name = "ok"
budget_ms = 20
source = { type = "lsl" , name = "x"}
sinks = [{ type = "mqtt" }]

[[pipeline]]
name = "ok"
budget_ms = -5
source = { type = "lsl", nme = "amp" }
stages = [
  { type = "bandpass", low_hz = "abc", high_hz = 30 },
  { type = "bandpas", low_hz = 1 },
  { type = "bandpower", every = 0 },
]
sinks = [{ type = "mqtt", qos = true }]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spikeline.toml"
    p.write_text(text)
    return p


def test_good_config_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "OK (node 'lab-pi', 2 pipeline(s))" in out
    assert "eeg-mu: lsl -> bandpass -> bandpower -> mqtt  (budget 20 ms)" in out
    cfg = config.load(write(tmp_path, GOOD))
    bp = cfg.pipelines[0].stages[0].params
    assert bp == {"low_hz": 8.0, "high_hz": 30.0, "order": 4, "prime": True}
    assert cfg.mqtt is not None and (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.qos) == ("127.0.0.1", 1883, 1)


def test_every_problem_reported_with_its_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(write(tmp_path, BAD))]) == 2
    err = capsys.readouterr().err
    expected = [
        'node.name: "lab pi" is not usable in an MQTT topic level',
        'mqtt.url: expected "mqtt://host:port" or "mqtts://host:port", got "http://broker"',
        "mqtt.qos: must be <= 2, got 3",
        'pipeline[1].name: duplicate pipeline name "ok"',
        "pipeline[1].budget_ms: must be > 0, got -5",
        "pipeline[1].source.nme: unknown key (did you mean 'name'?)",
        'pipeline[1].stages[0].low_hz: expected a number, got "abc"',
        'pipeline[1].stages[1].type: unknown stage type "bandpas"; known: ',
        "pipeline[1].stages[2].every: must be >= 1, got 0",
        "pipeline[1].sinks[0].qos: expected an integer, got true",
    ]
    for line in expected:
        assert line in err, f"missing: {line}\n--- got:\n{err}"
    assert err.splitlines()[0].endswith(f"{len(err.splitlines()) - 1} problems")


@pytest.mark.parametrize(("text", "message"), [
    ("[[pipeline]\n", "not valid TOML"),
    ("", "pipeline: no pipeline defined"),
    ('[[pipeline]]\nname = "a"\nbudget_ms = 5\nsource = { type = "lsl", name = "x" }\n',
     "pipeline[0].sinks: at least one sink is required"),
    ('[[pipeline]]\nname = "a"\nsource = { type = "lsl", name = "x" }\nsinks = [{type="stdout"}]\n',
     "pipeline[0].budget_ms: required key is missing"),
    ('[[pipeline]]\nname = "a"\nbudget_ms = 5\nsource = { name = "x" }\nsinks = [{type="stdout"}]\n',
     "pipeline[0].source.type: required key is missing"),
    ('colour = "red"\n', "colour: unknown top-level key"),
    ('[[pipeline]]\nname = "a"\nbudget_ms = 5\nsource = { type = "lsl", name = "x" }\n'
     'stages = [{type = "bandpass", low_hz = 1, high_hz = 40, order = 99}]\nsinks = [{type="stdout"}]\n',
     "pipeline[0].stages[0].order: must be <= 12, got 99"),
])
def test_specific_problems(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    assert any(message in p for p in e.value.problems), e.value.problems


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_shipped_example_configs_are_valid() -> None:
    examples = sorted((ROOT / "deploy" / "examples").glob("*.toml"))
    assert examples, "deploy/examples has no example config"
    for path in examples:
        cfg = config.load(path)
        assert cfg.pipelines, path
