"""Regression tests for the seams users of Lightning and litdata report, each shown to fail without stoker's fix.

* Lightning #21938: resumed from a checkpoint written at an epoch's end with loader workers, the next epoch
  replayed epoch 0's permutation (the loader's iterator, and its workers, start before ``set_epoch``). stoker's
  DataModules keep the training sampler's state in the checkpoint and start the new sampler from it.
* Lightning #21447: a custom sampler was wrapped in ``DistributedSamplerWrapper`` and reshuffled. stoker's
  samplers are ``DistributedSampler`` subclasses, so ``use_distributed_sampler`` true or false gives the
  same order, for the plain and the class-balanced (``ImbalancedDataModule``) samplers.
* litdata #775: a streaming loader's position was not restored through ``Trainer.fit(ckpt_path=...)``, only
  by calling ``load_state_dict`` by hand. stoker's streams resume through Lightning's own checkpoint path.

Each test runs the broken variant too (``NAME!BREAK`` in tests/scripts/resume_run.py takes the safeguard
out) and requires the check to fail on it, so a test that could not fail would show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_image_tree
from tests.datamodules.test_resume import _command, _finish, _records, _start, check_kill_and_resume


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("seams-data")
    write_image_tree(base / "images", {"a": 13, "b": 11, "c": 13}, size=(16, 16))
    from tests.datamodules.test_text_datamodule import rows, write_csv

    for part in range(4):  # a stream reads whole files per worker
        write_csv(base / "stream" / f"part{part}.csv", rows(16, offset=100 * part, seed=part))
    write_csv(base / "stream" / "validation.csv", rows(12, offset=1000))
    return {"images": base / "images", "stream": base / "stream"}


@pytest.mark.slow
def test_lightning_21938_an_epoch_end_checkpoint_with_workers_resumes_on_the_next_epochs_order(
        tmp_path: Path, data: dict[str, Path]) -> None:
    check_kill_and_resume(tmp_path / "fixed", "image", data["images"], ranks=1, workers=2, at_epoch_end=True)
    with pytest.raises(AssertionError, match="repeated or skipped samples"):
        check_kill_and_resume(tmp_path / "broken", "image!forget_sampler_state", data["images"], ranks=1, workers=2,
                              at_epoch_end=True)


@pytest.mark.slow
def test_litdata_775_a_stream_position_comes_back_through_trainer_fit_ckpt_path(tmp_path: Path,
                                                                                 data: dict[str, Path]) -> None:
    check_kill_and_resume(tmp_path / "fixed", "text_stream", data["stream"], ranks=1, workers=2)
    with pytest.raises(AssertionError, match="repeated or skipped samples"):
        check_kill_and_resume(tmp_path / "broken", "text_stream!ignore_loader_state", data["stream"], ranks=1,
                              workers=2)


def _order(tmp_path: Path, name: str, data: Path, *extra: str) -> dict[int, list[list[str]]]:
    out = tmp_path / "-".join([name.replace(":", "_").replace("!", "_"), *[e.strip("-") for e in extra]])
    _finish(_start(_command(name, data, out, 2, 0, *extra), out), out)
    return {rank: [r["ids"] for r in records] for rank, records in _records(out, 2).items()}


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_21447_stoker_samplers_keep_their_order_whatever_use_distributed_sampler_says(
        tmp_path: Path, data: dict[str, Path]) -> None:
    for name in ("image", "imbalanced"):
        kept = _order(tmp_path, name, data["images"])
        assert kept == _order(tmp_path, name, data["images"], "--no-distributed-sampler"), name
    wrapped = _order(tmp_path, "image!plain_sampler", data["images"])
    unwrapped = _order(tmp_path, "image!plain_sampler", data["images"], "--no-distributed-sampler")
    assert wrapped != unwrapped, "a sampler Lightning wraps is reshuffled: the check above would see it"
