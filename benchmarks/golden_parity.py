"""Print the parity of the staged PyTorch DAIN with the official goldens, per case and tensor.

    python benchmarks/golden_parity.py

Free-running from the uint8 frames with the golden synthetic checkpoint (the same run as
tests/test_model_golden.py, which asserts the thresholds; this script reports the numbers).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import E2E_CASES, load_golden, robust_metrics, synthetic_model  # noqa: E402
from test_model_golden import run_free  # noqa: E402


def main() -> None:
    torch.set_grad_enabled(False)
    model = synthetic_model(1.0, seed=0)
    print(f"{'case':34s} {'tensor':11s} {'max|d|':>9s} {'mean|d|':>9s} {'PSNR dB':>8s} {'>1e-3':>8s}")
    for case in E2E_CASES:
        z = load_golden(case)
        ours = run_free(model, z)
        for key in ("logD0", "pwc_flow01", "pwc_flow10", "k0", "k1", "Ft0", "Ft1", "warped0", "warped1", "blend", "rectified", "out_crop"):
            if key not in z:
                continue
            m = robust_metrics(ours[key], z[key])
            psnr = "-" if key.startswith(("Ft", "pwc", "logD", "k")) else f"{min(m['psnr'], 999):.1f}"
            print(f"{case:34s} {key:11s} {m['max']:9.2e} {m['mean']:9.2e} {psnr:>8s} {m['share']:8.1e}")
        u8 = np.round(np.clip(ours["out_crop"][:, 0].permute(0, 2, 3, 1).numpy(), 0, 1) * 255.0).astype(np.uint8)
        diff = u8.astype(int) - z["out_u8"]
        print(f"{case:34s} {'out_u8':11s} values differing {np.mean(diff != 0):.2e}, max |d| {np.abs(diff).max()}")


if __name__ == "__main__":
    main()
