#!/usr/bin/env bash
# The one command a lent GPU machine runs for `make gpu-check` (issue 12), from the repo root:
#   run(command="bash scripts/device_gpu_check.sh", carry=[".whl"], timeout_s=420)
# The machine's image has a CUDA torch but transformers 5.17; the runners need >= 5.24, so its wheel
# travels in .whl/ (ignored by git), fetched here beforehand with:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl transformers==5.24.0
# Output (log + JSON) lands in $OUT, or results/gpu-check-local when run by hand.
set -o pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu-check-local}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
# 6.5 minutes at most: the check stops starting stages after --budget-s (330 s by default).
timeout 390 python3 scripts/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
