"""Reading: the LMDB shard store, epoch plans, DALI pipelines and the PyTorch-facing iterator."""
