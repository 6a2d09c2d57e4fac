"""Model files: round trip, and a clear error for every way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spikeline.modelfile import FORMAT, ModelError, load, save


def make(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return save(tmp_path / "m", "delta_gru", {"w": rng.standard_normal((6, 4)).astype(np.float32),
                                             "b": np.zeros(4, np.float32)},
                {"classes": ["a", "b"], "lmu_transpose": True})


def test_round_trip(tmp_path: Path) -> None:
    p = make(tmp_path)
    m = load(p, kind="delta_gru")
    assert m.kind == "delta_gru" and m.meta == {"classes": ["a", "b"], "lmu_transpose": True}
    assert m.array("w", (6, None)).shape == (6, 4)
    assert json.loads(p.read_text())["format"] == FORMAT
    assert load(p.with_suffix(".npz")).arrays.keys() == {"w", "b"}


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.with_suffix(".npz").write_bytes(p.with_suffix(".npz").read_bytes()[:-7] + b"garbage"),
     "has sha256"),
    (lambda p: p.with_suffix(".npz").unlink(), "weights file"),
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text(json.dumps({"format": "other/9"})), "is not 'spikeline.model/1'"),
    (lambda p: p.write_text(p.read_text().replace('"kind": "delta_gru"', '"kind": "l2mu"')),
     "is a 'l2mu' model, expected 'delta_gru'"),
    (lambda p: p.write_text(p.read_text().replace('"shape": [\n        6,', '"shape": [\n        7,')),
     "array 'w' is float32[6, 4], listed as float32[7, 4]"),
    (lambda p: p.write_text(p.read_text().replace('"weights": "m.npz"', '"weights": "../m.npz"')),
     "must be a file name beside it"),
])
def test_damaged_files_give_clear_errors(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    p = make(tmp_path)
    damage(p)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load(p, kind="delta_gru")


def test_array_checks(tmp_path: Path) -> None:
    m = load(make(tmp_path))
    with pytest.raises(ModelError, match=r"no array 'x' \(has: b, w\)"):
        m.array("x")
    with pytest.raises(ModelError, match=r"has shape \(6, 4\), expected \(6, 5\)"):
        m.array("w", (6, 5))
    with pytest.raises(ModelError, match="is float32, expected float64"):
        m.array("w", dtype=np.float64)
    with pytest.raises(ModelError, match="cannot read model"):
        load(tmp_path / "absent.json")
