"""Class-weight strategies: values, normalisation, and every bad input's message."""

from __future__ import annotations

import math

import pytest
import torch

from stoker.samplers.class_weights import class_counts, compute_class_weights, natural_mix, target_mix


def test_inverse_weights_make_the_target_mix_uniform() -> None:
    weights = compute_class_weights([90, 10], "inverse")
    assert torch.allclose(weights, torch.tensor([0.2, 1.8], dtype=torch.float64))
    assert target_mix([90, 10], weights) == pytest.approx([0.5, 0.5])
    assert target_mix([60, 30, 10], compute_class_weights([60, 30, 10])) == pytest.approx([1 / 3] * 3)


def test_sqrt_inverse_is_milder_than_inverse() -> None:
    weights = compute_class_weights([100, 25], "sqrt_inverse")
    # 1/sqrt(n) = [0.1, 0.2], scaled so the two weights sum to 2.
    assert weights.tolist() == pytest.approx([2 / 3, 4 / 3])
    assert target_mix([100, 25], weights) == pytest.approx([2 / 3, 1 / 3])


def test_effective_number_follows_cui_et_al() -> None:
    counts, beta = [1000, 100, 10], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [r * 3 / sum(raw) for r in raw]
    assert compute_class_weights(counts, "effective_number", beta=beta).tolist() == pytest.approx(expected)


def test_effective_number_limits() -> None:
    counts = [50, 20, 5]
    assert compute_class_weights(counts, "effective_number", beta=0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    near_one = compute_class_weights(counts, "effective_number", beta=1 - 1e-9)
    assert near_one.tolist() == pytest.approx(compute_class_weights(counts, "inverse").tolist(), rel=1e-5)


@pytest.mark.parametrize("strategy", ["inverse", "sqrt_inverse", "effective_number", [1.0, 3.0, 0.5, 2.0]])
def test_weights_have_mean_one_over_classes_with_samples(strategy) -> None:
    weights = compute_class_weights([40, 7, 13, 2], strategy, beta=0.9)
    assert float(weights.sum()) == pytest.approx(4.0)
    assert bool((weights > 0).all())


def test_explicit_weights_are_normalised_not_reordered() -> None:
    weights = compute_class_weights([10, 10, 10], [1.0, 2.0, 3.0])
    assert weights.tolist() == pytest.approx([0.5, 1.0, 1.5])


def test_empty_class_warns_by_name_and_gets_weight_zero() -> None:
    with pytest.warns(UserWarning, match=r"class\(es\) 'cow' have no training samples; they get weight 0"):
        weights = compute_class_weights([30, 0, 10], "inverse", class_names=["cat", "cow", "dog"])
    assert weights[1] == 0
    assert float(weights.sum()) == pytest.approx(2.0)
    assert target_mix([30, 0, 10], weights) == pytest.approx([0.5, 0.0, 0.5])


def test_single_class_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"at least two classes with samples, but only class 'cat' has any"):
        compute_class_weights([12], class_names=["cat"])
    with pytest.raises(ValueError, match=r"only class '2' has any \(counts \[0, 0, 5\]\)"):
        compute_class_weights([0, 0, 5])
    with pytest.raises(ValueError, match="but no class has any"):
        compute_class_weights([0, 0])


def test_negative_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="class counts must be >= 0, got -3 for class 'b'"):
        compute_class_weights([5, -3], class_names=["a", "b"])


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5, math.nan])
def test_bad_beta_is_an_error(beta) -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\) for 'effective_number'"):
        compute_class_weights([5, 3], "effective_number", beta=beta)


def test_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown class-weight strategy 'balanced'; expected one of \['inverse'"):
        compute_class_weights([5, 3], "balanced")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, -2.0, 1.0], r"class weight for class 'b' is negative \(-2.0\); weights must be >= 0"),
        ([1.0, math.nan, 1.0], r"class weight for class 'b' is nan; weights must be finite"),
        ([math.inf, 1.0, 1.0], r"class weight for class 'a' is inf; weights must be finite"),
        ([0.0, 0.0, 0.0], r"all 3 explicit class weights are zero; give one class a positive weight"),
        ([1.0, 2.0], r"got 2 explicit class weights for 3 classes \(\['a', 'b', 'c'\]\); give one weight per class"),
    ],
)
def test_bad_explicit_weights_are_errors(weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_class_weights([4, 5, 6], weights, class_names=["a", "b", "c"])


def test_explicit_weights_zero_on_every_populated_class_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"every class that has samples \('a', 'c'\) got weight 0"), \
            pytest.warns(UserWarning, match="'b'"):
        compute_class_weights([4, 0, 6], [0.0, 1.0, 0.0], class_names=["a", "b", "c"])


def test_class_names_must_match_counts() -> None:
    with pytest.raises(ValueError, match="got 1 class names for 2 class counts"):
        compute_class_weights([4, 5], class_names=["a"])


def test_class_counts_and_label_range() -> None:
    assert class_counts([0, 2, 2, 1, 2], 4) == [1, 1, 3, 0]
    with pytest.raises(ValueError, match=r"label 3 of sample 1 is outside \[0, 3\)"):
        class_counts([0, 3], 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        class_counts([], 0)


def test_mixes() -> None:
    assert natural_mix([3, 1]) == [0.75, 0.25]
    assert target_mix([3, 1], [1.0, 3.0]) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="got 2 class counts but 3 class weights"):
        target_mix([3, 1], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no class has both samples and a positive weight"):
        target_mix([3, 0], [0.0, 1.0])
