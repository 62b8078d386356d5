"""Checkpoints: the model's keys vs the official manifest, the golden synthetic checkpoint,
save/load round trips and strict verification."""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import pytest
import torch

from conftest import DATA, GOLDEN
from dainrt.model.checkpoint import (
    FORMAT,
    expected_shapes,
    fingerprint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    synthetic_state_dict,
    verify_state_dict,
)
from dainrt.base.errors import DainrtError
from dainrt.model import DAIN, ModelConfig

MANIFEST = json.loads((DATA / "dain-state-dict.json").read_text())
SMALL = ModelConfig(0.25)


def meta_model(config: ModelConfig = ModelConfig()) -> DAIN:
    with torch.device("meta"):
        return DAIN(config)


@pytest.fixture(scope="module")
def golden_sd():
    """The golden synthetic checkpoint (width 1, seed 0): ~2.5 s to build, so built once."""
    return synthetic_state_dict(ModelConfig(), seed=0)


@pytest.fixture(scope="module")
def small_sd():
    return synthetic_state_dict(SMALL, seed=5)


# ----------------------------------------------------------------------------------------------
# The model against the official manifest


def test_state_dict_matches_manifest():
    sd = meta_model().state_dict()
    assert MANIFEST["num_keys"] == 954
    assert list(sd) == list(MANIFEST["keys"])                      # same names, same order
    for key, value in sd.items():
        assert list(value.shape) == MANIFEST["keys"][key], key
        assert str(value.dtype) == "torch." + MANIFEST["key_dtypes"][key], key
    dtypes = [str(v.dtype) for v in sd.values()]
    assert dtypes.count("torch.float32") == 799 and dtypes.count("torch.int64") == 155
    assert expected_shapes(ModelConfig()) == OrderedDict((k, tuple(s)) for k, s in MANIFEST["keys"].items())


def test_parameter_counts_match_manifest():
    model = meta_model()
    params: dict[str, int] = {}
    buffers: dict[str, int] = {}
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        params[name.split(".")[0]] = params.get(name.split(".")[0], 0) + p.numel()
    for name, b in model.named_buffers():
        buffers[name.split(".")[0]] = buffers.get(name.split(".")[0], 0) + b.numel()
    expected = {k: v for k, v in MANIFEST["param_counts"].items() if k != "TOTAL"}
    assert params == expected
    assert sum(params.values()) == MANIFEST["param_counts"]["TOTAL"] == 24_031_656
    assert sum(buffers.values()) == MANIFEST["buffer_element_counts"]["TOTAL"] == 14_299


# ----------------------------------------------------------------------------------------------
# Synthetic weights


def test_golden_checkpoint_fingerprint(golden_sd):
    ref = json.loads((GOLDEN / "checkpoint_fingerprint.json").read_text())
    digest, per_key = fingerprint(golden_sd)
    assert list(per_key) == list(ref["per_key"])
    for key, (h, total, first) in per_key.items():
        ref_h, ref_total, ref_first = ref["per_key"][key]
        assert h == ref_h, key
        assert first == ref_first, key
        assert total == pytest.approx(ref_total, rel=1e-12, abs=1e-12), key
    assert digest == ref["sha256"] == "8c180dc4fe96fb35b54ddc20740ad513e7fb04a09a4e9bc1a7e1d52c36c8157b"


def test_golden_checkpoint_recipe_details(golden_sd):
    """Spot checks of the recipe's rules (tests/data/golden/README.md §1.1)."""
    assert all(v.dtype == torch.int64 and v.shape == () and int(v) == 0
               for k, v in golden_sd.items() if k.endswith("num_batches_tracked"))
    assert all(v.dtype == torch.float32 for k, v in golden_sd.items() if not k.endswith("num_batches_tracked"))
    var = torch.cat([v for k, v in golden_sd.items() if k.endswith("running_var")])
    assert 0.5 <= float(var.min()) and float(var.max()) < 1.5
    for head in ("initScaleNets_filter1.2.bias", "initScaleNets_filter2.2.bias"):
        assert float(golden_sd[head].mean()) == pytest.approx(0.25, abs=0.01)
    # ConvTranspose2d fan: (in, out, kh, kw) -> fan = in*kh*kw; the std follows gain/sqrt(fan).
    key = next(k for k in golden_sd if k.startswith("flownets.deconv") and k.endswith("weight"))
    w = golden_sd[key]
    fan = w.shape[0] * w.shape[2] * w.shape[3]
    assert float(w.std()) == pytest.approx(math.sqrt(2.0) / math.sqrt(fan), rel=0.05)


def test_golden_checkpoint_loads_strict(golden_sd):
    model = DAIN(ModelConfig())
    model.load_state_dict(golden_sd, strict=True)
    assert all(torch.equal(v, golden_sd[k]) for k, v in model.state_dict().items())
    report = verify_state_dict(golden_sd, ModelConfig())
    assert report.ok and report.param_count == 24_031_656
    assert (report.missing, report.unexpected, report.mismatched, report.tolerated) == ([], [], [], [])


def test_synthetic_seed_and_width(small_sd):
    assert list(small_sd) == list(MANIFEST["keys"])                # same names at every width
    assert verify_state_dict(small_sd, SMALL).ok
    again = synthetic_state_dict(SMALL, seed=5)
    other = synthetic_state_dict(SMALL, seed=6)
    assert fingerprint(again)[0] == fingerprint(small_sd)[0]        # deterministic
    floats = [k for k, v in small_sd.items() if v.is_floating_point()]
    assert all(not torch.equal(small_sd[k], other[k]) for k in floats)
    with pytest.raises(ValueError):
        synthetic_state_dict(SMALL, seed=-1)


