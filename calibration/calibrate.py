"""`calibrate`: choose a reduced-precision configuration by measurement and write it as a
calibration folder (dainrt.export.calibrated) with its report `calibration.json`.

The search, per stage in `SEARCH_ORDER` (rectify first: 65 % of the arithmetic and no custom
ops; then frame and pair; warp is never touched and stays FP32):

1. **Sensitivity** of every unit (a convolution of rectify, a block of frame or pair;
   `variants.units`): the held-out PSNR drop against the truth when that unit alone runs in the
   reduced precision and everything else in FP32 (`trials.Trials`).
2. **Start**: int8: every unit; fp16: the units whose |drop| is at most `gate_db / 10` (ten
   such layers together stay within the gate); the others are kept as FP32 islands.
3. **Gate**: the stage's configuration, with the stages accepted before it, must keep the
   held-out PSNR within `gate_db` of FP32's, either way: a configuration that scores far *better*
   than FP32 against the truth is not the FP32 model either (clipping a poorly trained residual
   can do that); and its noise cost (`trials.noise_cost`: the drop its difference to FP32 is
   expected to cost the cleanest held-out frame) must be within `gate_db` too: the mean of a few
   held-out frames passed a configuration that cost clean Middlebury frames 0.37 dB. If not, the
   most sensitive unit (largest of |drop| and noise cost) still in reduced precision goes back to
   FP32 and the gate is tried again, until it passes or no unit is left (the stage then stays
   FP32, and the report says so).
4. int8, frame and pair only: a stage is quantized only where it pays, i.e. its fully quantized
   graph runs in at most `PAYS` of the FP32 time on ONNX Runtime here; otherwise it stays
   FP32 and the report gives the measured ratio.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.progress import progress_bar

from .samples import sample
from .trials import Trials
from .variants import VARIANTS, units

SEARCH_ORDER = ("rectify", "frame", "pair")
PRECISIONS = ("int8", "fp16")
GATE_DB = 0.3
PAYS = 0.9            # int8 frame/pair: quantized only if it runs in <= 90 % of the FP32 time
SPEED_RUNS = 3
FORMAT = "dainrt-calibration-1"


def _stage_time(trials: Trials, stage: str, graph: bytes | None) -> float:
    """Median seconds of one ONNX Runtime call of `stage` on its first calibration input."""
    inputs = next(trials.calibration_inputs(stage, limit=1))
    trials.backend.use_graph(stage, graph)
    try:
        trials.backend.run(stage, inputs)  # warm-up: session creation, first-run allocations
        times = []
        for _ in range(SPEED_RUNS):
            start = time.perf_counter()
            trials.backend.run(stage, inputs)
            times.append(time.perf_counter() - start)
    finally:
        trials.backend.use_graph(stage, None)
    return float(np.median(times))


def passes(fp32_db: float, s, gate_db: float) -> bool:
    """The gate (step 3): the held-out mean within `gate_db` of FP32's either way, and the noise
    cost within `gate_db`."""
    return abs(fp32_db - s.psnr_db) <= gate_db and s.noise_db <= gate_db


def search_stage(trials: Trials, stage: str, proto: onnx.ModelProto, precision: str, gate_db: float,
                 accepted: dict[str, bytes], workdir: Path, say: Callable[[str], None]) -> dict:
    """Steps 1-3 of the module docstring for one stage; returns its report entry, with the chosen
    graph (serialized) under "graph" (None: the stage stays FP32)."""
    maker = VARIANTS[precision](proto, stage, lambda: trials.calibration_inputs(stage), workdir)
    unit_nodes = units(proto, stage)
    base = trials.baseline.psnr_db
    rows = []
    bar = progress_bar(total=len(unit_nodes), desc=f"{stage} sensitivity", unit="trial")
    for label, nodes in unit_nodes.items():
        s = trials.score({stage: maker.trial(nodes).SerializeToString()})
        rows.append({"unit": label, "convs": len(nodes), "drop_db": base - s.psnr_db, "psnr_vs_fp32_db": s.vs_fp32_db,
                     "noise_db": s.noise_db})
        bar.update()
    bar.close()
    cost = {r["unit"]: max(abs(r["drop_db"]), r["noise_db"]) for r in rows}
    layer_db = gate_db / 10
    enabled = [u for u in unit_nodes if precision == "int8" or cost[u] <= layer_db]
    islands = [u for u in unit_nodes if u not in enabled]
    steps, graph, trial = [], None, None
    while True:
        candidate = maker.trial([n for u in enabled for n in unit_nodes[u]]).SerializeToString() if enabled else None
        s = trials.score({**accepted, stage: candidate}) if candidate else trials.score(accepted)
        passed = passes(base, s, gate_db)
        steps.append({"reduced_units": len(enabled), "psnr_db": s.psnr_db, "drop_db": base - s.psnr_db,
                      "psnr_vs_fp32_db": s.vs_fp32_db, "noise_db": s.noise_db, "passed": passed})
        say(f"{stage} gate: {len(enabled)}/{len(unit_nodes)} units in {precision}, drop {base - s.psnr_db:+.3f} dB, "
            f"noise cost {s.noise_db:.3f} dB ({'pass' if passed else 'fail'}, gate {gate_db} dB)")
        if passed or not enabled:
            if passed and enabled:
                trial = candidate
                graph = candidate if maker.trial == maker.make else \
                    maker.make([n for u in enabled for n in unit_nodes[u]]).SerializeToString()
            break
        worst = max(enabled, key=lambda u: cost[u])
        enabled.remove(worst)
        islands.append(worst)
    return {
        "units": rows, "layer_threshold_db": layer_db, "reduced": enabled if graph else [],
        "fp32": islands if graph else list(unit_nodes), "gate_steps": steps,
        "backed_off": len(steps) - 1, "result": precision if graph else "fp32",
        "note": None if graph else f"no unit can stay in {precision} within the gate: the stage stays FP32",
        "graph": graph, "trial_graph": trial,
    }


def check_output_dir(out_dir: str | os.PathLike, source: str | os.PathLike, overwrite: bool) -> Path:
    """The calibration folder to write, checked before any work: new, empty, or (with
    `overwrite`) an earlier calibration, never the input; its parent must be a folder."""
    from dainrt.export.calibrated import REPORT

    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / REPORT).is_file():
            raise DainrtError(f"{out} exists and is not a calibration folder: pick a new or empty folder")
        if not overwrite:
            raise DainrtError(f"{out} holds a calibration already: pass -y to replace it, or pick another folder")
    if not out.parent.is_dir():
        raise DainrtError(f"cannot make {out}: {out.parent} is not a folder")
    if Path(source).expanduser().resolve() == out.resolve():
        raise DainrtError(f"the calibration folder {out} is the input: pick another folder")
    return out


def calibrate(model, source: str | os.PathLike, out_dir: str | os.PathLike, precision: str = "int8",
              pairs: int = 8, gate_db: float = GATE_DB, *, stages: Sequence[str] = SEARCH_ORDER,
              onnx_dir: str | os.PathLike | None = None, threads: int | None = None, overwrite: bool = False,
              say: Callable[[str], None] = lambda m: print(f"dainrt: {m}", file=sys.stderr, flush=True)) -> dict:
    """Calibrate `model` (a `dainrt.model.DAIN`) on the film or picture folder `source` and write
    the calibration folder `out_dir`; returns the report (also `out_dir/calibration.json`).

    `stages`: the stages searched (a subset of SEARCH_ORDER, in that order; the others are FP32
    in int8, FP16 by the export's pass in fp16); `onnx_dir`: the FP32 export to start from
    (default: the export cache). Raises DainrtError/OptionError for user mistakes.
    """
    from dainrt.base import __version__
    from dainrt.base.files import write_json
    from dainrt.export import ensure_exported, stage_files
    from dainrt.export.calibrated import REPORT
    from dainrt.export.exporter import write_stages
    from dainrt.export.fp16 import convert_to_fp16
    from dainrt.model import STAGE_NAMES
    from dainrt.model.checkpoint import fingerprint

    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not gate_db > 0:
        raise OptionError("gate_db", f"must be more than 0, got {gate_db}")
    unknown = [s for s in stages if s not in SEARCH_ORDER]
    if unknown:
        raise OptionError("stages", f"{unknown[0]!r} cannot be calibrated; choose from {', '.join(SEARCH_ORDER)}")
    out = check_output_dir(out_dir, source, overwrite)
    start = time.perf_counter()
    sha = fingerprint(model.state_dict())[0]
    say(f"sampling {pairs} pair(s) from {source}")
    samples = sample(source, pairs)
    fp32_dir, manifest = ensure_exported(model, onnx_dir, "fp32", checkpoint_sha256=sha, progress=say)
    protos = {s: onnx.load(str(p)) for s, p in stage_files(fp32_dir, manifest).items()}
    timing = {"sampling_and_export_s": time.perf_counter() - start}
    t0 = time.perf_counter()
    trials = Trials(model, fp32_dir, samples, threads)
    timing["fp32_reference_s"] = time.perf_counter() - t0
    say(f"FP32 on {len(samples.held_out)} held-out triplet(s) ({samples.held_out_source}): "
        f"{trials.baseline.psnr_db:.2f} dB")
    report_stages: dict[str, dict] = {}
    accepted: dict[str, bytes] = {}           # what the trials run (FP16: emulated)
    chosen: dict[str, bytes] = {}             # what goes into the folder
    root = out.parent if out.parent.exists() else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=".dainrt-calibrate.", dir=root) as work:
        work = Path(work)
        for stage in [s for s in SEARCH_ORDER if s in stages]:
            t0 = time.perf_counter()
            entry: dict = {}
            if precision == "int8" and stage != "rectify":
                full = VARIANTS["int8"](protos[stage], stage, lambda: trials.calibration_inputs(stage), work)
                quantized = full.make([n for ns in units(protos[stage], stage).values() for n in ns]).SerializeToString()
                ratio = _stage_time(trials, stage, quantized) / _stage_time(trials, stage, None)
                entry["speed_ratio"] = ratio
                if ratio > PAYS:
                    say(f"{stage}: int8 takes {ratio:.2f}x the FP32 time here, more than {PAYS}: stays FP32")
                    report_stages[stage] = {**entry, "result": "fp32",
                                            "note": f"int8 does not pay here ({ratio:.2f}x the FP32 time)"}
                    continue
            entry.update(search_stage(trials, stage, protos[stage], precision, gate_db, accepted, work, say))
            if entry["graph"] is not None:
                accepted[stage], chosen[stage] = entry["trial_graph"], entry["graph"]
            entry["seconds"] = time.perf_counter() - t0
            report_stages[stage] = entry
        final = trials.score(accepted)

        result = {}
        labels = {}
        for stage in STAGE_NAMES:
            if stage in chosen:
                result[stage] = onnx.ModelProto.FromString(chosen[stage])
                labels[stage] = precision
            elif precision == "fp16" and stage != "warp" and stage not in stages:
                result[stage], labels[stage] = convert_to_fp16(protos[stage]), "fp16"
            else:
                result[stage], labels[stage] = protos[stage], "fp32"
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=root))
        try:
            written = write_stages(tmp, result, sha, model.config, precision, labels)
            for entry in report_stages.values():
                entry.pop("graph", None)
                entry.pop("trial_graph", None)
            report = {
                "format": FORMAT, "dainrt_version": __version__, "checkpoint_sha256": sha,
                "precision": precision, "gate_db": gate_db, "stages": report_stages,
                "stage_precisions": labels,
                "gate": {"fp32_psnr_db": trials.baseline.psnr_db, "psnr_db": final.psnr_db,
                         "drop_db": trials.baseline.psnr_db - final.psnr_db, "psnr_vs_fp32_db": final.vs_fp32_db,
                         "noise_db": final.noise_db, "passed": passes(trials.baseline.psnr_db, final, gate_db),
                         "held_out_source": samples.held_out_source},
                "samples": {"source": str(source), "kind": samples.source,
                            "calibration": [s.name for s in samples.calibration],
                            "held_out": [s.name for s in samples.held_out],
                            "size": list(samples.calibration[0].frames[0].shape[1::-1]),
                            "skipped_frames": samples.skipped},
                "onnx_sha256": {s: e["sha256"] for s, e in written["stages"].items()},
                "seconds": {**timing, "total_s": time.perf_counter() - start},
            }
            write_json(tmp / REPORT, report)
            if out.exists():
                stale = Path(tempfile.mkdtemp(prefix=f".{out.name}.stale.", dir=root))
                os.replace(out, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def format_report(report: dict) -> str:
    """The sensitivity tables, the chosen configuration and the gate, for people."""
    lines = []
    for stage, e in report["stages"].items():
        lines.append(f"{stage}: {e['result']}" + (f" ({e['note']})" if e.get("note") else "")
                     + (f", int8/fp32 time {e['speed_ratio']:.2f}" if "speed_ratio" in e else ""))
        if e.get("units"):
            lines.append(f"  {'unit':34s} {'convs':>5s} {'drop dB':>8s} {'vs fp32 dB':>10s} {'noise dB':>8s}  chosen")
            for r in e["units"]:
                chosen = report["precision"] if r["unit"] in e["reduced"] else "fp32"
                lines.append(f"  {r['unit']:34s} {r['convs']:5d} {r['drop_db']:+8.3f} {min(r['psnr_vs_fp32_db'], 999):10.2f} "
                             f"{r['noise_db']:8.3f}  {chosen}")
            lines.append(f"  gate steps: " + ", ".join(f"{s['reduced_units']} units {s['drop_db']:+.3f} dB "
                                                      f"(noise {s['noise_db']:.3f})" for s in e["gate_steps"]))
    g = report["gate"]
    lines.append(f"gate: FP32 {g['fp32_psnr_db']:.3f} dB, chosen {g['psnr_db']:.3f} dB, drop {g['drop_db']:+.3f} dB, "
                 f"noise cost {g['noise_db']:.3f} dB "
                 f"(limit {report['gate_db']} dB, {'passed' if g['passed'] else 'FAILED'}; held out: {g['held_out_source']}, "
                 f"{len(report['samples']['held_out'])} triplets), {g['psnr_vs_fp32_db']:.2f} dB vs FP32 frames")
    lines.append(f"took {report['seconds']['total_s']:.0f} s")
    return "\n".join(lines)
