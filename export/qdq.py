"""The two spellings of one symmetric INT8 activation quantization in a Q/DQ graph.

A calibration (dainrt.calibration) stores INT8 stages the way TensorRT 11 reads explicit
quantization: `QuantizeLinear`/`DequantizeLinear` pairs with **int8** activations and zero point
0, int8 per-channel weights with zero point 0. ONNX Runtime's CPU provider fuses such pairs into
integer convolutions fully only for **uint8** activations (measured on AVX2: int8 activations
left 3 of 8 rectify convolutions unfused and ran at twice the time). `activations_to_uint8`
rewrites the activations' zero points from int8 0 to uint8 128 with the same scale: the
representable values (q - 128) * s for q in 0..255 and q * s for q in -128..127 are the same
set, so the graph computes exactly the same numbers. Weights and biases are left as they are.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def activations_to_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every int8 zero point read by a QuantizeLinear (and hence by the
    DequantizeLinear nodes of the same tensors) turned into uint8 128. Refuses (ValueError) an
    activation zero point that is not 0: only the symmetric form has an exact uint8 twin."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    zero_points = {n.input[2] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    for i, init in enumerate(graph.initializer):
        if init.name in zero_points and init.data_type == TensorProto.INT8:
            values = numpy_helper.to_array(init)
            if np.any(values != 0):
                raise ValueError(f"{init.name}: asymmetric int8 activation zero point, no exact uint8 form")
            graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full(values.shape, 128, np.uint8), init.name))
    del graph.value_info[:]  # the Q outputs changed type; consumers re-infer
    return model


def has_int8_activations(model: onnx.ModelProto) -> bool:
    """True when some QuantizeLinear of `model` produces int8 (the TensorRT spelling)."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and inits.get(n.input[2]) == TensorProto.INT8
               for n in model.graph.node)
