"""The TensorRT engine cache (engine/tensorrt/cache.py) and the builder's pure-Python helpers:
key fields, staleness (any field -> miss), corrupt or partial files never loaded, atomic writes,
`dainrt engines list|clear`. No TensorRT or GPU needed."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from dainrt.cli import main
from dainrt.base.files import atomic_write
from dainrt.engine.tensorrt.cache import EngineCache, EngineKey, ShapeProfile

KEY = EngineKey(
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt_version="11.4.0.106",
    plugin_version="1+0123456789ab",
    stage="warp",
    precision="fp32",
    profile=ShapeProfile.static(1152, 1984).tag(),
    optimization_level="3",
    workspace="default",
    onnx_sha256="ab" * 32,
)
ENGINE = b"\x00serialized-engine\xff" * 100


@pytest.fixture
def cache(tmp_path):
    return EngineCache(tmp_path / "engines")


def test_key_fields():
    assert [f.name for f in dataclasses.fields(EngineKey)] == [
        "gpu_name", "compute_capability", "tensorrt_version", "plugin_version", "stage", "precision",
        "profile", "optimization_level", "workspace", "onnx_sha256", "calibration",
    ]
    assert KEY.digest() == EngineKey(**KEY.as_dict()).digest()  # stable
    assert KEY.basename.startswith("warp-fp32-") and len(KEY.basename) == len("warp-fp32-") + 16
    with pytest.raises(ValueError):
        dataclasses.replace(KEY, precision="fp8")
    with pytest.raises(ValueError):
        dataclasses.replace(KEY, gpu_name="")


def test_store_and_load(cache):
    path = cache.store(KEY, ENGINE, build_seconds=12.5)
    assert path == cache.engine_path(KEY) and path.read_bytes() == ENGINE
    record = json.loads(cache.record_path(KEY).read_text())
    assert record["key"] == KEY.as_dict() and record["size"] == len(ENGINE) and record["build_seconds"] == 12.5
    assert cache.load(KEY) == ENGINE
    assert cache.check(KEY) == ""


_CHANGES = {
    "gpu_name": "NVIDIA GeForce RTX 3090",
    "compute_capability": "8.6",
    "tensorrt_version": "10.9.0.34",
    "plugin_version": "1+ba9876543210",
    "stage": "rectify",
    "precision": "fp16",
    "profile": ShapeProfile.static(1152, 1920).tag(),
    "optimization_level": "5",          # `build-engine --opt-level 5` must not reuse a level-3 engine
    "workspace": "2048MiB",
    "onnx_sha256": "cd" * 32,
    "calibration": "ef" * 32,           # another `dainrt calibrate` folder: another engine
}


@pytest.mark.parametrize("field", list(_CHANGES))
def test_any_field_change_is_a_miss(cache, field):
    cache.store(KEY, ENGINE)
    other = dataclasses.replace(KEY, **{field: _CHANGES[field]})
    assert other.digest() != KEY.digest()
    assert cache.load(other) is None
    assert cache.check(other) == "missing"


@pytest.mark.parametrize("field", list(_CHANGES))
def test_stale_record_under_the_same_name_is_never_loaded(cache, field):
    """Even if a file carries the wanted name, a record with another key is not loaded."""
    cache.store(KEY, ENGINE)
    other = dataclasses.replace(KEY, **{field: _CHANGES[field]})
    os.replace(cache.engine_path(KEY), cache.engine_path(other))
    os.replace(cache.record_path(KEY), cache.record_path(other))
    assert cache.load(other) is None
    assert cache.check(other).startswith("stale") and field in cache.check(other)


@pytest.mark.parametrize("damage", ["truncate", "flip", "append", "no_record", "bad_json", "no_engine", "bad_format"])
def test_corrupt_or_partial_files_are_never_loaded(cache, damage):
    cache.store(KEY, ENGINE)
    engine, record = cache.engine_path(KEY), cache.record_path(KEY)
    if damage == "truncate":
        engine.write_bytes(ENGINE[: len(ENGINE) // 2])
    elif damage == "flip":
        engine.write_bytes(ENGINE[:10] + bytes([ENGINE[10] ^ 1]) + ENGINE[11:])
    elif damage == "append":
        engine.write_bytes(ENGINE + b"x")
    elif damage == "no_record":
        record.unlink()
    elif damage == "bad_json":
        record.write_text("{not json")
    elif damage == "no_engine":
        engine.unlink()
    elif damage == "bad_format":
        record.write_text(json.dumps({"format": "something-else", "key": KEY.as_dict()}))
    assert cache.load(KEY) is None
    assert cache.check(KEY) != ""
    entries = cache.entries()
    assert len(entries) == 1
    if damage in ("truncate", "append", "no_record", "bad_json", "no_engine", "bad_format"):
        assert entries[0].problem


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.engine"
    atomic_write(target, b"old")
    seen = []
    real_replace = os.replace

    def failing_replace(src, dst):
        seen.append((Path(src), Path(dst)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write(target, b"new" * 1000)
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"old"
    (src, dst), = seen
    assert dst == target and src != target and src.parent == target.parent  # temp file, same folder
    assert list(tmp_path.iterdir()) == [target]  # the temporary file is gone


def test_store_writes_engine_before_record(cache, monkeypatch):
    order = []
    import dainrt.engine.tensorrt.cache as mod

    real = mod.atomic_write
    monkeypatch.setattr(mod, "atomic_write", lambda p, d: (order.append(Path(p).suffix), real(p, d)))
    cache.store(KEY, ENGINE)
    assert order == [".engine", ".json"]


def test_timing_cache_path_and_roundtrip(cache):
    p = cache.timing_cache_path("NVIDIA H100 80GB HBM3", "9.0", "11.4.0.106")
    assert p.parent == cache.root and p.name == "timing-nvidia-h100-80gb-hbm3-sm9.0-trt11.4.0.106.cache"
    assert cache.load_timing_cache(p) == b""
    cache.store_timing_cache(p, b"timing")
    assert cache.load_timing_cache(p) == b"timing"


def test_shape_profile():
    s = ShapeProfile.static(1152, 1984)
    assert s.is_static and s.tag() == "static:1x1152x1984" and s.describe() == "1984x1152"
    d = ShapeProfile((1, 256, 256), (1, 1152, 1984), (1, 2176, 3840))
    assert not d.is_static and ShapeProfile.from_tag(d.tag()) == d and ShapeProfile.from_tag(s.tag()) == s
    assert d.covers(1, 512, 512) and not d.covers(1, 4096, 512) and not d.covers(2, 512, 512)
    with pytest.raises(ValueError):
        ShapeProfile((1, 512, 512), (1, 256, 256), (1, 1024, 1024))


def test_builder_helpers(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from dainrt.base.errors import DainrtError
    from dainrt.base.sizes import parse_size
    from dainrt.engine.tensorrt.builder import build_command, profile_for_sizes, stage_input_shapes, tensor_scale
    from dainrt.export import stage_precision

    assert [stage_precision(s, "fp16") for s in ("frame", "pair", "warp", "rectify")] == ["fp16", "fp16", "fp32", "fp16"]
    assert parse_size("1920x1080") == (1920, 1080)
    with pytest.raises(DainrtError):
        parse_size("1920x1080x3")
    assert profile_for_sizes([(1920, 1080)]).tag() == "static:1x1152x1984"
    dyn = profile_for_sizes([(1920, 1080), (3840, 2160), (640, 360)], dynamic=True)
    assert dyn.opt == (1, 1152, 1984) and dyn.min[1] <= 448 and dyn.max[2] >= 3840
    assert profile_for_sizes([(1920, 1080)], dynamic=True).min[1:] <= (320, 320)
    assert [tensor_scale(n) for n in ("image0", "feat2", "feat6", "feat1_4", "flow10", "kernel0", "t")] == [1, 4, 64, 16, 4, 1, 1]
    assert build_command(ShapeProfile.static(1152, 1984), "fp16") == \
        "dainrt build-engine --size 1984x1152 --padded --precision fp16"
    # the suggested command asks for exactly the engine that was missing
    assert profile_for_sizes([(1984, 1152)], padded=True).tag() == "static:1x1152x1984"
    assert profile_for_sizes([(1984, 1152)]).tag() != "static:1x1152x1984"  # official padding always pads

    def vi(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image0"], ["out"])], "g",
        [vi("image0", ["B", 3, "H", "W"]), vi("flow01", ["B", 2, "h", "w"]), vi("t", ["B"])], [vi("out", None)])
    path = tmp_path / "warp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    shapes = stage_input_shapes(path, dyn)
    assert shapes["image0"][1] == (1, 3, 1152, 1984)
    assert shapes["flow01"][1] == (1, 2, 288, 496) and shapes["t"] == ((1,), (1,), (1,))
    graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64  # a fixed height that disagrees
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(DainrtError, match="fixed"):
        stage_input_shapes(path, dyn)


def test_engines_cli_list_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path))
    assert main(["engines", "list"]) == 0
    assert "no cached engines" in capsys.readouterr().out
    cache = EngineCache()
    assert cache.root == tmp_path / "engines"
    cache.store(KEY, ENGINE, build_seconds=3)
    broken = dataclasses.replace(KEY, stage="frame", precision="fp16")
    cache.store(broken, ENGINE)
    cache.engine_path(broken).write_bytes(b"partial")
    cache.store_timing_cache(cache.timing_cache_path("GPU", "9.0", "11.4"), b"t")
    assert main(["engines", "list"]) == 0
    out = capsys.readouterr().out
    assert KEY.basename in out and broken.basename in out and "NVIDIA H100" in out
    assert "partial" in out and "timing cache" in out
    assert main(["engines", "clear"]) == 0
    assert "removed 5 file(s)" in capsys.readouterr().out
    assert not any(cache.root.iterdir())
    assert main(["engines", "list"]) == 0
    assert "no cached engines" in capsys.readouterr().out
