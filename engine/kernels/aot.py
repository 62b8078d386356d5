"""Ahead-of-time compilation of the Triton kernels to PTX, for an explicit GPU target.

No GPU is needed: ``triton.compile`` with ``GPUTarget("cuda", sm, 32)`` runs the whole pipeline
(TTIR -> TTGIR -> LLIR -> PTX) on the CPU. The TensorRT AOT plugins use this with the SM of the
GPU they build for; the CPU tests use it for sm_86 and sm_90.

TensorRT launches an AOT plugin kernel with exactly (tensor inputs, int32 scalars, tensor
outputs). Triton >= 3.3 appends hidden pointer parameters (global scratch, profile scratch) to
every kernel; when the compile metadata says they are unused (scratch sizes 0) and the body never
reads them, `compile_ptx` removes them from the ``.entry`` signature so the parameter list is
exactly what TensorRT passes. A kernel that does use scratch is refused rather than launched
with a missing argument.

Command line (used when the caller runs under TRITON_INTERPRET=1, where triton.jit gives
interpreter objects that cannot be compiled)::

    python -m dainrt.engine.kernels.aot --kernel adaptive_warp_kernel --arch 90 [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass

# kernel -> (parameters in order with their Triton types, default constexprs, num_warps).
# Every pointer is FP32; every scalar int32 (TensorRT's SymInt32).
KERNEL_SIGNATURES: dict[str, tuple[tuple[tuple[str, str], ...], dict, int]] = {
    "dfp_splat_kernel": (
        (("flow_ptr", "*fp32"), ("weight_ptr", "*fp32"), ("H", "i32"), ("W", "i32"),
         ("num_ptr", "*fp32"), ("den_ptr", "*fp32")),
        {"BLOCK": 256},
        4,
    ),
    "dfp_fill_kernel": (
        (("num_ptr", "*fp32"), ("den_ptr", "*fp32"), ("H", "i32"), ("W", "i32"), ("out_ptr", "*fp32")),
        {"NORMALISE": True, "FILL": True, "BLOCK": 256},
        4,
    ),
    "adaptive_warp_kernel": (
        (("image_ptr", "*fp32"), ("flow_ptr", "*fp32"), ("kernel_ptr", "*fp32"), ("C", "i32"),
         ("H", "i32"), ("W", "i32"), ("out_ptr", "*fp32")),
        {"BLOCK": 128},
        4,
    ),
}


def default_ptx_version(arch: int) -> int | None:
    """The PTX ISA to emit for sm_`arch`: the oldest that covers it, so that any driver able to
    run TensorRT 10.9+/11 can JIT the PTX (Triton would otherwise stamp the newest its bundled
    ptxas knows, e.g. 9.4 for sm_90 with triton 3.9, which needs a CUDA 13.4 driver).
    None: let Triton choose (architectures newer than this table)."""
    if arch < 100:
        return 80   # CUDA 12.0: sm_75..sm_90a
    if arch < 120:
        return 86   # CUDA 12.8: sm_100/sm_101
    if arch == 120:
        return 87   # CUDA 12.8: sm_120
    return None


@dataclass(frozen=True)
class CompiledKernel:
    """One kernel compiled for one SM: what a launcher (TensorRT's AOT plugin) needs."""

    name: str            # PTX entry name
    ptx_version: str     # the PTX .version directive, e.g. "8.0"
    ptx: str             # PTX text, hidden scratch parameters removed
    arch: int            # e.g. 86 for sm_86
    num_warps: int
    threads: int         # block size in threads = num_warps * 32
    shared: int          # dynamic shared memory in bytes
    num_params: int      # parameters of the .entry after stripping
    constexprs: dict


def _entry_params(ptx: str, name: str) -> tuple[int, int, list[str]]:
    """(start, end, parameter declarations) of the `.entry name(...)` parameter list."""
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\(", ptx)
    if m is None:
        raise ValueError(f"no .entry {name} in the PTX")
    end = ptx.index(")", m.end())
    params = [p.strip() for p in ptx[m.end():end].split(",") if p.strip()]
    return m.end(), end, params


def strip_hidden_params(ptx: str, name: str, keep: int) -> str:
    """Remove the `.entry` parameters after the first `keep` ones, which must be unused."""
    start, end, params = _entry_params(ptx, name)
    if len(params) < keep:
        raise ValueError(f"{name}: {len(params)} PTX parameters, expected at least {keep}")
    for decl in params[keep:]:
        pname = decl.split()[-1]
        if len(re.findall(r"\b" + re.escape(pname) + r"\b", ptx)) > 1:
            raise ValueError(f"{name}: hidden parameter {pname} is used by the kernel; cannot launch it from TensorRT")
    body = ",\n".join("\t" + p for p in params[:keep])
    return ptx[:start] + "\n" + body + "\n" + ptx[end:]


def _jit_function(kernel: str):
    import triton

    from . import aw, dfp

    fn = getattr({"adaptive_warp_kernel": aw}.get(kernel, dfp), kernel)
    if isinstance(fn, triton.runtime.jit.JITFunction):
        return fn
    return None  # an interpreter object: compile in a clean process instead


def compile_ptx(kernel: str, arch: int, ptx_version: int | None = -1, **constexprs) -> CompiledKernel:
    """Compile `kernel` (a key of KERNEL_SIGNATURES) to PTX for sm_`arch`, with its default
    constexprs overridden by `constexprs`. `ptx_version` (e.g. 80 for ISA 8.0): -1 for
    `default_ptx_version(arch)`, None for Triton's own choice. Needs triton, not a GPU."""
    if ptx_version == -1:
        ptx_version = default_ptx_version(int(arch))
    if kernel not in KERNEL_SIGNATURES:
        raise ValueError(f"unknown kernel {kernel!r}; one of {', '.join(KERNEL_SIGNATURES)}")
    params, defaults, num_warps = KERNEL_SIGNATURES[kernel]
    consts = {**defaults, **constexprs}
    fn = _jit_function(kernel)
    if fn is None:
        return _compile_in_subprocess(kernel, arch, ptx_version, consts)

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {n: t for n, t in params}
    signature.update({k: "constexpr" for k in consts})
    src = ASTSource(fn=fn, signature=signature, constexprs=consts)
    options = {"num_warps": num_warps, "enable_fp_fusion": True}
    if ptx_version is not None:
        options["ptx_version"] = int(ptx_version)
    compiled = triton.compile(src, target=GPUTarget("cuda", int(arch), 32), options=options)
    md = compiled.metadata
    for what in ("global_scratch_size", "profile_scratch_size"):
        if getattr(md, what, 0):
            raise ValueError(f"{kernel} needs {what}={getattr(md, what)}: TensorRT's AOT launcher cannot pass it")
    name = md.name
    ptx = strip_hidden_params(compiled.asm["ptx"], name, keep=len(params))
    version = re.search(r"^\.version\s+(\S+)", ptx, re.MULTILINE)
    return CompiledKernel(
        name=name, ptx_version=version.group(1) if version else "", ptx=ptx, arch=int(arch), num_warps=md.num_warps, threads=md.num_warps * 32,
        shared=md.shared, num_params=len(params), constexprs=consts,
    )


def _compile_in_subprocess(kernel: str, arch: int, ptx_version: int | None, consts: dict) -> CompiledKernel:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "dainrt.engine.kernels.aot", "--kernel", kernel, "--arch", str(arch),
           "--ptx-version", str(ptx_version if ptx_version is not None else 0),
           "--constexprs", json.dumps(consts), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {kernel} for sm_{arch} failed:\n{proc.stderr[-4000:]}")
    return CompiledKernel(**json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dainrt.engine.kernels.aot", description=__doc__.split("\n")[0])
    p.add_argument("--kernel", required=True, choices=sorted(KERNEL_SIGNATURES))
    p.add_argument("--arch", required=True, type=int, help="SM number, e.g. 86 or 90")
    p.add_argument("--ptx-version", type=int, default=-1,
                   help="PTX ISA as 80 for 8.0; -1 (default) picks the oldest that covers the SM, 0 lets Triton choose")
    p.add_argument("--constexprs", default="{}", help="JSON object overriding the default constexprs")
    p.add_argument("--json", action="store_true", help="print the result as JSON (else the PTX)")
    args = p.parse_args(argv)
    version = None if args.ptx_version == 0 else args.ptx_version
    compiled = compile_ptx(args.kernel, args.arch, ptx_version=version, **json.loads(args.constexprs))
    print(json.dumps(asdict(compiled)) if args.json else compiled.ptx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
