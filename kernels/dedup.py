"""Near-duplicate join of two 64-bit hash sets within Hamming distance D by multi-index hashing.

Split 64 bits into m bands; a pair within distance D has, by the pigeonhole principle, at least one
band within distance r = D // m (m = D + 1 gives the classic exact-band case, r = 0; `band_radii` uses
the sharper form, r on some bands and r - 1 on the others). The base set is
indexed once per band in a direct-address table (band width <= 16 bits); each query looks up its band
value and every value within r of it (when r > 0, queries sorted by band value share one gathered
candidate list per value), and verifies the full distance of each candidate. A pair found through several bands is reported
once, from its first band. The trade-off: near-linear in the number of queries for small D, but the work
per query grows like C(w, r) * (1 + M / 2^w), so for D beyond about 16 against 10^5 base hashes the
estimate exceeds all pairs and `join` runs the brute-force kernel instead. `join_ref` (NumPy, all
pairs) is the test oracle.
"""

from __future__ import annotations

from math import comb

import numpy as np
from numba import njit, prange, types
from numba.core import config as numba_config
from numba.extending import intrinsic
from numpy.typing import NDArray

HASH_BITS = 64
MIN_BANDS = 4  # widest band 16 bits: its table has 2^16 + 1 offsets
MAX_BANDS = 16  # narrowest band 4 bits
MAX_DISTANCE = 32
# one unit of estimated_cost is worth several all-pairs comparisons, more at large D where millions of pairs
# are written; with 8, MIH runs up to D = 16 on 10^6 x 10^5 hashes and all pairs beyond (calibration: docs/costs.md)
MIH_UNIT = 8.0
QUERY_CHUNK = 1 << 22  # queries joined per round: bounds the per-query count array to 32 MiB

if numba_config.DISABLE_JIT:

    def _popcount(x):
        return int(np.bitwise_count(np.uint64(x)))

else:

    @intrinsic
    def _popcount(typingctx, x):
        """LLVM ctpop: one popcnt instruction (a SWAR expression is not recognised as one: docs/costs.md)."""

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return types.int64(types.uint64), codegen


def band_layout(bands: int) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """(shifts, widths) of `bands` contiguous bands covering 64 bits, widths as equal as possible."""
    if not MIN_BANDS <= bands <= MAX_BANDS:
        raise ValueError(f"bands={bands!r} is not allowed; allowed: {MIN_BANDS}..{MAX_BANDS}")
    widths = np.full(bands, HASH_BITS // bands, np.int64)
    widths[: HASH_BITS % bands] += 1
    shifts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.uint64)
    return shifts, widths


def flip_masks(width: int, radius: int) -> NDArray[np.uint64]:
    """Every width-bit value with at most `radius` bits set, ascending: the band values a probe visits."""
    values = np.arange(1 << width, dtype=np.uint64)
    return values[np.bitwise_count(values) <= radius]


def band_radii(max_distance: int, bands: int) -> NDArray[np.int64]:
    """Probe radius per band. With D = bands * r + a (0 <= a < bands), a pair within D is within r on one
    of the first a + 1 bands or within r - 1 on one of the others (else its distance would be at least
    (a + 1)(r + 1) + (bands - a - 1) r = D + 1); a radius of -1 means the band is not probed at all."""
    r, a = divmod(max_distance, bands)
    radii = np.full(bands, r - 1, np.int64)
    radii[: a + 1] = r
    return radii


def estimated_cost(n_queries: int, n_base: int, max_distance: int, bands: int) -> float:
    """Table build plus lookups plus expected candidate checks (uniform hashes), in comparable units."""
    _, widths = band_layout(bands)
    cost = 0.0
    for w, r in zip(widths.tolist(), band_radii(max_distance, bands).tolist()):
        if r >= 0:
            keys = sum(comb(w, k) for k in range(min(r, w) + 1))
            cost += (1 << w) + n_base + n_queries * keys * (1.0 + n_base / float(1 << w))
    return cost


def choose_bands(n_queries: int, n_base: int, max_distance: int) -> int:
    """The band count of least estimated cost."""
    return min(range(MIN_BANDS, MAX_BANDS + 1), key=lambda m: estimated_cost(n_queries, n_base, max_distance, m))


@njit(cache=True, inline="always")
def _found_in_earlier_band(x, band, shifts, masks, radii) -> bool:
    """Whether the pair with XOR x was already reported through a band before `band` (report it once)."""
    for b2 in range(band):
        if _popcount((x >> shifts[b2]) & masks[b2]) <= radii[b2]:
            return True
    return False


