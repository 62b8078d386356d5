"""`dainrt engines list|clear`: look at and empty the TensorRT engine cache (no TensorRT needed)."""
from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "engines",
        help="list or clear the cached TensorRT engines",
        description="The TensorRT engine cache lives in <cache>/engines (<cache> is $DAINRT_CACHE, "
        "$XDG_CACHE_HOME/dainrt or ~/.cache/dainrt). Engines are keyed by GPU, TensorRT version, "
        "plugin version, stage, precision, shape profile and ONNX hash; an engine whose key does not "
        "match is never loaded.",
    )
    actions = p.add_subparsers(dest="engines_command", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", help="one line per cached engine, with its key and any problem")
    ls.set_defaults(func=run_list)
    clear = actions.add_parser("clear", help="delete every cached engine, timing cache and build log")
    clear.set_defaults(func=run_clear)


def run_list(args: argparse.Namespace) -> int:
    from dainrt.engine.tensorrt.cache import EngineCache

    cache = EngineCache()
    entries = cache.entries()
    timing = cache.timing_caches()
    if not entries and not timing:
        print(f"no cached engines in {cache.root}")
        return 0
    print(f"engines in {cache.root}:")
    for e in entries:
        if e.key is not None:
            k = e.key
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.built_at)) if e.built_at else "?"
            line = (f"  {e.engine.name}  {k.stage} {k.precision} {k.profile}  {k.gpu_name} (sm {k.compute_capability})"
                    f"  TensorRT {k.tensorrt_version}  plugins {k.plugin_version}  onnx {k.onnx_sha256[:12]}"
                    f"  {e.size / 2**20:.1f} MiB  built {when} in {e.build_seconds:.0f} s")
        else:
            line = f"  {e.engine.name}  {e.size / 2**20:.1f} MiB"
        print(line + (f"  [{e.problem}]" if e.problem else ""))
    for t in timing:
        print(f"  {t.name}  timing cache  {t.stat().st_size / 2**10:.0f} KiB")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from dainrt.engine.tensorrt.cache import EngineCache

    cache = EngineCache()
    removed = cache.clear()
    print(f"removed {len(removed)} file(s) from {cache.root}")
    return 0
