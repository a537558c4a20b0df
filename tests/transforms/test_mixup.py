"""The pure MixUp/CutMix functions: invariants, timm parity, odd batches, spectrograms, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data.mixup import Mixup, cutmix_bbox_and_lam

from stoker.callbacks.mixup import seed_for
from stoker.transforms.mixup import (
    MixParams,
    MixSettings,
    box_area_fraction,
    cutmix_boxes,
    draw_mix_params,
    mix_batch,
    mix_inputs_,
    mix_targets,
)

MODES = ["batch", "pair", "elem"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int, shape: tuple[int, ...] = (3, 12, 10), classes: int = 5, seed: int = 0):
    g = _gen(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_soft_targets_are_distributions_with_at_most_two_classes(mode: str, smoothing: float, n: int) -> None:
    images, labels = _batch(n)
    settings = MixSettings(mode=mode, label_smoothing=smoothing)  # type: ignore[arg-type]
    _, soft, params = mix_batch(images, labels, num_classes=5, settings=settings, generator=_gen(n))
    assert soft.shape == (n, 5) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(n))
    if smoothing == 0.0:
        assert int((soft > 0).sum(dim=1).max()) <= 2
        # Each row puts lam on its own label and 1 - lam on its partner's.
        own = soft[torch.arange(n), labels]
        same = labels == labels.flip(0)
        expected = torch.where(same, torch.ones(n, dtype=torch.float64), params.lam).float()
        torch.testing.assert_close(own, expected)


@pytest.mark.parametrize("mode", ["pair", "elem"])
def test_mixup_output_is_the_convex_combination_of_its_pair(mode: str) -> None:
    images, labels = _batch(7)
    original = images.clone()
    settings = MixSettings(mixup_alpha=0.4, cutmix_alpha=0.0, mode=mode)  # type: ignore[arg-type]
    out, _, params = mix_batch(images, labels, num_classes=5, settings=settings, generator=_gen(3))
    assert out.data_ptr() == images.data_ptr(), "mixing happens in place"
    assert not params.use_cutmix.any() and params.applied
    lam = params.lam.float().view(-1, 1, 1, 1)
    torch.testing.assert_close(out, lam * original + (1 - lam) * original.flip(0))


@pytest.mark.parametrize("mode", MODES)
def test_cutmix_area_taken_from_the_partner_matches_one_minus_lambda(mode: str) -> None:
    images, labels = _batch(6, shape=(2, 16, 20))
    original = images.clone()
    settings = MixSettings(mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode)  # type: ignore[arg-type]
    out, _, params = mix_batch(images, labels, num_classes=5, settings=settings, generator=_gen(11))
    partner = original.flip(0)
    from_partner = ((out == partner) & (out != original)).all(dim=1)  # [N, H, W], random data: no ties
    taken = from_partner.double().mean(dim=(1, 2))
    torch.testing.assert_close(taken, 1.0 - params.lam)
    torch.testing.assert_close(box_area_fraction(params.boxes, (16, 20)), 1.0 - params.lam)
    assert ((out == original) | from_partner[:, None]).all(), "outside the box the sample keeps its own values"


def test_uncorrected_lambda_keeps_the_beta_draw_while_minmax_always_corrects() -> None:
    settings = MixSettings(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False, mode="elem")
    params = draw_mix_params(64, (9, 9), settings, _gen(5))
    clipped = (box_area_fraction(params.boxes, (9, 9)) - (1.0 - params.lam)).abs() > 1e-9
    assert clipped.any(), "boxes crossing the border are smaller than 1 - lam when not corrected"
    minmax = MixSettings(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8), correct_lam=False, mode="elem")
    params = draw_mix_params(64, (10, 10), minmax, _gen(5))
    torch.testing.assert_close(box_area_fraction(params.boxes, (10, 10)), 1.0 - params.lam)
    sides = params.boxes[:, 1] - params.boxes[:, 0]
    assert int(sides.min()) >= 2 and int(sides.max()) < 8 and int(params.boxes.min()) >= 0
    assert int(params.boxes[:, 1].max()) <= 10 and int(params.boxes[:, 3].max()) <= 10


def test_box_sides_follow_sqrt_one_minus_lambda() -> None:
    lam = torch.rand(200, generator=_gen(1), dtype=torch.float64)
    boxes = cutmix_boxes(lam, (32, 24), generator=_gen(2))
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    full_h = (32 * (1 - lam).sqrt()).floor().long()
    full_w = (24 * (1 - lam).sqrt()).floor().long()
    assert (heights <= full_h).all() and (widths <= full_w).all()
    inside = (boxes[:, 0] > 0) & (boxes[:, 1] < 32)
    assert inside.any() and (heights[inside] == full_h[inside]).all()


@pytest.mark.parametrize("mode", MODES)
def test_prob_zero_leaves_the_inputs_untouched(mode: str) -> None:
    images, labels = _batch(5)
    original = images.clone()
    settings = MixSettings(prob=0.0, mode=mode, label_smoothing=0.0)  # type: ignore[arg-type]
    out, soft, params = mix_batch(images, labels, num_classes=5, settings=settings, generator=_gen())
    assert not params.applied
    assert torch.equal(out, original)
    assert torch.equal(soft, torch.nn.functional.one_hot(labels, 5).float())


def test_draws_follow_beta_and_prob() -> None:
    settings = MixSettings(mixup_alpha=0.5, cutmix_alpha=0.0, prob=0.3, mode="elem")
    params = draw_mix_params(20000, (8, 8), settings, _gen(9))
    mixed = params.lam < 1.0
    assert abs(float(mixed.double().mean()) - 0.3) < 0.02
    lam = params.lam[mixed]
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert abs(float(lam.mean()) - 0.5) < 0.02
    assert abs(float(lam.var()) - 1 / (4 * 2.0)) < 0.01
    both = draw_mix_params(20000, (8, 8), MixSettings(switch_prob=0.25, mode="elem"), _gen(9))
    assert abs(float(both.use_cutmix.double().mean()) - 0.25) < 0.02


# ----------------------------------------------------------------------------- odd batches
@pytest.mark.parametrize("n", [1, 3, 7])
def test_pair_mode_with_an_odd_batch_leaves_the_middle_sample_alone(n: int) -> None:
    images, labels = _batch(n)
    original = images.clone()
    settings = MixSettings(mode="pair", label_smoothing=0.0)
    out, soft, params = mix_batch(images, labels, num_classes=5, settings=settings, generator=_gen(n))
    middle = n // 2
    assert float(params.lam[middle]) == 1.0 and not bool(params.use_cutmix[middle])
    assert torch.equal(out[middle], original[middle])
    assert torch.equal(soft[middle], torch.nn.functional.one_hot(labels[middle], 5).float())
    # Partners share one draw.
    assert torch.equal(params.lam, params.lam.flip(0)) and torch.equal(params.boxes, params.boxes.flip(0))


# ----------------------------------------------------------------------------- timm parity
def _timm_params(mixer: Mixup, shape: tuple[int, ...], mode: str) -> MixParams:
    """Replay timm's own draws (same numpy calls, same order) into stoker's per-sample params."""
    n = shape[0]
    if mode == "batch":
        lam, use_cutmix = mixer._params_per_batch()
        box = (0, 0, 0, 0)
        if use_cutmix and lam != 1.0:
            box, lam = cutmix_bbox_and_lam(shape, lam, ratio_minmax=mixer.cutmix_minmax, correct_lam=mixer.correct_lam)
        cut = bool(use_cutmix and lam != 1.0)
        return MixParams(torch.full((n,), float(lam), dtype=torch.float64), torch.full((n,), cut),
                         torch.tensor([[int(v) for v in box]] * n), "batch")
    count = n // 2 if mode == "pair" else n
    lams, use = mixer._params_per_elem(count)
    lam_rows, boxes = [], []
    for i in range(count):
        lam, box = float(lams[i]), (0, 0, 0, 0)
        if lam != 1.0 and use[i]:
            box, lam = cutmix_bbox_and_lam(shape[1:], lam, ratio_minmax=mixer.cutmix_minmax,
                                           correct_lam=mixer.correct_lam)
        lam_rows.append(float(np.float32(lam)))  # timm keeps per-element lambdas in float32
        boxes.append([int(v) for v in box])
    lam_t = torch.tensor(lam_rows, dtype=torch.float64)
    use_t = torch.tensor(use, dtype=torch.bool) & (lam_t < 1.0)
    box_t = torch.tensor(boxes, dtype=torch.long).view(count, 4)
    if mode == "pair":
        lam_t, use_t, box_t = torch.cat([lam_t, lam_t.flip(0)]), torch.cat([use_t, use_t.flip(0)]), \
            torch.cat([box_t, box_t.flip(0)])
    return MixParams(lam_t, use_t, box_t, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "config",
    [
        {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5},
        {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
        {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
        {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "cutmix_minmax": (0.3, 0.8)},
    ],
    ids=["both", "mixup", "cutmix", "minmax"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_images_and_targets_as_timm_for_the_same_draws(mode: str, config: dict, seed: int) -> None:
    images, labels = _batch(8, shape=(3, 14, 18), classes=10, seed=seed)
    mixer = Mixup(**config, prob=0.9, mode=mode, label_smoothing=0.1, num_classes=10)
    np.random.seed(seed)
    params = _timm_params(mixer, tuple(images.shape), mode)
    np.random.seed(seed)
    timm_images, timm_targets = mixer(images.clone(), labels.clone())

    ours = mix_inputs_(images.clone(), params)
    lam = float(params.lam[0]) if mode == "batch" else params.lam.float()
    soft = mix_targets(labels, 10, lam, label_smoothing=0.1)
    torch.testing.assert_close(ours, timm_images, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(soft, timm_targets, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- layouts and devices
def test_spectrograms_with_and_without_a_channel_dim_mix_alike() -> None:
    spec, labels = _batch(6, shape=(16, 40))
    settings = MixSettings(mode="elem")
    params = draw_mix_params(6, (16, 40), settings, _gen(4))
    assert params.use_cutmix.any()
    flat = mix_inputs_(spec.clone(), params)
    channel = mix_inputs_(spec.clone()[:, None], params)
    torch.testing.assert_close(channel[:, 0], flat)
    for i in torch.nonzero(params.use_cutmix).flatten().tolist():
        top, bottom, left, right = params.boxes[i].tolist()
        assert torch.equal(flat[i, top:bottom, left:right], spec[5 - i, top:bottom, left:right])


def test_channels_last_gives_the_same_values() -> None:
    images, _ = _batch(4, shape=(3, 8, 8))
    params = draw_mix_params(4, (8, 8), MixSettings(mode="elem"), _gen(2))
    dense = mix_inputs_(images.clone(), params)
    cl = mix_inputs_(images.clone().contiguous(memory_format=torch.channels_last), params)
    torch.testing.assert_close(cl, dense)


def test_soft_input_targets_are_smoothed_and_mixed() -> None:
    target = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    soft = mix_targets(target, 2, torch.tensor([0.5, 0.5]), label_smoothing=0.0)
    torch.testing.assert_close(soft, torch.tensor([[0.625, 0.375], [0.625, 0.375]]))


def test_seeds_differ_by_rank_and_draw_and_repeat() -> None:
    seeds = {seed_for(0, rank, draw) for rank in range(4) for draw in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert seed_for(3, 1, 2) == seed_for(3, 1, 2) != seed_for(3, 2, 1)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu_without_host_sync(mode: str) -> None:
    images, labels = _batch(9, shape=(3, 32, 32), classes=10)
    settings = MixSettings(mode=mode)  # type: ignore[arg-type]
    cpu_images, cpu_soft, _ = mix_batch(images.clone(), labels, num_classes=10, settings=settings, generator=_gen(1))
    gpu_images, gpu_labels = images.cuda(), labels.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, soft, _ = mix_batch(gpu_images, gpu_labels, num_classes=10, settings=settings, generator=_gen(1),
                                 check_range=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out.cpu(), cpu_images)
    torch.testing.assert_close(soft.cpu(), cpu_soft)


# ----------------------------------------------------------------------------- errors
def test_labels_out_of_range_are_named() -> None:
    images, _ = _batch(4)
    with pytest.raises(ValueError, match=r"label 5 under 'label' is outside \[0, 5\): num_classes=5 is too small"):
        mix_batch(images, torch.tensor([0, 1, 5, 2]), num_classes=5, settings=MixSettings(), generator=_gen())
    with pytest.raises(ValueError, match=r"label -1 under 'y' is outside"):
        mix_targets(torch.tensor([-1, 0]), 3, 0.5, key="y")


def test_integer_inputs_are_refused() -> None:
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"integer images \(torch.uint8\) under 'image': normalize them to float"):
        mix_batch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), labels, num_classes=2, settings=MixSettings(),
                  generator=_gen(), input_key="image")
    with pytest.raises(TypeError, match=r"cannot mix integer inputs \(torch.int64\) under 'input_ids': token ids"):
        mix_batch(torch.zeros(2, 3, 7, dtype=torch.long), labels, num_classes=2, settings=MixSettings(),
                  generator=_gen(), input_key="input_ids")
    with pytest.raises(ValueError, match=r"got shape \(2, 100\); turn raw audio into a spectrogram first"):
        mix_batch(torch.zeros(2, 100), labels, num_classes=2, settings=MixSettings(), generator=_gen())


def test_bad_targets_are_refused() -> None:
    images, _ = _batch(4)
    with pytest.raises(ValueError, match=r"targets under 'label' \(\(3,\)\) must hold one row per sample"):
        mix_batch(images, torch.zeros(3, dtype=torch.long), num_classes=5, settings=MixSettings(), generator=_gen())
    with pytest.raises(ValueError, match="soft targets under 'label' have 3 classes, expected num_classes=5"):
        mix_targets(torch.full((4, 3), 1 / 3), 5, 0.5)
    with pytest.raises(TypeError, match="must be integer class labels"):
        mix_targets(torch.zeros(4, dtype=torch.bool), 5, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixup_alpha": 0.0, "cutmix_alpha": 0.0}, "MixUp and CutMix are both off"),
        ({"mixup_alpha": -1.0}, "must be >= 0"),
        ({"prob": 1.5}, r"prob is a probability and must lie in \[0, 1\], got 1.5"),
        ({"switch_prob": -0.1}, "switch_prob is a probability"),
        ({"mode": "batches"}, r"mode must be one of \['batch', 'pair', 'elem'\], got 'batches'"),
        ({"label_smoothing": 1.0}, r"label_smoothing must lie in \[0, 1\)"),
        ({"cutmix_minmax": (0.8, 0.2)}, r"0 < min < max <= 1, got \(0.8, 0.2\)"),
    ],
)
def test_invalid_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixSettings(**kwargs)


def test_augmentation_rows_split_prob_between_the_methods() -> None:
    rows = MixSettings(prob=0.8, switch_prob=0.25).augmentation_rows()
    assert [r["augmentation"] for r in rows] == ["MixUp", "CutMix"]
    assert [r["probability"] for r in rows] == pytest.approx([0.6, 0.2])
    assert rows[1]["parameters"]["alpha"] == 1.0 and rows[0]["parameters"]["mode"] == "batch"
    only_cut = MixSettings(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8)).augmentation_rows()
    assert len(only_cut) == 1 and only_cut[0]["parameters"]["minmax"] == [0.2, 0.8]
