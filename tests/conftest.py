"""Shared fixtures: golden data and models with the synthetic checkpoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
MIDDLEBURY = DATA / "middlebury"
E2E_CASES = [
    "a_rubberwhale_160x96_t0.5",
    "b_rubberwhale_160x96_t0.25_0.75",
    "c_rubberwhale_crop130x77_t0.5",
    "d_rubberwhale_crop128x64_t0.5",
]


def load_golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "e2e" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def robust_metrics(ours, gold) -> dict[str, float]:
    """tests/data/golden/README.md §4.2 item 4: PSNR (peak 1), mean |d| and the share of |d| > 1e-3."""
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else ours
    d = np.abs(ours.astype(np.float64) - gold.astype(np.float64))
    mse = max(float(np.mean(d**2)), 1e-30)
    return {"psnr": 10 * np.log10(1.0 / mse), "mean": float(d.mean()), "share": float(np.mean(d > 1e-3)), "max": float(d.max())}


def assert_robust_image(ours, gold, what: str = "") -> None:
    m = robust_metrics(ours, gold)
    assert m["psnr"] >= 60.0 and m["mean"] <= 2e-5 and m["share"] <= 5e-3, f"{what}: {m}"


def assert_robust_flow(ours, gold, what: str = "") -> None:
    m = robust_metrics(ours, gold)
    assert m["mean"] <= 1e-4 and m["share"] <= 5e-3, f"{what}: {m}"


def synthetic_model(width: float = 1.0, seed: int = 0):
    from dainrt.model.checkpoint import synthetic_state_dict
    from dainrt.model import DAIN, ModelConfig

    config = ModelConfig(width)
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=seed), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def golden_model():
    """Full-width DAIN with the golden synthetic checkpoint (tests/data/golden/README.md §1)."""
    return synthetic_model(1.0, seed=0)


@pytest.fixture(scope="session")
def small_model():
    """Width-0.25 DAIN with seeded synthetic weights: fast, for pipeline tests."""
    return synthetic_model(0.25, seed=7)


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory, small_model):
    """`small_model` saved as a dainrt checkpoint file, for the CLI's --weights."""
    from dainrt.model.checkpoint import save_checkpoint

    return save_checkpoint(small_model, None, tmp_path_factory.mktemp("weights") / "small.pth")


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: small frames only make threads contend on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield
