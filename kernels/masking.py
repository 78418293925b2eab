"""Patch masks for masked-autoencoder training: which patches of each image the encoder does not see.

A pure function of (key, row): row r's patch p gets the uniform `counter_u64(key, r * patches + p)`, and the
`round(ratio * patches)` patches with the smallest values are masked (ties, which need two equal 53-bit draws,
go to the lower patch index). The trainer keys a batch by (seed, epoch, step) and numbers its rows by their
slot in the global batch, so a resumed run, at any world size dividing its partitions, masks exactly as the
run that never stopped; held-out images are keyed by their dataset index instead (one fixed mask each).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.rng import counter_u64, counter_u64_ref, to_unit, to_unit_ref


def masked_count(patches: int, ratio: float) -> int:
    """Patches masked per image: round(ratio * patches), at least 0 and at most patches - 1 (one stays visible)."""
    if patches < 1:
        raise ValueError(f"patches={patches} must be >= 1")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio={ratio} must be in [0, 1)")
    return min(int(round(ratio * patches)), patches - 1)


@numba.njit(cache=True)
def _noise(key: np.uint64, rows: NDArray[np.uint64], out: NDArray[np.float64]) -> None:
    patches = out.shape[1]
    for i in range(out.shape[0]):
        base = rows[i] * np.uint64(patches)
        for p in range(patches):
            out[i, p] = to_unit(counter_u64(key, base + np.uint64(p)))


def _masks_from_noise(noise: NDArray[np.float64], masked: int, out: NDArray[np.bool_]) -> None:
    order = np.argsort(noise, axis=1, kind="stable")
    out[:] = False
    np.put_along_axis(out, order[:, :masked], True, axis=1)


def patch_masks(key: np.uint64, rows: NDArray[np.uint64], ratio: float, out: NDArray[np.bool_]) -> None:
    """out[i, p] = True where patch p of row rows[i] is masked; out is (len(rows), patches)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint64)
    if out.ndim != 2 or out.shape[0] != rows.shape[0]:
        raise ValueError(f"out {out.shape} must be (len(rows)={rows.shape[0]}, patches)")
    masked = masked_count(out.shape[1], ratio)
    noise = np.empty(out.shape, np.float64)
    _noise(np.uint64(key), rows, noise)
    _masks_from_noise(noise, masked, out)


def patch_masks_ref(key: np.uint64, rows: NDArray[np.uint64], ratio: float, patches: int) -> NDArray[np.bool_]:
    """NumPy twin of patch_masks (returns the array)."""
    rows = np.asarray(rows, dtype=np.uint64)
    counters = rows[:, None] * np.uint64(patches) + np.arange(patches, dtype=np.uint64)[None, :]
    noise = to_unit_ref(counter_u64_ref(np.uint64(key), counters.reshape(-1))).reshape(rows.shape[0], patches)
    masked = masked_count(patches, ratio)
    out = np.zeros((rows.shape[0], patches), np.bool_)
    for i in range(rows.shape[0]):
        out[i, sorted(range(patches), key=lambda p: (noise[i, p], p))[:masked]] = True
    return out
