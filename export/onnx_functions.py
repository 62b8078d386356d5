"""Standard-op bodies of DAIN's custom nodes, as model-local ONNX functions (docs/architecture.md §4).

The exporter writes each custom layer as one node `dain::DepthFlowProjection` /
`dain::AdaptiveWarp` (see `custom_ops.py`). This module builds the `FunctionProto` that defines
each of them with opset-18 standard ops only, so ONNX Runtime (CPU or CUDA) runs the file with no
extra library and TensorRT can fall back to the body where no plugin is registered. Semantics:
docs/dain-spec.md §6.1 and §6.3, identical to the PyTorch references in
`dainrt.model.ops` (the tests compare them on the golden op cases). Everything is float32:
coordinates, splat sums and weights never go through float16 (docs/dain-spec.md §7).

DepthFlowProjection(flow (B,2,H,W), weight (B,1,H,W)) -> (B,2,H,W), holes filled:
  * splat: each source's (-w*u, -w*v, w) goes to the 4 pixels of its 2x2 footprint with one
    `ScatterElements(reduction="add")` over flattened indices (rejected sources go to a spare
    slot H*W that is cut off afterwards); then P = N / S where S > 0, else 0.
  * hole filling, per axis (rows, then columns), without a running max: `rank = CumSum(valid)`;
    `ScatterElements` writes each valid pixel's position into a table at `rank - 1` (invalid
    pixels write to spare slots `n + pos`, so no slot is written twice); `GatherElements` at
    `rank - 1` gives the nearest valid pixel before a hole (none where rank = 0) and at `rank`
    the nearest after it (none where rank = the row's total). A hole takes the unweighted mean
    of the 1..4 neighbours found; with none it stays 0.
AdaptiveWarp(image (B,C,H,W), flow (B,2,H,W), kernel (B,16,H,W)) -> (B,C,H,W):
  16 taps, each a `Gather` of whole pixels (C values) from the image laid out as (B*H*W, C),
  times its weight `wy*wx*k[tap]`, accumulated with Mul + Add; invalid pixels copy the input.
"""
from __future__ import annotations

import onnx
from onnx import FunctionProto, ModelProto, TensorProto, helper

from .custom_ops import AW_OP, DFP_OP, DOMAIN, DOMAIN_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

OPSET = 18
_INT64_MAX = 2**63 - 1
_F32 = TensorProto.FLOAT
_I64 = TensorProto.INT64
NODE_ATTRIBUTES = ("plugin_namespace", "plugin_version")


class _Body:
    """A tiny builder for a function body: `op(...)` appends a node and returns its output name."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._consts: dict[tuple, str] = {}

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"{self.prefix}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{self.prefix}{len(self.nodes)}_{op_type}", **attrs))
        return out

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant (shared)."""
        key = ("ints", values)
        if key not in self._consts:
            self._consts[key] = self.op("Constant", value_ints=list(values))
        return self._consts[key]

    def int_scalar(self, value: int) -> str:
        key = ("int", value)
        if key not in self._consts:
            self._consts[key] = self.op("Constant", value_int=value)
        return self._consts[key]

    def float_scalar(self, value: float) -> str:
        key = ("float", value)
        if key not in self._consts:
            self._consts[key] = self.op("Constant", value_float=value)
        return self._consts[key]

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(axis))

    def grid(self, n: str, axis: int) -> tuple[str, str]:
        """0..n-1 (n a 1-D int64 [n]) laid along `axis` of a 4-D tensor: (int64, float32)."""
        r = self.op("Range", self.int_scalar(0), self.op("Squeeze", n), self.int_scalar(1))
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        pos = self.op("Reshape", r, self.ints(*shape))
        return pos, self.op("Cast", pos, to=_F32)

    def and_all(self, *conds: str) -> str:
        out = conds[0]
        for c in conds[1:]:
            out = self.op("And", out, c)
        return out


def _function(name: str, inputs: list[str], outputs: list[str], body: _Body, doc: str) -> FunctionProto:
    return helper.make_function(
        DOMAIN, name, inputs, outputs, body.nodes,
        opset_imports=[helper.make_opsetid("", OPSET)],
        attributes=list(NODE_ATTRIBUTES),
        doc_string=doc,
    )


