"""Deterministic, stratified train/val/test splits that do not depend on listing order.

Every sample has a stable identity ``key`` (a path relative to the dataset root, a row id) and a
seeded hash of it, ``unit_hash(seed, key)`` in ``[0, 1)``. Two ways to turn hashes into splits:

* ``"quota"`` (the default everywhere: the DataModules and ``stoker split``): inside each class,
  samples are ranked by their hash; the lowest ``round(n * test_fraction)`` go to test, the highest
  ``round(n * val_fraction)`` to validation, the rest to training. Every class gets exactly its
  share (up to rounding), and adding one file moves at most one other file of its class between
  splits when the class has one held-out split (validation), at most two with validation and test
  (test sits at the low end of the ranking and validation at the high end, so a new file displaces
  at most one file, and a quota it raises but does not fill takes at most one more).
* ``"hash"``: each sample goes where its hash falls against the fractions; classes are split in the
  requested proportions only in expectation, but adding a file never moves another one.

Either way the split never depends on the order in which files are listed or rows are read, and
the DataModules and ``stoker split`` place a file identically whether its class is known by name or
by index. A class that gets no sample in a split although it was expected some is named in a warning.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

from stoker.seeds import derive_seed

SPLITS: tuple[str, ...] = ("train", "val", "test")
SplitMethod = Literal["quota", "hash"]
SPLIT_METHODS: tuple[str, ...] = ("quota", "hash")


def unit_hash(seed: int, *parts: int | str) -> float:
    """A uniform number in ``[0, 1)`` from ``derive_seed(seed, *parts)`` (:mod:`stoker.seeds`)."""
    return derive_seed(seed, *parts) / 2**63


def validate_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both fractions are in ``[0, 1)`` and leave room for training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 so that something is left for training, "
            f"got {val_fraction} + {test_fraction}"
        )


def assign_split(key: str, *, val_fraction: float, test_fraction: float, seed: int) -> str:
    """The split (``"train"``, ``"val"`` or ``"test"``) of the sample identified by ``key``."""
    u = unit_hash(seed, key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _quota(n: int, fraction: float) -> int:
    # Half rounds up (Python's round() rounds half to even, which would make quotas jump unevenly).
    return int(n * fraction + 0.5)


def class_quotas(n: int, *, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(test, val)`` samples of a class of ``n`` under the ``"quota"`` method (one always trains)."""
    test, val = _quota(n, test_fraction), _quota(n, val_fraction)
    while n > 0 and test + val >= n:  # keep at least one training sample per class
        if test >= val and test > 0:  # validation runs every epoch: it gives up its sample last
            test -= 1
        else:
            val -= 1
    return test, val


