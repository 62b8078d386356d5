"""Every option of every sub-command, read from the argparse parsers themselves, gets a wrong
type, an out-of-range value and an empty value: each must end in one line on stderr, a
non-zero exit, no traceback and no file created, before any model work.

A new option fails this test until it validates its value: a numeric option by its `type=`
(`dainrt/commands/_args.py`), any other by a line in KINDS saying what it holds.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest

from dainrt import cli

# What each non-numeric option holds, by (sub-command, dest): decides its bad values.
KINDS = {
    ("interpolate", "output"): "out_folder", ("interpolate", "weights"): "in_file",
    ("interpolate", "backend"): "text", ("interpolate", "device"): "text", ("interpolate", "onnx_dir"): "out_folder",
    ("interpolate", "times"): "text", ("interpolate", "precision"): "text", ("interpolate", "kernels"): "text",
    ("run", "precision"): "text", ("run", "kernels"): "text", ("eval", "precision"): "text", ("eval", "kernels"): "text",
    ("weights download", "mirror"): "text", ("weights download", "blob_id"): "text",
    ("run", "output"): "out_file", ("run", "backend"): "text", ("run", "weights"): "in_file",
    ("run", "device"): "text", ("run", "report"): "out_file", ("run", "codec"): "text", ("run", "pix_fmt"): "text",
    ("run", "scene_mode"): "text", ("run", "cluster"): "text", ("run", "keep_holds"): "text", ("run", "shots"): "in_file",
    ("compare", "output"): "out_file", ("compare", "labels"): "text",
    ("eval", "weights"): "in_file", ("eval", "backend"): "text", ("eval", "device"): "text", ("eval", "json"): "out_file", ("eval", "video"): "in_file",
    ("export", "output"): "out_folder", ("export", "weights"): "in_file", ("export", "precision"): "text",
    ("bench", "device"): "text", ("bench", "sizes"): "text", ("bench", "backends"): "text", ("bench", "json"): "out_file",
    ("bench", "weights"): "in_file", ("bench", "pairs"): "in_folder",
    ("train", "phase"): "text", ("train", "init"): "in_file", ("train", "images"): "in_folder", ("train", "device"): "text",
    ("weights download", "url"): "text", ("weights download", "sha256"): "text", ("weights download", "output"): "out_file",
    ("weights init", "output"): "out_file",
    ("build-engine", "weights"): "in_file", ("build-engine", "size"): "text", ("build-engine", "precision"): "text",
    ("build-engine", "stages"): "text", ("build-engine", "device"): "text",
    ("run", "tile"): "text", ("interpolate", "tile"): "text", ("eval", "tile"): "text", ("build-engine", "tile"): "text",
    ("calibrate", "output"): "out_folder", ("calibrate", "weights"): "in_file", ("calibrate", "precision"): "text",
    ("interpolate", "calibration"): "in_folder", ("run", "calibration"): "in_folder", ("eval", "calibration"): "in_folder",
    ("bench", "calibration"): "in_folder", ("build-engine", "calibration"): "in_folder",
}
NUMERIC_TYPES = ("int", "float", "_rate", "_positive_int", "_number", "int_range.", "float_range.")


def _commands(parser: argparse.ArgumentParser, prefix: tuple = ()):
    """(command words, parser) for every leaf sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
            return
    yield " ".join(prefix), parser


def _options(parser: argparse.ArgumentParser):
    """The options that take a value (flags and help excluded)."""
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
            yield action


