"""Event-driven N-MNIST-style classifier: `load_evnet(ref) -> EventNet`, run event by event.

A small CNN (conv1 -> ReLU -> 2x2 average pool -> conv2 -> ReLU -> 2x2 average pool -> linear) on the
event-count image, computed incrementally: each event scatters its conv1 weight column into persistent
accumulators, and the two pooled ReLU layers are delta layers that only send changes larger than theta
(see spikeline.kernels.ref_evnet for the design, ext/evnet.pyx for the compiled loop). Trained by
tools/train_nmnist.py; the shipped model is the registry id "nmnist-evnet".

    net = load_evnet("nmnist-evnet")
    net.push(events)            # EVENT_DTYPE array, time order; any split gives bit-identical results
    label = net.classes[int(net.scores().argmax())]
    net.reset()                 # next sample / window

`EventNet` is the compiled kernel (spikeline._ext.evnet) unless SPIKELINE_NO_EXT is set to a non-empty
value other than "0", or the extension cannot be imported (then with a RuntimeWarning); in both cases
it is the bit-identical numpy reference `EventNetRef`. `BACKEND` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from spikeline import modelfile
from spikeline.kernels._backend import pick
from spikeline.kernels.ref_evnet import KIND, EventNetRef, Plan, build_plan, plan_from_model

__all__ = ["BACKEND", "KIND", "EventNet", "EventNetRef", "Plan", "build_plan", "load_evnet", "plan_from_model"]

if TYPE_CHECKING:
    # Type checkers see the compiled class; the reference has the same interface.
    from spikeline._ext.evnet import EventNet

    BACKEND: Literal["ext", "numpy"]
else:
    EventNet, BACKEND = pick("spikeline._ext.evnet", "EventNet", EventNetRef)


def load_evnet(ref: str | Path, theta: float | tuple[float, float] | None = None) -> EventNet:
    """The event classifier of a model file or registry id (kind "evnet"; kind, shapes and the weights'
    sha256 are checked, ModelError says what is wrong). theta overrides the model's delta thresholds."""
    model = modelfile.load(ref, kind=KIND)
    return EventNet(plan_from_model(model, theta))
