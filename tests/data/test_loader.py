"""The loader policy in one place: workers, pinning, the default samplers, StatefulDataLoader, batch checks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data import loader
from stoker.datamodules.base import StokerDataModule
from stoker.samplers import ResumableDistributedSampler


def test_default_workers_divide_the_cores_among_local_ranks(monkeypatch) -> None:
    monkeypatch.setattr(loader, "available_cores", lambda: 16)
    assert loader.default_num_workers(1) == 15
    assert loader.default_num_workers(4) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader.default_num_workers() == 1
    monkeypatch.setattr(loader, "available_cores", lambda: 2)
    assert loader.default_num_workers() == 0


def _build(data, *, train: bool, num_workers: int = 0, rank: int = 0, num_replicas: int = 1, seed: int = 0):
    return loader.build_loader(data, batch_size=4, train=train, num_workers=num_workers, pin_memory=False,
                               persistent_workers=True, prefetch_factor=3 if num_workers else None, seed=seed,
                               rank=rank, num_replicas=num_replicas)


def test_every_loader_is_stateful_with_a_resumable_sampler() -> None:
    data = TensorDataset(torch.arange(10))
    train = _build(data, train=True, num_workers=2)
    assert isinstance(train, StatefulDataLoader) and isinstance(train.sampler, ResumableDistributedSampler)
    assert train.persistent_workers and train.prefetch_factor == 3
    assert len(train) == 2, "10 samples, batch 4: training keeps whole batches only"
    evaluation = _build(data, train=False)
    assert [b[0].tolist() for b in evaluation] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "every sample, in order"
    assert [b[0].tolist() for b in _build(data, train=True)] == [b[0].tolist() for b in _build(data, train=True)]
    other_seed = [b[0].tolist() for b in _build(data, train=True, seed=1)]
    assert [b[0].tolist() for b in _build(data, train=True)] != other_seed


def test_evaluation_under_ddp_sees_every_sample_exactly_once() -> None:
    data = TensorDataset(torch.arange(11))
    seen = [x for rank in range(3) for b in _build(data, train=False, rank=rank, num_replicas=3) for x in b[0].tolist()]
    assert sorted(seen) == list(range(11))


def test_training_under_ddp_gives_equal_disjoint_shares() -> None:
    data = TensorDataset(torch.arange(40))
    shards = [[x for b in _build(data, train=True, rank=r, num_replicas=2) for x in b[0].tolist()] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 20 and not set(shards[0]) & set(shards[1])


def test_resume_from_the_loader_state_yields_exactly_the_rest() -> None:
    data = TensorDataset(torch.arange(24))
    full = [b[0].tolist() for b in _build(data, train=True, num_workers=2)]
    first = _build(data, train=True, num_workers=2)
    iterator = iter(first)
    head = [next(iterator)[0].tolist() for _ in range(2)]
    state = first.state_dict()
    resumed = _build(data, train=True, num_workers=2)
    resumed.load_state_dict(state)
    assert head + [b[0].tolist() for b in resumed] == full


class _Tiny(StokerDataModule):
    input_key = "x"


def test_base_resolves_policy_without_a_trainer_and_uses_train_sampler() -> None:
    dm = _Tiny(batch_size=2, num_workers=0)
    assert dm.pin_memory is False and dm.num_workers == 0 and dm.num_classes is None
    sampler = ResumableDistributedSampler(5, shuffle=False)
    dm.train_sampler = sampler
    assert dm.make_loader(list(range(5)), train=True).sampler is sampler
    assert dm.make_loader(list(range(5)), train=False).sampler is not sampler
    batch = {"x": torch.zeros(3, 2)}
    assert dm.batch_size_of(batch) == 3 and dm.token_counts(batch) is None
    assert dm.device_transform(batch, training=True) is batch  # no image statistics: untouched


def test_batch_size_larger_than_the_training_split_is_an_error_before_training() -> None:
    dm = _Tiny(batch_size=8, num_workers=0)
    with pytest.raises(ValueError, match=r"training split has 5 samples.*batch_size=8.*lower batch_size \(at most 5\)"):
        dm.make_loader(list(range(5)), train=True)
    assert len(dm.make_loader(list(range(5)), train=False)) == 1, "evaluation keeps its one partial batch"


def test_base_validates_arguments() -> None:
    with pytest.raises(ValueError, match="prefetch_factor must be >= 1, got 0"):
        _Tiny(prefetch_factor=0)
