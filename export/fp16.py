"""FP16 cast pass: mixed precision that lives in the ONNX itself (TensorRT 11 has no FP16 flag).

`convert_to_fp16(model)` turns an FP32 stage graph (frame, pair or rectify) into a mixed one:
the convolutions and the feature-map ops around them compute in float16, and the FP32 islands of
docs/dain-spec.md §7 stay float32. Deterministic and CPU-testable (ModelOpt AutoCast would need TensorRT and a
GPU once a graph has custom nodes; it remains an option on GPU machines).

Interface: graph inputs and outputs stay **float32**; the casts sit at the boundary inside the
graph (AutoCast's `keep_io_types=True`). Every backend and the runner therefore exchange FP32
tensors with any stage, at the cost of one cast per boundary tensor.

Which nodes compute in FP16 (decided in graph order):
1. `Conv` and `ConvTranspose` (weights and biases stored as float16);
2. feature-map ops (`FOLLOW`: activations, pooling, Resize, Concat, Add/Mul/..., Pad, Slice,
   reshapes) whose float data inputs all come from FP16 nodes or initializers, and at least
   one from an FP16 node: so a chain of convs stays in FP16 without casts in between;
3. everything else is FP32: GridSample, ReduceMean (the correlation's channel sum), Exp,
   Range/Shape arithmetic, custom nodes, ...
4. then, backwards: an arithmetic or data-movement node whose every consumer is FP32 (or a
   graph output) is made FP32 too, so values that feed an island are computed in FP32, not
   rounded to FP16 first. This keeps in FP32 the docs/dain-spec.md §7 islands that are built from plain
   arithmetic: the PWC warp grid (flow -> coordinates -> GridSample), the correlation's
   products (Mul -> ReduceMean), the flow outputs (flow + refinement, x20) and the rectify
   stage's final residual add (`residual + blend`, blend being an FP32 graph input).
The warp stage (DFP, adaptive warp, exp(-logD)) is not converted at all.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HEAVY = {"Conv", "ConvTranspose"}
# Ops that may run in FP16 after a heavy op; value: indices of the inputs that carry the data
# type T (None = all inputs). Other inputs (shapes, scales, axes) keep their types.
FOLLOW: dict[str, tuple[int, ...] | None] = {
    "Relu": None, "LeakyRelu": None, "Sigmoid": None, "Tanh": None, "Clip": None,
    "MaxPool": (0,), "AveragePool": (0,), "Resize": (0,), "Upsample": (0,),
    "Concat": None, "Add": None, "Sub": None, "Mul": None, "Div": None, "Max": None, "Min": None, "Sum": None,
    "Pad": (0, 2), "Slice": (0,), "Reshape": (0,), "Transpose": None, "Identity": None,
    "Squeeze": (0,), "Unsqueeze": (0,), "Expand": (0,), "Flatten": None, "Split": (0,), "Tile": (0,),
}
# Ops that are made FP32 when all their consumers are FP32 (rule 4).
PULL_BACK = {"Add", "Sub", "Mul", "Div", "Neg", "Max", "Min", "Pad", "Slice", "Reshape", "Transpose",
             "Squeeze", "Unsqueeze", "Expand", "Concat", "Identity", "Split", "Tile", "Flatten"}
HEAVY_INPUTS = {"Conv": (0, 1, 2), "ConvTranspose": (0, 1, 2)}
_F32, _F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _data_inputs(node: onnx.NodeProto) -> list[int]:
    idx = HEAVY_INPUTS.get(node.op_type) or FOLLOW.get(node.op_type)
    n = len(node.input)
    return [i for i in (range(n) if idx is None else idx) if i < n and node.input[i]]


def _float_initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer if t.data_type == _F32}


def heavy_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the graph's convolutions, in graph order: the layers the pass may run in FP16."""
    return [n.name for n in model.graph.node if n.op_type in HEAVY and n.domain in ("", "ai.onnx")]


