#!/usr/bin/env bash
# The GPU check of issue 14 (under 8 minutes on one CUDA GPU):
#   1. the CUDA and Triton tests, run for real (TRITON_INTERPRET unset, so Triton compiles for
#      the GPU instead of being interpreted on CPU);
#   2. benchmarks/gpu_check.py: SW strategies at the SW-T stage shapes (fwd, fwd+bwd, deploy),
#      train/deploy throughput and peak memory of the *_tiny models at 224 px, batch 64, fp32
#      and bf16 autocast; JSON + PNG; prints the CUDA rule for resolve_strategy.
# Without a CUDA GPU it says so and exits 0 (dry run).
# Usage: benchmarks/gpu_check.sh [OUT_DIR]   (python: $PYTHON, default python)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-benchmarks/results/gpu}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PYTHON" benchmarks/gpu_check.py --out "$OUT"  # prints that there is no GPU, exits 0
    exit $?
fi

echo "== CUDA and Triton tests (compiled, not interpreted)"
env -u TRITON_INTERPRET timeout 180 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/ops/test_fast_shift_add.py tests/ops/test_custom_op.py
tests=$?

echo "== strategy and model measurements"
timeout 270 "$PYTHON" benchmarks/gpu_check.py --out "$OUT"
measured=$?

if [ "$tests" -ne 0 ] || [ "$measured" -ne 0 ]; then
    echo "gpu_check: FAILED (tests exit $tests, measurements exit $measured)"
    exit 1
fi
echo "gpu_check: tests passed, figures in $OUT"
