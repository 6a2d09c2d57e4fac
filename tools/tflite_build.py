"""A .tflite flatbuffer builder that needs no TensorFlow: the object API ai_edge_litert ships
(schema_py_generated) plus flatbuffers. Used by the kernel benchmarks' LiteRT baselines and by the
training tools' LiteRT exports."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class TFLiteBuilder:
    """Builds a .tflite flatbuffer without TensorFlow, through the object API ai_edge_litert ships
    (schema_py_generated). Tensors and operators are appended in call order; finish() packs the model.
    Only builtin operators; every helper returns the index of its output tensor."""

    def __init__(self) -> None:
        from ai_edge_litert import schema_py_generated as tfl

        self.tfl = tfl
        self.ops, self.opts = tfl.BuiltinOperator, tfl.BuiltinOptions
        self.buffers: list[Any] = [tfl.BufferT()]  # buffer 0 is the empty sentinel
        self.tensors: list[Any] = []
        self.shapes: list[tuple[int, ...]] = []
        self.operators: list[Any] = []
        self.codes: dict[int, int] = {}

    def tensor(self, name: str, shape: tuple[int, ...], data: npt.NDArray[Any] | None = None,
               dtype: int | None = None) -> int:
        """A tensor (a constant when data is given); dtype defaults to FLOAT32."""
        tfl = self.tfl
        t = tfl.TensorT()
        t.name, t.shape, t.buffer = name, list(shape), 0
        t.type = tfl.TensorType.FLOAT32 if dtype is None else dtype
        if data is not None:
            b = tfl.BufferT()
            b.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.shapes.append(tuple(shape))
        return len(self.tensors) - 1

    def const(self, name: str, data: npt.NDArray[Any]) -> int:
        """A constant tensor holding `data` (float32 or int32)."""
        kinds = {np.dtype(np.float32): self.tfl.TensorType.FLOAT32, np.dtype(np.int32): self.tfl.TensorType.INT32}
        return self.tensor(name, data.shape, data, kinds[data.dtype])

    def op(self, code: int, inputs: list[int], outputs: list[int], options: Any = None, options_type: int = 0) -> None:
        self.codes.setdefault(code, len(self.codes))
        o = self.tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes[code], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def fully_connected(self, x: int, w: int, b: int, name: str) -> int:
        """x (rows, in) @ wᵀ + b, w (out, in) as torch.nn.Linear.weight; b = -1: no bias."""
        tfl = self.tfl
        out = self.tensor(name, (self.shapes[x][0], self.shapes[w][0]))
        self.op(self.ops.FULLY_CONNECTED, [x, w, b], [out], tfl.FullyConnectedOptionsT(),
                self.opts.FullyConnectedOptions)
        return out

    def binary(self, code: int, a: int, b: int, name: str) -> int:
        """ADD, SUB, MUL (with their options), or an option-less binary op (GREATER: a BOOL output)."""
        tfl, ops, opts = self.tfl, self.ops, self.opts
        options = {ops.ADD: (tfl.AddOptionsT, opts.AddOptions), ops.MUL: (tfl.MulOptionsT, opts.MulOptions),
                   ops.SUB: (tfl.SubOptionsT, opts.SubOptions)}.get(code)
        shape = tuple(np.broadcast_shapes(self.shapes[a], self.shapes[b]))
        out = self.tensor(name, shape, dtype=tfl.TensorType.BOOL if code == ops.GREATER else None)
        if options is None:
            self.op(code, [a, b], [out])
        else:
            self.op(code, [a, b], [out], options[0](), options[1])
        return out

    def unary(self, code: int, a: int, name: str) -> int:
        """An elementwise op without options (LOGISTIC, TANH, ...), same shape as its input."""
        out = self.tensor(name, self.shapes[a])
        self.op(code, [a], [out])
        return out

    def cast(self, a: int, name: str) -> int:
        """BOOL -> FLOAT32 (1.0 / 0.0)."""
        tfl = self.tfl
        out = self.tensor(name, self.shapes[a])
        o = tfl.CastOptionsT()
        o.inDataType, o.outDataType = tfl.TensorType.BOOL, tfl.TensorType.FLOAT32
        self.op(self.ops.CAST, [a], [out], o, self.opts.CastOptions)
        return out

    def greater(self, a: int, b: int, name: str) -> int:
        """(a > b) as float32 1.0 / 0.0: GREATER then CAST (a strict Heaviside step)."""
        return self.cast(self.binary(self.ops.GREATER, a, b, f"{name}_bool"), name)

    def split(self, axis: int, src: int, n: int, names: list[str], shape: tuple[int, ...]) -> list[int]:
        """SPLIT src into n equal parts along the INT32 scalar constant `axis`."""
        o = self.tfl.SplitOptionsT()
        o.numSplits = n
        outs = [self.tensor(nm, shape) for nm in names]
        self.op(self.ops.SPLIT, [axis, src], outs, o, self.opts.SplitOptions)
        return outs

    def concat(self, parts: list[int], axis: int, name: str, shape: tuple[int, ...]) -> int:
        c = self.tfl.ConcatenationOptionsT()
        c.axis = axis
        out = self.tensor(name, shape)
        self.op(self.ops.CONCATENATION, parts, [out], c, self.opts.ConcatenationOptions)
        return out

    def reshape(self, a: int, shape: tuple[int, ...], name: str) -> int:
        o = self.tfl.ReshapeOptionsT()
        o.newShape = list(shape)
        target = self.const(f"{name}_shape", np.array(shape, np.int32))
        out = self.tensor(name, shape)
        self.op(self.ops.RESHAPE, [a, target], [out], o, self.opts.ReshapeOptions)
        return out

    def int8_weights(self, name: str, w: npt.NDArray[np.float32]) -> int:
        """A constant (out, in) weight matrix stored as INT8 with one symmetric scale per output row
        (quantizedDimension 0, zero points 0): scale_o = max|w_o| / 127, q = round(w / scale_o). A
        FULLY_CONNECTED fed float activations then runs "hybrid" (dynamic-range quantisation: the kernel
        quantises each input row on the fly, multiplies in int8, rescales to float32)."""
        w = np.asarray(w, np.float32)
        if w.ndim != 2:
            raise ValueError(f"int8 weights must be (out, in), got {w.shape}")
        scale = np.maximum(np.abs(w).max(axis=1), np.finfo(np.float32).tiny) / 127.0
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        t = self.tensor(name, w.shape, q, self.tfl.TensorType.INT8)
        qp = self.tfl.QuantizationParametersT()
        qp.scale = [float(v) for v in scale]
        qp.zeroPoint = [0] * len(scale)
        qp.quantizedDimension = 0
        self.tensors[t].quantization = qp
        return t

    def mean(self, a: int, axes: tuple[int, ...], name: str, keep_dims: bool = True) -> int:
        """MEAN over the given axes (REDUCER options: keep_dims)."""
        o = self.tfl.ReducerOptionsT()
        o.keepDims = keep_dims
        shape = tuple(1 if i in axes else d for i, d in enumerate(self.shapes[a]) if keep_dims or i not in axes)
        ax = self.const(f"{name}_axes", np.array(axes, np.int32))
        out = self.tensor(name, shape)
        self.op(self.ops.MEAN, [a, ax], [out], o, self.opts.ReducerOptions)
        return out

    def softmax(self, a: int, name: str, beta: float = 1.0) -> int:
        """SOFTMAX over the last axis."""
        o = self.tfl.SoftmaxOptionsT()
        o.beta = beta
        out = self.tensor(name, self.shapes[a])
        self.op(self.ops.SOFTMAX, [a], [out], o, self.opts.SoftmaxOptions)
        return out

    def leaky(self, current: int, mem: int, beta: int, threshold: int, name: str) -> tuple[int, int]:
        """One snnTorch Leaky step (reset by subtraction, strict threshold), in the compiled kernels' float32
        operation order: mem' = (beta * mem + current) - (mem > threshold) * threshold, spikes = mem' > threshold.
        Returns (spikes, mem'), the latter named f"{name}_mem"."""
        ops = self.ops
        drop = self.binary(ops.MUL, self.greater(mem, threshold, f"{name}_reset"), threshold, f"{name}_drop")
        integrated = self.binary(ops.ADD, self.binary(ops.MUL, beta, mem, f"{name}_decayed"), current,
                                 f"{name}_integrated")
        new_mem = self.binary(ops.SUB, integrated, drop, f"{name}_mem")
        return self.greater(new_mem, threshold, f"{name}_spikes"), new_mem

    def finish(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        """The .tflite flatbuffer (one subgraph "main", schema version 3)."""
        tfl = self.tfl
        sub = tfl.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = (self.tensors, inputs, outputs,
                                                                         self.operators, "main")
        model = tfl.ModelT()
        model.version, model.description, model.subgraphs, model.buffers = 3, description, [sub], self.buffers
        model.operatorCodes = []
        for code in sorted(self.codes, key=self.codes.__getitem__):
            oc = tfl.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            model.operatorCodes.append(oc)
        import flatbuffers

        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
