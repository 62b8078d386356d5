"""The custom layers (model/ops) against the op goldens and against per-pixel loop references.

The adaptive-warp tests also run the compiled CPU kernel (engine/numba_warp.py), which must meet
the same goldens, edge cases and tolerances as the reference it stands in for."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dainrt.engine import numba_warp
from dainrt.model.ops import adaptive_warp, correlation, depth_flow_projection, fill_holes, splat
from dainrt.model.ops.depth_flow_projection import _nearest_valid
from reference_ops import aw_reference, corr_reference, dfp_reference

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = dict(rtol=1e-5, atol=1e-5)  # tests/data/golden/README.md §4.2
DFP_CASES = ["dfp_random", "dfp_edges", "dfp_holes"]
AW_CASES = ["aw_c3", "aw_c196", "aw_bilinear_kernel"]
CORR_CASES = ["corr_c32", "corr_c196", "corr_c20_tiny"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (implementation, device) pairs for the adaptive warp: the reference everywhere, numba on the CPU.
AW_IMPLS = [pytest.param(adaptive_warp, d, id=f"reference-{d}") for d in DEVICES] + [
    pytest.param(numba_warp.adaptive_warp, "cpu", id="numba-cpu")]
AW_CPU_IMPLS = [pytest.param(adaptive_warp, id="reference"), pytest.param(numba_warp.adaptive_warp, id="numba")]


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "ops" / f"{name}.npz") as z:
        return dict(z)


def run(fn, *arrays, device="cpu", **kw):
    """fn on numpy arrays moved to `device`; returns numpy (or a tuple of numpy)."""
    out = fn(*(torch.from_numpy(a).to(device) for a in arrays), **kw)
    if isinstance(out, tuple):
        return tuple(o.cpu().numpy() for o in out)
    return out.cpu().numpy()


def check(ours: np.ndarray, expected: np.ndarray) -> None:
    assert ours.shape == expected.shape and ours.dtype == np.float32
    assert not np.isnan(ours).any()
    np.testing.assert_allclose(ours, expected, **TOL)


# ------------------------------------------------------------------------------------- goldens

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", DFP_CASES)
def test_dfp_golden(name, device):
    z = golden(name)
    check(run(depth_flow_projection, z["flow"], z["weight"], fill=True, device=device), z["out_fill"])
    check(run(depth_flow_projection, z["flow"], z["weight"], fill=False, device=device), z["out_nofill"])
    check(run(splat, z["flow"], z["weight"], device=device)[1], z["count"])


def test_dfp_golden_hole_directions():
    z = golden("dfp_holes")
    _, S = splat(torch.from_numpy(z["flow"]), torch.from_numpy(z["weight"]))
    holes = (S <= 0).numpy()
    np.testing.assert_array_equal(holes, z["hole_directions"] >= 0)
    valid = S > 0
    # _nearest_valid returns (before, has_before, after, has_after): count the scans that succeed.
    found = [f for dim in (3, 2) for f in _nearest_valid(valid, dim)[1::2]]
    directions = torch.stack(found).sum(0).numpy()
    np.testing.assert_array_equal(directions[holes], z["hole_directions"][holes])
    # Holes that no scan reaches stay exactly 0.
    out = run(depth_flow_projection, z["flow"], z["weight"])
    assert (z["hole_directions"] == 0).any()
    assert (out[:, :, (z["hole_directions"] == 0)[0, 0]] == 0).all()


@pytest.mark.parametrize("warp,device", AW_IMPLS)
@pytest.mark.parametrize("name", AW_CASES)
def test_aw_golden(name, warp, device):
    z = golden(name)
    out = run(warp, z["input"], z["flow"], z["filter"], device=device)
    check(out, z["out"])
    if "valid" in z:  # invalid pixels are an exact copy of the input
        invalid = np.broadcast_to(~z["valid"], out.shape)
        assert invalid.any()
        np.testing.assert_array_equal(out[invalid], z["input"][invalid])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CORR_CASES)
def test_corr_golden(name, device):
    z = golden(name)
    check(run(correlation, z["input1"], z["input2"], device=device), z["out"])


def test_references_reproduce_goldens():
    """The loop references are themselves right (on the cheap goldens)."""
    for name in DFP_CASES:
        z = golden(name)
        out, S = dfp_reference(z["flow"], z["weight"], fill=True)
        check(out, z["out_fill"])
        check(S, z["count"])
        check(dfp_reference(z["flow"], z["weight"], fill=False)[0], z["out_nofill"])
    for name in ("aw_c3", "aw_bilinear_kernel"):
        z = golden(name)
        check(aw_reference(z["input"], z["flow"], z["filter"]), z["out"])
    z = golden("corr_c20_tiny")
    check(corr_reference(z["input1"], z["input2"]), z["out"])


# ------------------------------------------------------------- vectorised vs loop reference

def dfp_inputs(seed: int, B=2, H=7, W=9):
    """Random flows plus designed sources: NaN/inf, landings exactly on 0, W-1, H-1, the corner."""
    rng = np.random.default_rng(seed)
    flow = rng.normal(0, 2.5, (B, 2, H, W)).astype(np.float32)
    weight = rng.uniform(0.05, 2.0, (B, 1, H, W)).astype(np.float32)
    flow[0, :, 0, 0] = (np.nan, 0)
    flow[0, :, 0, 1] = (0, np.inf)
    flow[0, :, 1, 1] = (-np.inf, 0)
    flow[0, :, 2, 3] = (W - 1 - 3, 0.5)           # X == W-1: last column counted twice
    flow[0, :, 3, 2] = (0.25, H - 1 - 3)          # Y == H-1: last row counted twice
    flow[1, :, 4, 5] = (W - 1 - 5, H - 1 - 4)     # the corner, counted four times
    flow[1, :, 2, 2] = (-2, -2)                   # lands exactly on (0, 0)
    flow[1, :, 5, 1] = (-1.0001, 0)               # just left of the image
    return flow, weight


def dfp_sparse_inputs(H=8, W=11):
    """Nearly everything out of range: all-hole rows and columns, holes with 0..4 directions."""
    flow = np.full((1, 2, H, W), 1000.0, np.float32)
    weight = np.ones((1, 1, H, W), np.float32)
    for (y, x), (u, v), w in [((1, 1), (0.5, 0.25), 1.0), ((1, 7), (0.0, 0.0), 0.5),
                              ((5, 2), (0.75, 1.5), 2.0), ((4, 8), (2.0, 2.0), 1.5)]:
        flow[0, :, y, x] = (u, v)
        weight[0, 0, y, x] = w
    return flow, weight


@pytest.mark.parametrize("case", ["random0", "random1", "sparse"])
def test_dfp_matches_reference(case):
    flow, weight = dfp_sparse_inputs() if case == "sparse" else dfp_inputs(int(case[-1]))
    ref_fill, ref_S = dfp_reference(flow, weight, fill=True)
    ref_nofill, _ = dfp_reference(flow, weight, fill=False)
    check(run(depth_flow_projection, flow, weight, fill=True), ref_fill)
    check(run(depth_flow_projection, flow, weight, fill=False), ref_nofill)
    check(run(splat, flow, weight)[1], ref_S)
    if case == "sparse":
        holes = ref_S[0, 0] <= 0
        assert holes.all(axis=1).any() and holes.all(axis=0).any()  # all-hole rows and columns


def test_dfp_edge_counts():
    """Landing on W-1 / H-1 counts twice, the corner four times, with equal (not bilinear) weights."""
    H, W = 5, 6
    flow = np.full((1, 2, H, W), -50.0, np.float32)
    weight = np.ones((1, 1, H, W), np.float32)
    flow[0, :, 1, 1] = (W - 2, 0.5)   # lands on (W-1, 1.5)
    flow[0, :, 0, 0] = (W - 1, H - 1)  # lands on the corner
    _, S = run(splat, flow, weight)
    assert S[0, 0, 1, W - 1] == 2 and S[0, 0, 2, W - 1] == 2 and S[0, 0, H - 1, W - 1] == 4
    assert S.sum() == 8


def test_fill_holes_is_not_iterative():
    """Holes read only non-holes: a hole between two holes takes the far non-holes' mean."""
    projected = torch.zeros(1, 2, 1, 5)
    projected[0, :, 0, 0] = torch.tensor([1.0, 2.0])
    projected[0, :, 0, 4] = torch.tensor([3.0, 6.0])
    S = torch.tensor([1.0, 0, 0, 0, 1.0]).view(1, 1, 1, 5)
    out = fill_holes(projected, S)
    torch.testing.assert_close(out[0, :, 0, 1:4], torch.tensor([[2.0] * 3, [4.0] * 3]))


