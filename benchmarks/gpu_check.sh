#!/usr/bin/env bash
# The prepared GPU check (issue 13): GPU tests, Triton vs reference at 1080p, torch paths'
# 1080p x4 throughput and peak memory, FP16 vs FP32 PSNR, `dainrt run --device cuda`.
# Writes one JSON file (--json, default gpu-check.json) and prints a table; all logic is in
# benchmarks/gpu_check.py. Without a CUDA GPU: one line on stderr, exit 2.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m dainrt.benchmarks.gpu_check "$@"
