"""The training rate of a model on this machine's GPU (synthetic batches already on the device):
the rate a loader must beat so that it is never the bottleneck."""

from __future__ import annotations

import time


def training_rate(
    model_name: str = "resnet50",
    *,
    batch_size: int = 256,
    image_size: int = 224,
    steps: int = 20,
    warmup: int = 5,
    num_classes: int = 1000,
) -> dict:
    """Images/s of SGD training steps (bf16 autocast, channels-last) on cuda:0, data excluded."""
    import torch

    from tagstream.train.models import build_model

    if not torch.cuda.is_available():
        raise ValueError("training_rate needs a CUDA GPU")
    device = torch.device("cuda", 0)
    model = build_model(model_name, num_classes=num_classes, image_size=image_size)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()  # the timed window starts with an empty GPU queue
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "images_per_s": steps * batch_size / seconds,
        "gpu": torch.cuda.get_device_name(0),
    }
