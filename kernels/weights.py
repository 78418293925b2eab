"""Per-image sampling weights: w_i = combine over c in C(i) of n_c^(a-1); natural: w_i = 1.

Images with no class, or not eligible, get 0. The per-class factor n_c^(a-1) is tabulated once
(C entries) so the pass over the labels is a gather, not a pow per label. O(N) float64 output.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from tagstream.kernels.counts import check_csr, check_eligible, class_counts

COMBINES = ("sum", "mean", "max")
SAMPLINGS = ("natural", "sqrt", "uniform")
_COMBINE_CODE = {"sum": 0, "mean": 1, "max": 2}
_NATURAL = 3


def sampling_power(sampling: str) -> float | None:
    """ "natural" -> None (w_i = 1); "sqrt" -> 0.5; "uniform" -> 0.0; "power:A" -> A (A >= 0)."""
    if sampling == "natural":
        return None
    if sampling == "sqrt":
        return 0.5
    if sampling == "uniform":
        return 0.0
    if sampling.startswith("power:"):
        try:
            a = float(sampling.split(":", 1)[1])
        except ValueError:
            a = -1.0
        if a >= 0 and np.isfinite(a):
            return a
    raise ValueError(f"sampling {sampling!r} is not one of {SAMPLINGS} or 'power:A' with A >= 0")


def check_combine(combine: str, *, name: str = "combine") -> str:
    """The one check of a combine rule (how an image's class factors are combined); returns it, or raises naming
    `name` as the caller's user wrote it (e.g. "data.combine")."""
    if combine not in COMBINES:
        raise ValueError(f"{name}={combine!r} is not one of {COMBINES}")
    return combine


def class_factors(counts: NDArray[np.int64], power: float) -> NDArray[np.float64]:
    """f_c = n_c^(power-1) for n_c > 0, and 0 for a class with zero count (it contributes nothing)."""
    counts = np.asarray(counts)
    f = np.zeros(counts.shape[0], dtype=np.float64)
    pos = counts > 0
    f[pos] = counts[pos].astype(np.float64) ** (float(power) - 1.0)
    return f


@numba.njit(cache=True)
def _weights_kernel(label_offsets, labels, factors, mode, eligible, out) -> int:
    """mode: 0 sum, 1 mean, 2 max, 3 natural. Returns the number of out-of-range labels."""
    num_classes = factors.shape[0]
    check = eligible.shape[0] > 0
    bad = 0
    for i in range(label_offsets.shape[0] - 1):
        lo = label_offsets[i]
        hi = label_offsets[i + 1]
        if (check and not eligible[i]) or hi == lo:
            out[i] = 0.0
            continue
        acc = 0.0
        k = 0
        for p in range(lo, hi):
            c = labels[p]
            if c < 0 or c >= num_classes:
                bad += 1
                continue
            f = factors[c]
            if f <= 0.0:
                continue
            k += 1
            if mode == 2:
                if f > acc:
                    acc = f
            else:
                acc += f
        if k == 0:
            out[i] = 0.0
        elif mode == 3:
            out[i] = 1.0
        elif mode == 1:
            out[i] = acc / k
        else:
            out[i] = acc
    return bad


def sample_weights(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    counts: NDArray[np.int64],
    power: float | None,
    combine: str,
    eligible: NDArray[np.bool_] | None,
    out: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Write w_i into out (float64, N); returns out.

    power None is "natural": w_i = 1 for an eligible image with at least one class of positive count.
    Otherwise w_i = combine over its classes c with n_c > 0 of n_c^(power-1) (sum; mean over those
    classes; max). Note power 1 with sum gives w_i = k (its class count), not natural.
    Images with no class, not eligible, or only zero-count classes get 0.
    """
    check_combine(combine)
    n = check_csr(label_offsets, labels)
    eligible = check_eligible(eligible, n)
    if out.shape != (n,) or out.dtype != np.float64:
        raise ValueError(f"out must be float64 of shape ({n},), got {out.dtype} {out.shape}")
    if power is not None and not (power >= 0 and np.isfinite(power)):
        raise ValueError(f"power={power} must be a finite number >= 0 (or None for natural)")
    factors = class_factors(counts, 1.0 if power is None else power)
    mode = _NATURAL if power is None else _COMBINE_CODE[combine]
    bad = _weights_kernel(label_offsets, labels, factors, mode, eligible, out)
    if bad:
        raise ValueError(f"{bad} labels lie outside the class range [0, {factors.shape[0]})")
    return out


def compute_weights(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    num_classes: int,
    sampling: str,
    combine: str = "sum",
    eligible: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Counts over the eligible images, then weights: float64[N] for "natural", "sqrt", "uniform", "power:A"."""
    power = sampling_power(sampling)
    label_offsets = np.asarray(label_offsets)
    labels = np.asarray(labels)
    counts = class_counts(label_offsets, labels, eligible, np.zeros(int(num_classes), dtype=np.int64))
    out = np.empty(label_offsets.shape[0] - 1, dtype=np.float64)
    return sample_weights(label_offsets, labels, counts, power, combine, eligible, out)


def sample_weights_ref(
    label_offsets: NDArray[np.int64],
    labels: NDArray[np.int32],
    counts: NDArray[np.int64],
    power: float | None,
    combine: str,
    eligible: NDArray[np.bool_] | None,
) -> NDArray[np.float64]:
    """NumPy twin of sample_weights (vectorised: bincount / maximum.at over the label->image map)."""
    n = label_offsets.shape[0] - 1
    image = np.repeat(np.arange(n), np.diff(label_offsets))
    f = class_factors(counts, 1.0 if power is None else power)[labels]
    use = f > 0
    k = np.bincount(image[use], minlength=n)
    if power is None:
        w = (k > 0).astype(np.float64)
    elif combine == "max":
        w = np.zeros(n)
        np.maximum.at(w, image[use], f[use])
    else:
        w = np.bincount(image[use], weights=f[use], minlength=n)
        if combine == "mean":
            w = np.divide(w, k, out=np.zeros(n), where=k > 0)
    if eligible is not None and len(eligible):
        w[~np.asarray(eligible)] = 0.0
    return w
