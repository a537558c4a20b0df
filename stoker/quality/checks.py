"""Data-quality analysis of scanned samples: duplicates, leakage, label conflicts, outliers, statistics.

Input is the list of :class:`stoker.quality.sources.Record` of a dataset; output is a plain,
JSON-ready dict (the ``stoker scan --json`` format). Exact duplicates share a content hash;
near duplicates are, for images, perceptual hashes at most ``near_threshold`` bits apart whose
thumbnails confirm one picture and, for text, equal normalised text (groups join pairs
transitively). Leakage counts both, pair by pair, because a resized copy in the validation split
leaks as much as a byte-identical one; label conflicts need exact identity (bytes, or normalised
text), since a perceptual match between two differently labelled images is too weak to call a
labelling error.

For images the hash only proposes: every pair within ``near_threshold`` bits is a candidate, found
exactly by :mod:`stoker.quality.near_index`, and is confirmed only when the two 16x16 gray
thumbnails show one picture (:func:`stoker.quality.phash.thumbnail_difference` at most
``near_max_difference``). The hash alone cannot do both jobs where an image holds little beyond
its 64 bits: among scikit-learn's 1,797 handwritten digits (8x8 scans upsampled to 32 px, no two
alike) 1,433 pairs are within 8 bits, some within 2; a smooth photo (blurred, a sky) collides with
other smooth photos the same way. Measured with a 90%-resized, JPEG quality 60 copy of each image
(digits; 400 crops of 200-500 px and 150 of 48-96 px from scikit-learn's two sample photographs;
60 sky and background crops; 60 photos blurred with sigma 8-20), copies differ by at most 0.027
(digits), 0.069 (skies), 0.014 (blurred), 0.064 (photos) and 0.12 (48-96 px crops, 133 of 134 within
0.1), while candidates that are different pictures differ by at least 0.133 (digits, none of the
1,433 confirmed), 0.125 (skies) and 0.107 (blurred): hence 0.1. Heavily overlapping crops of one
photo can fall within it, and are then near duplicates; shifted or reframed crops are not.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

import numpy as np

from stoker.quality.near_index import near_pairs
from stoker.quality.phash import THUMB_SIDE, matching_pairs
from stoker.quality.sources import Record, label_names, label_text

PROBLEMS: tuple[str, ...] = (
    "corrupt", "exact_duplicates", "near_duplicates", "leakage", "label_conflicts", "outliers", "missing",
)
EVAL_SPLITS: tuple[str, ...] = ("val", "test")
NEAR_THRESHOLD = 8
NEAR_MAX_DIFFERENCE = 0.1
# The default of `stoker scan --near-min-detail`, which is deprecated and ignored: the detail gate it set
# was replaced by confirming every candidate pair on thumbnails (issue 20). None: not given.
NEAR_MIN_DETAIL: float | None = None
COOCCURRENCE_PAIRS = 20  # the most frequent label pairs a multi-label scan lists


def parse_problems(text: str | None) -> list[str]:
    """``"leakage,corrupt"`` -> ``["leakage", "corrupt"]``, validated against :data:`PROBLEMS`.

    Raises:
        ValueError: An unknown name, with the valid ones.
    """
    if not text:
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROBLEMS]
    if unknown:
        raise ValueError(f"unknown problem name(s) {unknown} in {text!r}; choose from {', '.join(PROBLEMS)}")
    return names


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _near_pairs(usable: list[Record], near_threshold: int,
                max_difference: float) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Pairs of distinct content hashes that are near duplicates (direct pairs, no chaining), and the pair counts."""
    first: dict[str, Record] = {}
    for record in usable:
        first.setdefault(str(record.sha), record)
    images = [r for r in first.values() if isinstance(r.near, int)]
    found = near_pairs(np.array([r.near for r in images], dtype=np.uint64), near_threshold)
    confirmed = found[_confirmed(images, found, max_difference)]
    pairs = [(str(images[i].sha), str(images[j].sha)) for i, j in confirmed.tolist()]
    by_text: dict[str, list[str]] = defaultdict(list)
    for sha, record in first.items():
        if isinstance(record.near, str):
            by_text[record.near].append(sha)
    pairs += [(a, b) for shas in by_text.values() for i, a in enumerate(shas) for b in shas[i + 1:]]
    return pairs, {"candidates": len(found), "confirmed": len(confirmed)}


