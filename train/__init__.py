"""The thin trainer: config, models, losses, the DDP loop, checkpoints, evaluation, transfer, embeddings.

Never imports DALI: it sees the loader only through tagstream.loader.api.build_loader.
"""
