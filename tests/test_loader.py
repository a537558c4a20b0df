"""The loader policy in one place: workers, pinning, seeding, drop_last."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from stoker import loader
from stoker.datamodules.base import StokerDataModule, distributed_padding


def test_default_workers_divide_the_cores_among_local_ranks(monkeypatch) -> None:
    monkeypatch.setattr(loader, "available_cores", lambda: 16)
    assert loader.default_num_workers(1) == 15
    assert loader.default_num_workers(4) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader.default_num_workers() == 1
    monkeypatch.setattr(loader, "available_cores", lambda: 2)
    assert loader.default_num_workers() == 0


def test_seed_worker_seeds_python_and_numpy_from_torch() -> None:
    torch.manual_seed(1234)
    loader.seed_worker(0)
    first = (random.random(), np.random.rand())
    torch.manual_seed(1234)
    loader.seed_worker(0)
    assert (random.random(), np.random.rand()) == first


def test_build_loader_policy() -> None:
    data = TensorDataset(torch.arange(10))
    train = loader.build_loader(data, batch_size=4, train=True, num_workers=2, pin_memory=False,
                                persistent_workers=True, prefetch_factor=3, seed=0)
    assert train.drop_last and train.persistent_workers and train.prefetch_factor == 3
    assert isinstance(train.sampler, torch.utils.data.RandomSampler)
    evaluation = loader.build_loader(data, batch_size=4, train=False, num_workers=0, pin_memory=False,
                                     persistent_workers=True, prefetch_factor=3, seed=0)
    assert not evaluation.drop_last and isinstance(evaluation.sampler, torch.utils.data.SequentialSampler)
    again = loader.build_loader(data, batch_size=4, train=True, num_workers=0, pin_memory=False,
                                persistent_workers=True, prefetch_factor=3, seed=0)
    twice = loader.build_loader(data, batch_size=4, train=True, num_workers=0, pin_memory=False,
                                persistent_workers=True, prefetch_factor=3, seed=0)
    assert [b[0].tolist() for b in again] == [b[0].tolist() for b in twice], "the seed fixes the order"


class _Tiny(StokerDataModule):
    input_key = "x"


def test_base_resolves_policy_without_a_trainer_and_uses_train_sampler() -> None:
    dm = _Tiny(batch_size=2, num_workers=0)
    assert dm.pin_memory is False and dm.num_workers == 0 and dm.num_classes is None
    sampler = torch.utils.data.SequentialSampler(range(5))
    dm.train_sampler = sampler
    assert dm.make_loader(list(range(5)), train=True).sampler is sampler
    assert dm.make_loader(list(range(5)), train=False).sampler is not sampler
    batch = {"x": torch.zeros(3, 2)}
    assert dm.batch_size_of(batch) == 3 and dm.token_counts(batch) is None
    assert dm.device_transform(batch, training=True) is batch  # no image statistics: untouched


@pytest.mark.parametrize(("n", "ranks", "padding"), [(10, 2, 0), (11, 2, 1), (11, 4, 1), (5, 8, 3), (7, 1, 0)])
def test_distributed_padding(n: int, ranks: int, padding: int) -> None:
    assert distributed_padding(n, ranks) == padding


def test_base_validates_arguments() -> None:
    with pytest.raises(ValueError, match="prefetch_factor must be >= 1, got 0"):
        _Tiny(prefetch_factor=0)
