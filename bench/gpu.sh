#!/usr/bin/env bash
# The serving-engine figures on a lent GPU machine (issue 8), in one command. From the project root, here:
#   ../shared/tools/device-bundle.sh && rm -f .device/whl/nvidia_* .device/whl/cuda_* .device/whl/selenium-*
# then run `bash bench/gpu.sh` there with `.device` carried; figures land in $OUT (or /tmp) as they are taken.
# First where a decode step's device time goes (bench/profile_slots.py: the same step without and with the
# folded decode attention, kernel totals, the host's share), then the whole bench (bench/bench_engine.py), then
# part A again with 8 web processes.
set -uo pipefail
out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --target .device/site .device/whl/*.whl || exit 1
export PYTHONPATH=$PWD/.device/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)"
timeout "${PROFILE_SECONDS:-100}" python3 bench/profile_slots.py ${PROFILE_FLAGS:-} 2>&1 \
  | grep -v '^Loading weights\|^Writing model\|USDT' | tee "$out/profile.log"
timeout "${BENCH_SECONDS:-420}" python3 bench/bench_engine.py --llama-1b --new-tokens 128 \
  ${BENCH_FLAGS:---hf-static --fold-ab --parts ABCDE --repeats 3} --sequential 4 --json-out "$out/figures.json" 2>&1 \
  | grep -v '^Loading weights\|^Writing model' | tee "$out/bench.log"
tail -n 50 /tmp/aigc-bench-engine-*/stack.log > "$out/stack_tail.log" 2>/dev/null || true
# Part A again with 8 web processes (2 by default): whether the web's answers bound the 32 jobs where cores are many.
timeout "${BENCH2_SECONDS:-150}" env AIGC_WEB_WORKERS=8 python3 bench/bench_engine.py --llama-1b --new-tokens 128 \
  --parts A --repeats 3 --sequential 4 --json-out "$out/figures_web8.json" 2>&1 \
  | grep -v '^Loading weights\|^Writing model' | tee "$out/bench_web8.log"
