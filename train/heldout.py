"""Held-out evaluation of a hashtag run: precision@1, precision@5 and mAP of the classifier on the held-out split."""

from __future__ import annotations

from typing import Any

import torch

from tagstream.train import distributed as dd
from tagstream.train.metrics import MAP_MAX_ENTRIES, HashtagMetrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, *, run: Any, softmax: bool, dist: dd.Dist) -> dict[str, float]:
    """precision@1, precision@5 and mAP of hashtag prediction on the held-out split (rank 0 gets them).

    Each rank scores its share batch by batch into a HashtagMetrics (train/metrics.py): precision@k summed as it
    goes, mAP over a bounded sample of the images ("mAP_images"), so memory does not grow with the split; the
    accumulators (counts and the samples) are gathered on rank 0 and merged. How many held-out images are read at
    all is the loader's bound (data.holdout_max_images).
    """
    model.eval()
    loader.set_epoch(0)
    metrics = HashtagMetrics(int(loader.num_classes), max_entries=MAP_MAX_ENTRIES // dist.world)
    for batch in loader:
        images, targets = run.inputs(batch)
        with run.autocast:
            logits = model(images).float()
        probs = logits.softmax(dim=1) if softmax else logits.sigmoid()
        # a CPU-GPU sync per eval batch: fine outside the training loop
        metrics.update(probs.cpu().numpy(), (targets > 0).cpu().numpy())
    gathered = dd.gather_objects(metrics, dist)
    model.train()
    if gathered is None:
        return {}
    total = HashtagMetrics(metrics.classes)
    for part in gathered:
        total.merge(part)
    if total.images == 0:
        return {}
    return total.result()