# ----------------------------------------------------------------------------------------------
# Save / load


def test_small_checkpoint_round_trip(tmp_path, small_sd):
    path = save_checkpoint(small_sd, SMALL, tmp_path / "sub" / "small.pth")
    assert path == tmp_path / "sub" / "small.pth"
    assert os.listdir(tmp_path / "sub") == ["small.pth"]           # no temp file left behind
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["config"] == {"width": 0.25}

    sd, config = load_checkpoint(path)
    assert config == SMALL
    assert list(sd) == list(small_sd) and all(torch.equal(sd[k], small_sd[k]) for k in sd)

    model = load_model(path)
    assert model.config == SMALL and not model.training
    assert all(torch.equal(v, small_sd[k]) for k, v in model.state_dict().items())
    n_params = sum(p.numel() for p in model.parameters())
    assert verify_state_dict(sd, config).param_count == n_params == 1_949_481   # width 0.25

    # Saving a module takes its config from the module; the file replaces the old one atomically.
    save_checkpoint(model, None, path)
    assert load_checkpoint(path)[1] == SMALL
    assert os.listdir(tmp_path / "sub") == ["small.pth"]


def test_official_flat_file_with_prefix_and_no_counters(tmp_path, small_sd):
    """A flat file means width 1; `module.` on every key is stripped; absent counters are fine."""
    flat = OrderedDict((k, v) for k, v in small_sd.items() if not k.endswith("num_batches_tracked"))
    path = tmp_path / "flat.pth"
    torch.save(flat, path)
    sd, config = load_checkpoint(path)
    assert config == ModelConfig() and len(sd) == 954 - 155

    prefixed = OrderedDict(("module." + k, v) for k, v in flat.items())
    report = verify_state_dict(prefixed, SMALL)
    assert report.ok and len(report.tolerated) == 155 and "module." in report.notes[0]
    save_checkpoint(prefixed, SMALL, tmp_path / "prefixed.pth")
    model = load_model(tmp_path / "prefixed.pth")
    assert torch.equal(model.ctxNet.block1[0].weight, small_sd["ctxNet.block1.0.weight"])
    assert all(int(v) == 0 for k, v in model.state_dict().items() if k.endswith("num_batches_tracked"))


def test_verify_reports_offending_keys(tmp_path, small_sd):
    sd = OrderedDict(small_sd)
    del sd["ctxNet.block1.0.weight"]                               # missing (float: required)
    del sd["depthNet.1.num_batches_tracked"]                       # missing counter: tolerated
    sd["ctxNet.extra.weight"] = torch.zeros(3)                     # unexpected
    reshaped = "rectifyNet.block2.conv1.weight"
    good_shape = tuple(sd[reshaped].shape)
    sd[reshaped] = sd[reshaped].reshape(good_shape[0], -1)         # mis-shaped

    report = verify_state_dict(sd, SMALL)
    assert not report.ok
    assert report.missing == ["ctxNet.block1.0.weight"]
    assert report.tolerated == ["depthNet.1.num_batches_tracked"]
    assert report.unexpected == ["ctxNet.extra.weight"]
    assert report.mismatched == [(reshaped, good_shape, (good_shape[0], math.prod(good_shape[1:])))]
    full = verify_state_dict(small_sd, SMALL).param_count
    assert report.param_count == full - small_sd["ctxNet.block1.0.weight"].numel() - small_sd[reshaped].numel()

    path = save_checkpoint(sd, SMALL, tmp_path / "broken.pth")
    with pytest.raises(DainrtError, match=r"ctxNet\.block1\.0\.weight") as err:
        load_model(path)
    assert "ctxNet.extra.weight" in str(err.value) and reshaped in str(err.value)
    assert "\n" not in str(err.value)


def test_partial_prefix_is_not_stripped(small_sd):
    sd = OrderedDict(small_sd)
    sd["module.x"] = torch.zeros(1)
    report = verify_state_dict(sd, SMALL)
    assert report.unexpected == ["module.x"] and report.notes == [] and report.missing == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not a checkpoint\n"), "not a readable PyTorch checkpoint"),
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: torch.save([torch.zeros(2)], p), "not a DAIN state dict"),
        (lambda p: torch.save({}, p), "not a DAIN state dict"),
        (lambda p: torch.save({"a": 1, "b": torch.zeros(1)}, p), "not named tensors"),
        (lambda p: torch.save({"format": "other-2", "state_dict": {}}, p), "unsupported checkpoint format"),
        (lambda p: torch.save({"format": FORMAT, "config": {"width": 3.0}, "state_dict": {"a": torch.zeros(1)}}, p),
         "bad model config"),
        (lambda p: None, "checkpoint not found"),
        (lambda p: p.mkdir(), "not a file"),
    ],
)
def test_not_a_checkpoint(tmp_path, make, message):
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(DainrtError, match=message):
        load_checkpoint(path)
    with pytest.raises(DainrtError):
        load_model(path)


def test_bad_device_is_a_user_error(tmp_path, small_sd):
    path = save_checkpoint(small_sd, SMALL, tmp_path / "small.pth")
    with pytest.raises(DainrtError, match="cannot use device"):
        load_model(path, device="no-such-device")
