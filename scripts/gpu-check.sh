#!/usr/bin/env bash
# GPU checks in one pass, figures into one JSON (OUTDIR/gpu-check.json):
#   1. the `gpu`-marked tests;
#   2. the GPU loader against ResNet-50's bf16 channels-last training rate, and ResNet-50 trained from
#      the loader, with all the machine's cores and with 2 cores (taskset; goals: loader >= 3x and >= 1x);
#   3. the GPU path's CPU side alone (`bench loader --feed`), all cores and 2 cores;
#   4. a short GPU training run through `tagstream train`.
# Usage, with tagstream installed on a machine with a CUDA GPU:  scripts/gpu-check.sh OUTDIR
# Budget: about 6-8 minutes on an H100/H200 host (the bench dataset is made once and reused).
set -u
out=${1:-gpu-check}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d)
export TMPDIR=$work
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
cores=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')

echo "== gpu tests"
timeout 300 python3 -m pytest -q -m gpu tests -p no:cacheprovider > "$out/gpu-tests.txt" 2>&1
echo "rc=$?"; tail -3 "$out/gpu-tests.txt"

echo "== GPU loader vs ResNet-50 training, all $cores cores (goal: loader >= 3x)"
timeout 300 python3 "$here/gpu_bench.py" "$out/gpu-bench-all.json" > "$out/gpu-bench-all.log" 2>&1
echo "rc=$?"; grep -E '"images_per_s"|loader_over|data_wait' "$out/gpu-bench-all.json"

echo "== the same with 2 cores (goal: loader >= 1x)"
timeout 300 taskset -c 0,1 python3 "$here/gpu_bench.py" "$out/gpu-bench-2.json" > "$out/gpu-bench-2.log" 2>&1
echo "rc=$?"; grep -E '"images_per_s"|loader_over|data_wait' "$out/gpu-bench-2.json"

echo "== the GPU path's CPU side alone (bench loader --feed), all cores and 2 cores"
timeout 200 tagstream bench loader "$work/feed" --make 2048 --feed --batch-size 128 --batches 200 --rounds 3 --json \
  > "$out/feed-all.json" 2> "$out/feed-all.err"
echo "rc=$?"
timeout 200 taskset -c 0,1 tagstream bench loader "$work/feed" --feed --batch-size 128 --batches 200 --rounds 3 --json \
  > "$out/feed-2.json" 2> "$out/feed-2.err"
echo "rc=$?"

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

python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError) as exc:
        return {"missing": f"{name}: {exc}"}
tests = (out / "gpu-tests.txt").read_text().strip().splitlines() if (out / "gpu-tests.txt").exists() else []
figures = {"gpu_tests": tests[-1] if tests else "missing", "all_cores": load("gpu-bench-all.json"),
           "two_cores": load("gpu-bench-2.json"), "feed_all_cores": load("feed-all.json"), "feed_two_cores": load("feed-2.json")}
(out / "gpu-check.json").write_text(json.dumps(figures, indent=2))
for key in ("all_cores", "two_cores"):
    r = figures[key]
    if "loader_over_resnet50" in r:
        cold = r.get("loader_gpu_cold", {}).get("images_per_s")
        print(f"{key}: loader {r['loader_gpu']['images_per_s']:.0f}/s (from storage: {cold or 0:.0f}/s), "
              f"ResNet-50 {r['resnet50_train']['images_per_s']:.0f}/s, {r['loader_over_resnet50']:.2f}x; "
              f"ResNet-50 from the loader {r.get('resnet50_from_loader', {}).get('images_per_s', 0):.0f}/s")
print(f"figures: {out / 'gpu-check.json'}")
EOF
rm -rf "$work"
