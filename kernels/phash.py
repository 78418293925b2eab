"""64-bit DCT perceptual hash (pHash): 32x32 grey image -> DCT -> top-left 8x8 block -> bit = coeff > median.

The caller (conversion) turns each image into a 32x32 float grey array; this module only does arrays.
Near-duplicates (rescaled, re-compressed, slightly brightened) flip few bits; distinct images differ
in about 32 of 64 bits.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

HASH_SIDE = 32
BLOCK = 8


def _dct_matrix(n: int) -> NDArray[np.float64]:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_D = _dct_matrix(HASH_SIDE)[:BLOCK]  # only the 8 lowest frequencies are ever used
_BITS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def dct_hash(gray: NDArray[np.float32], out: NDArray[np.uint64]) -> None:
    """gray: (n, 32, 32) float; writes n 64-bit hashes into out (bit 63 = coefficient (0, 0))."""
    if gray.ndim != 3 or gray.shape[1:] != (HASH_SIDE, HASH_SIDE):
        raise ValueError(f"gray must have shape (n, {HASH_SIDE}, {HASH_SIDE}), got {gray.shape}")
    if out.shape != (gray.shape[0],):
        raise ValueError(f"out must have shape ({gray.shape[0]},), got {out.shape}")
    coeffs = np.einsum("ki,nij,lj->nkl", _D, gray.astype(np.float64), _D).reshape(gray.shape[0], BLOCK * BLOCK)
    med = np.median(coeffs[:, 1:], axis=1, keepdims=True)  # DC excluded from the median: it only tracks brightness
    bits = coeffs > med
    out[:] = (bits.astype(np.uint64) * _BITS).sum(axis=1, dtype=np.uint64)


def hamming(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Bitwise Hamming distance between two broadcastable uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)
