"""spikeline: a real-time streaming edge runtime.

Live streams (LSL, ...) -> compiled stateful kernels, sample by sample -> results over MQTT, each with
its timestamps, inside a declared latency budget.
"""

__version__ = "0.1.0.dev0"
