"""Apply a torchvision v2 pipeline with one sample's own random generator, safely from many threads.

torchvision's random transforms draw from torch's global generator, one per process. That is fine
in a DataLoader worker process, but threads share it: two threads transforming at once would take
each other's draws, so neither the crops nor a resumed run could be reproduced. stoker therefore
draws every sample's randomness from a generator of its own (seeded from ``(seed, epoch, sample)``,
:class:`stoker.seeds.SampleSeeding`), and :func:`apply_seeded` walks the pipeline:

* the transforms of stoker's presets whose randomness is a few parameters (``RandomResizedCrop``,
  ``RandomHorizontalFlip``/``RandomVerticalFlip``) get those parameters from the sample's generator,
  drawn here the way torchvision draws them, and run their (expensive) pixel work in parallel;
* deterministic transforms (resize, center crop) simply run;
* any other transform (RandAugment, TrivialAugment, AutoAugment, RandomErasing, one of your own) runs
  under one lock with the global generator seeded from the sample's generator and restored after, so
  it stays reproducible, at the price of running one sample at a time.

The same function serves process workers, so both backends give the same tensors for a sample.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
from torchvision.transforms import v2

_GLOBAL_RNG = threading.Lock()  # guards torch's global generator for the transforms that use it
_DETERMINISTIC = (v2.Resize, v2.CenterCrop, v2.Identity, v2.ToDtype, v2.ToPureTensor, v2.Normalize, v2.Grayscale,
                  v2.RGB, v2.Pad)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _integer(generator: torch.Generator, high: int) -> int:
    """A uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def resized_crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                        generator: torch.Generator) -> dict[str, int]:
    """The window of a random-resized crop (Szegedy et al., 2015): ``{"top", "left", "height", "width"}``.

    Up to ten tries of an area drawn uniformly from ``scale`` of the image and an aspect ratio drawn
    log-uniformly from ``ratio``, at a uniform position; when none fits, the whole image cropped to the
    nearest allowed aspect ratio, centred (torchvision's rule).
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(generator, scale[0], scale[1])
        aspect = math.exp(_uniform(generator, log_low, log_high))
        crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top, left = _integer(generator, height - crop_h + 1), _integer(generator, width - crop_w + 1)
            return {"top": top, "left": left, "height": crop_h, "width": crop_w}
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, round(height * max(ratio))
    else:
        crop_w, crop_h = width, height
    return {"top": (height - crop_h) // 2, "left": (width - crop_w) // 2, "height": crop_h, "width": crop_w}


def _size(inputs: Any) -> tuple[int, int]:
    return int(inputs.shape[-2]), int(inputs.shape[-1])


def apply_seeded(transform: Any, inputs: Any, generator: torch.Generator) -> Any:
    """``transform(inputs)`` with every random draw taken from ``generator`` (see the module).

    Args:
        transform: A torchvision v2 transform or ``v2.Compose`` (``None``: no transform).
        inputs: A CHW image tensor (what stoker's decoders return).
        generator: The sample's own generator.
    """
    if transform is None:
        return inputs
    if isinstance(transform, v2.Compose):
        for step in transform.transforms:
            inputs = apply_seeded(step, inputs, generator)
        return inputs
    if isinstance(transform, v2.RandomResizedCrop) and isinstance(inputs, torch.Tensor):
        params = resized_crop_params(*_size(inputs), tuple(transform.scale), tuple(transform.ratio), generator)
        return transform.transform(inputs, params)
    if isinstance(transform, v2.RandomHorizontalFlip | v2.RandomVerticalFlip):
        if float(torch.rand((), generator=generator)) >= transform.p:
            return inputs
        return transform.transform(inputs, {})
    if isinstance(transform, _DETERMINISTIC):
        return transform(inputs)
    seed = int(torch.randint(2**62, (), generator=generator))
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(inputs)
