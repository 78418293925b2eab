"""Train a shipped recipe's real model a few steps through `tagstream train` on tiny images and check that a
run resumed from its mid-run checkpoint ends with the uninterrupted run's losses and bit-identical weights.

    python scripts/recipe_resume_check.py vit_b16-swag regnety_16gf-swag [--size 32] [--device cpu]

Each recipe: 48 flat-colour JPEGs, batch 8, 4 steps with checkpoints at 2 and 4; the interrupted run is the
uninterrupted one's directory as it stood at step 2, resumed with --resume. Memory: the model, its gradients
and optimizer state (AdamW: 16 bytes a parameter) plus one checkpoint held while resuming; ViT-H/14 and
RegNetY-128GF need ~18 GB of RAM on CPU. Checkpoints are written under --work (deleted after each recipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tagstream.tools.bench.loader_data import encode_jpeg, index_color, index_tags, write_dataset, write_identity_vocab
from tagstream.train.checkpoint import latest_checkpoint, list_checkpoints
from tagstream.train.rundir import step_losses as _losses

STEPS, CHECKPOINT_AT = 4, 2


def _dataset(root: Path, n: int = 48, num_tags: int = 12) -> Path:
    def records():
        for i in range(n):
            px = np.empty((48, 64, 3), np.uint8)
            px[:] = index_color(i)
            yield encode_jpeg(px, quality=95), index_tags(i, num_tags), 64, 48

    ds = write_dataset(root, records(), num_images=n, shard_size=16, num_tags=num_tags)
    write_identity_vocab(ds, "v")
    return root


def _as_of(run: Path, copy: Path, step: int) -> None:
    """copy = run as it stood at checkpoint `step` (later checkpoints and metrics lines dropped)."""
    shutil.copytree(run, copy)
    for path in list_checkpoints(copy):
        if int(path.stem.split("-")[1]) > step:
            path.unlink()
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln).get("kind") != "train" or json.loads(ln)["first_step"] <= step]
    (copy / "metrics.jsonl").write_text("".join(f"{ln}\n" for ln in kept))


def check(recipe: str, ds: Path, work: Path, *, size: int, device: str) -> bool:
    args = [
        sys.executable,
        "-m",
        "tagstream.tools.cli",
        "train",
        "--config",
        recipe,
        "--dataset",
        str(ds),
        "--vocab",
        "v",
        "--image-size",
        str(size),
        "--batch-size",
        "8",
        "--steps",
        str(STEPS),
        "--device",
        device,
        "--set",
        "data.samples_per_epoch=32",
        "--set",
        "data.holdout_fraction=0",
        "--set",
        "run.eval_every=0",
        "--set",
        "data.workers=1",
        "--set",
        "data.threads=1",
        "--set",
        "run.threads=1",
        "--set",
        "run.progress=false",
        "--set",
        f"run.checkpoint_every={CHECKPOINT_AT}",
        "--set",
        "run.log_every=1",
        "--set",
        "run.keep_last=2",
    ]
    ref, leg = work / f"{recipe}-ref", work / f"{recipe}-leg"
    start = time.perf_counter()
    for out, extra in ((ref, []), (leg, ["--resume"])):
        if extra:
            _as_of(ref, leg, CHECKPOINT_AT)
        done = subprocess.run([*args, "--out", str(out), *extra], capture_output=True, text=True)
        if done.returncode:
            print(f"{recipe}: tagstream train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            return False
    a, b = _losses(ref), _losses(leg)
    wa = torch.load(latest_checkpoint(ref), mmap=True, weights_only=True)["model"]
    wb = torch.load(latest_checkpoint(leg), mmap=True, weights_only=True)["model"]
    same = all(torch.equal(wa[k], wb[k]) for k in wa) and [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]
    values = sum(v.numel() for v in wa.values())  # parameters and buffers (BatchNorm statistics)
    print(
        f"{recipe}: {values / 1e6:.1f} M values in the model's state, losses {[round(a[s], 5) for s in sorted(a)]}, resumed from step "
        f"{CHECKPOINT_AT}: {'identical losses and weights' if same else 'DIFFERENT'} ({time.perf_counter() - start:.0f} s)"
    )
    shutil.rmtree(ref)
    shutil.rmtree(leg)
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--size", type=int, default=32, help="image size (a multiple of a ViT's patch)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--work", default="/tmp/tagstream-recipe-check")
    opts = parser.parse_args()
    work = Path(opts.work)
    shutil.rmtree(work, ignore_errors=True)
    ds = _dataset(work / "ds")
    ok = [check(r, ds, work, size=opts.size, device=opts.device) for r in opts.recipes]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
