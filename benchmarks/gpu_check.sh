#!/usr/bin/env bash
# The GPU check, in one call: under 8 minutes on one H100/H200 (a session is lent ~15 minutes of device
# time in all). Records the card, then on the paper's 162M LLaMA shape:
#   1. training (a) bare loop, (b) Trainer, (c) CopyTrainer, bf16 + torch.compile: tokens/s, MFU, peak memory
#      (bench_train.py; (c) with the copy test on its default schedule at the paper's 500 samples);
#   2. the paper-size copy test (500 samples, 50 sequences, ~968-token contexts) four ways, with agreement
#      (bench_copy_eval_speed.py, model in bf16, plus its profile);
#   3. the per-call costs and their projection onto the paper's 76k-step run: training throughput, the copy
#      test per sample under bf16 autocast as in training, one induction analysis of the 162M model with
#      its ICL score (bench_projection.py);
# and writes OUT/gpu_check.json (everything) and OUT/gpu_check_rows.md (rows for benchmarks/RESULTS.md).
#
#   bash benchmarks/gpu_check.sh [OUT]              # on the GPU machine (OUT defaults to $OUT, else gpu_check/)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh [OUT]    # the same steps at smoke sizes on a CPU (tests do this;
#                                                   # without torch.compile, minutes on a CPU: a test compiles)
#
# PEAK_FLOPS (default 989e12: H100/H200 SXM bf16 dense; H100 PCIe: 756e12) is the MFU denominator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-gpu_check}}
python=${PYTHON:-python}
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's grokcopy, installed or not
mkdir -p "$out"
start=$(date +%s)

if [ "${DRY_RUN:-0}" = 1 ]; then
    train=(--smoke --sizes tiny --bf16 --threads 1)
    copy=(--smoke --profile --threads 1)
    project=(--smoke --bf16 --threads 1)
else
    train=(--sizes paper-162m --bf16 --compile --steps 30 --warmup 10 --repeats 1 --peak_flops "${PEAK_FLOPS:-989e12}")
    copy=(--bf16 --profile --samples 500 --batch_size 16)
    project=(--bf16 --micro_batch 16 --train_steps 5 --copy_samples 64)
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv \
  && nvidia-smi; } > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available on this machine" > "$out/nvidia-smi.txt"
"$python" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" >> "$out/nvidia-smi.txt"

step() {  # name, script, arguments...: one benchmark, its output kept in OUT/name.log
    local name=$1 script=$2
    shift 2
    echo "== $name: $script $* ($(($(date +%s) - start)) s in)"
    "$python" "$here/$script" "$@" --json "$out/$name.json" > "$out/$name.log" 2>&1 \
        || { echo "$name failed:"; tail -n 30 "$out/$name.log"; exit 1; }
}
step train bench_train.py "${train[@]}"
step copy_test bench_copy_eval_speed.py "${copy[@]}"
step projection bench_projection.py "${project[@]}"
"$python" "$here/gpu_rows.py" "$out" "$(($(date +%s) - start))"
echo "== done in $(($(date +%s) - start)) s: $out/gpu_check.json, $out/gpu_check_rows.md"
