"""The four DAIN stages -> four ONNX files and a manifest (docs/architecture.md §3-4).

`export_stages(model, out_dir, precision)` writes `frame.onnx`, `pair.onnx`, `warp.onnx`,
`rectify.onnx` and `manifest.json`:

* torch.onnx dynamo export at opset 18 (GridSample keeps the `bilinear` spelling TensorRT maps
  correctly), `ir_version` 10 (ONNX Runtime >= 1.16 reads it), weights embedded;
* dynamic batch, height and width: every image-sized tensor is (batch, C, 64*h, 64*w), the
  PWC features and flows (batch, C, (64/s)*h, (64/s)*w) at stride s; `t` is (batch,);
* `warp.onnx` holds the custom layers as `dain::DepthFlowProjection` / `dain::AdaptiveWarp`
  nodes with model-local function bodies (`onnx_functions.py`); the pair stage's correlation is
  plain Slice/Mul/ReduceMean;
* `onnx.checker.check_model(full_check=True)` on every file;
* deterministic: the same checkpoint and toolchain give byte-identical files (no timestamps, no
  source paths: the exporter's per-node stack traces are stripped);
* atomic: the old manifest is removed first, each file is written to a temporary name and
  renamed, the manifest last, so a directory with a manifest is always complete.

`precision="fp16"` runs the cast pass of `fp16.py` on frame, pair and rectify (warp stays FP32).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.files import atomic_write

OPSET = 18
IR_VERSION = 10
MANIFEST = "manifest.json"
FORMAT = "dainrt-onnx-1"
PRECISIONS = ("fp32", "fp16")
# Example sizes for tracing: batch 2 and 2x3 blocks of 64 px, so that no dimension is 0, 1 or
# shared by two symbols (torch.export would specialise it).
_EXAMPLE_BATCH, _EXAMPLE_H, _EXAMPLE_W = 2, 128, 192
_DIM_MAX = 1024  # 65,536 px per side, far beyond any frame


def file_name(stage: str) -> str:
    return f"{stage}.onnx"


# ----------------------------------------------------------------------------------------------
# Tracing


def _example_inputs(model) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of every stage at the example size, made by running the stages in torch."""
    from dainrt.model import WarpStage

    s = model.stages()
    g = torch.Generator().manual_seed(0)
    img0 = torch.rand(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W, generator=g)
    img1 = torch.rand(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W, generator=g)
    with torch.no_grad():
        c0, *f0 = s.frame(img0)
        c1, *f1 = s.frame(img1)
        pair = s.pair(img0, img1, *f0, *f1)
        t = torch.tensor([0.5, 0.25])
        warp_in = (img0, img1, c0, c1, *pair, t)
        rectify_in = WarpStage()(*warp_in)
    return {"frame": (img0,), "pair": (img0, img1, *f0, *f1), "warp": warp_in, "rectify": tuple(rectify_in)}


def _dims(x: torch.Tensor, batch, h, w) -> dict:
    """dynamic_shapes entry of one input: batch, and heights/widths as multiples of h, w."""
    spec = {0: batch}
    if x.ndim == 4:
        for axis, (ex, sym) in ((2, (_EXAMPLE_H, h)), (3, (_EXAMPLE_W, w))):
            k = 64 * x.shape[axis] // ex  # pixels per unit of the symbol
            spec[axis] = sym if k == 1 else k * sym
    return spec


