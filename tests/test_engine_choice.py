"""How the model runs: the user's choices (`--backend`, `--precision`, `--kernels`, `--compile`)
mapped onto backend options, the fastest default per device, and one-line refusals of what this
machine cannot run. The paths that run on a CPU run here: torch FP32 with the reference ops, and
the torch backend with the Triton kernels under Triton's interpreter (in a subprocess)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import MIDDLEBURY
from dainrt.base.errors import OptionError
from dainrt.cli import main
from dainrt.engine.choice import choose_engine
from dainrt.engine.tensorrt import missing_requirements

CPU, CUDA = torch.device("cpu"), torch.device("cuda")   # a device object needs no GPU
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def test_cpu_default_is_torch_fp32_numba():
    c = choose_engine(CPU)
    assert (c.backend, c.options, c.picked) == ("torch", {"precision": "fp32", "kernels": "numba",
                                                          "compile": False}, False)
    assert c.describe() == "torch fp32, numba kernels"
    assert choose_engine(CPU, kernels="reference").describe() == "torch fp32"
    assert choose_engine(CPU, compile=True).options["compile"] is True
    assert choose_engine(CPU, "onnxruntime", "fp16").options == {"precision": "fp16"}


def test_the_torch_backend_without_options_runs_what_the_choice_picks(small_model):
    """`RunOptions` and `create_backend` without options (the cluster test's way in) run the same
    kernels as `dainrt run` (the choice): a different default once made a cluster run differ from
    the single-process CLI run by rounding."""
    from dainrt.engine import create_backend

    assert create_backend("torch", small_model).kernels == choose_engine(CPU).options["kernels"] == "numba"


def test_cuda_default_is_the_fastest_torch_path_and_says_so():
    c = choose_engine(CUDA)
    assert c.backend == "torch" and c.picked
    assert c.options["precision"] == "fp16" and c.options["compile"] is False
    assert c.options["kernels"] == ("triton" if HAVE_TRITON else "reference")
    assert c.describe() == "torch fp16" + (", triton kernels" if HAVE_TRITON else "")
    explicit = choose_engine(CUDA, "torch", "fp32", "reference", compile=True)
    assert not explicit.picked and explicit.describe() == "torch fp32, compiled"


@pytest.mark.parametrize("device, args, option, words", [
    (CPU, dict(precision="fp16"), "precision", "needs a CUDA device"),
    (CPU, dict(kernels="triton"), "kernels", "needs a CUDA device"),
    (CUDA, dict(kernels="numba"), "kernels", "CPU only"),
    (CPU, dict(backend="onnxruntime", kernels="reference"), "kernels", "torch backend only"),
    (CPU, dict(backend="onnxruntime", compile=True), "compile", "torch backend only"),
    (CPU, dict(backend="bogus"), "backend", "unknown"),
    (CPU, dict(precision="fp8"), "precision", "fp32, fp16, int8"),
    (CPU, dict(precision="int8"), "precision", "with --calibration DIR"),
    (CPU, dict(backend="onnxruntime", precision="int8"), "calibration", "dainrt calibrate"),
    (CPU, dict(kernels="cuda"), "kernels", "reference, numba, triton"),
    (CUDA, dict(backend="onnxruntime"), "backend", "onnxruntime-gpu"),
])
def test_refusals_name_what_is_missing(device, args, option, words):
    if args.get("backend") == "onnxruntime" and device == CUDA:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this ONNX Runtime has the CUDA provider")
    with pytest.raises(OptionError) as err:
        choose_engine(device, **args)
    assert err.value.option == option and words in str(err.value) and "\n" not in str(err.value)


def test_tensorrt_refused_in_one_line_where_missing():
    if not missing_requirements():
        pytest.skip("TensorRT is usable here")
    with pytest.raises(Exception) as err:
        choose_engine(CUDA, "tensorrt")
    assert "TensorRT" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("extra, words", [
    (["--precision", "fp16"], "--precision fp16 with the torch backend needs a CUDA device"),
    (["--kernels", "triton"], "--kernels triton needs a CUDA device"),
    (["--backend", "onnxruntime", "--compile"], "--compile applies to the torch backend only"),
    (["--backend", "nosuch"], "--backend 'nosuch' is unknown"),
])
def test_cli_refuses_before_any_work(tmp_path, capsys, extra, words):
    f0, f1 = (MIDDLEBURY / "Venus" / f"frame1{i}.png" for i in (0, 1))
    out = tmp_path / "out"
    assert main(["interpolate", str(f0), str(f1), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dainrt: error: {err[0][len('dainrt: error: '):]}"] and words in err[0]
    assert not out.exists()


_TRITON_ON_CPU = r"""
import json, sys, torch
from dainrt.engine import Runner
from dainrt.engine.torch_backend import TorchBackend
from dainrt.model import DAIN, ModelConfig
from dainrt.model.checkpoint import synthetic_state_dict
from dainrt.base.metrics import psnr
torch.set_num_threads(1)
model = DAIN(ModelConfig(width=0.25))
model.load_state_dict(synthetic_state_dict(ModelConfig(width=0.25), seed=3))
g = torch.Generator().manual_seed(0)
f0 = torch.rand(3, 64, 64, generator=g)
f1 = f0.roll(3, -1)
frames = {}
for kernels in ("reference", "triton"):
    frames[kernels] = Runner(TorchBackend(model.eval(), torch.device("cpu"), kernels=kernels)).interpolate(
        0, f0, 1, f1, [0.5])[0]
print(json.dumps({"psnr": psnr(frames["triton"].clamp(0, 1), frames["reference"].clamp(0, 1)),
                  "max": float((frames["triton"] - frames["reference"]).abs().max())}))
"""


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed (optional): the kernels run under its interpreter")
def test_torch_backend_with_triton_kernels_matches_reference_on_cpu():
    """`kernels="triton"` swaps only the two warping layers: the frame equals the reference one."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _TRITON_ON_CPU], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["psnr"] > 60 and result["max"] < 1e-3, result