def depth_flow_projection_function() -> FunctionProto:
    """`dain::DepthFlowProjection(flow, weight) -> projected`, hole filling on (docs/dain-spec.md §6.1)."""
    b = _Body("dfp")
    flow, weight = "flow", "weight"
    zero_f, one_f = b.float_scalar(0.0), b.float_scalar(1.0)
    one_i, zero_i = b.ints(1), b.ints(0)
    batch = b.op("Shape", flow, start=0, end=1)
    H = b.op("Shape", flow, start=2, end=3)
    W = b.op("Shape", flow, start=3, end=4)
    xs_i, xs = b.grid(W, 3)
    ys_i, ys = b.grid(H, 2)

    # --- splat ---------------------------------------------------------------------------
    u, v = b.slice(flow, 0, 1, 1), b.slice(flow, 1, 2, 1)
    X, Y = b.op("Add", xs, u), b.op("Add", ys, v)
    w_last = b.op("Sub", b.op("Cast", W, to=_F32), one_f)
    h_last = b.op("Sub", b.op("Cast", H, to=_F32), one_f)
    ok = b.and_all(b.op("GreaterOrEqual", X, zero_f), b.op("LessOrEqual", X, w_last),
                   b.op("GreaterOrEqual", Y, zero_f), b.op("LessOrEqual", Y, h_last))  # False for NaN
    xl = b.op("Cast", b.op("Floor", b.op("Where", ok, X, zero_f)), to=_I64)
    yt = b.op("Cast", b.op("Floor", b.op("Where", ok, Y, zero_f)), to=_I64)
    xr = b.op("Min", b.op("Add", xl, one_i), b.op("Sub", W, one_i))
    yb = b.op("Min", b.op("Add", yt, one_i), b.op("Sub", H, one_i))
    spare = b.op("Mul", H, W)  # = H*W: the slot for rejected sources
    flat = b.ints(0, 1, -1)
    corners = [
        b.op("Reshape", b.op("Where", ok, b.op("Add", b.op("Mul", yy, W), xx), spare), flat)
        for yy in (yt, yb) for xx in (xl, xr)
    ]
    index = b.op("Expand", b.op("Concat", *corners, axis=2), b.ints(1, 3, 1))        # (B,3,4HW)
    neg_w = b.op("Neg", weight)
    values = b.op("Concat", b.op("Mul", neg_w, u), b.op("Mul", neg_w, v), weight, axis=1)
    values = b.op("Reshape", b.op("Where", ok, values, zero_f), b.ints(0, 3, -1))
    values = b.op("Concat", values, values, values, values, axis=2)                  # (B,3,4HW)
    acc_shape = b.op("Concat", batch, b.ints(3), b.op("Add", spare, one_i), axis=0)
    acc = b.op("ConstantOfShape", acc_shape, value=helper.make_tensor("zero", _F32, [1], [0.0]))
    acc = b.op("ScatterElements", acc, index, values, axis=2, reduction="add")
    acc = b.op("Slice", acc, zero_i, spare, b.ints(2))
    acc = b.op("Reshape", acc, b.op("Concat", batch, b.ints(3), H, W, axis=0))     # (B,3,H,W)
    num, S = b.slice(acc, 0, 2, 1), b.slice(acc, 2, 3, 1)

    # --- normalise -----------------------------------------------------------------------
    valid = b.op("Greater", S, zero_f)
    proj = b.op("Where", valid, b.op("Div", num, b.op("Where", valid, S, one_f)), zero_f)

    # --- fill holes: left/right along rows, then up/down along columns ----------------------
    valid_i = b.op("Cast", valid, to=_I64)
    full = b.op("Shape", valid)
    proj_shape = b.op("Shape", proj)
    zeros_i = b.op("ConstantOfShape", full, value=helper.make_tensor("zero", _I64, [1], [0]))
    total = count = None
    for axis, n, pos1 in ((3, W, xs_i), (2, H, ys_i)):
        rank = b.op("CumSum", valid_i, b.int_scalar(axis))       # valid pixels at or before
        last = b.op("Slice", rank, b.ints(-1), b.ints(_INT64_MAX), b.ints(axis))
        pos = b.op("Expand", pos1, full)
        slot = b.op("Where", valid, b.op("Sub", rank, one_i), b.op("Add", pos, n))
        table = b.op("Concat", zeros_i, zeros_i, axis=axis)           # 2n long along `axis`
        table = b.op("ScatterElements", table, slot, pos, axis=axis)
        before = b.op("GatherElements", table, b.op("Max", b.op("Sub", rank, one_i), zero_i), axis=axis)
        after = b.op("GatherElements", table, rank, axis=axis)
        for where, found in ((before, b.op("Greater", rank, zero_i)), (after, b.op("Less", rank, last))):
            picked = b.op("GatherElements", proj, b.op("Expand", where, proj_shape), axis=axis)
            term = b.op("Where", found, picked, zero_f)
            hit = b.op("Cast", found, to=_F32)
            total = term if total is None else b.op("Add", total, term)
            count = hit if count is None else b.op("Add", count, hit)
    filled = b.op("Div", total, b.op("Max", count, one_f))
    b.nodes.append(helper.make_node("Where", [valid, proj, filled], ["projected"], name="dfp_out"))
    return _function(DFP_OP, [flow, weight], ["projected"], b, depth_flow_projection_function.__doc__)


