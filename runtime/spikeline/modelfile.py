"""Kernel weights on disk: `<name>.json` (metadata) beside `<name>.npz` (arrays), with a checksum.

The JSON file is the model: it names its kind, the conventions the weights were trained with, the input
it expects and the outputs it gives, and lists every array with its shape and dtype, plus the sha256 of
the .npz. Loading checks all of it and says exactly what is wrong, so a mismatched or corrupt file never
runs as garbage.

    {
      "format": "spikeline.model/1",
      "kind": "delta_gru",
      "weights": "har.npz",
      "sha256": "…",
      "arrays": {"weight_ih": {"shape": [192, 6], "dtype": "float32"}, …},
      "meta": {"input": {"channels": [...], "rate_hz": 50}, "classes": [...], …}
    }
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "spikeline.model/1"


class ModelError(Exception):
    """A model file that cannot be used, and why."""


@dataclass
class Model:
    kind: str
    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def array(self, name: str, shape: tuple[int | None, ...] | None = None,
              dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
        """A named array, checked: present, of this dtype, and of this shape (None = any size there)."""
        where = f"model {self.path or self.kind!s}"
        if name not in self.arrays:
            raise ModelError(f"{where}: no array {name!r} (has: {', '.join(sorted(self.arrays)) or 'none'})")
        a = self.arrays[name]
        if a.dtype != np.dtype(dtype):
            raise ModelError(f"{where}: array {name!r} is {a.dtype}, expected {np.dtype(dtype)}")
        if shape is not None and (a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape,
                                                                                                      strict=True))):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ModelError(f"{where}: array {name!r} has shape {a.shape}, expected {want}")
        return a


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(path: str | Path, kind: str, arrays: Mapping[str, npt.ArrayLike], meta: Mapping[str, Any] | None = None) -> Path:
    """Write `<path>` (JSON) and its .npz beside it. Returns the JSON path."""
    jpath = Path(path).with_suffix(".json")
    npz = jpath.with_suffix(".npz")
    arrs = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrs)  # type: ignore[arg-type]
    npz.write_bytes(buf.getvalue())
    doc = {
        "format": FORMAT,
        "kind": kind,
        "weights": npz.name,
        "sha256": sha256_file(npz),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrs.items()},
        "meta": dict(meta or {}),
    }
    jpath.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return jpath


def load(path: str | Path, kind: str | None = None) -> Model:
    """Read and verify a model (a path, or an id from the model registry). `kind`, when given, must match."""
    from .registry import resolve

    jpath = resolve(path, kind)
    if jpath.suffix == ".npz":
        jpath = jpath.with_suffix(".json")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"cannot read model {jpath}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise ModelError(f"model {jpath} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelError(f"model {jpath}: format {got!r} is not {FORMAT!r}")
    for key, typ in (("kind", str), ("weights", str), ("sha256", str), ("arrays", dict), ("meta", dict)):
        if not isinstance(doc.get(key), typ):
            raise ModelError(f"model {jpath}: {key!r} missing or not a {typ.__name__}")
    if kind is not None and doc["kind"] != kind:
        raise ModelError(f"model {jpath} is a {doc['kind']!r} model, expected {kind!r}")
    npz = jpath.parent / doc["weights"]
    if Path(doc["weights"]).name != doc["weights"]:
        raise ModelError(f"model {jpath}: weights must be a file name beside it, got {doc['weights']!r}")
    if not npz.is_file():
        raise ModelError(f"model {jpath}: weights file {npz} not found")
    digest = sha256_file(npz)
    if digest != doc["sha256"]:
        raise ModelError(f"model {jpath}: {npz.name} has sha256 {digest}, the model says {doc['sha256']} "
                         "(corrupt, or not the weights this model was written with)")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelError(f"model {jpath}: cannot read {npz.name}: {e}") from e
    listed, present = set(doc["arrays"]), set(arrays)
    if listed != present:
        raise ModelError(f"model {jpath}: arrays listed {sorted(listed)} but {npz.name} holds {sorted(present)}")
    for name, spec in doc["arrays"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list) or not isinstance(spec.get("dtype"), str):
            raise ModelError(f"model {jpath}: array {name!r}: expected {{\"shape\": [...], \"dtype\": \"...\"}}, "
                             f"got {spec!r}"[:300])
        a = arrays[name]
        if list(a.shape) != spec.get("shape") or str(a.dtype) != spec.get("dtype"):
            raise ModelError(f"model {jpath}: array {name!r} is {a.dtype}{list(a.shape)}, "
                             f"listed as {spec.get('dtype')}{spec.get('shape')}")
    return Model(kind=doc["kind"], arrays=arrays, meta=doc["meta"], path=jpath)
