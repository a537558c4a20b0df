"""Every pair of 64-bit hashes within a Hamming radius, in sub-quadratic time (multi-index hashing).

The pigeonhole principle of multi-index hashing (Norouzi, Punjani and Fleet, *Fast Search in
Hamming Space with Multi-Index Hashing*, CVPR 2012), in the one-table-per-block-combination
form of Manku, Jain and Das Sarma (*Detecting Near-Duplicates for Web Crawling*, WWW 2007): cut
the 64 bits into ``B`` blocks; two hashes at most ``r`` bits apart differ in at most ``r`` blocks,
so they agree exactly on at least ``B - r`` of them. One table per choice of ``B - r`` blocks
groups the hashes that agree on those blocks (a sort of packed keys), and only hashes inside a
group are compared, with a popcount. Every pair within ``r`` is found (the search is exact), and
each once: a pair counts only in the first table whose blocks it agrees on.

``B`` is chosen per call by a cost model: more blocks give longer keys and so fewer chance
collisions per table, but more tables. ``benchmarks/scan_scale.py`` measures it against the
exhaustive comparison and a BK-tree (a BK-tree at radius 8 of 64 bits visits most of its nodes,
and one node per Python call is slow); faiss' binary indexes would need a dependency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stoker.data.loader import available_cores

HASH_BITS = 64
# Below this many distinct hashes the exhaustive comparison is faster than building tables.
_EXHAUSTIVE_LIMIT = 4096
# Measured on two cores (see benchmarks/scan_scale.py): seconds per hash per table (pack, sort,
# gather) and per candidate pair (popcount), for the cost model that picks the number of blocks.
_COST_PER_HASH = 6e-8
_COST_PER_CANDIDATE = 1e-8
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of Fibonacci hashing: mixes masked bits into the top 32
_LOW32 = np.uint64(0xFFFFFFFF)


def near_pairs(hashes: Sequence[int] | np.ndarray, max_distance: int, *, blocks: int | None = None,
               workers: int | None = None) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``max_distance`` bits.

    Args:
        hashes: Unsigned 64-bit hashes (Python ints or a ``uint64`` array).
        max_distance: Largest Hamming distance still reported.
        blocks: Number of blocks of the index (default: chosen by the cost model); for benchmarks.
        workers: Threads that build tables side by side (default: the available cores).

    Returns:
        ``int64 [P, 2]``, rows sorted, each pair once.

    Raises:
        ValueError: ``max_distance`` outside ``[0, 64)`` or ``blocks`` not in ``(max_distance, 64]``.

    Example:
        >>> near_pairs([0b0, 0b1, 0b111], 1).tolist()
        [[0, 1]]
    """
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {HASH_BITS}), got {max_distance}")
    if blocks is not None and not max_distance < blocks <= HASH_BITS:
        raise ValueError(f"blocks must be in ({max_distance}, {HASH_BITS}] for max_distance {max_distance}, "
                         f"got {blocks}")
    values = np.asarray(hashes, dtype=np.uint64).ravel()
    if len(values) < 2:
        return np.empty((0, 2), np.int64)
    # Equal hashes are grouped first: a cluster of identical hashes would otherwise fill one bucket
    # of every table and cost its square in every table.
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if max_distance == 0 or len(unique) < 2:
        pairs = np.empty((0, 2), np.int64)
    elif len(unique) <= _EXHAUSTIVE_LIMIT and blocks is None:
        pairs = _exhaustive_pairs(unique, max_distance)
    else:
        pairs = _indexed_pairs(unique, max_distance, blocks or choose_blocks(len(unique), max_distance),
                               workers or available_cores())
    return _expand(pairs, inverse.ravel(), counts)


