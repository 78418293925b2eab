"""Sampling weights of one image range, from the vocabulary's labels read by range (loader/data/npyrange.py).

What a rank computes for its own blocks, O(range): eligibility of the range, its labels, and
w_i = combine over its classes of n_c^(a-1) (kernels/weights.py) given the class counts n_c over all
eligible images (computed once, loader/sampling/summary.py). The weight of an image depends only on its own labels
and the counts, so a range's weights are exactly the slice of the all-images array.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.counts import class_counts
from tagstream.kernels.weights import check_combine, sample_weights
from tagstream.loader.data import format as fmt
from tagstream.loader.data.npyrange import NpyRange
from tagstream.loader.data.vocab import LABEL_OFFSETS, LABELS
from tagstream.loader.sampling.eligible import RangeEligibility

if TYPE_CHECKING:
    from tagstream.loader.data.dataset import Dataset
    from tagstream.loader.data.vocab import Vocab


class RangeWeights:
    """Weights (and labels, eligibility, class counts) of image ranges under one sampling rule."""

    def __init__(
        self, dataset: Dataset, vocab: Vocab, *, power: float | None, combine: str, eligible: RangeEligibility
    ):
        check_combine(combine)
        self.dataset, self.vocab = dataset, vocab
        self.power, self.combine, self.eligible = power, combine, eligible
        self.offsets = NpyRange(vocab.dir / LABEL_OFFSETS)
        self.labels = NpyRange(vocab.dir / LABELS)
        if self.offsets.size != dataset.num_images + 1:
            raise fmt.FormatError(
                f"{vocab.dir}: labels cover {self.offsets.size - 1} images, dataset has {dataset.num_images}"
            )

    def labels_of(self, lo: int, hi: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """(offsets rebased to 0, labels) of images [lo, hi): a CSR of hi - lo images."""
        off = self.offsets.read(lo, hi + 1).astype(np.int64, copy=False)
        if off.shape[0] > 1 and (np.diff(off).min() < 0 or off[0] < 0):
            raise fmt.FormatError(f"{self.vocab.dir}: {LABEL_OFFSETS} decreases within images [{lo}, {hi})")
        labels = self.labels.read(int(off[0]), int(off[-1])).astype(np.int32, copy=False)
        return off - off[0], labels

    def add_counts(self, lo: int, hi: int, counts: NDArray[np.int64]) -> None:
        """counts[c] += eligible images of [lo, hi) carrying class c."""
        off, labels = self.labels_of(lo, hi)
        class_counts(off, labels, self.eligible.of(self.dataset, lo, hi), counts, accumulate=True)

    def weights(self, lo: int, hi: int, counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """float64[hi - lo]: the sampling weight of each image of [lo, hi) given the class counts."""
        off, labels = self.labels_of(lo, hi)
        out = np.empty(hi - lo, dtype=np.float64)
        return sample_weights(
            off, labels, counts, self.power, self.combine, self.eligible.of(self.dataset, lo, hi), out
        )
