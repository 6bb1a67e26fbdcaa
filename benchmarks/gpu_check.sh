#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): the tests with FROG_TEST_DEVICE=cuda, every
# notebook at the smoke profile on CUDA, the engine, FoMoH and tangent-parallel benchmarks; one report
# (markdown + JSON) under results/gpu_check/ (or --out DIR), in under 8 minutes. Without a CUDA GPU it says
# so and exits 0. Arguments are passed on:  benchmarks/gpu_check.sh --phases pytest --budget 200
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="$(command -v python3 || command -v python)"; fi
fi
cd "$root"
exec "$py" benchmarks/gpu_check.py "$@"
