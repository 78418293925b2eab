#!/usr/bin/env bash
# GPU checks in one pass: the `gpu`-marked tests, the loader benchmark with its GPU path and the
# ResNet-50 training rate it must beat (goal: loader >= 3x), and a short GPU training run.
# Usage, with tagstream installed on a machine with a CUDA GPU:  scripts/gpu-check.sh OUTDIR
set -u
out=${1:-gpu-check}
mkdir -p "$out"
work=$(mktemp -d)
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

echo "== gpu tests"
timeout 240 python3 -m pytest -q -m gpu tests -p no:cacheprovider > "$out/gpu-tests.txt" 2>&1
echo "rc=$?"; tail -3 "$out/gpu-tests.txt"

echo "== bench loader (cpu and gpu paths, resnet50 training rate)"
timeout 300 tagstream bench loader "$work/bench" --make 2000 --batch-size 128 --batches 12 --model-rate resnet50 \
  --json > "$out/bench-loader.json" 2> "$out/bench-loader.err"
echo "rc=$?"; python3 - "$out/bench-loader.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as exc:
    print("no result:", exc); sys.exit()
for k in ("ours_cpu", "ours_gpu", "baseline", "ceiling", "model_rate"):
    if k in r:
        print(f"{k:12s} {r[k]['images_per_s']:10.1f} images/s")
for k in ("ratio_vs_baseline", "ratio_vs_ceiling", "gpu_ratio_vs_model"):
    if k in r:
        print(f"{k:20s} {r[k]:.2f}")
PY

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
