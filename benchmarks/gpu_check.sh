#!/usr/bin/env bash
# One GPU check (under 8 minutes on one GPU): the GPU sampling benchmark, float32-on-GPU vs float64-on-CPU
# sampling, Γ estimation on CUDA against the committed digits Γ̂, and the digits image pipeline on CUDA; one summary
# table at the end and out/summary.json. Pass --device cpu --quick to smoke-test it on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${OUT:-gpu_check_out}"
MPLBACKEND=Agg "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
