"""A small synthetic hashtag world, converted, with a vocabulary: the dataset of the end-to-end training tests."""

from __future__ import annotations

from pathlib import Path


def converted_world(
    root: Path, *, images: int, seed: int, shard_size: int, min_count: int, stoplist: bool = True
) -> Path:
    """`images` synthetic hashtag photos (no downstream split) converted into root/ds in shards of `shard_size`,
    with vocabulary v1 (synonyms merged, the stop-list applied when `stoplist`, tags seen >= min_count times)."""
    from tagstream.tools.convert import convert
    from tagstream.tools.synth import WorldConfig, make_world
    from tagstream.tools.vocab import VocabOptions, build_vocab

    make_world(
        root / "src",
        workers=1,
        config=WorldConfig(images=images, seed=seed, downstream_classes=0, downstream_train=0, downstream_eval=0),
    )
    convert(root / "src" / "hashtags.jsonl", root / "ds", shard_size=shard_size)
    stop = str(root / "src" / "stoplist.txt") if stoplist else None
    build_vocab(
        root / "ds", "v1", VocabOptions(synonyms=str(root / "src" / "synonyms.tsv"), stoplist=stop, min_count=min_count)
    )
    return root / "ds"
