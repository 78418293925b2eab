"""Counter-based random numbers (splitmix64 finaliser): value j of a stream is a hash of (key, j).

Trade-off: a hash per number is a few ns slower than a stateful generator, but any slice of a
stream is computable without its prefix, and results are identical on every machine and with the
JIT on or off (pure 64-bit integer arithmetic, no library RNG). Also: the hash-based holdout split.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
from numpy.typing import NDArray

MASK64 = (1 << 64) - 1
GAMMA = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio increment of splitmix64
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0  # 2^-53

if numba.config.DISABLE_JIT:
    # Without the JIT these functions run on NumPy uint64 scalars, which warn when they wrap around;
    # wrapping modulo 2^64 is exactly the arithmetic the hash wants (as compiled code does silently).
    warnings.filterwarnings(
        "ignore", message="overflow encountered in scalar", category=RuntimeWarning, module=r"tagstream\.kernels\."
    )


@numba.njit(cache=True, inline="always")
def mix64(z: np.uint64) -> np.uint64:
    """splitmix64's output function: a bijective 64-bit avalanche hash."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(cache=True, inline="always")
def counter_u64(key: np.uint64, j: np.uint64) -> np.uint64:
    """Value j of the stream with this key (splitmix64 at state key + (j+1)·gamma)."""
    return mix64(key + (j + _ONE) * GAMMA)


@numba.njit(cache=True, inline="always")
def to_unit(h: np.uint64) -> float:
    """Top 53 bits of a hash -> a float64 uniform in [0, 1), exactly representable."""
    return float(h >> _S11) * _INV53


def as_u64(value: int) -> np.uint64:
    """Any Python int (negative too) -> its two's-complement uint64."""
    return np.uint64(int(value) & MASK64)


def mix64_int(z: int) -> int:
    """mix64 on a Python int (no NumPy scalar overflow warnings on the Python side)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def splitmix64_int(x: int) -> int:
    """One splitmix64 step on a Python int: mix64(x + gamma) — the per-sample mixer of loader/pipeline/augment.py."""
    return mix64_int((x + int(GAMMA)) & MASK64)


def stream_key(seed: int, *words: int) -> np.uint64:
    """Key of the stream named by (seed, *words): chained mix64, so distinct tuples give unrelated streams."""
    k = mix64_int((int(seed) & MASK64) ^ int(GAMMA))
    for w in words:
        k = mix64_int(((k ^ (int(w) & MASK64)) + int(GAMMA)) & MASK64)
    return np.uint64(k)


def mix64_ref(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """NumPy twin of mix64 over an array (uint64 array arithmetic wraps silently)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def counter_u64_ref(key: np.uint64, j: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """NumPy twin of counter_u64 for an array of counters."""
    j = np.asarray(j, dtype=np.uint64)
    return mix64_ref(np.uint64(key) + (j + _ONE) * GAMMA)


def to_unit_ref(h: NDArray[np.uint64]) -> NDArray[np.float64]:
    return (np.asarray(h, dtype=np.uint64) >> _S11).astype(np.float64) * _INV53


@numba.njit(cache=True)
def _holdout_kernel(key: np.uint64, fraction: float, start: np.int64, out: NDArray[np.bool_]) -> None:
    for i in range(out.shape[0]):
        out[i] = to_unit(counter_u64(key, np.uint64(start + i))) < fraction


def holdout_mask(num_images: int, fraction: float, seed: int = 0, *, start: int = 0) -> NDArray[np.bool_]:
    """True for the held-out images: image i is held out iff hash(seed, i) < fraction.

    Deterministic and per image: an image's membership does not depend on num_images, so a grown
    dataset keeps its old split. The seed is a split seed, deliberately separate from the training seed.
    With start, the mask of images start .. start + num_images - 1 (a rank's own range).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction={fraction} must be in [0, 1]")
    if num_images < 0 or start < 0:
        raise ValueError(f"num_images={num_images} and start={start} must be >= 0")
    out = np.empty(int(num_images), dtype=np.bool_)
    _holdout_kernel(stream_key(seed, 0x401D0), float(fraction), np.int64(start), out)
    return out


def holdout_mask_ref(num_images: int, fraction: float, seed: int = 0, *, start: int = 0) -> NDArray[np.bool_]:
    """NumPy twin of holdout_mask."""
    h = counter_u64_ref(stream_key(seed, 0x401D0), np.arange(start, start + num_images, dtype=np.uint64))
    return to_unit_ref(h) < fraction
