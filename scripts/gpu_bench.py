"""GPU loader goal check: our DALI GPU loader (mixed decode, ROI crop, resize, flip, normalise) against
ResNet-50's training rate on the same GPU (goal: loader >= 3x). Usage: python scripts/gpu_bench.py OUT.json"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(out: str, images: int = 1024, batch_size: int = 128, batches: int = 6) -> None:
    import torch
    from tagstream.loader import build_loader
    from tagstream.tools.bench.loader import _config, make_bench_dataset, usable_cores
    from tagstream.tools.bench.model_rate import training_rate

    cores = usable_cores()
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-bench-ds"
    result: dict = {"cores": cores, "batch_size": batch_size}
    t0 = time.perf_counter()
    if not (root / "manifest.json").exists():
        make_bench_dataset(root, images, workers=cores)
    result["make_dataset_s"] = time.perf_counter() - t0
    # DALI forks its Python workers: build the loader before CUDA is initialised in this process
    config = _config(str(root), batch_size=batch_size, image_size=224, workers=max(cores - 2, 1), threads=cores,
                     device="gpu", device_id=0, prefetch=2)
    t0 = time.perf_counter()
    loader = build_loader(config)
    it = iter(loader)
    next(it)
    result["first_batch_s"] = time.perf_counter() - t0
    n = min(batches, len(loader) - 1)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        images_, _, _ = next(it)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    loader.close()
    result["loader_gpu"] = {"images_per_s": n * batch_size / dt, "batches": n, "dtype": str(images_.dtype),
                            "shape": list(images_.shape)}
    json.dump(result, open(out, "w"), indent=2)
    result["resnet50_train"] = training_rate("resnet50", batch_size=256, steps=10)
    result["loader_over_resnet50"] = result["loader_gpu"]["images_per_s"] / result["resnet50_train"]["images_per_s"]
    json.dump(result, open(out, "w"), indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
