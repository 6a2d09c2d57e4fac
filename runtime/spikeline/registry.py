"""Model registry: a config names a shipped model by id instead of a path.

Each models directory holds `manifest.json`:

    {
      "format": "spikeline.manifest/1",
      "models": {
        "har-spar-l2mu": {"file": "har-spar-l2mu/model.json", "kind": "l2mu", "sha256": "…",
                          "card": "har-spar-l2mu/CARD.md", "summary": "…", "meta": {…}},
        …
      }
    }

`file` and `card` are relative to the manifest; `sha256` is the file's (for a spikeline model file, its
JSON, which itself pins the weights' checksum). Directories are searched in order: each entry of
SPIKELINE_MODELS (os.pathsep-separated), the project's `models/` (a source checkout or editable
install), then `<prefix>/share/spikeline/models`. The first directory that knows an id wins.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .modelfile import ModelError, sha256_file

__all__ = ["Entry", "entries", "read_manifest", "register", "resolve", "search_path", "sha256_file"]

FORMAT = "spikeline.manifest/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    id: str
    file: Path
    kind: str
    sha256: str
    card: Path | None = None
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("SPIKELINE_MODELS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    dirs.append(Path(sys.prefix) / "share" / "spikeline" / "models")
    return dirs


def read_manifest(directory: Path) -> dict[str, Entry]:
    """The entries of one directory's manifest ({} when it has none); ModelError when it is malformed."""
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model manifest {path}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("models"), dict):
        raise ModelError(f"model manifest {path}: not a {FORMAT!r} manifest with a 'models' table")
    out: dict[str, Entry] = {}
    for mid, spec in doc["models"].items():
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) for k in ("file", "kind", "sha256")):
            raise ModelError(f"model manifest {path}: entry {mid!r} needs string 'file', 'kind' and 'sha256'")
        card = spec.get("card")
        out[mid] = Entry(id=mid, file=directory / spec["file"], kind=spec["kind"], sha256=spec["sha256"],
                         card=directory / card if isinstance(card, str) else None,
                         summary=str(spec.get("summary", "")), meta=dict(spec.get("meta") or {}))
    return out


def entries() -> dict[str, Entry]:
    """Every model id on the search path (earlier directories win)."""
    found: dict[str, Entry] = {}
    for d in reversed(search_path()):
        found.update(read_manifest(d))
    return found


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or Path(ref).suffix in (".json", ".npz", ".onnx", ".tflite", ".nir")


def resolve(ref: str | Path, kind: str | None = None) -> Path:
    """A model reference (a path, or a registry id) -> the file, verified against the manifest's checksum."""
    p = Path(ref)
    if isinstance(ref, Path) or p.exists() or _looks_like_path(ref):
        return p
    known = entries()
    entry = known.get(ref)
    if entry is None:
        ids = ", ".join(sorted(known)) or "none installed"
        raise ModelError(f"no model file or registered model id {ref!r} (known ids: {ids}; "
                         "directories searched: " + ", ".join(str(d) for d in search_path()) + ")")
    if kind is not None and entry.kind != kind:
        raise ModelError(f"model {ref!r} is a {entry.kind!r} model, expected {kind!r}")
    if not entry.file.is_file():
        raise ModelError(f"model {ref!r}: file {entry.file} is missing")
    digest = sha256_file(entry.file)
    if digest != entry.sha256:
        raise ModelError(f"model {ref!r}: {entry.file} has sha256 {digest}, the manifest says {entry.sha256}")
    return entry.file


def register(directory: str | Path, model_id: str, file: str | Path, kind: str, *, summary: str = "",
             card: str | Path | None = None, meta: Mapping[str, Any] | None = None) -> Entry:
    """Add or replace one entry in `directory`/manifest.json (used by the training tools)."""
    directory = Path(directory)
    path = directory / MANIFEST
    doc: dict[str, Any] = {"format": FORMAT, "models": {}}
    if path.is_file():
        read_manifest(directory)  # refuse to rewrite a malformed manifest
        doc = json.loads(path.read_text(encoding="utf-8"))
    f = Path(file).resolve()
    e: dict[str, Any] = {"file": f.relative_to(directory.resolve()).as_posix(), "kind": kind,
                         "sha256": sha256_file(f), "summary": summary}
    if card is not None:
        e["card"] = Path(card).resolve().relative_to(directory.resolve()).as_posix()
    if meta:
        e["meta"] = dict(meta)
    doc["models"][model_id] = e
    doc["models"] = dict(sorted(doc["models"].items()))
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return read_manifest(directory)[model_id]