def choose_blocks(num_hashes: int, max_distance: int) -> int:
    """The number of blocks ``B`` with the lowest modelled cost for ``num_hashes`` distinct hashes.

    Cost of ``B``: ``C(B, B - r)`` tables, each sorting every hash and comparing the pairs that share
    a key of ``64 (B - r) / B`` bits by chance (``n^2 / 2`` over ``2^key_bits``).
    """
    best, best_cost = max_distance + 1, math.inf
    for num_blocks in range(max_distance + 1, min(HASH_BITS, max_distance + 12) + 1):
        agree = num_blocks - max_distance
        tables = math.comb(num_blocks, agree)
        key_bits = min(32, HASH_BITS * agree // num_blocks)
        chance = num_hashes * (num_hashes - 1) / 2 * 2.0 ** -key_bits
        cost = tables * (num_hashes * _COST_PER_HASH + chance * _COST_PER_CANDIDATE)
        if cost < best_cost:
            best, best_cost = num_blocks, cost
    return best


def _exhaustive_pairs(values: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    found: list[np.ndarray] = []
    for start in range(0, len(values), chunk):
        block = values[start:start + chunk]
        rows, cols = np.nonzero(np.bitwise_count(block[:, None] ^ values[None, :]) <= max_distance)
        rows += start
        keep = rows < cols
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found).astype(np.int64)


def _block_masks(num_blocks: int) -> list[np.uint64]:
    edges = np.linspace(0, HASH_BITS, num_blocks + 1).round().astype(int)
    return [np.uint64(((1 << int(hi)) - 1) ^ ((1 << int(lo)) - 1)) for lo, hi in zip(edges[:-1], edges[1:])]


def _indexed_pairs(values: np.ndarray, max_distance: int, num_blocks: int, workers: int) -> np.ndarray:
    """Pairs of positions in ``values`` (distinct hashes) within ``max_distance``, one table per block choice."""
    masks = _block_masks(num_blocks)
    agree = num_blocks - max_distance
    positions = np.arange(len(values), dtype=np.uint64)

    def table(combo: tuple[int, ...]) -> np.ndarray:
        mask = np.uint64(0)
        for block in combo:
            mask |= masks[block]
        # The key (32 bits of a multiplicative hash of the kept blocks) and the position share one
        # uint64, so a plain sort groups the table; a hash collision only adds a candidate.
        key = ((values & mask) * _GOLDEN) >> np.uint64(32)
        packed = np.sort((key << np.uint64(32)) | positions)
        pairs = _bucket_pairs(packed >> np.uint64(32), (packed & _LOW32).astype(np.intp), values, max_distance)
        first = _first_agreeing_combo(values[pairs[:, 0]] ^ values[pairs[:, 1]], masks, agree)
        return pairs[first == sum(1 << b for b in combo)]

    combos = list(itertools.combinations(range(num_blocks), agree))
    # NumPy releases the GIL in sort, gather and popcount, so tables run side by side in threads.
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(combos)))) as pool:
        found = [pairs for pairs in pool.map(table, combos) if len(pairs)]
    if not found:
        return np.empty((0, 2), np.int64)
    return np.sort(np.concatenate(found), axis=1)


def _bucket_pairs(keys: np.ndarray, order: np.ndarray, values: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs ``(order[p], order[p + d])`` with equal sorted ``keys`` whose hashes are within ``max_distance``."""
    active = np.flatnonzero(keys[1:] == keys[:-1])
    if not len(active):
        return np.empty((0, 2), np.int64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1], [True]]))
    longest = int(np.diff(starts).max())
    # Keys past the end that equal no key (keys are below 2**32) spare a bounds check per step.
    keys = np.concatenate([keys, np.uint64(1 << 32) + np.arange(longest, dtype=np.uint64)])
    hashes = values[order]
    hashes = np.concatenate([hashes, np.zeros(longest, np.uint64)])
    found: list[np.ndarray] = []
    # Positions p whose key run reaches p + step: since keys are sorted, that set only shrinks as
    # step grows, so each step filters the previous one with near-sequential reads.
    for step in range(1, longest):
        hits = active[np.bitwise_count(hashes[active] ^ hashes[active + step]) <= max_distance]
        if len(hits):
            found.append(np.stack([order[hits], order[hits + step]], axis=1))
        active = active[keys[active + step + 1] == keys[active]]
        if not len(active):
            break
    return np.concatenate(found).astype(np.int64) if found else np.empty((0, 2), np.int64)


def _first_agreeing_combo(differences: np.ndarray, masks: list[np.uint64], agree: int) -> np.ndarray:
    """Bit set of the lexicographically first ``agree`` blocks on which each pair's hashes are equal."""
    equal = np.zeros(len(differences), np.int64)
    for block, mask in enumerate(masks):
        equal |= ((differences & mask) == 0).astype(np.int64) << block
    first = np.zeros_like(equal)
    for _ in range(agree):
        lowest = equal & -equal
        first |= lowest
        equal ^= lowest
    return first


def _expand(pairs: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pairs of distinct hash values -> pairs of input positions, plus pairs of positions sharing one value."""
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    single = (counts[pairs[:, 0]] == 1) & (counts[pairs[:, 1]] == 1)
    out = [order[starts[pairs[single]]]]
    for a, b in pairs[~single]:
        left = order[starts[a]:starts[a] + counts[a]]
        right = order[starts[b]:starts[b] + counts[b]]
        out.append(np.stack(np.meshgrid(left, right, indexing="ij"), axis=-1).reshape(-1, 2))
    for value in np.flatnonzero(counts > 1):
        members = order[starts[value]:starts[value] + counts[value]]
        i, j = np.triu_indices(len(members), k=1)
        out.append(np.stack([members[i], members[j]], axis=1))
    result = np.sort(np.concatenate(out).astype(np.int64), axis=1)
    return result[np.lexsort((result[:, 1], result[:, 0]))]