def test_dfp_depth_decides_only_where_the_projection_folds():
    """The depth weights matter where sources with different flows land on one pixel, i.e. where
    x -> x + F(x) folds over, and (almost) nowhere else.

    A near sprite (columns 8..15, inverse depth 1/2) moves 8 px right over a still backdrop
    (inverse depth 1/100): on the pixels it lands on, its flow wins with the depths and is
    averaged with the backdrop's without them. A smooth flow (0.1 px more per column, which
    never folds) with the same depths is moved by under 0.1 px: why a smooth flow field
    leaves the learned depth nothing to decide (docs/model-v2.md, "After v4")."""
    H, W = 4, 32
    layers = np.zeros((1, 2, H, W), np.float32)
    layers[0, 0, :, 8:16] = 8.0
    depth_weight = np.full((1, 1, H, W), 1 / 100, np.float32)
    depth_weight[..., 8:16] = 1 / 2
    equal = np.ones((1, 1, H, W), np.float32)
    with_depth = run(depth_flow_projection, layers, depth_weight)[0, 0]
    without = run(depth_flow_projection, layers, equal)[0, 0]
    landed = slice(17, 24)                     # every pixel here gets the sprite and the backdrop
    np.testing.assert_allclose(with_depth[:, landed], -8 * 0.5 / (0.5 + 0.01), atol=1e-5)  # near wins
    np.testing.assert_allclose(without[:, landed], -4.0, atol=1e-5)                       # averaged
    ramp = np.zeros((1, 2, H, W), np.float32)
    ramp[0, 0] = 0.1 * np.arange(W, dtype=np.float32)
    moved = np.abs(run(depth_flow_projection, ramp, depth_weight) - run(depth_flow_projection, ramp, equal))
    assert moved.max() < 0.1