def _confirmed(images: list[Record], pairs: np.ndarray, max_difference: float) -> np.ndarray:
    """Mask of the candidate ``pairs`` (rows of ``images``) whose thumbnails show one picture.

    A pair with a record lacking a thumbnail (made by other code than the scan's readers) keeps the
    hash's word. Only the thumbnails of images in some pair are gathered into an array.
    """
    involved = np.unique(pairs)
    thumbnails = [images[k].thumbnail for k in involved.tolist()]
    has = np.array([t is not None for t in thumbnails], bool)
    table = np.zeros((len(involved), THUMB_SIDE * THUMB_SIDE), np.uint8)
    if has.any():
        stacked = np.frombuffer(b"".join(t for t in thumbnails if t is not None), np.uint8)
        table[has] = stacked.reshape(-1, table.shape[1])
    rows = np.searchsorted(involved, pairs)
    return matching_pairs(table, rows, max_difference) | ~(has[rows[:, 0]] & has[rows[:, 1]])


def _strong_key(record: Record) -> str:
    # Label conflicts need near-certain identity: the bytes, or for text the normalised text. A
    # perceptual-hash match is enough to flag leakage but not to call two labels contradictory.
    return record.near if isinstance(record.near, str) else str(record.sha)


def _cross_pairs(a: list[Record], b: list[Record], match: str) -> list[dict[str, str]]:
    out = []
    for left, right in ((a, b), (b, a)) if a is not b else ((a, a),):
        for train in (r for r in left if r.split == "train"):
            out += [{"train": train.path, "other": other.path, "split": other.split, "match": match}
                    for other in right if other.split in EVAL_SPLITS]
    return out


def _relations(usable: list[Record], near_threshold: int, max_difference: float) -> dict[str, Any]:
    by_sha: dict[str, list[Record]] = defaultdict(list)
    by_strong: dict[str, list[Record]] = defaultdict(list)
    for record in usable:
        by_sha[str(record.sha)].append(record)
        by_strong[_strong_key(record)].append(record)
    pairs, counts = _near_pairs(usable, near_threshold, max_difference)
    union = _UnionFind()
    for a, b in pairs:
        union.union(a, b)
    components: dict[str, list[str]] = defaultdict(list)
    for sha in {s for pair in pairs for s in pair}:
        components[union.find(sha)].append(sha)
    leakage = [p for group in by_sha.values() for p in _cross_pairs(group, group, "exact")]
    leakage += [p for a, b in pairs for p in _cross_pairs(by_sha[a], by_sha[b], "near")]
    conflicts = [[{"path": r.path, "label": r.label} for r in sorted(group, key=lambda r: r.path)]
                 for group in by_strong.values() if len({r.label for r in group if r.label is not None}) > 1]
    return {
        "exact_duplicates": sorted(sorted(r.path for r in group) for group in by_sha.values() if len(group) > 1),
        "near_duplicates": sorted(sorted(r.path for sha in shas for r in by_sha[sha]) for shas in components.values()),
        "leakage": sorted(leakage, key=lambda p: (p["train"], p["other"])),
        "label_conflicts": sorted(conflicts, key=lambda g: str(g[0]["path"])),
        "near_duplicate_candidates": counts["candidates"],
        "near_duplicate_confirmed": counts["confirmed"],
    }


def _robust_outliers(values: dict[str, float], *, floor: float, z: float = 3.5) -> dict[str, float]:
    """Paths whose value is further than ``max(z * robust sigma, floor)`` from the median.

    The floor keeps a uniform dataset (zero spread) from flagging every small deviation.
    """
    if len(values) < 3:
        return {}
    array = np.array(list(values.values()))
    median = float(np.median(array))
    sigma = 1.4826 * float(np.median(np.abs(array - median)))
    limit = max(z * sigma, floor)
    return {path: value - median for path, value in values.items() if abs(value - median) > limit}


def _minority(values: dict[str, Any], *, share: float = 0.05) -> dict[str, tuple[Any, Any]]:
    """Paths whose categorical value is rarer than ``share`` of all, with the most common value."""
    counts = Counter(values.values())
    if len(counts) < 2:
        return {}
    common = counts.most_common(1)[0][0]
    return {path: (value, common) for path, value in values.items()
            if value != common and counts[value] < share * len(values)}


