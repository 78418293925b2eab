"""Walker/Vose alias tables and counter-based draws from them: O(n) build, O(1) per draw.

Draw j of a stream hashes (key, 2j) to a column and (key, 2j+1) to a coin, so any slice of draws
is computable without its prefix and is bit-identical with the JIT on or off. Memory: 16 bytes per
entry (float64 prob, int64 alias) plus an 8-byte work list during the build.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.rng import counter_u64, counter_u64_ref, to_unit, to_unit_ref

_TWO = np.uint64(2)
_ONE = np.uint64(1)


@numba.njit(cache=True)
def _build_alias_kernel(weights, prob, alias, work) -> float:
    """Vose's method. work (int64, n) holds the small list from the front and the large list from the back."""
    n = weights.shape[0]
    total = 0.0
    for i in range(n):
        total += weights[i]
    if n == 0 or not (0.0 < total < np.inf):
        return total
    scale = n / total
    ns = 0
    nl = 0
    for i in range(n):
        p = weights[i] * scale
        prob[i] = p
        alias[i] = i
        if p < 1.0:
            work[ns] = i
            ns += 1
        else:
            work[n - 1 - nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = work[ns]
        g = work[n - nl]
        alias[s] = g
        prob[g] = (prob[g] + prob[s]) - 1.0
        if prob[g] < 1.0:
            # g turns small: move it from the large list (front of the back part) to the small list
            nl -= 1
            work[ns] = g
            ns += 1
    # leftovers are 1 up to rounding: they keep their own column
    for t in range(nl):
        prob[work[n - 1 - t]] = 1.0
    for t in range(ns):
        prob[work[t]] = 1.0
    return total


def build_alias(weights: NDArray[np.float64], prob_out: NDArray[np.float64], alias_out: NDArray[np.int64]) -> float:
    """Fill prob_out (float64, n) and alias_out (int64, n) for weights; returns the total weight.

    Column i is kept with probability prob[i], else alias[i] is drawn. Zero weights are never drawn.
    Weights must be finite and >= 0 with a positive sum (ValueError otherwise).
    """
    weights = np.asarray(weights)
    n = weights.shape[0]
    if weights.ndim != 1 or weights.dtype != np.float64:
        raise ValueError(f"weights must be 1-D float64, got {weights.dtype} {weights.shape}")
    if prob_out.shape != (n,) or prob_out.dtype != np.float64:
        raise ValueError(f"prob_out must be float64 of shape ({n},), got {prob_out.dtype} {prob_out.shape}")
    if alias_out.shape != (n,) or alias_out.dtype != np.int64:
        raise ValueError(f"alias_out must be int64 of shape ({n},), got {alias_out.dtype} {alias_out.shape}")
    work = np.empty(n, dtype=np.int64)
    total = _build_alias_kernel(weights, prob_out, alias_out, work)
    if not (np.isfinite(total) and total > 0) or (n and weights.min() < 0):
        raise ValueError(
            f"weights must be finite, >= 0 and sum to > 0; got sum {total}, min {weights.min() if n else None}"
        )
    return float(total)


DRAW_CHUNK = 256


@numba.njit(cache=True)
def _draw_alias_kernel(prob, alias, key, start, out) -> None:
    """Two phases per chunk: hash all columns and coins, then read the table. Keeping the hashing out
    of the loop of random reads lets the CPU keep many cache misses in flight (about 1.7x at 10^7)."""
    n = prob.shape[0]
    cols = np.empty(DRAW_CHUNK, np.int64)
    coins = np.empty(DRAW_CHUNK, np.float64)
    for base in range(0, out.shape[0], DRAW_CHUNK):
        m = min(DRAW_CHUNK, out.shape[0] - base)
        for t in range(m):
            c = np.uint64(start + base + t) * _TWO
            cols[t] = np.int64(to_unit(counter_u64(key, c)) * n)
            coins[t] = to_unit(counter_u64(key, c + _ONE))
        for t in range(m):
            k = cols[t]
            out[base + t] = k if coins[t] < prob[k] else alias[k]


def draw_alias(
    prob: NDArray[np.float64], alias: NDArray[np.int64], key: np.uint64, start: int, out: NDArray[np.int64]
) -> NDArray[np.int64]:
    """out[j] = draw number start + j of the stream with this key (see rng.stream_key); returns out."""
    if prob.ndim != 1 or prob.dtype != np.float64 or alias.shape != prob.shape or alias.dtype != np.int64:
        raise ValueError(
            f"prob/alias must be float64/int64 of one shape, got {prob.dtype} {prob.shape}, {alias.dtype} {alias.shape}"
        )
    if prob.shape[0] == 0 and out.shape[0] > 0:
        raise ValueError("cannot draw from an empty alias table")
    if out.dtype != np.int64 or out.ndim != 1:
        raise ValueError(f"out must be a 1-D int64 array, got {out.dtype} {out.shape}")
    if start < 0:
        raise ValueError(f"start={start} must be >= 0")
    _draw_alias_kernel(prob, alias, np.uint64(key), np.int64(start), out)
    return out


def build_alias_ref(weights: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Twin of build_alias: the same Vose steps over Python lists (identical tables, slowly)."""
    n = len(weights)
    total = float(np.cumsum(weights)[-1]) if n else 0.0  # sequential, as the kernel sums
    prob = np.asarray(weights, dtype=np.float64) * (n / total)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if prob[i] < 1.0]
    large = [i for i in range(n) if prob[i] >= 1.0]
    while small and large:
        s = small.pop()
        g = large[-1]
        alias[s] = g
        prob[g] = (prob[g] + prob[s]) - 1.0
        if prob[g] < 1.0:
            small.append(large.pop())
    for i in small + large:
        prob[i] = 1.0
    return prob, alias


def alias_distribution(prob: NDArray[np.float64], alias: NDArray[np.int64]) -> NDArray[np.float64]:
    """The distribution a table draws from: P(i) = (prob[i] + sum over j with alias[j]=i of 1-prob[j]) / n."""
    n = prob.shape[0]
    return (prob + np.bincount(alias, weights=1.0 - prob, minlength=n)) / n


def draw_alias_ref(
    prob: NDArray[np.float64], alias: NDArray[np.int64], key: np.uint64, start: int, count: int
) -> NDArray[np.int64]:
    """NumPy twin of draw_alias."""
    c = (np.arange(start, start + count, dtype=np.uint64)) * _TWO
    k = (to_unit_ref(counter_u64_ref(key, c)) * prob.shape[0]).astype(np.int64)
    keep = to_unit_ref(counter_u64_ref(key, c + _ONE)) < prob[k]
    return np.where(keep, k, alias[k])