def fp16_nodes(model: onnx.ModelProto, keep_fp32=frozenset()) -> list[bool]:
    """For each node of the (topologically sorted) graph: True if the pass runs it in FP16.
    `keep_fp32`: names of convolutions kept in FP32 (measured FP32 islands, dainrt.calibration);
    the ops that follow them then stay FP32 by rules 2 and 4."""
    graph = model.graph
    inits = _float_initializers(graph)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    half = [False] * len(graph.node)
    for i, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        ins = [node.input[j] for j in _data_inputs(node)]
        if node.op_type in HEAVY:
            half[i] = node.name not in keep_fp32  # an FP32 data input gets a Cast in front of the conv
        elif node.op_type in FOLLOW and ins:
            from_half = [t in producer and half[producer[t]] for t in ins]
            from_init = [t in inits for t in ins]
            half[i] = any(from_half) and all(a or b for a, b in zip(from_half, from_init))

    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    for i in range(len(graph.node) - 1, -1, -1):  # rule 4, consumers before producers
        node = graph.node[i]
        if half[i] and node.op_type in PULL_BACK:
            users = [j for o in node.output for j in consumers.get(o, [])]
            half[i] = any(half[j] for j in users)  # graph outputs count as FP32 readers
    return half


def convert_to_fp16(model: onnx.ModelProto, keep_fp32=frozenset()) -> onnx.ModelProto:
    """A mixed FP16/FP32 copy of `model` (see the module docstring), with the convolutions named
    in `keep_fp32` left in FP32. `model` is not changed."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    half = fp16_nodes(model, frozenset(keep_fp32))
    inits = _float_initializers(graph)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    outputs = {o.name for o in graph.output}

    def is_half(t: str) -> bool:
        return t in producer and half[producer[t]]

    new_nodes: list[onnx.NodeProto] = []
    made: set[str] = set()
    new_inits: dict[str, onnx.TensorProto] = {}

    def cast(src: str, dst: str, to: int) -> None:
        if dst not in made:
            made.add(dst)
            new_nodes.append(helper.make_node("Cast", [src], [dst], name=f"{dst}_cast", to=to))

    def half_name(t: str) -> str:
        return f"{t}__fp16"

    for i, node in enumerate(graph.node):
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if half[i]:
            for j in _data_inputs(node):
                t = node.input[j]
                if t in inits:
                    name = half_name(t)
                    if name not in new_inits:
                        arr = numpy_helper.to_array(inits[t])
                        new_inits[name] = numpy_helper.from_array(np.clip(arr, -65504, 65504).astype(np.float16), name)
                    node.input[j] = name
                elif is_half(t):
                    node.input[j] = half_name(t)
                else:
                    cast(t, half_name(t), _F16)  # FP32 tensor (graph input or FP32 node) -> FP16
                    node.input[j] = half_name(t)
            for k, o in enumerate(node.output):
                node.output[k] = half_name(o)
            new_nodes.append(node)
        else:
            for j, t in enumerate(node.input):
                if is_half(t):
                    cast(half_name(t), t, _F32)  # FP16 tensor read by an FP32 node
            new_nodes.append(node)
        if half[i]:
            for o in graph.node[i].output:
                if o in outputs:
                    cast(half_name(o), o, _F32)
    # An FP16 tensor read by an FP32 node before its Cast was emitted cannot happen: casts to
    # FP32 are emitted at the first FP32 reader, which comes after the producer.
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {t for n in graph.node for t in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + [new_inits[k] for k in sorted(new_inits) if k in used])
    del graph.value_info[:]  # types changed; consumers re-infer
    return model


def plan_summary(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Per op type of an FP32 graph: how many nodes the pass would run in FP16 and in FP32."""
    out: dict[str, dict[str, int]] = {}
    half = fp16_nodes(model)
    for node, h in zip(model.graph.node, half):
        d = out.setdefault(node.op_type, {"fp16": 0, "fp32": 0})
        d["fp16" if h else "fp32"] += 1
    return out