def _outliers(usable: list[Record], kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(check: str, flagged: dict[str, Any], describe: Any) -> None:
        found.extend({"path": path, "check": check, "reason": describe(path, extra)} for path, extra in flagged.items())

    props = {r.path: r.props for r in usable if r.props}
    if kind == "image":
        size = {p: math.log(v["width"] * v["height"]) for p, v in props.items()}
        aspect = {p: math.log(v["width"] / v["height"]) for p, v in props.items()}
        add("size", _robust_outliers(size, floor=math.log(4.0)),
            lambda p, d: f"{props[p]['width']}x{props[p]['height']} px, {math.exp(d):.2g}x the median area")
        add("aspect", _robust_outliers(aspect, floor=math.log(2.0)),
            lambda p, d: f"aspect {props[p]['width'] / props[p]['height']:.2f}, {math.exp(d):.2g}x the median")
        add("mode", _minority({p: v["mode"] for p, v in props.items()}),
            lambda p, v: f"mode {v[0]} where most images are {v[1]}")
    elif kind == "audio":
        duration = {p: math.log(v["duration"]) for p, v in props.items() if v["duration"] > 0}
        add("duration", _robust_outliers(duration, floor=math.log(3.0)),
            lambda p, d: f"{props[p]['duration']:.2f} s, {math.exp(d):.2g}x the median duration")
        for check in ("sample_rate", "channels"):
            add(check, _minority({p: v[check] for p, v in props.items()}, share=0.5),
                lambda p, v, check=check: f"{check} {v[0]} where most files have {v[1]}")
    elif kind == "text":
        length = {p: math.log(v["length"]) for p, v in props.items() if v.get("length", 0) > 0}
        add("length", _robust_outliers(length, floor=math.log(4.0)),
            lambda p, d: f"{props[p]['length']} characters, {math.exp(d):.2g}x the median length")
    return sorted(found, key=lambda o: (o["path"], o["check"]))


def _class_counts(records: list[Record]) -> dict[str, dict[str, int]]:
    # A multi-label sample counts once for each of its classes: the counts are positives per class.
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.error is None and "text" not in r.missing:
            for name in label_names(r.label):
                counts[r.split][name] += 1
                counts["total"][name] += 1
    order = {"train": 0, "val": 1, "test": 2, "total": 9}
    return {split: dict(sorted(counts[split].items())) for split in sorted(counts, key=lambda s: (order.get(s, 5), s))}


def _imbalance(counts: dict[str, int], class_names: list[str]) -> float | None:
    values = [counts.get(name, 0) for name in class_names] if class_names else list(counts.values())
    if not values or min(values) == 0:
        return None
    return max(values) / min(values)


def _channel_stats(records: list[Record]) -> tuple[list[float], list[float]] | None:
    sums = [r.pixel_sums for r in records if r.pixel_sums is not None]
    if not sums:
        return None
    total = float(sum(s[2] for s in sums))
    mean = np.stack([s[0] for s in sums]).sum(0) / total
    var = np.maximum(np.stack([s[1] for s in sums]).sum(0) / total - mean**2, 0.0)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in np.sqrt(var)]


def _label_sets(usable: list[Record], class_names: list[str], counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """What a multi-label dataset adds: which classes go together, which have no positive, labels per sample.

    A class with no positive in a split has no defined recall or AUC there; pairs that always co-occur
    may be one concept labelled twice.
    """
    pairs: Counter[tuple[str, str]] = Counter()
    sizes: Counter[int] = Counter()
    for record in usable:
        names = sorted(set(label_names(record.label)))
        sizes[len(names)] += 1
        pairs.update(combinations(names, 2))
    frequent = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:COOCCURRENCE_PAIRS]
    total = sum(sizes.values())
    return {
        "label_cooccurrence": [{"classes": list(pair), "count": count} for pair, count in frequent],
        "classes_without_positives": {split: [name for name in class_names if not per_class.get(name)]
                                      for split, per_class in counts.items() if split != "excluded"},
        "labels_per_sample": {"mean": round(sum(n * c for n, c in sizes.items()) / total, 3) if total else None,
                              "counts": {str(n): c for n, c in sorted(sizes.items())}},
    }


