"""The dataset wing: what a dataset is on disk and in object storage — the format's names and schemas with its writer
beside its reader, the LMDB shard store, vocabularies and masks, fsspec storage with one retry policy, the rank-local
cache of a remote dataset (cache.py), its prefetcher and `tagstream push`.

Code outside loader/ imports these names, or the `format`, `storage`, `records` and `checksums` namespaces, from here.
"""

from tagstream.loader.data import checksums, format, records, storage
from tagstream.loader.data.dataset import Dataset, load_npy
from tagstream.loader.data.format import (
    MAX_PIXELS,
    FormatError,
    check_name,
    fsync_dir,
    write_json_atomic,
    write_text_atomic,
)
from tagstream.loader.data.manifest import read_manifest
from tagstream.loader.data.push import push
from tagstream.loader.data.staging import Staged
from tagstream.loader.data.storage import StorageError, is_url, local_path
from tagstream.loader.data.store import ShardStore, close_all
from tagstream.loader.data.vocab import CLASSES, Vocab, VocabClass, read_classes, stage_vocab, write_vocab
from tagstream.loader.data.writer import (
    TMP_SUFFIX,
    ShardWriter,
    mask_outputs,
    stage_mask,
    write_index,
    write_manifest,
    write_mask,
    write_tags,
)

__all__ = [
    "CLASSES",
    "Staged",
    "read_classes",
    "stage_vocab",
    "MAX_PIXELS",
    "TMP_SUFFIX",
    "Dataset",
    "FormatError",
    "ShardStore",
    "ShardWriter",
    "StorageError",
    "Vocab",
    "VocabClass",
    "check_name",
    "checksums",
    "close_all",
    "format",
    "fsync_dir",
    "is_url",
    "load_npy",
    "local_path",
    "mask_outputs",
    "push",
    "read_manifest",
    "records",
    "stage_mask",
    "storage",
    "write_index",
    "write_json_atomic",
    "write_manifest",
    "write_mask",
    "write_tags",
    "write_text_atomic",
    "write_vocab",
]