def adaptive_warp_function() -> FunctionProto:
    """`dain::AdaptiveWarp(image, flow, kernel) -> warped` (docs/dain-spec.md §6.3)."""
    b = _Body("aw")
    image, flow, kernel = "image", "flow", "kernel"
    zero_f, one_f = b.float_scalar(0.0), b.float_scalar(1.0)
    zero_i, one_i = b.ints(0), b.ints(1)
    batch = b.op("Shape", image, start=0, end=1)
    C = b.op("Shape", image, start=1, end=2)
    H = b.op("Shape", image, start=2, end=3)
    W = b.op("Shape", image, start=3, end=4)
    _, xs = b.grid(W, 3)
    _, ys = b.grid(H, 2)
    Wf, Hf = b.op("Cast", W, to=_F32), b.op("Cast", H, to=_F32)
    two = b.float_scalar(2.0)

    u, v = b.slice(flow, 0, 1, 1), b.slice(flow, 1, 2, 1)
    X, Y = b.op("Add", xs, u), b.op("Add", ys, v)
    valid = b.and_all(
        b.op("GreaterOrEqual", X, zero_f), b.op("LessOrEqual", X, b.op("Sub", Wf, one_f)),
        b.op("GreaterOrEqual", Y, zero_f), b.op("LessOrEqual", Y, b.op("Sub", Hf, one_f)),
        b.op("Less", b.op("Abs", u), b.op("Div", Wf, two)), b.op("Less", b.op("Abs", v), b.op("Div", Hf, two)),
    )  # all False for NaN
    # Invalid pixels sample at their own position; the result is replaced by the copy below.
    X, Y = b.op("Where", valid, X, xs), b.op("Where", valid, Y, ys)
    x0, y0 = b.op("Floor", X), b.op("Floor", Y)
    a, bb = b.op("Sub", X, x0), b.op("Sub", Y, y0)
    wx = (b.op("Sub", one_f, a),) * 2 + (a,) * 2
    wy = (b.op("Sub", one_f, bb),) * 2 + (bb,) * 2
    x0i, y0i = b.op("Cast", x0, to=_I64), b.op("Cast", y0, to=_I64)
    w_last, h_last = b.op("Sub", W, one_i), b.op("Sub", H, one_i)
    cols = [b.op("Min", b.op("Max", b.op("Add", x0i, b.ints(d - 1)), zero_i), w_last) for d in range(4)]
    rows = [b.op("Mul", b.op("Min", b.op("Max", b.op("Add", y0i, b.ints(d - 1)), zero_i), h_last), W) for d in range(4)]
    # Pixels as rows of a (B*H*W, C) table, so one Gather fetches all C channels of a tap.
    hw = b.op("Mul", H, W)
    table = b.op("Reshape", b.op("Transpose", image, perm=[0, 2, 3, 1]), b.op("Concat", b.ints(-1), C, axis=0))
    base = b.op("Mul", b.op("Reshape", b.op("Range", b.int_scalar(0), b.op("Squeeze", batch), b.int_scalar(1)),
                             b.ints(-1, 1, 1, 1)), hw)              # first row of each batch item
    out = None
    for dy in range(4):
        for dx in range(4):
            tap = 4 * dy + dx
            idx = b.op("Reshape", b.op("Add", b.op("Add", rows[dy], cols[dx]), base), b.ints(0, -1))   # (B,HW)
            sample = b.op("Gather", table, idx, axis=0)                                               # (B,HW,C)
            w = b.op("Mul", b.op("Mul", wy[dy], wx[dx]), b.slice(kernel, tap, tap + 1, 1))
            term = b.op("Mul", sample, b.op("Reshape", w, b.ints(0, -1, 1)))
            out = term if out is None else b.op("Add", out, term)
    out = b.op("Reshape", out, b.op("Concat", batch, H, W, C, axis=0))
    out = b.op("Transpose", out, perm=[0, 3, 1, 2])
    b.nodes.append(helper.make_node("Where", [valid, out, image], ["warped"], name="aw_out"))
    return _function(AW_OP, [image, flow, kernel], ["warped"], b, adaptive_warp_function.__doc__)


FUNCTIONS = {DFP_OP: depth_flow_projection_function, AW_OP: adaptive_warp_function}


def attach_functions(model: ModelProto) -> ModelProto:
    """Add the function of every `dain` node type `model` uses (in place; returns `model`).

    Also makes sure the model imports the `dain` domain and opset 18.
    """
    used = sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})
    unknown = [op for op in used if op not in FUNCTIONS]
    if unknown:
        raise ValueError(f"no ONNX function body for dain::{unknown[0]}")
    have = {(f.domain, f.name) for f in model.functions}
    for op in used:
        if (DOMAIN, op) not in have:
            model.functions.append(FUNCTIONS[op]())
    domains = {o.domain for o in model.opset_import}
    if used and DOMAIN not in domains:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return model


def single_op_model(op_type: str, inputs: list[str], output: str, ir_version: int = 10) -> ModelProto:
    """A model holding just one `dain::<op_type>` node and its function, all dims dynamic
    (4-D float32 inputs named `inputs`): to test a body on its own, or a plugin against it."""
    node = helper.make_node(op_type, inputs, [output], domain=DOMAIN, name=op_type,
                            plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)
    dims = lambda p: [f"{p}_b", f"{p}_c", "h", "w"]  # noqa: E731
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(n, _F32, dims(n)) for n in inputs],
        [helper.make_tensor_value_info(output, _F32, dims(output))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = ir_version
    return attach_functions(model)