def aw_inputs(seed: int, B=2, C=3, H=6, W=8):
    """Random flows plus designed pixels: |u| = W/2 and |v| = H/2 exactly, NaN, landings on the
    last column/row, taps that clamp."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (B, C, H, W)).astype(np.float32)
    flow = rng.normal(0, 2.0, (B, 2, H, W)).astype(np.float32)
    kernel = rng.normal(0, 1, (B, 16, H, W)).astype(np.float32)
    flow[0, :, 1, 0] = (W / 2, 0.1)            # |u| == W/2, lands inside -> copy
    flow[0, :, 2, 0] = (W / 2 - 0.01, 0.1)     # just below -> valid
    flow[0, :, 0, 2] = (0.2, H / 2)            # |v| == H/2 -> copy
    flow[1, :, 0, 2] = (0.2, H / 2 - 0.01)     # just below -> valid
    flow[0, :, 3, 3] = (np.nan, 0)
    flow[1, :, 3, 5] = (W - 1 - 5, 0.3)        # X == W-1: right taps clamp
    flow[1, :, 2, 1] = (0.4, H - 1 - 2)        # Y == H-1: bottom taps clamp
    flow[1, :, 4, 1] = (-0.5, 0.2)             # X = 0.5: the left tap clamps
    flow[1, :, 4, 4] = (-4.0001, 0)            # X slightly < 0 -> copy
    return image, flow, kernel


@pytest.mark.parametrize("warp", AW_CPU_IMPLS)
@pytest.mark.parametrize("seed,C", [(0, 3), (1, 5)])
def test_aw_matches_reference(seed, C, warp):
    image, flow, kernel = aw_inputs(seed, C=C)
    check(run(warp, image, flow, kernel), aw_reference(image, flow, kernel))


@pytest.mark.parametrize("warp", AW_CPU_IMPLS)
def test_aw_copy_at_half_size(warp):
    image, flow, kernel = aw_inputs(0)
    out = run(warp, image, flow, kernel)
    for y, x in ((1, 0), (0, 2), (3, 3)):  # |u| == W/2, |v| == H/2, NaN
        np.testing.assert_array_equal(out[0, :, y, x], image[0, :, y, x])
    assert not np.allclose(out[0, :, 2, 0], image[0, :, 2, 0])  # just below W/2: warped


@pytest.mark.parametrize("warp", AW_CPU_IMPLS)
def test_aw_inner_kernel_is_bilinear_sampling(warp):
    """Kernel 1 at taps 5, 6, 9, 10 (the inner 2x2) = plain bilinear sampling inside the image."""
    rng = np.random.default_rng(7)
    B, C, H, W = 2, 3, 8, 10
    image = rng.uniform(0, 1, (B, C, H, W)).astype(np.float32)
    flow = rng.uniform(-1.5, 1.5, (B, 2, H, W)).astype(np.float32)
    flow[0, :, 2, 8] = (1.0, 0.5)  # lands exactly on the last column
    kernel = np.zeros((B, 16, H, W), np.float32)
    kernel[:, [5, 6, 9, 10]] = 1.0
    out = run(warp, image, flow, kernel)
    check(out, aw_reference(image, flow, kernel))

    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    X, Y = xs + flow[:, 0], ys + flow[:, 1]
    grid = torch.from_numpy(np.stack([2 * X / (W - 1) - 1, 2 * Y / (H - 1) - 1], -1))
    bilinear = F.grid_sample(torch.from_numpy(image), grid, mode="bilinear",
                             padding_mode="border", align_corners=True).numpy()
    inside = np.broadcast_to(((X >= 0) & (X <= W - 1) & (Y >= 0) & (Y <= H - 1))[:, None], out.shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], bilinear[inside], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[~inside], image[~inside])


@pytest.mark.parametrize("shape,d", [((2, 6, 5, 6), 4), ((1, 4, 7, 3), 2), ((1, 3, 4, 5), 1)])
def test_corr_matches_reference(shape, d):
    rng = np.random.default_rng(11)
    f1, f2 = (rng.normal(0, 1, shape).astype(np.float32) for _ in range(2))
    out = run(correlation, f1, f2, max_displacement=d)
    assert out.shape == (shape[0], (2 * d + 1) ** 2) + shape[2:]
    check(out, corr_reference(f1, f2, d))


def test_corr_channel_order_dy_outer():
    f1 = torch.ones(1, 1, 5, 5)
    f2 = torch.zeros(1, 1, 5, 5)
    f2[0, 0, 2, 3] = 1.0
    out = correlation(f1, f2)
    assert out[0, 4 * 9 + 5, 2, 2] == 1  # dy = 0, dx = +1
    assert out[0, 5 * 9 + 4, 1, 3] == 1  # dy = +1, dx = 0
    assert out.sum() == 25  # seen once from each of the 25 positions, all within reach


def test_corr_half_accumulates_in_fp32():
    # Products ~144 summed over 1024 channels overflow fp16 (max 65504); the fp32 sum does not.
    g = torch.Generator().manual_seed(3)
    f1 = (12 + torch.rand(1, 1024, 6, 7, generator=g)).half()
    f2 = (12 + torch.rand(1, 1024, 6, 7, generator=g)).half()
    out = correlation(f1, f2)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, correlation(f1.float(), f2.float()).half(), rtol=0, atol=0)


# ------------------------------------------------------------------------- general contract

def test_dtypes_deterministic_and_inputs_untouched():
    image, flow, kernel = (torch.from_numpy(a) for a in aw_inputs(2))
    dflow, weight = (torch.from_numpy(a) for a in dfp_inputs(2))
    f1, f2 = torch.randn(2, 1, 8, 6, 7).unbind(0)
    calls = [
        lambda: adaptive_warp(image, flow, kernel),
        lambda: adaptive_warp(image.half(), flow.half(), kernel.half()),
        lambda: numba_warp.adaptive_warp(image, flow, kernel),
        lambda: numba_warp.adaptive_warp(image.half(), flow.half(), kernel.half()),
        lambda: depth_flow_projection(dflow, weight),
        lambda: depth_flow_projection(dflow.double(), weight.half(), fill=False),
        lambda: correlation(f1, f2),
    ]
    before = [t.clone() for t in (image, flow, kernel, dflow, weight, f1, f2)]
    for call in calls:
        first, second = call(), call()
        assert torch.equal(first, second)
        assert first.dtype == torch.float32
    for a, b in zip(before, (image, flow, kernel, dflow, weight, f1, f2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_numba_warp_leaves_torchs_thread_count_alone():
    """Numba's OpenMP layer sets the launching thread's OpenMP count to all cores on its first
    launch in a process; torch reads its count from OpenMP, so without the restore a run's first
    warp moved torch from 1 thread to every core (and the frames' rounding with it). A fresh
    process, since only the first launch does it."""
    code = ("import torch; torch.set_num_threads(1)\n"
            "from dainrt.engine.numba_warp import adaptive_warp\n"
            "adaptive_warp(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), torch.rand(1, 16, 8, 8))\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["1"]
