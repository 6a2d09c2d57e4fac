"""NIR graphs (Neuromorphic Intermediate Representation) to and from spikeline's layer chains.

spikeline runs feed-forward chains of dense layers and spiking populations: Input -> (Affine | Linear)
-> (LIF | CubaLIF) -> ... -> Output, the shape snnTorch, Norse, Rockpool and Lava export for such
networks. NIR is continuous-time; spikeline steps once per sample, so a time step `dt` maps one onto the
other exactly as snnTorch's exporter and importer do (snnTorch uses dt = 1e-4 s):

    LIF      tau dv/dt = (v_leak - v) + r I      ->  beta  = 1 - dt / tau,      input gain = r dt / tau
    CubaLIF  tau_syn dI/dt = -I + w_in x         ->  alpha = 1 - dt / tau_syn,  input gain = w_in dt / tau_syn
             tau_mem dv/dt = (v_leak - v) + r I  ->  beta  = 1 - dt / tau_mem   (r must be tau_mem / dt)

NIR's LIF resets to v_reset; snnTorch's default reset subtracts the threshold and its export writes
v_reset = 0 either way, so the reset mechanism is a parameter of the import (default "subtract").
A nonzero v_leak has no snnTorch counterpart and is rejected. Requires the optional `nir` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
SNNTORCH_DT = 1e-4


class NIRError(Exception):
    """A NIR graph spikeline cannot run, and why."""


@dataclass
class Dense:
    weight: F32  # (out, in)
    bias: F32  # (out,)


@dataclass
class Neurons:
    beta: F32  # (n,) membrane decay per step
    threshold: F32  # (n,)
    gain: F32  # (n,) input scale per step (1 for snnTorch exports)
    alpha: F32 | None = None  # (n,) synaptic decay: a CuBa-LIF population when set
    reset: str = "subtract"

    @property
    def size(self) -> int:
        return int(self.beta.shape[0])


Layer = Dense | Neurons


def _vec(v: Any, n: int, name: str) -> F32:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n:
        raise NIRError(f"{name} has {a.size} values for {n} neurons")
    if not np.all(np.isfinite(a)):
        raise NIRError(f"{name} has non-finite values")
    return a.astype(np.float32)


def _chain(graph: Any) -> list[tuple[str, Any]]:
    """Nodes from Input to Output, or a NIRError naming what is not a simple chain."""
    import nir

    nodes: dict[str, Any] = graph.nodes
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise NIRError(f"edge ({a!r}, {b!r}) names a node that does not exist")
        succ[a].append(b)
        pred[b].append(a)
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"expected one Input node, found {len(inputs)}")
    order: list[tuple[str, Any]] = []
    key = inputs[0]
    while True:
        if key in (k for k, _ in order):
            raise NIRError(f"the graph loops back to {key!r}: recurrent graphs are not supported")
        order.append((key, nodes[key]))
        if isinstance(nodes[key], nir.Output):
            break
        nxt = succ[key]
        if len(nxt) != 1:
            raise NIRError(f"node {key!r} has {len(nxt)} successors: only feed-forward chains are supported")
        key = nxt[0]
        if len(pred[key]) != 1:
            raise NIRError(f"node {key!r} has {len(pred[key])} inputs: only feed-forward chains are supported")
    if len(order) != len(nodes):
        extra = sorted(set(nodes) - {k for k, _ in order})
        raise NIRError(f"nodes outside the Input -> Output chain: {extra}")
    return order


def from_nir(graph: Any, dt: float = SNNTORCH_DT, reset: str = "subtract") -> list[Layer]:
    """Convert a NIR graph (a nir.NIRGraph or a path to a .nir file) into a layer chain."""
    import nir

    if reset not in ("subtract", "zero"):
        raise NIRError(f'reset must be "subtract" or "zero", got {reset!r}')
    if isinstance(graph, str | Path):
        try:
            graph = nir.read(str(graph))
        except (OSError, KeyError, ValueError) as e:
            raise NIRError(f"cannot read NIR file {graph}: {e}") from e
    layers: list[Layer] = []
    for key, node in _chain(graph)[1:-1]:
        if isinstance(node, nir.Affine | nir.Linear):
            w = np.asarray(node.weight, dtype=np.float32)
            if w.ndim != 2:
                raise NIRError(f"{key}: weight must be 2-D, got shape {w.shape}")
            b = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else np.zeros(w.shape[0],
                                                                                                      np.float32)
            layers.append(Dense(np.ascontiguousarray(w), np.ascontiguousarray(b.reshape(-1))))
        elif isinstance(node, nir.CubaLIF | nir.LIF):
            cuba = isinstance(node, nir.CubaLIF)
            tau = np.asarray(node.tau_mem if cuba else node.tau, dtype=np.float64).reshape(-1)
            n = int(np.asarray(node.v_threshold).size if tau.size == 1 else tau.size)
            tau = _vec(tau, n, f"{key}.tau").astype(np.float64)
            if np.any(tau <= 0):
                raise NIRError(f"{key}: time constants must be > 0")
            if np.any(np.asarray(node.v_leak) != 0):
                raise NIRError(f"{key}: v_leak != 0 is not supported (no discrete-time equivalent here)")
            r = _vec(node.r, n, f"{key}.r").astype(np.float64)
            beta = (1.0 - dt / tau).astype(np.float32)
            thr = _vec(node.v_threshold, n, f"{key}.v_threshold")
            if cuba:
                tau_syn = _vec(node.tau_syn, n, f"{key}.tau_syn").astype(np.float64)
                if not np.allclose(r, tau / dt):
                    raise NIRError(f"{key}: CubaLIF with r != tau_mem / dt is not supported")
                alpha = (1.0 - dt / tau_syn).astype(np.float32)
                gain = (_vec(node.w_in, n, f"{key}.w_in").astype(np.float64) * dt / tau_syn).astype(np.float32)
                layers.append(Neurons(beta, thr, gain, alpha, reset))
            else:
                layers.append(Neurons(beta, thr, (r * dt / tau).astype(np.float32), None, reset))
        else:
            raise NIRError(f"{key}: NIR node type {type(node).__name__} is not supported "
                           "(supported: Affine, Linear, LIF, CubaLIF)")
    _check_sizes(layers)
    return layers


def _check_sizes(layers: list[Layer]) -> None:
    width: int | None = None
    for i, layer in enumerate(layers):
        n_in = layer.weight.shape[1] if isinstance(layer, Dense) else layer.size
        if width is not None and n_in != width:
            raise NIRError(f"layer {i} expects {n_in} inputs but the layer before it gives {width}")
        width = layer.weight.shape[0] if isinstance(layer, Dense) else layer.size
        if isinstance(layer, Dense) and layer.bias.shape != (layer.weight.shape[0],):
            raise NIRError(f"layer {i}: bias has shape {layer.bias.shape}, expected ({layer.weight.shape[0]},)")


def to_nir(layers: list[Layer], n_inputs: int, dt: float = SNNTORCH_DT) -> Any:
    """Export a layer chain as a nir.NIRGraph (snnTorch's conventions for the time step)."""
    import nir

    _check_sizes(layers)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([n_inputs])})}
    edges, prev, width = [], "input", n_inputs
    for i, layer in enumerate(layers):
        key = f"{i}"
        if isinstance(layer, Dense):
            nodes[key] = nir.Affine(weight=layer.weight.astype(np.float32), bias=layer.bias.astype(np.float32))
            width = layer.weight.shape[0]
        else:
            beta = layer.beta.astype(np.float64)
            if np.any(beta >= 1) or np.any(beta < 0):
                raise NIRError(f"layer {i}: beta must be in [0, 1) to have a NIR time constant")
            tau = dt / (1.0 - beta)
            if layer.alpha is None:
                nodes[key] = nir.LIF(tau=tau, r=layer.gain.astype(np.float64) * tau / dt, v_leak=np.zeros_like(tau),
                                     v_threshold=layer.threshold.astype(np.float64), v_reset=np.zeros_like(tau))
            else:
                tau_syn = dt / (1.0 - layer.alpha.astype(np.float64))
                nodes[key] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=tau / dt, v_leak=np.zeros_like(tau),
                                         v_threshold=layer.threshold.astype(np.float64), v_reset=np.zeros_like(tau),
                                         w_in=layer.gain.astype(np.float64) * tau_syn / dt)
        edges.append((prev, key))
        prev = key
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)
