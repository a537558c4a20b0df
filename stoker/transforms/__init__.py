"""Transforms: image presets and device normalization, log-mel features and SpecAugment, MixUp/CutMix."""

from stoker.transforms.audio import LogMelFeatures, spec_augment
from stoker.transforms.image import eval_transform, normalize_uint8, timm_input_config, train_transform
from stoker.transforms.mix_settings import MIX_MODES, MixMode, MixSettings
from stoker.transforms.mixup import (
    MixParams,
    box_area_fraction,
    check_inputs,
    cutmix_boxes,
    draw_mix_params,
    mix_batch,
    mix_inputs_,
    mix_targets,
)

__all__ = [
    "MIX_MODES",
    "LogMelFeatures",
    "MixMode",
    "MixParams",
    "MixSettings",
    "box_area_fraction",
    "check_inputs",
    "cutmix_boxes",
    "draw_mix_params",
    "eval_transform",
    "mix_batch",
    "mix_inputs_",
    "mix_targets",
    "normalize_uint8",
    "spec_augment",
    "timm_input_config",
    "train_transform",
]