def _numeric(action) -> bool:
    t = action.type
    name = getattr(t, "__qualname__", getattr(t, "__name__", ""))
    return t in (int, float) or any(name.startswith(n) for n in NUMERIC_TYPES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Small valid inputs, so that the option under test is the only thing wrong."""
    import av
    from PIL import Image

    root = tmp_path_factory.mktemp("options")
    rng = np.random.default_rng(0)
    for name in ("f0.png", "f1.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / name)
    clip = root / "clip.mkv"
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    (root / "clip2.mkv").write_bytes(clip.read_bytes())
    seq = root / "seq"
    seq.mkdir()
    for name in ("frame10.png", "frame11.png", "frame10i11.png"):
        (seq / name).write_bytes((root / "f0.png").read_bytes())
    (root / "afile").write_text("x")
    (root / "afolder").mkdir()
    return root


def _base(command: str, w: Path, work: Path, testing) -> list[str]:
    """A valid command line without the option under test."""
    base = {
        "interpolate": [str(w / "f0.png"), str(w / "f1.png"), "-o", str(work / "frames")],
        "run": [str(w / "clip.mkv"), "-o", str(work / "film.mkv")],
        "compare": [str(w / "clip.mkv"), str(w / "clip2.mkv"), "-o", str(work / "side.mkv")],
        "eval": [str(w / "seq")],
        "export": ["-o", str(work / "onnx")],
        "bench": [],
        "train": [str(work / "train")],
        "weights download": ["--url", "http://127.0.0.1:9/best.pth", "--sha256", "a" * 64, "-o", str(work / "w.pth")],
        "weights init": ["-o", str(work / "w.pth"), "--width", "0.25"],
        "build-engine": [],
        "calibrate": [str(w / "clip.mkv"), "-o", str(work / "cal")],
        "weights verify": [str(w / "afile")],
    }[command]
    if command == "run" and testing.dest not in ("fps", "factor"):
        base += ["--factor", "2"]
    if testing.dest == "onnx_dir":
        base += ["--backend", "onnxruntime"]      # --onnx-dir applies to it only
    # drop the option under test where the base gives it (it is given once, bad)
    out, skip = [], False
    for arg in base:
        if skip:
            skip = False
            continue
        if arg in testing.option_strings:
            skip = True
            continue
        out.append(arg)
    return out


def _bad_values(command: str, action, w: Path) -> dict[str, str]:
    if _numeric(action) or action.choices is not None:
        return {"wrong type": "abc", "out of range": "-1", "empty": ""}
    kind = KINDS.get((command, action.dest))
    assert kind is not None, (f"new option {action.option_strings[0]} of `dainrt {command}`: validate its value "
                              f"(a type= from dainrt/commands/_args.py) and add it to KINDS in {__file__}")
    return {
        "text": {"wrong type": "abc", "out of range": "-1", "empty": ""},
        "in_file": {"wrong type": str(w / "afolder"), "out of range": str(w / "missing.pth"), "empty": ""},
        "in_folder": {"wrong type": str(w / "afile"), "out of range": str(w / "missing"), "empty": ""},
        "out_file": {"wrong type": str(w / "afolder"), "out of range": str(w / "afile" / "x.json"), "empty": ""},
        "out_folder": {"wrong type": str(w / "afile"), "out of range": str(w / "afile" / "sub"), "empty": ""},
    }[kind]


def _files(*roots: Path) -> set[str]:
    return {str(p) for r in roots for p in r.rglob("*")}


def _cases():
    parser = cli.build_parser()
    for command, sub in _commands(parser):
        for action in _options(sub):
            yield pytest.param(command, action.option_strings[-1], id=f"{command}-{action.option_strings[-1]}")


@pytest.mark.parametrize("command,flag", list(_cases()))
def test_every_option_refuses_bad_values_in_one_line(command, flag, world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    sub = dict(_commands(cli.build_parser()))[command]
    action = next(a for a in _options(sub) if flag in a.option_strings)
    before = _files(world, tmp_path)
    for what, value in _bad_values(command, action, world).items():
        argv = command.split() + _base(command, world, tmp_path, action) + [f"{flag}={value}"]
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code not in (0, None), f"{what} {flag}={value!r} was accepted: dainrt {' '.join(argv)}"
        assert len(lines) == 1 and "Traceback" not in err, f"{what} {flag}={value!r}: {err}"
        assert _files(world, tmp_path) == before, f"{what} {flag}={value!r} left files behind"


def test_the_walk_sees_every_subcommand():
    names = {c for c, _ in _commands(cli.build_parser())}
    assert {"interpolate", "run", "compare", "eval", "export", "bench", "train", "weights download",
            "weights init", "weights verify", "build-engine", "engines list", "engines clear", "calibrate"} <= names
