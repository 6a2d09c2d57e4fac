"""Model registry: ids resolve to verified files; every shipped model's manifest entry matches its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from spikeline import registry
from spikeline.modelfile import ModelError, load, save


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "models"
    (d / "tiny").mkdir(parents=True)
    monkeypatch.setenv("SPIKELINE_MODELS", str(d))
    return d


def test_an_id_resolves_to_its_file_and_loads(models_dir: Path) -> None:
    path = save(models_dir / "tiny" / "model.json", "delta_dense", {"weight": np.eye(2, dtype=np.float32)})
    (models_dir / "tiny" / "CARD.md").write_text("# tiny\n")
    e = registry.register(models_dir, "tiny-dense", path, "delta_dense", summary="identity",
                          card=models_dir / "tiny" / "CARD.md", meta={"classes": ["a", "b"]})
    assert e.file == models_dir / "tiny" / "model.json" and e.card is not None and e.card.is_file()
    assert registry.resolve("tiny-dense") == path
    assert registry.entries()["tiny-dense"].meta == {"classes": ["a", "b"]}
    assert load("tiny-dense", kind="delta_dense").arrays["weight"].shape == (2, 2)
    with pytest.raises(ModelError, match="expected 'l2mu'"):
        load("tiny-dense", kind="l2mu")


def test_unknown_ids_and_tampered_files_are_refused(models_dir: Path) -> None:
    path = save(models_dir / "tiny" / "model.json", "delta_dense", {"weight": np.eye(2, dtype=np.float32)})
    registry.register(models_dir, "tiny-dense", path, "delta_dense")
    with pytest.raises(ModelError, match=r"no model file or registered model id 'nope' \(known ids: .*tiny-dense"):
        registry.resolve("nope")
    path.write_text(path.read_text().replace('"meta": {}', '"meta": {"x": 1}'))
    with pytest.raises(ModelError, match="the manifest says"):
        registry.resolve("tiny-dense")
    (models_dir / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ModelError, match="manifest"):
        registry.resolve("tiny-dense")


def test_paths_are_not_looked_up(models_dir: Path) -> None:
    assert registry.resolve("some/where/model.json") == Path("some/where/model.json")
    assert registry.resolve("model.onnx") == Path("model.onnx")


def test_every_shipped_model_matches_its_manifest_entry() -> None:
    entries = registry.read_manifest(ROOT / "models")
    for mid, e in entries.items():
        assert e.file.is_file(), mid
        assert registry.sha256_file(e.file) == e.sha256, f"{mid}: re-run its training tool or registry.register"
        assert e.card is not None and e.card.is_file(), f"{mid} has no model card"
        if e.file.suffix == ".json":
            assert load(e.file).kind == e.kind == json.loads(e.file.read_text())["kind"]


def test_cli_lists_models_and_shows_a_card(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spikeline.cli import main

    path = save(models_dir / "tiny" / "model.json", "delta_dense", {"weight": np.eye(2, dtype=np.float32)})
    card = models_dir / "tiny" / "CARD.md"
    card.write_text("# tiny identity\n\naccuracy: none\n")
    registry.register(models_dir, "tiny-dense", path, "delta_dense", summary="an identity map", card=card)
    assert main(["models"]) == 0
    assert any(line.split()[:2] == ["tiny-dense", "delta_dense"] and line.endswith("an identity map")
               for line in capsys.readouterr().out.splitlines())
    assert main(["models", "tiny-dense"]) == 0
    out = capsys.readouterr().out
    assert "status: ok (sha256 verified)" in out and "# tiny identity" in out
    path.write_text(path.read_text() + " ")
    assert main(["models", "tiny-dense"]) == 1
    assert "status: BROKEN" in capsys.readouterr().out
    assert main(["models", "nope"]) == 1


def test_the_models_readme_lists_exactly_the_shipped_ids() -> None:
    import re

    listed = set(re.findall(r"`([a-z0-9-]+)` \(", (ROOT / "models" / "README.md").read_text()))
    assert listed == set(registry.read_manifest(ROOT / "models"))
