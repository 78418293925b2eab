#!/usr/bin/env bash
# GPU checks in one pass: the `gpu`-marked tests, the loader benchmark (CPU and GPU paths), the GPU
# loader against ResNet-50's training rate (goal: loader >= 3x), and a short GPU training run.
# Usage, with tagstream installed on a machine with a CUDA GPU:  scripts/gpu-check.sh OUTDIR
set -u
out=${1:-gpu-check}
mkdir -p "$out"
work=$(mktemp -d)
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

echo "== gpu tests"
timeout 240 python3 -m pytest -q -m gpu tests -p no:cacheprovider > "$out/gpu-tests.txt" 2>&1
echo "rc=$?"; tail -3 "$out/gpu-tests.txt"

echo "== loader benchmark, CPU and GPU paths"
timeout 300 tagstream bench loader "$work/bench" --make 2000 --batch-size 128 --batches 12 --rounds 1 --json \
  > "$out/bench-loader.json" 2> "$out/bench-loader.err"
echo "rc=$?"

echo "== GPU loader against ResNet-50's training rate (goal: >= 3x)"
timeout 300 python3 "$(dirname "$0")/gpu_bench.py" "$out/gpu-bench.json" > "$out/gpu-bench.log" 2>&1
echo "rc=$?"; grep -E '"images_per_s"|loader_over' "$out/gpu-bench.json"

echo "== train on the GPU (synthetic world, tiny model, bf16)"
( set -e
  tagstream synth "$work/world" --images 600 --seed 0 --workers 8 > /dev/null
  tagstream convert "$work/world/hashtags.jsonl" "$work/ds" --workers 8 --no-progress > /dev/null
  tagstream vocab "$work/ds" --name v1 --synonyms "$work/world/synonyms.tsv" --stoplist "$work/world/stoplist.txt" --min-count 5 > /dev/null
  timeout 240 tagstream train --config tiny-cpu --dataset "$work/ds" --vocab v1 --out "$work/run" --steps 60 --device cuda \
    --set run.progress=false
  tail -2 "$work/run/metrics.jsonl"
) > "$out/train-gpu.txt" 2>&1
echo "rc=$?"; tail -5 "$out/train-gpu.txt"
rm -rf "$work"
