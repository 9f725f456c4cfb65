#!/usr/bin/env bash
# The serving-engine figures on a lent GPU machine (issue 8), in one command. From the project root, here:
#   ../shared/tools/device-bundle.sh && rm -f .device/whl/nvidia_* .device/whl/cuda_* .device/whl/selenium-*
# then run `bash bench/gpu.sh` there with `.device` carried; figures land in $OUT (or /tmp) as they are taken.
set -uo pipefail
out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --target .device/site .device/whl/*.whl || exit 1
export PYTHONPATH=$PWD/.device/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)"
timeout "${BENCH_SECONDS:-420}" python3 bench/bench_engine.py --llama-1b --new-tokens 128 ${BENCH_FLAGS:---layouts} --hf-static \
  --sequential 4 --quick --json-out "$out/figures.json" 2>&1 | grep -v '^Loading weights\|^Writing model' | tee "$out/bench.log"
tail -n 50 /tmp/aigc-bench-engine-*/stack.log > "$out/stack_tail.log" 2>/dev/null || true
