"""The plans, the packing and the class counts are pinned: digests computed by the sampler as it was before
the O(N/world) refactor (one O(N) weight array per rank), on a fixed index-only dataset, for several
samplings, combines, masks, holdout splits and world sizes. A refactor that changes one drawn sample,
one block boundary or one bit of the reported imbalance fails here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tagstream.loader.config import LoaderConfig
from tagstream.loader.data.dataset import Dataset
from tagstream.loader.data.vocab import Vocab
from tagstream.loader.sampling.sampler import RankSampler
from tests.helpers.index_only import write_index_only

# (sampling, combine, masks, holdout_fraction, split, replacement, samples_per_epoch, world)
SETTINGS = [
    ("sqrt", "sum", (), 0.0, "all", True, None, 1),
    ("sqrt", "sum", (), 0.0, "all", True, None, 3),
    ("sqrt", "sum", (), 0.0, "all", True, None, 7),
    ("sqrt", "mean", ("dedup",), 0.2, "train", True, None, 4),
    ("uniform", "max", ("dedup", "other"), 0.2, "holdout", True, None, 2),
    ("uniform", "sum", ("other",), 0.0, "all", True, 5000, 5),
    ("natural", "sum", ("dedup",), 0.0, "all", False, None, 3),
    ("natural", "sum", (), 0.3, "train", True, 999, 2),
    ("power:0.3", "sum", (), 0.1, "train", True, 4096, 4),
]

PINNED = {
    ("sqrt", "sum", (), 0.0, "all", True, None, 1): "289b3af741b3bbb0d1d14ad5bf00649f6ab6e24ccd356d2eae3f64332f90ce64",
    ("sqrt", "sum", (), 0.0, "all", True, None, 3): "7051c8076622a3d42ee7e110cc8d98b0ec648a13fc3e0f791cc13fc98ab3ace6",
    ("sqrt", "sum", (), 0.0, "all", True, None, 7): "07bd705c048bda393b04548d00fc8968f2a657c8a612d4100a05777c39d676e3",
    (
        "sqrt",
        "mean",
        ("dedup",),
        0.2,
        "train",
        True,
        None,
        4,
    ): "62ee9f28fc5a56642df57c1cfdea9a9d3d00bd1d5980322395887d30dfc8e17b",
    (
        "uniform",
        "max",
        ("dedup", "other"),
        0.2,
        "holdout",
        True,
        None,
        2,
    ): "32a8046e25d29dcd3c6ef806017c313f4d20b35f3632718047feea648eeb6fc5",
    (
        "uniform",
        "sum",
        ("other",),
        0.0,
        "all",
        True,
        5000,
        5,
    ): "9deaa9357d0a9d0808880f41f3778dbeaf2aba3e70a9b9612a16cb771ca176dd",
    (
        "natural",
        "sum",
        ("dedup",),
        0.0,
        "all",
        False,
        None,
        3,
    ): "6b234c2f145d7b27d9fc6160885e5249faa7b521173fd8a090b9c8f903c77a93",
    (
        "natural",
        "sum",
        (),
        0.3,
        "train",
        True,
        999,
        2,
    ): "48fd18f7d6d28a0fc3595212fffed4d31b92b185bae08bed00df4d32220e83fb",
    (
        "power:0.3",
        "sum",
        (),
        0.1,
        "train",
        True,
        4096,
        4,
    ): "e6ca67fda17f2fc676274fdfddb83b0cab5d8eed172321549c85f5f1120e910d",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return write_index_only(tmp_path_factory.mktemp("pinned"))


def _digest(samplers: list[RankSampler]) -> str:
    h = hashlib.sha256()
    s0 = samplers[0]
    for a in (s0.block_starts, s0.owner, s0.counts, np.array([s0.num_drawable, s0.len_per_rank])):
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    h.update(repr((float(s0.imbalance), float(s0.imbalance_whole_shards))).encode())
    for s in samplers:
        h.update(np.ascontiguousarray(s.plan(0), dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(s.plan(3, start=7, stop=min(len(s), 50)), dtype="<i8").tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_plans_are_exactly_the_pinned_ones(dataset, setting):
    sampling, combine, masks, holdout, split, replacement, samples, world = setting
    config = LoaderConfig(
        dataset=str(dataset.root),
        vocab="v",
        sampling=sampling,
        combine=combine,
        masks=masks,
        holdout_fraction=holdout,
        split=split,
        seed=11,
        samples_per_epoch=samples,
    )
    vocab = Vocab(dataset, "v")
    samplers = [
        RankSampler.from_config(config, dataset, vocab, rank=r, world=world, replacement=replacement)
        for r in range(world)
    ]
    assert _digest(samplers) == PINNED[setting]
