"""The L2MU cell kernel, compiled or numpy, and its model-file loader.

`L2MUCell` is the compiled kernel from spikeline._ext.l2mu unless SPIKELINE_NO_EXT is set to a
non-empty value other than "0", or the extension cannot be imported (then with a RuntimeWarning);
in both cases it is the bit-identical numpy reference `L2MUCellRef`. `BACKEND` says which.
`load_l2mu` builds one from a model file written by tools/l2mu_torch.py's export() (kind "l2mu"),
after checking every array against the sizes the file's meta["config"] declares. ext/l2mu.pyx
documents the maths, the memory conventions (Ā vs Āᵀ) and the precision.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from spikeline.kernels._backend import pick_all
from spikeline.kernels.lmu_matrices import lmu_matrices
from spikeline.kernels.ref_l2mu import ARRAY_NAMES, POPULATIONS, L2MUCellRef
from spikeline.modelfile import Model, ModelError, load

__all__ = ["BACKEND", "L2MUCell", "L2MUCellRef", "load_l2mu"]

if TYPE_CHECKING:
    # Type checkers see the compiled class; the reference has the same interface.
    from spikeline._ext.l2mu import L2MUCell

    BACKEND: Literal["ext", "numpy"]
else:
    _impl, BACKEND = pick_all("spikeline._ext.l2mu", {"L2MUCell": L2MUCellRef})
    L2MUCell = _impl["L2MUCell"]

# Ā as the model file stores it is checked against the Legendre system of the declared order and
# θ: a file holding Āᵀ, or the matrix of another θ, would otherwise run as a different memory.
# export() rounds the float64 matrix to float32; another exporter may differ in the last bits.
A_BAR_ATOL = 1e-6


def _config_count(config: dict[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{where}: meta.config.{key} must be an integer >= 1, got {value!r}")
    return value


def _config(model: Model) -> dict[str, Any]:
    """meta["config"], checked: the sizes, θ and the memory convention the arrays must match."""
    where = f"model {model.path or model.kind}"
    config = model.meta.get("config")
    if not isinstance(config, dict):
        raise ModelError(f"{where}: meta.config missing or not an object (tools/l2mu_torch.py export() writes it)")
    sizes = {key: _config_count(config, key, where)
             for key in ("n_inputs", "n_outputs", "enc", "memory", "order", "hidden")}
    theta = config.get("theta")
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or not (math.isfinite(theta) and float(theta) > 0):
        raise ModelError(f"{where}: meta.config.theta must be a number > 0 (the window in samples), got {theta!r}")
    convention = config.get("memory_convention")
    if convention not in ("A", "AT"):
        raise ModelError(f'{where}: meta.config.memory_convention must be "A" (Ā m) or "AT" (Āᵀ m), got '
                         f"{convention!r}")
    for key, expected in (("reset", "subtract"), ("neuron", "leaky")):
        if model.meta.get(key, expected) != expected:
            raise ModelError(f"{where}: meta.{key} is {model.meta[key]!r}; the L2MU kernel runs {expected!r} only")
    return {**sizes, "theta": float(theta), "memory_convention": convention}


def load_l2mu(path_or_model: str | Path | Model, n_streams: int = 1) -> L2MUCell:
    """An L2MUCell from a model file (or a loaded Model) of kind "l2mu", checked against its config.

    Every array must be present with the shape meta["config"] implies (n_inputs, n_outputs, enc,
    memory, order, hidden), A_bar/B_bar must be the Legendre system of the declared order and
    theta, and no unknown array may be present; otherwise ModelError says what is wrong.
    """
    model = path_or_model if isinstance(path_or_model, Model) else load(path_or_model, kind="l2mu")
    where = f"model {model.path or model.kind}"
    if model.kind != "l2mu":
        raise ModelError(f"{where} is a {model.kind!r} model, expected 'l2mu'")
    cfg = _config(model)
    n_in, enc, mem, d, h, n_out = (cfg[k] for k in ("n_inputs", "enc", "memory", "order", "hidden", "n_outputs"))
    n_x, n_m = n_in * enc, mem * d
    sizes = {"x": n_x, "u": mem, "m": n_m, "h": h, "o": n_out}
    shapes: dict[str, tuple[int, ...]] = {
        "enc_w": (n_in, enc), "enc_b": (n_in, enc),
        "e_x": (mem, n_x), "e_h": (mem, h), "e_m": (mem, n_m),
        "W_x": (h, n_x), "W_h": (h, h), "W_m": (h, n_m),
        "W_o": (n_out, h), "b_o": (n_out,),
        "A_bar": (d, d), "B_bar": (d,),
    }
    for p in POPULATIONS:
        shapes[f"beta_{p}"] = shapes[f"threshold_{p}"] = (sizes[p],)
    assert set(shapes) == set(ARRAY_NAMES)
    unknown = sorted(set(model.arrays) - set(shapes))
    if unknown:
        raise ModelError(f"{where}: unknown arrays {', '.join(unknown)} (an l2mu model has {', '.join(ARRAY_NAMES)})")
    arrays = {name: model.array(name, shape) for name, shape in shapes.items()}
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            raise ModelError(f"{where}: array {name!r} contains NaN or inf")
    a_bar, b_bar = lmu_matrices(d, cfg["theta"])
    for name, expected in (("A_bar", a_bar), ("B_bar", b_bar)):
        err = float(np.max(np.abs(arrays[name] - expected)))
        if not err <= A_BAR_ATOL:
            hint = (" (it is the transpose: the convention belongs in meta.config.memory_convention, not in A_bar)"
                    if name == "A_bar" and np.allclose(arrays[name], a_bar.T, rtol=0, atol=A_BAR_ATOL) else "")
            raise ModelError(f"{where}: {name} differs from the Legendre system of order {d}, theta {cfg['theta']} "
                             f"by up to {err:.3g}{hint}")
    cell: L2MUCell = L2MUCell(**arrays, memory_convention=cfg["memory_convention"], n_streams=n_streams)
    return cell