@njit(cache=True, parallel=True)
def _mih_band(
    queries,
    band,
    shifts,
    masks,
    radii,
    sorted_base,
    offsets,
    ids,
    flips,
    max_distance,
    starts,
    out_base,
    out_dist,
    write,
):
    """One band for every query (one table at a time stays in cache): count the matches first found in
    this band into starts[i + 1] (write=False), or write them from starts[i] on (write=True)."""
    shift = shifts[band]
    mask = masks[band]
    for i in prange(queries.shape[0]):
        h = queries[i]
        key = (h >> shift) & mask
        c = 0
        for f in range(flips.shape[0]):
            k = np.int64(key ^ flips[f])
            for p in range(offsets[k], offsets[k + 1]):
                x = h ^ sorted_base[p]
                d = _popcount(x)
                if d > max_distance:
                    continue
                if _found_in_earlier_band(x, band, shifts, masks, radii):
                    continue
                if write:
                    out_base[starts[i] + c] = ids[p]
                    out_dist[starts[i] + c] = d
                c += 1
        if not write:
            starts[i + 1] = c


@njit(cache=True, parallel=True)
def _mih_band_runs(
    sorted_queries, run_starts, band, shifts, masks, radii, sorted_base, offsets, flips, max_distance, counts
):
    """Count pass of _mih_band over queries sorted by band value: the queries of a run share the band value,
    so the run's candidates (every bucket within the band's radius) are gathered once into a contiguous
    buffer that each of its queries scans, instead of every query probing every bucket again."""
    shift = shifts[band]
    mask = masks[band]
    for r in prange(run_starts.shape[0] - 1):
        lo, hi = run_starts[r], run_starts[r + 1]
        key = (sorted_queries[lo] >> shift) & mask
        n = 0
        for f in range(flips.shape[0]):
            k = np.int64(key ^ flips[f])
            n += offsets[k + 1] - offsets[k]
        candidates = np.empty(n, np.uint64)
        n = 0
        for f in range(flips.shape[0]):
            k = np.int64(key ^ flips[f])
            for p in range(offsets[k], offsets[k + 1]):
                candidates[n] = sorted_base[p]
                n += 1
        for t in range(lo, hi):
            h = sorted_queries[t]
            c = 0
            for p in range(n):
                x = h ^ candidates[p]
                if _popcount(x) > max_distance:
                    continue
                if not _found_in_earlier_band(x, band, shifts, masks, radii):
                    c += 1
            counts[t + 1] = c


@njit(cache=True, parallel=True)
def _brute_pass(queries, base, max_distance, starts, out_base, out_dist, write):
    """All-pairs popcount: count matches into starts[i + 1] (write=False), or write them from starts[i] (write=True)."""
    for i in prange(queries.shape[0]):
        h = queries[i]
        c = 0
        for j in range(base.shape[0]):
            d = _popcount(h ^ base[j])
            if d <= max_distance:
                if write:
                    out_base[starts[i] + c] = j
                    out_dist[starts[i] + c] = d
                c += 1
        if not write:
            starts[i + 1] = c


def _check(queries: np.ndarray, base: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(max_distance, (int, np.integer)) or not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"max_distance={max_distance!r} is not allowed; allowed: integers 0..{MAX_DISTANCE}")
    q = np.ascontiguousarray(queries)
    b = np.ascontiguousarray(base)
    for name, a in (("queries", q), ("base", b)):
        if a.ndim != 1 or a.dtype != np.uint64:
            raise ValueError(f"{name} must be a 1-d uint64 array, got {a.dtype} {a.shape}")
    return q, b


