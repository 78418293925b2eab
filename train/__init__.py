"""The thin trainer: config and recipes, models, losses, the DDP loop, checkpoints and resume, evaluation,
transfer, embeddings.

Never imports DALI, nor a module inside the loader's wings: it builds its loader with `tagstream.loader.build_loader`
from a `LoaderConfig` (made in train/loading.py only) and reads batches through the `Loader` protocol and
`normalize_images`; the few other loader names it uses come from the faces (`tagstream.loader.data`: Dataset, Vocab,
storage, the atomic writers; `tagstream.loader.sampling`: working_worlds; `tagstream.loader.pipeline`: the image-size
forms). tests/test_layout.py checks both.
"""
