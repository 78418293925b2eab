"""GPU loader goal check, with the cores this process may use (run it under `taskset -c 0,1` for two):
our GPU loader (batch source in the training process, nvJPEG decode with the hardware decoder where
present, ROI crop, resize, flip, normalise on the GPU) alone; ResNet-50's training rate on the same GPU
(bf16 autocast, channels-last, synthetic data already on the device); and the two together, ResNet-50
trained from the loader's batches (end-to-end images/s and the share of time spent waiting for data). The
loader alone is also run with the page cache dropped first (root only): reads from storage.
Goals: loader >= 3x ResNet-50 with all cores, >= 1x with 2 cores.

Usage: python scripts/gpu_bench.py OUT.json [--images 4096] [--batch-size 256] [--batches 20]"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def loader_rate(config, batches: int) -> dict:
    import torch

    from tagstream.loader import build_loader

    t0 = time.perf_counter()
    loader = build_loader(config)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n = min(batches, len(loader) - 1)
    torch.cuda.synchronize()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        batch = next(it)
    torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    loader.close()
    # the CPU the whole GPU path spends per image in this process (the batch source, DALI's threads, nvJPEG's
    # host side): what `bench loader --feed` measures without the decoder, here with it
    return {
        "images_per_s": n * config.batch_size / seconds,
        "batches": n,
        "first_batch_s": first,
        "cpu_us_per_image": cpu / (n * config.batch_size) * 1e6,
        "cores_busy": cpu / seconds,
        "dtype": str(batch.images.dtype),
        "shape": list(batch.images.shape),
    }


def loaded_training(config, steps: int) -> dict:
    """ResNet-50 SGD steps (bf16, channels-last) on the loader's batches: images/s and data-wait share."""
    import torch

    from tagstream.loader import build_loader
    from tagstream.train.models import build_model

    device = torch.device("cuda", 0)
    model = build_model("resnet50", num_classes=1000, image_size=config.image_size).to(
        device, memory_format=torch.channels_last
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loader = build_loader(config)
    it = iter(loader)
    steps = min(steps, len(loader) - 3)
    wait = 0.0
    for i in range(steps + 3):
        if i == 3:  # warmed up: time from here
            torch.cuda.synchronize()
            t0, wait = time.perf_counter(), 0.0
        w0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - w0
        x = batch.images.to(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (x.shape[0],), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    loader.close()
    return {"images_per_s": steps * config.batch_size / seconds, "steps": steps, "data_wait_share": wait / seconds}


def drop_page_cache() -> bool:
    """Unmap this process's shards and ask the kernel to drop its clean page cache (root only), so the next
    loader reads the dataset from storage; False where that is not allowed."""
    from tagstream.loader.data.store import close_all

    close_all()
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    from tagstream.tools.bench.loader import bench_config, make_bench_dataset, usable_cores
    from tagstream.tools.bench.model_rate import training_rate

    cores = usable_cores()
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu-bench-ds-{args.images}"
    result: dict = {"cores": cores, "batch_size": args.batch_size, "images": args.images}
    t0 = time.perf_counter()
    if not (root / "manifest.json").exists():
        make_bench_dataset(root, args.images, workers=cores)
    result["make_dataset_s"] = time.perf_counter() - t0
    # the batch source runs in this process: DALI's threads (decode scheduling, nvJPEG's host side) get the cores
    config = bench_config(
        str(root),
        batch_size=args.batch_size,
        image_size=224,
        workers=0,
        threads=cores,
        device="gpu",
        device_id=0,
        prefetch=2,
        samples_per_epoch=max(args.images, (args.batches + 8) * args.batch_size),
    )

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=2))

    result["loader_gpu"] = loader_rate(config, args.batches)
    save()
    # the same from storage (the batch source reads in the training thread: does it wait for the disk?)
    if drop_page_cache():
        result["loader_gpu_cold"] = loader_rate(config, args.batches)
    else:
        result["loader_gpu_cold"] = {"skipped": "cannot drop the page cache here (needs root)"}
    save()
    result["resnet50_train"] = training_rate("resnet50", batch_size=args.batch_size, steps=10)
    result["loader_over_resnet50"] = result["loader_gpu"]["images_per_s"] / result["resnet50_train"]["images_per_s"]
    save()
    result["resnet50_from_loader"] = loaded_training(config, args.batches)
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
