"""Held-out evaluation of a hashtag run: precision@1, precision@5 and mAP of the classifier on the held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tagstream.train import distributed as dd
from tagstream.train.metrics import hashtag_metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, *, run: Any, softmax: bool, dist: dd.Dist) -> dict[str, float]:
    """precision@1, precision@5 and mAP of hashtag prediction on the held-out split (rank 0 gets them).

    Each rank scores its share; the scores, positives and image indices are gathered on rank 0, which
    drops duplicates by index so every held-out image counts once.
    """
    model.eval()
    loader.set_epoch(0)
    scores, positives, indices = [], [], []
    for batch in loader:
        images, targets = run.inputs(batch)
        with run.autocast:
            logits = model(images).float()
        probs = logits.softmax(dim=1) if softmax else logits.sigmoid()
        scores.append(probs.cpu().numpy())  # a CPU-GPU sync per eval batch: fine outside the training loop
        positives.append((targets > 0).cpu().numpy())
        indices.append(batch.indices.cpu().numpy())
    local = tuple(np.concatenate(x) if x else None for x in (scores, positives, indices))
    gathered = dd.gather_objects(local, dist)
    model.train()
    if gathered is None:
        return {}
    parts = [g for g in gathered if g[0] is not None]
    if not parts:
        return {}
    s, p, i = (np.concatenate([g[k] for g in parts]) for k in range(3))
    _, first = np.unique(i, return_index=True)
    return hashtag_metrics(s[first], p[first])