def _symbolic(x_shape: tuple[int, ...], axis: int) -> str | int:
    """Manifest/graph name of one dim of an example tensor: batch, '64*h', 'w', or the int."""
    if axis == 0:
        return "batch"
    if len(x_shape) == 4 and axis in (2, 3):
        k = 64 * x_shape[axis] // (_EXAMPLE_H if axis == 2 else _EXAMPLE_W)
        sym = "h" if axis == 2 else "w"
        return sym if k == 1 else f"{k}*{sym}"
    return int(x_shape[axis])


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's chatter (progress prints, torchvision notes, deprecations)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _optimize(model_proto):
    """onnxscript's default optimisation (constant folding, the standard rewrite rules, dead-code
    removal, constants lifted to initializers, CSE), minus the `SlicesSplit` rule: it costs
    minutes on the 810 overlapping slices of the pair stage's cost volumes and never applies."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common

    try:
        from onnxscript import rewriter
        from onnxscript.optimizer import _constant_folding as cf
    except ImportError:  # another onnxscript layout: the stock optimiser (slower, same result)
        import onnxscript.optimizer

        model = ir.serde.deserialize_model(model_proto)
        onnxscript.optimizer.optimize_ir(model)
        return ir.serde.serialize_model(model)

    rules = [r for r in rewriter._DEFAULT_REWRITE_RULES if getattr(r, "name", "") != "SlicesSplit"]
    model = ir.serde.deserialize_model(model_proto)
    passes = ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager(
            [
                cf.FoldConstantsPass(shape_inference=True, input_size_limit=cf.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                     output_size_limit=cf.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT),
                rewriter.RewritePass(rules),
                common.RemoveUnusedNodesPass(),
                common.RemoveUnusedFunctionsPass(),
                common.RemoveUnusedOpsetsPass(),
            ],
            steps=2, early_stop=True,
        ),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )
    passes(model)
    return ir.serde.serialize_model(model)


def _finish(proto, stage: str, examples: dict, outputs: tuple[torch.Tensor, ...]):
    """Post-export: canonical I/O dims, functions, opsets, IR version, no source paths."""
    from dainrt.model import STAGE_IO

    from .onnx_functions import attach_functions

    in_names, out_names = STAGE_IO[stage]
    graph = proto.graph
    got = ([v.name for v in graph.input], [v.name for v in graph.output])
    if got != (list(in_names), list(out_names)):
        raise RuntimeError(f"exported {stage} graph has I/O {got}, expected {STAGE_IO[stage]}")
    for values, tensors in ((graph.input, examples[stage]), (graph.output, outputs)):
        for value, x in zip(values, tensors):
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                sym = _symbolic(tuple(x.shape), axis)
                if isinstance(sym, str):
                    dim.dim_param = sym
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    graph.doc_string = ""
    del graph.metadata_props[:]  # the ExportedProgram's text, with set-ordered (unstable) parts
    for value in (*graph.input, *graph.output, *graph.value_info):
        del value.metadata_props[:]
    del proto.metadata_props[:]
    attach_functions(proto)
    proto.ir_version = IR_VERSION
    return proto


def export_onnx(model, stages=None, progress: Callable[[str], None] | None = None) -> dict:
    """FP32 `onnx.ModelProto` of each stage (not yet written or checked), traced on the CPU."""
    import copy

    from dainrt.model import STAGE_IO, STAGE_NAMES
    from torch.export import Dim

    from .custom_ops import EXPORT_OPS, ONNX_TRANSLATIONS

    stages = list(stages or STAGE_NAMES)
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    examples = _example_inputs(model)
    modules = model.stages(EXPORT_OPS)._asdict()
    batch = Dim("batch", min=1, max=_DIM_MAX)
    h, w = Dim("h", min=1, max=_DIM_MAX), Dim("w", min=1, max=_DIM_MAX)
    protos = {}
    for stage in stages:
        if progress:
            progress(f"exporting {stage}")
        args = examples[stage]
        specs = [_dims(x, batch, h, w) for x in args]
        if stage == "pair":  # forward(image0, image1, *feats): the features are one tuple
            specs = [specs[0], specs[1], tuple(specs[2:])]
        with torch.no_grad(), _quiet():
            outputs = modules[stage](*args)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            program = torch.onnx.export(
                modules[stage], args, dynamo=True, opset_version=OPSET,
                input_names=list(STAGE_IO[stage][0]), output_names=list(STAGE_IO[stage][1]),
                dynamic_shapes=specs, custom_translation_table=ONNX_TRANSLATIONS,
                optimize=False, external_data=False, verbose=False, report=False,
            )
            proto = _optimize(program.model_proto)
        protos[stage] = _finish(proto, stage, examples, outputs)
    return protos


# ----------------------------------------------------------------------------------------------
# Manifest


def _value_info(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim],
        })
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(protos: dict, blobs: dict[str, bytes], checkpoint_sha256: str, config, precision: str,
                   stage_precisions: dict[str, str] | None = None) -> dict:
    """The manifest of an export; `stage_precisions` (stage -> label) overrides `stage_precision`
    for files made elsewhere (a calibration's int8 stages)."""
    import onnx
    import onnxscript

    from dainrt.base import __version__

    from .custom_ops import AW_OP, DFP_OP, DOMAIN, DOMAIN_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

    stages = {}
    for stage, proto in protos.items():
        stages[stage] = {
            "file": file_name(stage),
            "sha256": _sha256(blobs[stage]),
            "bytes": len(blobs[stage]),
            "precision": (stage_precisions or {}).get(stage) or stage_precision(stage, precision),
            "inputs": _value_info(proto.graph.input),
            "outputs": _value_info(proto.graph.output),
            "custom_ops": sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain == DOMAIN}),
        }
    return {
        "format": FORMAT,
        "dainrt_version": __version__,
        "checkpoint_sha256": checkpoint_sha256,
        "model_config": config.to_dict(),
        "precision": precision,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "custom_domain": {"domain": DOMAIN, "version": DOMAIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE,
                          "plugin_version": PLUGIN_VERSION, "ops": [DFP_OP, AW_OP]},
        "io_precision": "float32 (fp16 stages cast at their boundary)",
        "toolchain": {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                      "onnxscript": onnxscript.__version__},
        "stages": stages,
    }


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else OptionError."""
    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def stage_precision(stage: str, precision: str) -> str:
    """The precision a stage is exported (and its engine built) in: the warp stage holds every
    coordinate and custom layer and stays FP32 (docs/dain-spec.md §7); the others follow
    `precision`."""
    from dainrt.model import STAGE_NAMES

    check_precision(precision)
    if stage not in STAGE_NAMES:
        raise OptionError("stages", f"{stage!r} is unknown; choose from {', '.join(STAGE_NAMES)}")
    return "fp32" if stage == "warp" else precision


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The manifest of an export directory, or None when there is none (or it is unreadable)."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def manifest_problem(manifest: dict | None, directory, checkpoint_sha256: str, precision: str,
                     check_files: bool = True) -> str | None:
    """Why the export in `directory` cannot serve this checkpoint/precision/dainrt version, or None.

    With `check_files`, each ONNX file must also exist with the recorded size and sha256.
    """
    from dainrt.base import __version__
    from dainrt.model import STAGE_NAMES

    if manifest is None:
        return f"no valid {MANIFEST}"
    if manifest.get("dainrt_version") != __version__:
        return f"exported by dainrt {manifest.get('dainrt_version')}, this is dainrt {__version__}"
    if manifest.get("checkpoint_sha256") != checkpoint_sha256:
        return (f"exported from checkpoint {str(manifest.get('checkpoint_sha256'))[:16]}..., "
                f"not this one ({checkpoint_sha256[:16]}...)")
    if manifest.get("precision") != precision:
        return f"precision {manifest.get('precision')}, not {precision}"
    stages = manifest.get("stages") or {}
    for stage in STAGE_NAMES:
        entry = stages.get(stage)
        if not entry:
            return f"no {stage} stage in {MANIFEST}"
        if check_files:
            path = Path(directory) / entry["file"]
            try:
                data = path.read_bytes()
            except OSError:
                return f"{entry['file']} is missing"
            if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
                return f"{entry['file']} does not match its manifest (modified or truncated)"
    return None


# ----------------------------------------------------------------------------------------------
# Writing


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` if needed and prove a file can be written there; DainrtError otherwise."""
    out = Path(out_dir).expanduser()
    try:
        if out.exists() and not out.is_dir():
            raise DainrtError(f"cannot write ONNX files to {out}: it is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise DainrtError(f"cannot write ONNX files to {out}: {err.strerror or err}") from None
    return out


def export_stages(model, out_dir: str | os.PathLike, precision: str = "fp32", *,
                  checkpoint_sha256: str | None = None, progress: Callable[[str], None] | None = None,
                  protos: dict | None = None, stages=None) -> dict:
    """Export `model` (a `dainrt.model.DAIN`) to `out_dir`; returns the manifest (also written).

    `checkpoint_sha256` defaults to the fingerprint of `model.state_dict()` (tests/data/golden/README.md §1.1:
    the sha256 a checkpoint file of these weights has). `protos` lets a caller reuse FP32 protos
    of `export_onnx(model)` (tests; an export of both precisions); `stages` a subset of the four
    (the manifest then lists only those, and the runtime cache never takes such a directory).
    Raises DainrtError for an unwritable directory or an unknown precision.
    """
    import onnx

    from dainrt.model import STAGE_NAMES

    check_precision(precision)
    out = check_writable(out_dir)
    if checkpoint_sha256 is None:
        from dainrt.model.checkpoint import fingerprint

        checkpoint_sha256 = fingerprint(model.state_dict())[0]
    stages = [s for s in STAGE_NAMES if s in (stages or STAGE_NAMES)]
    if protos is not None:  # the caller's protos are annotated below: work on copies
        protos = {s: onnx.ModelProto.FromString(p.SerializeToString()) for s, p in protos.items() if s in stages}
    else:
        protos = export_onnx(model, stages, progress)
    if precision == "fp16":
        from .fp16 import convert_to_fp16

        protos = {s: (convert_to_fp16(p) if stage_precision(s, precision) == "fp16" else p) for s, p in protos.items()}
    return write_stages(out, protos, checkpoint_sha256, model.config, precision, progress=progress)


def write_stages(out: Path, protos: dict, checkpoint_sha256: str, config, precision: str,
                 stage_precisions: dict[str, str] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Annotate, check (full `onnx.checker`) and write finished stage protos and their manifest
    into the writable folder `out` (atomically, manifest last); returns the manifest.
    `stage_precisions` labels stages whose precision `stage_precision` does not know (int8)."""
    import onnx

    from dainrt.model import STAGE_NAMES

    stages = [s for s in STAGE_NAMES if s in protos]
    labels = {s: (stage_precisions or {}).get(s) or stage_precision(s, precision) for s in stages}
    blobs = {}
    for stage in stages:
        proto = protos[stage]
        if progress:
            progress(f"checking {stage}")
        _annotate(proto, stage, checkpoint_sha256, labels[stage])
        onnx.checker.check_model(proto, full_check=True)
        blobs[stage] = proto.SerializeToString(deterministic=True)
    manifest = build_manifest(protos, blobs, checkpoint_sha256, config, precision, labels)
    try:
        (out / MANIFEST).unlink(missing_ok=True)  # the directory is incomplete from here on
        for stage in stages:
            if progress:
                progress(f"writing {file_name(stage)}")
            atomic_write(out / file_name(stage), blobs[stage])
        atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    except OSError as err:
        raise DainrtError(f"cannot write ONNX files to {out}: {err.strerror or err}") from None
    return manifest


def _annotate(proto, stage: str, checkpoint_sha256: str, precision: str) -> None:
    """Identify a lone file: producer dainrt, and the stage/checkpoint/precision as metadata."""
    from onnx import helper

    from dainrt.base import __version__

    proto.producer_name = "dainrt"
    proto.producer_version = __version__
    del proto.metadata_props[:]
    helper.set_model_props(proto, {"dainrt.stage": stage, "dainrt.checkpoint_sha256": checkpoint_sha256,
                                   "dainrt.precision": precision})


# ----------------------------------------------------------------------------------------------
# The export cache (used by the ONNX Runtime backend)


def cached_export_dir(checkpoint_sha256: str, precision: str = "fp32") -> Path:
    """`<cache>/onnx/<checkpoint sha256[:16]>-<dainrt version>-<precision>/`."""
    from dainrt.base import __version__
    from dainrt.base.paths import cache_dir

    return cache_dir() / "onnx" / f"{checkpoint_sha256[:16]}-{__version__}-{precision}"


def ensure_exported(model, onnx_dir: str | os.PathLike | None = None, precision: str = "fp32", *,
                    checkpoint_sha256: str | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[Path, dict]:
    """A directory holding a complete, current export of `model`: (directory, manifest).

    * `onnx_dir=None`: the cache directory of `cached_export_dir`. A missing or stale entry
      (another dainrt version or checkpoint in its manifest, a modified or truncated file) is
      rebuilt: exported into a temporary sibling, then renamed into place.
    * an explicit `onnx_dir`: used if its manifest matches this checkpoint, precision and
      dainrt version; exported into if it does not exist or is empty; otherwise DainrtError
      (it is the user's folder: never overwritten behind their back).
    A stale file is never used silently.
    """
    import shutil

    check_precision(precision)
    if checkpoint_sha256 is None:
        from dainrt.model.checkpoint import fingerprint

        checkpoint_sha256 = fingerprint(model.state_dict())[0]

    if onnx_dir is not None:
        directory = Path(onnx_dir).expanduser()
        manifest = read_manifest(directory)
        problem = manifest_problem(manifest, directory, checkpoint_sha256, precision)
        if problem is None:
            return directory, manifest
        if directory.is_dir() and any(directory.iterdir()):
            raise DainrtError(
                f"the ONNX files in {directory} cannot be used: {problem}; re-export them with "
                f"`dainrt export --weights CHECKPOINT -o {directory}` (precision {precision}) or pick an empty folder"
            )
        manifest = export_stages(model, directory, precision, checkpoint_sha256=checkpoint_sha256, progress=progress)
        return directory, manifest

    final = cached_export_dir(checkpoint_sha256, precision)
    manifest = read_manifest(final)
    problem = manifest_problem(manifest, final, checkpoint_sha256, precision) if final.exists() else "not exported yet"
    if problem is None:
        return final, manifest
    if progress:
        progress(f"exporting the model to ONNX in {final} ({problem})")
    root = check_writable(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        manifest = export_stages(model, tmp, precision, checkpoint_sha256=checkpoint_sha256, progress=progress)
        if final.exists():
            stale = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.stale."))
            os.replace(final, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same export first: use it if it is sound.
            if manifest_problem(read_manifest(final), final, checkpoint_sha256, precision) is not None:
                raise
    except OSError as err:
        raise DainrtError(f"cannot write the ONNX cache {final}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, read_manifest(final) or manifest


def stage_files(directory: Path, manifest: dict) -> dict[str, Path]:
    """stage -> ONNX file of an export made by `ensure_exported` (names from its manifest)."""
    return {stage: Path(directory) / entry["file"] for stage, entry in manifest["stages"].items()}