def analyze(records: list[Record], *, kind: str, multi_label: bool = False, near_threshold: int = NEAR_THRESHOLD,
            near_max_difference: float = NEAR_MAX_DIFFERENCE, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every check of ``stoker scan`` on the records of one dataset, as a JSON-ready dict.

    Args:
        records: One per sample (see :mod:`stoker.quality.sources`).
        kind: ``"image"``, ``"audio"`` or ``"text"``.
        multi_label: Labels are sets of classes: class counts are positives per class, label conflicts are
            identical contents with different label sets, and the result adds the most frequent label pairs
            (``label_cooccurrence``), the classes with no positive per split (``classes_without_positives``)
            and the number of labels per sample.
        near_threshold: Largest perceptual-hash distance (bits of 64) of a candidate near-duplicate pair.
        near_max_difference: Largest :func:`~stoker.quality.phash.thumbnail_difference` of a candidate
            pair still confirmed as a near duplicate (``math.inf`` takes the hash's word alone).
        notes: Extra facts from indexing (empty class folders, ignored files, class names).

    Raises:
        ValueError: A negative ``near_max_difference``.
    """
    if not near_max_difference >= 0:
        raise ValueError(f"near_max_difference must be >= 0 ({NEAR_MAX_DIFFERENCE} by default; math.inf trusts the "
                         f"hash alone), got {near_max_difference}")
    notes = dict(notes or {})
    usable = [r for r in records if r.error is None and r.sha is not None]
    corrupt = [{"path": r.path, "reason": r.error} for r in records if r.error is not None]
    missing = [{"path": r.path, "fields": r.missing} for r in records if r.missing]
    missing += [{"path": folder, "fields": ["files"]} for folder in notes.get("empty_classes", [])]
    counts = _class_counts(records)
    class_names = list(notes.get("class_names") or counts.get("total", {}).keys())
    stats_split = "train" if any(r.split == "train" for r in usable) else "all"
    relations = _relations(usable, near_threshold, near_max_difference)
    near_counts = {key: relations.pop(key) for key in ("near_duplicate_candidates", "near_duplicate_confirmed")}
    result: dict[str, Any] = {
        "kind": kind,
        "num_samples": len(records),
        "splits": dict(sorted(Counter(r.split for r in records).items())),
        "class_names": class_names,
        "class_counts": counts,
        "imbalance_ratio": _imbalance(counts.get(stats_split, {}), class_names),
        "corrupt": sorted(corrupt, key=lambda c: c["path"]),
        **relations,
        "outliers": _outliers(usable, kind),
        "missing": sorted(missing, key=lambda m: m["path"]),
        "near_duplicate_threshold": near_threshold,
        "multi_label": multi_label,
        "notes": notes,
    }
    if multi_label:
        result.update(_label_sets([r for r in usable if r.split != "excluded"], class_names, counts))
    if kind == "image":
        result["near_duplicate_max_difference"] = near_max_difference
        result.update(near_counts)
        caveat = _near_caveat(usable, result)
        if caveat:
            notes["near_duplicates_caveat"] = caveat
        stats = _channel_stats([r for r in usable if r.split == stats_split])
        result["mean"], result["std"] = stats if stats else (None, None)
        result["stats_split"] = stats_split
    result["summary"] = {name: len(result[name]) for name in PROBLEMS}
    return result


def _near_caveat(usable: list[Record], result: dict[str, Any]) -> str | None:
    """What a reader of the near-duplicate count should know, or ``None``."""
    grouped = sum(len(group) for group in result["near_duplicates"])
    if grouped > 0.05 * max(1, len(usable)):
        # Copies are rare in a curated set; this many usually means a homogeneous set (product shots on
        # white, scans of one form) where similar images can pass the thumbnail check as copies do.
        return (f"{grouped} of {len(usable)} images fall in near-duplicate groups: look at a few groups; if they are "
                "look-alikes rather than copies, lower --near-threshold")
    return None


def quarantine_entries(result: dict[str, Any], include: list[str]) -> list[dict[str, str]]:
    """Files to leave out of training, each with the reason, in the format the DataModules read.

    ``corrupt``: every corrupt file. ``leakage``: the validation/test side of each pair, so the
    evaluation stays clean. ``label_conflicts``: every member (the true label is unknown).
    ``exact_duplicates``: all but the first copy (in path order).
    """
    out: dict[str, str] = {}
    if "corrupt" in include:
        out.update({c["path"]: f"corrupt: {c['reason']}" for c in result["corrupt"]})
    if "leakage" in include:
        out.update({p["other"]: f"leakage: same content as {p['train']}" for p in result["leakage"]})
    if "label_conflicts" in include:
        for group in result["label_conflicts"]:
            labels = sorted({label_text(m["label"]) for m in group})
            out.update({m["path"]: f"label conflict: same content labelled {labels}" for m in group})
    if "exact_duplicates" in include:
        for group in result["exact_duplicates"]:
            out.update({path: f"exact duplicate of {group[0]}" for path in group[1:] if path not in out})
    return [{"path": path, "reason": reason} for path, reason in sorted(out.items())]
