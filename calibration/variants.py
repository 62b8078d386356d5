"""Trial graphs of one stage with a chosen set of its convolutions in reduced precision.

* `Fp16Variants`: the export's FP16 cast pass (`dainrt.export.fp16.convert_to_fp16`) with every
  convolution outside the set kept FP32 (the cast pass then keeps the ops around them FP32 too).
  That graph is what is written; the trials run `emulate_fp16` of it instead, because ONNX
  Runtime's CPU provider has no FP16 convolution: it rounds the weights to FP16 but computes and
  keeps the activations in FP32, casts dropped (ONNX Runtime 1.32; the bundled weights are
  FP16-exact, so there it measured 120-999 dB against FP32 for every unit: nothing).
* `Int8Variants`: ONNX Runtime's static quantizer (`onnxruntime.quantization.quantize_static`,
  QDQ format) on the set's convolutions: symmetric INT8 activations and per-channel symmetric
  INT8 weights, the explicit Q/DQ form TensorRT 11 builds INT8 engines from and ONNX Runtime's
  CPU provider fuses into integer convolutions. Activation ranges are MinMax over the
  calibration pairs' stage inputs, computed once per stage and cached.

A "unit" is what is switched as one: each convolution of `rectify` (8 at any width), and in
`frame` and `pair` (180 and 106 convolutions) each sub-network block, named by the first two
parts of its weights' module path (`flow_net.conv3a`, `depth_net.3`).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dainrt.export import IR_VERSION
from dainrt.export.fp16 import FOLLOW, HEAVY, convert_to_fp16, fp16_nodes, heavy_nodes

PER_CONV_STAGES = ("rectify",)


def units(proto: onnx.ModelProto, stage: str) -> dict[str, list[str]]:
    """{unit label: names of its convolutions}, in graph order (module docstring)."""
    weight = {n.name: n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    out: dict[str, list[str]] = {}
    for name in heavy_nodes(proto):
        label = weight[name].removesuffix(".weight")
        if stage not in PER_CONV_STAGES:
            label = ".".join(label.split(".")[:2])
        out.setdefault(label, []).append(name)
    return out


FP16_MAX = 65504.0
# Veltkamp splitting: for a float32 x, c = x * (2^13 + 1), c - (c - x) is x rounded to 24 - 13 = 11
# significant bits, FP16's precision (to nearest), with float32 arithmetic only.
_SPLIT = float(2**13 + 1)


def emulate_fp16(model: onnx.ModelProto, keep_fp32=frozenset()) -> onnx.ModelProto:
    """An FP32 graph that computes what `convert_to_fp16(model, keep_fp32)` stores in FP16: the
    ops that pass runs in FP16 (`fp16_nodes`) read weights rounded to FP16 and inputs from FP32
    ops rounded to FP16, and their outputs are rounded to FP16 (11 significant bits; beyond
    +-65504 they become +-inf, as an FP16 overflow does), while the arithmetic stays FP32 (as FP16
    convolutions accumulate on GPUs). Below FP16's normal range (6.1e-5) it keeps more precision
    than FP16 subnormals. `model` is not changed."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    half = fp16_nodes(model, frozenset(keep_fp32))
    inits = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
                              (("fp16emu_split", _SPLIT), ("fp16emu_max", FP16_MAX), ("fp16emu_big", 1e30))])
    rounded: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []

    def round_to(src: str, dst: str) -> None:
        k = f"{dst}__fp16emu"
        nodes.extend([
            helper.make_node("Mul", [src, "fp16emu_split"], [f"{k}_c"]),
            helper.make_node("Sub", [f"{k}_c", src], [f"{k}_d"]),
            helper.make_node("Sub", [f"{k}_c", f"{k}_d"], [f"{k}_r"]),
            helper.make_node("Abs", [f"{k}_r"], [f"{k}_a"]),
            helper.make_node("Greater", [f"{k}_a", "fp16emu_max"], [f"{k}_over"]),
            helper.make_node("Mul", [f"{k}_r", "fp16emu_big"], [f"{k}_inf"]),
            helper.make_node("Where", [f"{k}_over", f"{k}_inf", f"{k}_r"], [dst]),
        ])

    def rounded_input(t: str) -> str:
        if t in inits and t not in rounded:
            rounded[t] = f"{t}__fp16emu"
            w = numpy_helper.to_array(inits[t]).astype(np.float16).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(w, rounded[t]))
        elif t not in rounded:
            rounded[t] = f"{t}__fp16emu_in"
            round_to(t, rounded[t])
        return rounded[t]

    for i, node in enumerate(graph.node):
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if half[i]:
            data = (range(len(node.input)) if node.op_type in HEAVY or FOLLOW.get(node.op_type) is None
                    else FOLLOW[node.op_type])
            for j in data:
                t = node.input[j] if j < len(node.input) else ""
                if t and (t in inits or not (t in producer and half[producer[t]])):
                    node.input[j] = rounded_input(t)
            outs = list(node.output)
            for j, o in enumerate(outs):
                if o:
                    node.output[j] = f"{o}__fp16emu_raw"
            nodes.append(node)
            for o in outs:
                if o:
                    round_to(f"{o}__fp16emu_raw", o)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {t for n in graph.node for t in n.input}    # FP32 weights now read only as rounded copies
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


class Fp16Variants:
    """`make`: the graph written (the export's cast pass); `trial`: what the trials run
    (`emulate_fp16` of it, module docstring)."""

    precision = "fp16"

    def __init__(self, proto: onnx.ModelProto, stage: str, inputs=None, workdir=None):
        self.proto = proto
        self.all = set(heavy_nodes(proto))

    def make(self, nodes) -> onnx.ModelProto:
        return convert_to_fp16(self.proto, keep_fp32=self.all - set(nodes))

    def trial(self, nodes) -> onnx.ModelProto:
        return emulate_fp16(self.proto, keep_fp32=self.all - set(nodes))


class _Reader:
    """ONNX Runtime's CalibrationDataReader over recorded stage inputs."""

    def __init__(self, names: list[str], inputs):
        self._names, self._inputs = names, iter(inputs)

    def get_next(self):
        xs = next(self._inputs, None)
        return None if xs is None else {n: x.contiguous().numpy() for n, x in zip(self._names, xs)}


class Int8Variants:
    precision = "int8"

    def __init__(self, proto: onnx.ModelProto, stage: str, inputs: Callable[[], Iterable], workdir: Path):
        """`inputs()`: an iterable of the stage's input tuples on the calibration pairs (read once,
        the first time a graph is made; the ranges are then cached in `workdir`)."""
        self.proto, self.stage, self.inputs = proto, stage, inputs
        self.workdir = Path(workdir)
        self.source = self.workdir / f"{stage}-fp32.onnx"
        self.source.write_bytes(proto.SerializeToString())
        self.ranges = self.workdir / f"{stage}-ranges.json"

    def make(self, nodes) -> onnx.ModelProto:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if not nodes:
            return self.proto
        reader = None
        if not self.ranges.exists():
            reader = _Reader([i.name for i in self.proto.graph.input], self.inputs())
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            out = Path(tmp) / "trial.onnx"
            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" and friends
            try:
                quantize_static(
                    self.source, out, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_quantize=list(nodes), calibrate_method=CalibrationMethod.MinMax,
                    calibration_cache_path=self.ranges,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                )
            finally:
                logging.getLogger().setLevel(level)
            model = onnx.load(str(out))
        model.ir_version = IR_VERSION
        return model

    trial = make          # ONNX Runtime runs the Q/DQ graph as written


VARIANTS = {"fp16": Fp16Variants, "int8": Int8Variants}