def _quota_split(keys: Sequence[str], labels: Sequence[Hashable], *, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, list[int]]:
    by_class: dict[Hashable, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for positions in by_class.values():
        ranked = sorted(positions, key=lambda p: (unit_hash(seed, keys[p]), keys[p]))
        test, val = class_quotas(len(ranked), val_fraction=val_fraction, test_fraction=test_fraction)
        out["test"] += ranked[:test]
        out["val"] += ranked[len(ranked) - val:] if val else []
        out["train"] += ranked[test:len(ranked) - val]
    return {name: sorted(found) for name, found in out.items()}


def stratified_split(
    keys: Sequence[str],
    labels: Sequence[Hashable],
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    method: SplitMethod = "quota",
) -> dict[str, list[int]]:
    """Split samples into train/val/test, returning sorted positions into ``keys`` per split.

    Args:
        keys: A stable identity per sample (relative path, row id); duplicates are an error.
        labels: The class of each sample.
        val_fraction: Fraction of each class for validation.
        test_fraction: Fraction of each class for testing.
        seed: Different seeds give independent splits.
        method: ``"quota"`` (exact per-class shares) or ``"hash"`` (per-sample draws); see the module.

    Raises:
        ValueError: Fractions out of range, an unknown method, length mismatch or duplicate keys.
    """
    validate_fractions(val_fraction, test_fraction)
    if method not in SPLIT_METHODS:
        raise ValueError(f"split method must be one of {SPLIT_METHODS}, got {method!r}")
    if len(keys) != len(labels):
        raise ValueError(f"got {len(keys)} keys but {len(labels)} labels")
    repeated = [key for key, count in Counter(keys).items() if count > 1]
    if repeated:
        raise ValueError(f"sample keys must be unique; repeated: {repeated[:5]}")
    if method == "quota":
        out = _quota_split(keys, labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    else:
        out = {name: [] for name in SPLITS}
        for position, key in enumerate(keys):
            split = assign_split(key, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
            out[split].append(position)
    _warn_on_empty_class_splits(labels, out, {"val": val_fraction, "test": test_fraction})
    return out


def _warn_on_empty_class_splits(
    labels: Sequence[Hashable], parts: dict[str, list[int]], fractions: dict[str, float]
) -> None:
    # A per-sample draw can leave a class out of a small split by chance; name the class when that
    # happens although at least two of its samples were expected there.
    sizes = Counter(labels)
    for split, fraction in fractions.items():
        present = Counter(labels[i] for i in parts[split])
        missing = [label for label, n in sizes.items() if n * fraction >= 2 and present[label] == 0]
        if missing:
            warnings.warn(
                f"no sample of class(es) {sorted(map(str, missing))} fell into {split!r} although "
                f"{split}_fraction={fraction} expected some; change the seed or the fraction if that matters",
                stacklevel=3,
            )


def split_folder_files(
    files: dict[str, list[tuple[str, Any]]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    method: SplitMethod = "quota",
) -> dict[str, list[tuple[str, Any]]]:
    """Train/val/test ``(relative path, label)`` lists from a folder index.

    ``files`` is keyed by the tree's own splits (``train``/``val``/``test``) or holds one ``all``
    list for a single-folder layout. A split the tree has is kept as it is; a missing ``val`` or
    ``test`` is carved out of the training files by :func:`stratified_split` when its fraction is
    positive, and is empty otherwise.
    """
    out: dict[str, list[tuple[str, Any]]]
    if "all" in files:
        pool, out = files["all"], {}
    else:
        pool = files.get("train", [])
        out = {split: files[split] for split in ("val", "test") if split in files}
    fractions = {
        "val": val_fraction if "val" not in out else 0.0,
        "test": test_fraction if "test" not in out else 0.0,
    }
    if fractions["val"] > 0 or fractions["test"] > 0:
        parts = stratified_split(
            [rel for rel, _ in pool], [y for _, y in pool],
            val_fraction=fractions["val"], test_fraction=fractions["test"], seed=seed, method=method,
        )
        for split in ("val", "test"):
            out.setdefault(split, [pool[i] for i in parts[split]])
        pool = [pool[i] for i in parts["train"]]
    out["train"] = pool
    for split in ("val", "test"):
        out.setdefault(split, [])
    return out


def split_report(pool: Sequence[Hashable], held_out: Mapping[str, Sequence[Hashable]],
                 fractions: Mapping[str, float]) -> dict[str, dict[str, object]]:
    """What a carve-out asked for and what it gave: per held-out split, the asked and realised share and the
    classes that got no sample.

    Per-class quotas round each class on its own, so on many small classes the realised share can be far
    from the asked one (1,000 classes of 5 samples with ``val_fraction=0.1``: one sample of each, 20%), and a
    class with a single sample keeps it for training. The DataModules say so at setup with these numbers.

    Args:
        pool: The label of every sample that was split (training plus what was carved out of it).
        held_out: The labels of each carved split (``val``/``test``).
        fractions: The fraction asked for each carved split (splits with 0 are left out of the report).

    Returns:
        ``{split: {"asked": fraction, "realised": share, "samples": n, "of": total, "classes_without": [labels]}}``.
    """
    sizes = Counter(pool)
    total = max(1, len(pool))
    out: dict[str, dict[str, object]] = {}
    for split, fraction in fractions.items():
        if fraction <= 0:
            continue
        present = Counter(held_out.get(split, ()))
        without = sorted((label for label in sizes if present[label] == 0), key=str)
        count = sum(present.values())
        out[split] = {"asked": fraction, "realised": count / total, "samples": count, "of": len(pool),
                      "classes_without": without}
    return out


def drifted(report: dict[str, object], *, tolerance: float = 0.2) -> bool:
    """Whether a split's realised share is more than ``tolerance`` (relative) off the asked one, or a class got none."""
    asked, realised = float(report["asked"]), float(report["realised"])  # type: ignore[arg-type]
    return abs(realised - asked) > tolerance * asked or bool(report["classes_without"])
