"""Random-resized-crop windows and flip bits for a whole batch in one call: the same numbers as
loader/pipeline/augment.py's per-sample `train_params` (torchvision's RandomResizedCrop with our counter-based
RNG), bit for bit, in one compiled call instead of a Python call per sample (the costs: docs/costs.md).

Sample i's stream key is splitmix64(prefix ^ position_i), where `prefix` folds (seed, epoch, partition)
exactly as augment.CounterRNG does; draw k of a stream is splitmix64(key ^ k·gamma), k = 1, 2, ...
`train_windows` takes one prefix for the batch (a rank serving one partition); `train_windows_keyed` one
per sample (a rank serving several: its batch mixes their streams, loader/sampling/partitions.py partition_positions).
Exactness rests on doing the same IEEE operations in the same order as the Python reference
(no fastmath, libm's exp, correctly rounded sqrt, round-half-even); tests pin it against augment.py.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.rng import GAMMA, MASK64, mix64, mix64_ref, splitmix64_int

ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 windows before the centre fallback
_S11 = np.uint64(11)
_S63 = np.uint64(63)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0  # 2^-53


def stream_prefix(seed: int, epoch: int, partition: int) -> np.uint64:
    """The key every sample of (seed, epoch, partition) starts from (augment.CounterRNG's first three folds)."""
    key = splitmix64_int(int(seed) & MASK64)
    for part in (epoch, partition):
        key = splitmix64_int(key ^ (int(part) & MASK64))
    return np.uint64(key)


def stream_prefixes(seed: int, epoch: int, partitions: NDArray[np.int64]) -> NDArray[np.uint64]:
    """stream_prefix of each sample's partition (one Python hash chain per distinct partition)."""
    partitions = np.asarray(partitions, np.int64)
    distinct, which = np.unique(partitions, return_inverse=True)
    keys = np.array([stream_prefix(seed, epoch, int(p)) for p in distinct.tolist()], np.uint64)
    return keys[which.reshape(-1)] if partitions.size else np.zeros(0, np.uint64)


@numba.njit(cache=True, inline="always")
def _splitmix(x: np.uint64) -> np.uint64:
    return mix64(x + GAMMA)


@numba.njit(cache=True, inline="always")
def _uniform(key: np.uint64, k: np.uint64, lo: float, hi: float) -> float:
    return lo + (hi - lo) * (float(_splitmix(key ^ (k * GAMMA)) >> _S11) * _INV53)


@numba.njit(cache=True, inline="always")
def _window_into(
    out: NDArray[np.int64],
    i: int,
    width: int,
    height: int,
    key: np.uint64,
    scale: NDArray[np.float64],
    ratio: NDArray[np.float64],
) -> None:
    """out[i] = (x, y, w, h, flip) of an image width x height from the stream `key`."""
    area_lo, area_hi = scale[0], scale[1]
    log_lo, log_hi, r_min, r_max = ratio[2], ratio[3], ratio[4], ratio[5]
    k = np.uint64(0)
    area = float(width * height)
    found = False
    x = y = w = h = 0
    for _ in range(ATTEMPTS):
        target_area = area * _uniform(key, k + _ONE, area_lo, area_hi)
        aspect = math.exp(_uniform(key, k + np.uint64(2), log_lo, log_hi))
        k += np.uint64(2)
        w = int(np.rint(math.sqrt(target_area * aspect)))
        h = int(np.rint(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            k += _ONE
            y = int(_splitmix(key ^ (k * GAMMA)) % np.uint64(height - h + 1))
            k += _ONE
            x = int(_splitmix(key ^ (k * GAMMA)) % np.uint64(width - w + 1))
            found = True
            break
    if not found:
        in_ratio = width / height
        if in_ratio < r_min:
            w = width
            h = max(1, int(np.rint(w / r_min)))
        elif in_ratio > r_max:
            h = height
            w = max(1, int(np.rint(h * r_max)))
        else:
            w, h = width, height
        x, y = (width - w) // 2, (height - h) // 2
    k += _ONE
    out[i, 0], out[i, 1], out[i, 2], out[i, 3] = x, y, w, h
    out[i, 4] = int(_splitmix(key ^ (k * GAMMA)) >> _S63)


@numba.njit(cache=True)
def train_windows(
    widths: NDArray[np.int64],
    heights: NDArray[np.int64],
    positions: NDArray[np.int64],
    prefix: np.uint64,
    scale: NDArray[np.float64],
    ratio: NDArray[np.float64],
    out: NDArray[np.int64],
) -> None:
    """out[i] = (x, y, w, h, flip) of the sample at positions[i] of an image widths[i] x heights[i].

    scale = (lo, hi) of the area fraction; ratio = (lo, hi, log lo, log hi, min, max) of the aspect
    ratio (see `ratio_args`). Sizes must be >= 1 (the caller checks)."""
    for i in range(widths.shape[0]):
        _window_into(out, i, widths[i], heights[i], _splitmix(prefix ^ np.uint64(positions[i])), scale, ratio)


@numba.njit(cache=True)
def train_windows_keyed(
    widths: NDArray[np.int64],
    heights: NDArray[np.int64],
    positions: NDArray[np.int64],
    prefixes: NDArray[np.uint64],
    scale: NDArray[np.float64],
    ratio: NDArray[np.float64],
    out: NDArray[np.int64],
) -> None:
    """train_windows with a prefix per sample: sample i is position positions[i] of stream prefixes[i]
    (see `stream_prefixes`); the same numbers as train_windows wherever the prefixes agree."""
    for i in range(widths.shape[0]):
        _window_into(out, i, widths[i], heights[i], _splitmix(prefixes[i] ^ np.uint64(positions[i])), scale, ratio)


def ratio_args(ratio: tuple[float, float]) -> NDArray[np.float64]:
    """The aspect-ratio range as the kernel takes it: (lo, hi, log lo, log hi, min, max), logs by math.log
    as in augment.py."""
    lo, hi = float(ratio[0]), float(ratio[1])
    return np.array([lo, hi, math.log(lo), math.log(hi), min(lo, hi), max(lo, hi)], np.float64)


def train_windows_ref(
    widths: NDArray[np.int64],
    heights: NDArray[np.int64],
    positions: NDArray[np.int64],
    prefix: np.uint64 | NDArray[np.uint64],
    scale: NDArray[np.float64],
    ratio: NDArray[np.float64],
) -> NDArray[np.int64]:
    """NumPy twin of train_windows (one prefix) and of train_windows_keyed (a prefix per sample),
    vectorised over samples (exp through math.exp per element, so the twin does not depend on NumPy's
    own exp rounding the same way as libm)."""
    widths = np.asarray(widths, np.int64)
    heights = np.asarray(heights, np.int64)
    n = widths.shape[0]
    g = np.uint64(GAMMA)
    prefix = np.asarray(prefix, np.uint64)
    if prefix.ndim and prefix.shape != (n,):
        raise ValueError(f"prefixes of shape {prefix.shape} for {n} samples: give one prefix, or one per sample")
    keys = mix64_ref((prefix ^ np.asarray(positions, np.int64).astype(np.uint64)) + g)

    def draw(k: NDArray[np.uint64]) -> NDArray[np.uint64]:
        return mix64_ref((keys ^ (k * g)) + g)

    def uniform(k: NDArray[np.uint64], lo: float, hi: float) -> NDArray[np.float64]:
        return lo + (hi - lo) * ((draw(k) >> _S11).astype(np.float64) * _INV53)

    exp = np.frompyfunc(math.exp, 1, 1)
    area = (widths * heights).astype(np.float64)
    k = np.zeros(n, np.uint64)
    done = np.zeros(n, bool)
    out = np.zeros((n, 5), np.int64)
    for _ in range(ATTEMPTS):
        target = area * uniform(k + _ONE, scale[0], scale[1])
        aspect = exp(uniform(k + np.uint64(2), ratio[2], ratio[3])).astype(np.float64)
        w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
        h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
        k = np.where(done, k, k + np.uint64(2))
        hit = ~done & (w > 0) & (w <= widths) & (h > 0) & (h <= heights)
        if hit.any():
            kh = k[hit]
            ky, kx = kh + _ONE, kh + np.uint64(2)
            dy = mix64_ref((keys[hit] ^ (ky * g)) + g)
            dx = mix64_ref((keys[hit] ^ (kx * g)) + g)
            out[hit, 1] = (dy % (heights[hit] - h[hit] + 1).astype(np.uint64)).astype(np.int64)
            out[hit, 0] = (dx % (widths[hit] - w[hit] + 1).astype(np.uint64)).astype(np.int64)
            out[hit, 2], out[hit, 3] = w[hit], h[hit]
            k[hit] = kx
            done |= hit
    rest = ~done
    if rest.any():
        wr, hr = widths[rest], heights[rest]
        in_ratio = wr / hr
        fw, fh = wr.copy(), hr.copy()
        low, high = in_ratio < ratio[4], in_ratio > ratio[5]
        fh[low] = np.maximum(1, np.rint(wr[low] / ratio[4]).astype(np.int64))
        fw[high] = np.maximum(1, np.rint(hr[high] * ratio[5]).astype(np.int64))
        out[rest, 0], out[rest, 1] = (wr - fw) // 2, (hr - fh) // 2
        out[rest, 2], out[rest, 3] = fw, fh
    out[:, 4] = (draw(k + _ONE) >> _S63).astype(np.int64)
    return out
