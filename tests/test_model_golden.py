"""The staged PyTorch DAIN against the official model's goldens (tests/data/golden/README.md §4.2).

Stage tests feed each stage (or layer) the golden inputs; free-running tests start from the
uint8 frames and run the whole pipeline, comparing every intermediate the goldens hold.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import E2E_CASES, assert_robust_flow, assert_robust_image, load_golden
from dainrt.model import crop, pad, padding_for
from dainrt.model.ops import adaptive_warp, depth_flow_projection, splat


def t_(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def close(ours: torch.Tensor, gold: np.ndarray, atol: float, what: str) -> None:
    d = float(np.abs(ours.detach().numpy().astype(np.float64) - gold).max())
    assert d <= atol, f"{what}: max |d| = {d:.3g} > {atol}"


def chmean(x: torch.Tensor) -> np.ndarray:
    return x.double().mean(dim=(-1, -2)).numpy().reshape(-1)


@pytest.fixture(scope="module")
def case_a():
    return load_golden(E2E_CASES[0])


# --- stages with golden inputs (teacher forcing) ------------------------------------------


def test_frame_stage_with_golden_inputs(golden_model, case_a):
    z = case_a
    frame = golden_model.stages().frame
    y, x = z["patch_yx"][:2]
    for i in (0, 1):
        context, *feats = frame(t_(z[f"input{i}_padded"]))
        close(context[:, -1:], z[f"logD{i}"], 1e-4, f"logD{i}")
        close(context[:, :, y : y + 8, x : x + 8], z[f"ctx{i}_patch"], 1e-4, f"ctx{i}_patch")
        np.testing.assert_allclose(chmean(context), z[f"ctx{i}_chmean"], atol=1e-5)
        assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]    # levels 2..6 of a 256-wide input


def test_pair_stage_with_golden_inputs(golden_model, case_a):
    z = case_a
    s = golden_model.stages()
    i0, i1 = t_(z["input0_padded"]), t_(z["input1_padded"])
    _, *f0 = s.frame(i0)
    _, *f1 = s.frame(i1)
    flow01, flow10, k0, k1 = s.pair(i0, i1, *f0, *f1)
    close(flow01 / 20.0, z["pwc_flow01"], 5e-5, "pwc_flow01")
    close(flow10 / 20.0, z["pwc_flow10"], 5e-5, "pwc_flow10")
    close(k0, z["k0"], 1e-5, "k0")
    close(k1, z["k1"], 1e-5, "k1")


def test_flow_upsampling_in_official_order(case_a):
    z = case_a
    t = float(z["t"][0])
    for i, name in ((0, "pwc_flow01"), (1, "pwc_flow10")):
        scale = t if i == 0 else 1 - t
        up = F.interpolate(20.0 * t_(z[name]) * scale, scale_factor=4, mode="bilinear", align_corners=False)
        close(up, z[f"dfp_in{i}"][0], 1e-5, f"dfp_in{i}")


def test_custom_layers_with_golden_inputs(case_a):
    z = case_a
    for i in (0, 1):
        weight = 1e-6 + 1 / torch.exp(t_(z[f"logD{i}"]))
        ft = depth_flow_projection(t_(z[f"dfp_in{i}"][0]), weight)
        close(ft, z[f"Ft{i}"][0], 1e-4, f"Ft{i}")
        _, count = splat(t_(z[f"dfp_in{i}"][0]), weight)
        assert torch.equal(count <= 0, t_(z[f"holes{i}"][0])), f"holes{i}"
        warped = adaptive_warp(t_(z[f"input{i}_padded"]), t_(z[f"Ft{i}"][0]), t_(z[f"k{i}"]))
        close(warped, z[f"warped{i}"][0], 1e-5, f"warped{i}")
    t = float(z["t"][0])
    blend = t_(z["warped0"][0]) * (1 - t) + t_(z["warped1"][0]) * t
    close(blend, z["blend"][0], 1e-6, "blend")


def test_rectify_net_on_golden_window(golden_model, case_a):
    out = golden_model.rectifyNet(t_(case_a["rect_window_in"]))
    close(out, case_a["rect_window_out"], 1e-5, "rect_window_out")


@pytest.mark.parametrize("case", E2E_CASES)
def test_crop_is_exact(case):
    z = load_golden(case)
    assert torch.equal(crop(t_(z["rectified"][0]), padding_for(*z["frame0_u8"].shape[:2])), t_(z["out_crop"][0]))


# --- free running, from the uint8 frames ----------------------------------------------------


def run_free(model, z: dict) -> dict[str, torch.Tensor]:
    """The whole staged pipeline from `frame*_u8`, one warp+rectify per t, intermediates kept."""
    s = model.stages()
    frames = [t_(z[f"frame{i}_u8"]).permute(2, 0, 1)[None].float() / 255.0 for i in (0, 1)]
    p = padding_for(*frames[0].shape[-2:])
    i0, i1 = (pad(f, p) for f in frames)
    c0, *f0 = s.frame(i0)
    c1, *f1 = s.frame(i1)
    flow01, flow10, k0, k1 = s.pair(i0, i1, *f0, *f1)
    per_t: dict[str, list] = {k: [] for k in ("Ft0", "Ft1", "warped0", "warped1", "blend", "rectified", "out_crop", "ctxw0", "ctxw1")}
    for t in z["t"]:
        ri, blend = s.warp(i0, i1, c0, c1, flow01, flow10, k0, k1, torch.tensor([t]))
        out = s.rectify(ri, blend)
        ck = c0.shape[1]
        parts = dict(warped0=ri[:, 3:6], warped1=ri[:, 6:9], Ft0=ri[:, 9:11], Ft1=ri[:, 11:13],
                     ctxw0=ri[:, 45 : 45 + ck], ctxw1=ri[:, 45 + ck :], blend=blend, rectified=out, out_crop=crop(out, p))
        for k, v in parts.items():
            per_t[k].append(v)
    result = {k: torch.stack(v) for k, v in per_t.items()}
    result.update(logD0=c0[:, -1:], logD1=c1[:, -1:], ctx0=c0, ctx1=c1, pwc_flow01=flow01 / 20, pwc_flow10=flow10 / 20, k0=k0, k1=k1)
    return result


@pytest.mark.parametrize("case", E2E_CASES)
def test_free_running_end_to_end(golden_model, case):
    z = load_golden(case)
    ours = run_free(golden_model, z)
    # Per-pair tensors are continuous functions of the input: tight tolerances (item 3).
    for key, atol in (("logD0", 1e-4), ("logD1", 1e-4), ("pwc_flow01", 5e-5), ("pwc_flow10", 5e-5), ("k0", 1e-5), ("k1", 1e-5)):
        if key in z:
            close(ours[key], z[key], atol, key)
    y, x = z["patch_yx"][:2] if "patch_yx" in z else load_golden(E2E_CASES[0])["patch_yx"][:2]
    for i in (0, 1):
        if f"ctx{i}_patch" in z:
            close(ours[f"ctx{i}"][:, :, y : y + 8, x : x + 8], z[f"ctx{i}_patch"], 1e-4, f"ctx{i}_patch")
        # Per-t tensors pass DFP/AW discontinuities: robust metrics (item 4).
        assert_robust_flow(ours[f"Ft{i}"], z[f"Ft{i}"], f"Ft{i}")
        assert_robust_image(ours[f"warped{i}"], z[f"warped{i}"], f"warped{i}")
        assert_robust_image(ours[f"ctxw{i}"][..., y : y + 8, x : x + 8], z[f"ctxw{i}_patch"], f"ctxw{i}_patch")
        np.testing.assert_allclose(ours[f"ctxw{i}"].double().mean(dim=(-1, -2)).numpy().reshape(z[f"ctxw{i}_chmean"].shape),
                                   z[f"ctxw{i}_chmean"], atol=1e-4)
    for key in ("blend", "rectified", "out_crop"):
        assert_robust_image(ours[key], z[key], key)
    u8 = np.round(np.clip(ours["out_crop"][:, 0].permute(0, 2, 3, 1).numpy(), 0, 1) * 255.0).astype(np.uint8)
    assert u8.shape == z["out_u8"].shape
    assert np.mean(u8 != z["out_u8"]) <= 5e-3


def test_model_forward_batches_time_steps(golden_model):
    """`DAIN.forward` with a batch of two t (case b: t = 0.25, 0.75) equals the golden frames."""
    z = load_golden(E2E_CASES[1])
    frames = [t_(z[f"frame{i}_u8"]).permute(2, 0, 1)[None].float() / 255.0 for i in (0, 1)]
    p = padding_for(*frames[0].shape[-2:])
    i0, i1 = (pad(f, p).expand(2, -1, -1, -1) for f in frames)
    out = golden_model(i0, i1, torch.from_numpy(z["t"]))
    assert out.shape == (2, 3, 128, 256)
    for k in range(2):
        assert_robust_image(crop(out[k : k + 1], p), z["out_crop"][k], f"t={z['t'][k]}")
