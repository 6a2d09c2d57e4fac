"""Shared pieces of the training tools (tools/train_*.py): data paths, splits, confidence intervals,
plots, model cards and the model registry. Training only (the `train` extra); the runtime never imports it.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runtime"))

from spikeline import registry  # noqa: E402

MODELS = ROOT / "models"
DATA = Path(os.environ.get("SPIKELINE_DATA", ROOT.parent / "shared" / "data"))
T = TypeVar("T")


def dataset(path: str | Path | None, default: str) -> Path:
    """The dataset path given on the command line, else `default` under ../shared/data; a clear exit if absent."""
    p = Path(path) if path else DATA / default
    if not p.exists():
        raise SystemExit(f"dataset {p} not found (give its path, or set SPIKELINE_DATA to the recordings folder)")
    return p


def progress(items: Iterable[T], desc: str, total: int | None = None, **kw: Any) -> Iterator[T]:
    """A tqdm progress bar on stderr (training tools only)."""
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, dynamic_ncols=True, file=sys.stderr, **kw)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % by default) for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def accuracy_text(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})"


def confusion(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def majority(pred: npt.ArrayLike, n_classes: int) -> int:
    """The most frequent class (ties: the lowest index)."""
    return int(np.argmax(np.bincount(np.asarray(pred, np.int64), minlength=n_classes)))


def windows(n: int, window: int, hop: int) -> npt.NDArray[np.int64]:
    """Start indices of every full window of `window` samples, `hop` apart, in a series of n samples."""
    return np.arange(0, n - window + 1, hop, dtype=np.int64) if n >= window else np.zeros(0, np.int64)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: npt.NDArray[np.int64], classes: Sequence[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k), dpi=110)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, Sequence[float]], path: Path, title: str, xlabel: str = "epoch") -> Path:
    """Learning curves: one line per named series (loss, accuracy, ...)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for name, ys in curves.items():
        ax.plot(np.arange(1, len(ys) + 1), ys, label=name)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def provenance() -> dict[str, str]:
    """Where and with what a model was trained (for its card)."""
    import torch

    return {"trained": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "machine": platform.machine(),
            "command": " ".join(["python", _script(), *sys.argv[1:]])}


def _script() -> str:
    p = Path(sys.argv[0]).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else sys.argv[0]


def register(model_id: str, file: Path, kind: str, summary: str, card: Path,
             meta: dict[str, Any] | None = None, models: Path = MODELS) -> registry.Entry:
    """Add the model to models/manifest.json (its id is what configs name)."""
    return registry.register(models, model_id, file, kind, summary=summary, card=card, meta=meta)
