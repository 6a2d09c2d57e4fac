"""The switch between compiled kernels and their numpy references, shared by every kernel family.

SPIKELINE_NO_EXT set to a non-empty value other than "0" selects the references. Otherwise the
compiled class is used; if its extension module cannot be imported the reference is used with a
RuntimeWarning (a build problem must not pass silently).
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any, Literal

NO_EXT = os.environ.get("SPIKELINE_NO_EXT", "") not in ("", "0")


def pick(module: str, name: str, reference: Any) -> tuple[Any, Literal["ext", "numpy"]]:
    """(implementation, backend) for compiled class `module.name`, or `reference`."""
    impls, backend = pick_all(module, {name: reference})
    return impls[name], backend


def pick_all(module: str, references: dict[str, Any]) -> tuple[dict[str, Any], Literal["ext", "numpy"]]:
    """Every compiled class `module.<name>` for the names in `references`, or all the references."""
    if NO_EXT:
        return dict(references), "numpy"
    try:
        mod = importlib.import_module(module)
        return {name: getattr(mod, name) for name in references}, "ext"
    except ImportError as exc:
        warnings.warn(
            f"spikeline: compiled kernels unavailable ({exc}); falling back to the numpy reference "
            "kernels, which are orders of magnitude slower. Build them with `pip install -e .`, or "
            "set SPIKELINE_NO_EXT=1 to select the reference explicitly.",
            RuntimeWarning,
            stacklevel=3,
        )
        return dict(references), "numpy"
