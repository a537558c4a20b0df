"""A stream's saved position on another number of ranks: fine at an epoch's boundary, refused by name mid-epoch."""

from __future__ import annotations

import pytest

from stoker.data.stream_shares import WorkerShares


def _shares(num_batches: int, rank: int = 0) -> WorkerShares:
    return WorkerShares(num_batches=num_batches, batch_size=4, settings={"seed": 0, "rank": rank,
                                                                          "num_batches": num_batches})


def _saved(num_batches: int, epoch: int, yielded: int) -> dict[str, object]:
    return {"epoch": epoch, "yielded": yielded, "workers": 1, "seed": 0, "rank": 0, "num_batches": num_batches,
            "batch_size": 4}


def test_an_epoch_boundary_resumes_on_other_ranks_with_this_runs_shares() -> None:
    # 2 ranks had 6 batches each; 1 rank has 12. A finished epoch 3 leads to epoch 4, from its start.
    shares = _shares(12)
    shares.restore(_saved(6, epoch=3, yielded=24), what="this stream")
    claim = shares.claim()
    assert (claim.epoch, claim.start, claim.quota, claim.resumed) == (4, 0, 48, None)
    fresh = _shares(12)
    fresh.restore(_saved(6, epoch=3, yielded=0), what="this stream")
    claim = fresh.claim()
    assert (claim.epoch, claim.start) == (3, 0)


def test_the_middle_of_an_epoch_on_other_ranks_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"in the middle of an epoch with other loader workers or ranks \(the "
                                         r"checkpoint has num_batches=6, this run has num_batches=12\)"):
        _shares(12).restore(_saved(6, epoch=3, yielded=8), what="this stream")
    with pytest.raises(ValueError, match="checkpoint has seed=0, this run has seed=1"):
        WorkerShares(num_batches=6, batch_size=4, settings={"seed": 1, "rank": 0, "num_batches": 6}).restore(
            _saved(6, epoch=3, yielded=24), what="this stream")
    same = _shares(6)
    same.restore(_saved(6, epoch=3, yielded=8), what="this stream")  # the same ranks: it continues
    claim = same.claim()
    assert (claim.epoch, claim.start) == (3, 8)
