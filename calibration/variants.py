"""Trial graphs of one stage with a chosen set of its convolutions in reduced precision.

* `Fp16Variants`: the export's FP16 cast pass (`dainrt.export.fp16.convert_to_fp16`) with every
  convolution outside the set kept FP32 (the cast pass then keeps the ops around them FP32 too).
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

import onnx

from dainrt.export import IR_VERSION
from dainrt.export.fp16 import convert_to_fp16, heavy_nodes

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


class Fp16Variants:
    precision = "fp16"

    def __init__(self, proto: onnx.ModelProto, stage: str, inputs=None, workdir=None):
        self.proto = proto
        self.all = set(heavy_nodes(proto))

    def make(self, nodes) -> onnx.ModelProto:
        return convert_to_fp16(self.proto, keep_fp32=self.all - set(nodes))


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


VARIANTS = {"fp16": Fp16Variants, "int8": Int8Variants}
