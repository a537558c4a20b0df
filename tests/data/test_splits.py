"""Seeded, stratified splits that do not depend on listing order."""

from __future__ import annotations

import random

import pytest

from stoker.data.splits import class_quotas, stratified_split, unit_hash

KEYS = [f"class{c}/img{i:04d}.jpg" for c in range(4) for i in range(500)]
LABELS = [int(key[5]) for key in KEYS]


def as_sets(keys: list[str], parts: dict[str, list[int]]) -> dict[str, set[str]]:
    return {split: {keys[i] for i in positions} for split, positions in parts.items()}


def test_split_is_deterministic_and_independent_of_listing_order() -> None:
    first = as_sets(KEYS, stratified_split(KEYS, LABELS, val_fraction=0.1, test_fraction=0.2, seed=3))
    order = list(range(len(KEYS)))
    random.Random(1).shuffle(order)
    shuffled_keys = [KEYS[i] for i in order]
    shuffled = as_sets(shuffled_keys, stratified_split(shuffled_keys, [LABELS[i] for i in order],
                                                       val_fraction=0.1, test_fraction=0.2, seed=3))
    assert first == shuffled
    other_seed = as_sets(KEYS, stratified_split(KEYS, LABELS, val_fraction=0.1, test_fraction=0.2, seed=4))
    assert other_seed["val"] != first["val"]


def test_quotas_give_every_class_exactly_its_share() -> None:
    keys = [f"c{c}/{i}" for c in range(3) for i in range(7 + 5 * c)]  # 7, 12 and 17 samples
    labels = [key.split("/")[0] for key in keys]
    parts = stratified_split(keys, labels, val_fraction=0.15, test_fraction=0.1, seed=0)
    for name, n in (("c0", 7), ("c1", 12), ("c2", 17)):
        got = {split: sum(1 for i in found if labels[i] == name) for split, found in parts.items()}
        assert got["val"] == int(n * 0.15 + 0.5) and got["test"] == int(n * 0.1 + 0.5), (name, got)
    assert sorted(i for p in parts.values() for i in p) == list(range(len(keys)))
    assert class_quotas(2, val_fraction=0.5, test_fraction=0.4) == (0, 1), "a class keeps one training sample"


@pytest.mark.parametrize(("val", "test"), [(0.2, 0.0), (0.15, 0.1)])
def test_adding_a_file_moves_at_most_one_other_file_of_its_class(val: float, test: float) -> None:
    # The property a growing dataset relies on, checked for every size from 1 to 60 files: one other file
    # at most with validation only, two with validation and test.
    keys = [f"a/{i:03d}.jpg" for i in range(61)]
    for n in range(1, 61):
        before = stratified_split(keys[:n], ["a"] * n, val_fraction=val, test_fraction=test, seed=5)
        after = stratified_split(keys[: n + 1], ["a"] * (n + 1), val_fraction=val, test_fraction=test, seed=5)
        where = {keys[i]: split for split, found in before.items() for i in found}
        moved = [keys[i] for split, found in after.items() for i in found if i < n and where[keys[i]] != split]
        assert len(moved) <= (2 if test else 1), (n, moved)


def test_hash_split_is_proportional_in_expectation() -> None:
    parts = stratified_split(KEYS, LABELS, val_fraction=0.1, test_fraction=0.2, seed=0, method="hash")
    for label in range(4):
        members = [i for i, y in enumerate(LABELS) if y == label]
        for split, fraction in (("val", 0.1), ("test", 0.2)):
            share = sum(1 for i in parts[split] if LABELS[i] == label) / len(members)
            # 500 per class: the binomial standard deviation is under 0.018; allow 3 of them.
            assert abs(share - fraction) < 0.055, (label, split, share)
    assert sorted(i for p in parts.values() for i in p) == list(range(len(KEYS)))


def test_with_the_hash_method_adding_a_sample_moves_no_other_sample() -> None:
    before = as_sets(KEYS, stratified_split(KEYS, LABELS, val_fraction=0.2, seed=0, method="hash"))
    keys = [*KEYS, "class1/new.jpg"]
    after = as_sets(keys, stratified_split(keys, [*LABELS, 1], val_fraction=0.2, seed=0, method="hash"))
    for split in before:
        assert after[split] - {"class1/new.jpg"} == before[split]


def test_unit_hash_is_uniform_enough() -> None:
    values = [unit_hash(0, i) for i in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(sum(v < 0.25 for v in values) / 4000 - 0.25) < 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.2}, r"val_fraction must be in \[0, 1\), got 1.2"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction \\+ test_fraction must be < 1"),
    ],
)
def test_bad_fractions_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_split(["a"], [0], **kwargs)


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(ValueError, match="sample keys must be unique; repeated: \\['a'\\]"):
        stratified_split(["a", "a"], [0, 0], val_fraction=0.1)


def test_folder_files_keep_the_trees_own_splits_and_carve_the_missing_ones() -> None:
    from stoker.data.splits import split_folder_files

    train = [(f"train/a/{i}.jpg", 0) for i in range(200)]
    val = [("val/a/0.jpg", 0)]
    out = split_folder_files({"train": train, "val": val}, val_fraction=0.5, test_fraction=0.25, seed=0)
    assert out["val"] == val, "the tree's own val folder wins over val_fraction"
    assert 25 < len(out["test"]) < 75
    assert sorted(out["train"] + out["test"]) == sorted(train)
    single = split_folder_files({"all": train}, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert single == {"train": train, "val": [], "test": []}


def test_a_class_left_out_of_a_split_by_chance_is_named() -> None:
    keys = [f"rare/{i}.jpg" for i in range(4)]
    def split(seed: int) -> dict[str, list[int]]:
        return stratified_split(keys, ["rare"] * 4, val_fraction=0.5, seed=seed, method="hash")

    seed = next(s for s in range(200) if not split(s)["val"])
    with pytest.warns(UserWarning, match=r"no sample of class\(es\) \['rare'\] fell into 'val'"):
        split(seed)


def test_the_split_report_says_how_far_per_class_rounding_drifts_and_who_got_nothing() -> None:
    from stoker.data.splits import drifted, split_folder_files, split_report

    # 1,000 classes of 5 samples and one class of a single sample, val_fraction=0.1.
    files = {"all": [(f"c{c}/{i}.jpg", c) for c in range(1000) for i in range(5)] + [("lonely/0.jpg", 1000)]}
    parts = split_folder_files(files, val_fraction=0.1, test_fraction=0.0, seed=0)
    pool = [y for _, y in parts["train"]] + [y for _, y in parts["val"]]
    report = split_report(pool, {"val": [y for _, y in parts["val"]]}, {"val": 0.1})["val"]
    assert report["asked"] == 0.1 and report["samples"] == 1000 and report["of"] == 5001
    assert abs(float(report["realised"]) - 0.2) < 0.001  # every class of 5 rounds 0.5 up to one sample
    assert report["classes_without"] == [1000] and drifted(report)
    even = split_report([0] * 50 + [1] * 50, {"val": [0] * 5 + [1] * 5}, {"val": 0.1})["val"]
    assert not drifted(even)