def _sorted(
    q: np.ndarray, b: np.ndarray, d: np.ndarray
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
    order = np.lexsort((b, q))
    return q[order], b[order], d[order]


def _two_pass(
    kernel, queries: np.ndarray, first: int, *args, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a kernel's count pass over all queries (unless their counts are given), then its write pass over
    only the queries that matched (few: it costs almost nothing); returns unsorted (first + query index,
    base index, distance)."""
    if counts is None:
        counts = np.zeros(queries.shape[0] + 1, np.int64)
        kernel(queries, *args, counts, np.zeros(0, np.int64), np.zeros(0, np.int8), False)
    hit = np.flatnonzero(counts[1:])
    starts = np.zeros(hit.shape[0] + 1, np.int64)
    np.cumsum(counts[1:][hit], out=starts[1:])
    out_b = np.empty(int(starts[-1]), np.int64)
    out_d = np.empty(out_b.shape[0], np.int8)
    kernel(queries[hit], *args, starts, out_b, out_d, True)
    return np.repeat(hit + first, counts[1:][hit]), out_b, out_d


def mih_join(
    queries: NDArray[np.uint64], base: NDArray[np.uint64], max_distance: int, *, bands: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
    """Multi-index-hashing join: (query index, base index, distance) of every pair within max_distance,
    sorted by (query, base). The base set is the one indexed: pass the smaller set as base."""
    q, b = _check(queries, base, max_distance)
    m = choose_bands(q.shape[0], b.shape[0], max_distance) if bands is None else bands
    shifts, widths = band_layout(m)
    radii = band_radii(max_distance, m)
    masks = ((np.uint64(1) << widths.astype(np.uint64)) - np.uint64(1)).astype(np.uint64)
    probed = [k for k in range(m) if radii[k] >= 0]
    tables = {}  # per probed band: base hashes, offsets by band value (CSR), base indices; the values to probe
    for k in probed:
        keys = ((b >> shifts[k]) & masks[k]).astype(np.uint16)
        offsets = np.zeros((1 << int(widths[k])) + 1, np.int64)
        offsets[1:] = np.cumsum(np.bincount(keys, minlength=1 << int(widths[k])))
        ids = np.argsort(keys, kind="stable")  # radix sort on uint16
        tables[k] = (b[ids], offsets, ids, flip_masks(int(widths[k]), int(radii[k])))
    parts = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8))]
    for s in range(0, q.shape[0], QUERY_CHUNK):
        qc = q[s : s + QUERY_CHUNK]
        for k in probed:
            args = (k, shifts, masks, radii, *tables[k], max_distance)
            if radii[k] == 0:
                parts.append(_two_pass(_mih_band, qc, s, *args))
                continue
            # many buckets per query: sort the queries by band value and count run by run (_mih_band_runs);
            # at radius 0 (one bucket) the sort would cost more than it saves
            keys = ((qc >> shifts[k]) & masks[k]).astype(np.uint16)
            order = np.argsort(keys, kind="stable")
            qs, ks = qc[order], keys[order]
            run_starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1], [True]]))
            counts = np.zeros(qs.shape[0] + 1, np.int64)
            sorted_base, offsets, _, flips = tables[k]
            _mih_band_runs(qs, run_starts, k, shifts, masks, radii, sorted_base, offsets, flips, max_distance, counts)
            local, found_b, found_d = _two_pass(_mih_band, qs, 0, *args, counts=counts)
            parts.append((order[local] + s, found_b, found_d))
    return _sorted(*(np.concatenate(column) for column in zip(*parts)))


def brute_counts(queries: NDArray[np.uint64], base: NDArray[np.uint64], max_distance: int) -> NDArray[np.int64]:
    """Per query, the number of base hashes within max_distance: one all-pairs pass (the benchmark's baseline)."""
    q, b = _check(queries, base, max_distance)
    counts = np.zeros(q.shape[0] + 1, np.int64)
    _brute_pass(q, b, max_distance, counts, np.zeros(0, np.int64), np.zeros(0, np.int8), False)
    return counts[1:]


def brute_join(
    queries: NDArray[np.uint64], base: NDArray[np.uint64], max_distance: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
    """All-pairs join in Numba, same output as mih_join: O(len(queries) * len(base))."""
    q, b = _check(queries, base, max_distance)
    return _sorted(*_two_pass(_brute_pass, q, 0, b, max_distance))


def plan_join(n_queries: int, n_base: int, max_distance: int) -> tuple[str, int]:
    """("mih", bands) unless all pairs would be cheaper ("brute", 0): large D against a large base, or tiny inputs."""
    m = choose_bands(n_queries, n_base, max_distance)
    if MIH_UNIT * estimated_cost(n_queries, n_base, max_distance, m) < float(n_queries) * float(n_base):
        return "mih", m
    return "brute", 0


def join(
    queries: NDArray[np.uint64], base: NDArray[np.uint64], max_distance: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8], str]:
    """Pairs within max_distance by the cheaper method (see plan_join); returns (query, base, distance, method)."""
    q, b = _check(queries, base, max_distance)
    method, m = plan_join(q.shape[0], b.shape[0], max_distance)
    if method == "mih":
        radii = band_radii(max_distance, m).tolist()
        return (*mih_join(q, b, max_distance, bands=m), f"multi-index hashing, {m} bands, radii {radii}")
    return (*brute_join(q, b, max_distance), "brute force (cheaper than multi-index hashing here)")


def join_ref(
    queries: NDArray[np.uint64], base: NDArray[np.uint64], max_distance: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
    """NumPy twin: all pairs, chunked; (query, base, distance) sorted by (query, base)."""
    q, b = _check(queries, base, max_distance)
    chunk = max(1, (1 << 22) // max(1, b.shape[0]))
    parts_q, parts_b, parts_d = [], [], []
    for s in range(0, q.shape[0], chunk):
        d = np.bitwise_count(q[s : s + chunk, None] ^ b[None, :])
        qi, bi = np.nonzero(d <= max_distance)
        parts_q.append(qi + s)
        parts_b.append(bi)
        parts_d.append(d[qi, bi])
    if not parts_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    return (
        np.concatenate(parts_q).astype(np.int64),
        np.concatenate(parts_b).astype(np.int64),
        np.concatenate(parts_d).astype(np.int8),
    )
