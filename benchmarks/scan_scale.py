"""Near-duplicate search at scale: time, peak memory and recall for 10k, 100k and 1M hashes, side by side.

Data: synthetic 64-bit perceptual hashes, uniform random bits, with 1% of them planted as near
copies of another hash (1 to 8 random bits flipped: the scan's default threshold is 8). A second
row at 1M draws every bit with its own bias (p in [0.2, 0.8], as real image hashes have) so that
more hashes share keys by chance. Each is searched at radius 8 with
:func:`stoker.quality.near_index.near_pairs` (multi-index hashing); beside it, on the same
machine in the same run, the exhaustive comparison that stoker used before (chunked NumPy
popcount, all n^2/2 pairs) and a BK-tree (pure Python, the usual metric-tree answer) on samples
small enough to finish, extrapolated to 1M as n^2 (their measured exponents are printed; at
small n the exhaustive one reads below 2 because fixed costs still weigh).

Memory is the peak of NumPy/Python allocations during the search (tracemalloc, measured in a
second, traced run so that the timed run is not slowed), not counting the input array; the
process's peak resident size is printed after the index rows. The scan then confirms each found pair
on the two images' 16x16 gray thumbnails (:func:`stoker.quality.phash.matching_pairs`); its row times
that for the pairs found at 1M and for a million pairs (random thumbnails: the cost does not depend
on what they show), with the thumbnails' memory (256 bytes an image). The growth
exponent is the slope of log(time) over log(n) from 10k to 1M (2 is quadratic). Goal: 1M hashes in
under 60 s and 2 GB on two cores, recall 1.0. The last line is ``near_duplicate_1m_seconds: X``.

Run: python benchmarks/scan_scale.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stoker.quality.checks import NEAR_MAX_DIFFERENCE  # noqa: E402
from stoker.quality.near_index import choose_blocks, near_pairs  # noqa: E402
from stoker.quality.phash import THUMB_SIDE, matching_pairs  # noqa: E402

RADIUS = 8


def synthetic_hashes(n: int, seed: int, *, biased: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` hashes and the ``[P, 2]`` planted near pairs (sorted rows)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.8, 64) if biased else np.full(64, 0.5)
    values = np.zeros(n, np.uint64)
    for bit in range(64):  # bit by bit keeps memory at a few arrays of n
        values |= (rng.random(n) < p[bit]).astype(np.uint64) << np.uint64(bit)
    planted = max(1, n // 100)
    chosen = rng.choice(n, 2 * planted, replace=False)
    sources, targets = chosen[:planted], chosen[planted:]
    for source, target in zip(sources, targets):
        flips = rng.choice(64, rng.integers(1, RADIUS + 1), replace=False)
        values[target] = values[source] ^ np.uint64(sum(1 << int(b) for b in flips))
    return values, np.sort(np.stack([sources, targets], axis=1), axis=1)


def exhaustive(values: np.ndarray, radius: int, chunk: int = 2048) -> int:
    """The quadratic search stoker had before: every pair, chunked popcount; returns the pair count."""
    count = 0
    for start in range(0, len(values), chunk):
        distances = np.bitwise_count(values[start:start + chunk, None] ^ values[None, :])
        count += int(np.count_nonzero(distances <= radius))
    return (count - len(values)) // 2


class BKTree:
    """A Burkhard-Keller tree over Hamming distance (children keyed by distance to the node)."""

    def __init__(self) -> None:
        self.root: tuple[int, dict[int, tuple]] | None = None

    def add(self, value: int) -> None:
        if self.root is None:
            self.root = (value, {})
            return
        node = self.root
        while True:
            distance = (node[0] ^ value).bit_count()
            child = node[1].get(distance)
            if child is None:
                node[1][distance] = (value, {})
                return
            node = child

    def within(self, value: int, radius: int) -> int:
        found, stack = 0, [self.root]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            distance = (node[0] ^ value).bit_count()
            found += distance <= radius
            stack.extend(child for d, child in node[1].items() if distance - radius <= d <= distance + radius)
        return found


def bk_tree_pairs(values: np.ndarray, radius: int) -> int:
    tree = BKTree()
    count = 0
    for value in values.tolist():  # query before insert: each pair once
        if tree.root is not None:
            count += tree.within(value, radius)
        tree.add(value)
    return count


def timed(function, *args) -> tuple[float, object]:  # noqa: ANN001 - any callable
    start = time.perf_counter()
    out = function(*args)
    return time.perf_counter() - start, out


def peak_mb(function, *args) -> float:  # noqa: ANN001 - any callable
    tracemalloc.start()
    function(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recall(found: np.ndarray, planted: np.ndarray) -> float:
    encode = lambda pairs: pairs[:, 0].astype(np.int64) * (1 << 32) + pairs[:, 1]  # noqa: E731
    return float(np.isin(encode(planted), encode(found)).mean())


def confirmation_seconds(pairs: np.ndarray, seed: int) -> float:
    """Seconds to confirm ``pairs`` on thumbnails as the scan does: gather the involved ones, compare each pair."""
    involved = np.unique(pairs)
    table = np.random.default_rng(seed).integers(0, 256, (len(involved), THUMB_SIDE * THUMB_SIDE), dtype=np.uint8)
    start = time.perf_counter()
    matching_pairs(table, np.searchsorted(involved, pairs), NEAR_MAX_DIFFERENCE)
    return time.perf_counter() - start


def exponent(sizes: list[int], seconds: list[float]) -> float:
    x, y = np.log(sizes), np.log(seconds)
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    imported_mb = rss_mb()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    print(f"hashes: 64-bit synthetic, 1% planted near pairs (1-{RADIUS} bits apart); radius {RADIUS}\n")
    print(f"{'hashes':>10} {'bits':>8} {'blocks':>6} {'seconds':>8} {'peak MB':>8} {'pairs':>8} {'recall':>7}")
    sizes, seconds = [], []
    found_at_max = np.empty((0, 2), np.int64)
    rows = [(n, False) for n in args.sizes] + [(max(args.sizes), True)]
    for n, biased in rows:
        values, planted = synthetic_hashes(n, seed=n, biased=biased)
        elapsed, found = timed(near_pairs, values, RADIUS)
        memory = peak_mb(near_pairs, values, RADIUS)
        assert isinstance(found, np.ndarray)
        print(f"{n:>10,} {'biased' if biased else 'uniform':>8} {choose_blocks(len(np.unique(values)), RADIUS):>6} "
              f"{elapsed:>8.2f} {memory:>8.0f} {len(found):>8,} {recall(found, planted):>7.3f}")
        if not biased:
            found_at_max = found if n == max(args.sizes) else found_at_max
            sizes.append(n)
            seconds.append(elapsed)
            if n == min(args.sizes):
                assert exhaustive(values, RADIUS) == len(found), "the index and the exhaustive search disagree"
    index_exp = exponent(sizes, seconds) if len(sizes) > 1 else math.nan
    print(f"process peak RSS: {rss_mb():.0f} MB after the index rows, {imported_mb:.0f} MB of it at start "
          "(Python, NumPy, torch through stoker's imports)")
    one_m = seconds[sizes.index(1_000_000)] if 1_000_000 in sizes else None
    million = np.random.default_rng(0).integers(0, max(args.sizes), (1_000_000, 2))
    found_s, million_s = confirmation_seconds(found_at_max, 1), confirmation_seconds(million, 2)
    print(f"confirmation on 16x16 thumbnails: the {len(found_at_max):,} pairs found in {max(args.sizes):,} hashes in "
          f"{found_s:.3f} s, 1,000,000 pairs in {million_s:.2f} s ({million_s:.2f} us a pair); thumbnails "
          f"{THUMB_SIDE * THUMB_SIDE} B an image ({THUMB_SIDE * THUMB_SIDE * max(args.sizes) / 2**20:,.0f} MB for "
          f"{max(args.sizes):,})")
    print(f"\nmulti-index hashing: growth exponent {index_exp:.2f} ({sizes[0]:,} to {sizes[-1]:,} hashes)")
    for name, function, samples in (("exhaustive (before)", exhaustive, [10_000, 20_000]),
                                    ("BK-tree (Python)", bk_tree_pairs, [2_000, 8_000])):
        times = [timed(function, synthetic_hashes(m, seed=m)[0], RADIUS)[0] for m in samples]
        slope = exponent(samples, times)
        at_1m = times[-1] * (1_000_000 / samples[-1]) ** 2  # both compare Theta(n^2) pairs at this radius
        versus = f", {at_1m / one_m:,.0f}x the index" if one_m else ""
        print(f"{name}: {samples[0]:,} in {times[0]:.2f} s, {samples[-1]:,} in {times[-1]:.2f} s, growth exponent "
              f"{slope:.2f}, 1M extrapolated as n^2 {at_1m:,.0f} s{versus}")
    if one_m is not None:
        print(f"near_duplicate_1m_seconds: {one_m:.2f}")

if __name__ == "__main__":
    main()
