"""The map-style language-model dataset: item ``i`` is row ``i`` of a :class:`~stoker.data.lm.packing.PackPlan`.

A row is a list of pieces ``{"input_ids", "labels"?, "mlm_seed"?}`` cut from the tokenized examples
(a datasets ``Dataset``, memory-mapped from the cache); :class:`~stoker.data.lm.collate.LMCollate`
turns a list of rows into a batch. Fetching a list of rows (a batch sampler's batch, or the loader's
``__getitems__``) reads every example it needs in one datasets call.

Masked-LM pieces carry their masking seed, ``derive_seed(seed, "mlm", rank, epoch, row, piece)``,
with the epoch read from the training sampler's shared counter: the same piece is masked the same
way in a resumed run and differently in every epoch and on every rank.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from stoker.data.lm.packing import PackPlan
from stoker.seeds import derive_seed, reseed_worker


class PackedRows(Dataset):
    """Rows of a pack plan over tokenized examples.

    Args:
        examples: Tokenized examples with an ``input_ids`` column (and ``labels`` for SFT), in plan order.
        plan: Which pieces each row holds.
        labels: Read the ``labels`` column (SFT) instead of using the tokens as their own labels.
        mlm_seed: The run's seed for masked-LM pieces (``None``: no masking).
        rank: This rank, for the masking seed.
    """

    def __init__(self, examples: Any, plan: PackPlan, *, labels: bool = False, mlm_seed: int | None = None,
                 rank: int = 0) -> None:
        self.examples, self.plan, self.labels = examples, plan, labels
        self._columns = examples.select_columns(["input_ids", "labels"] if labels else ["input_ids"])
        self.mlm_seed, self.rank = mlm_seed, rank
        self.epoch_counter: Any = None  # the training sampler's shared epoch (set by the DataModule)

    def __len__(self) -> int:
        return len(self.plan)

    def lengths(self) -> list[int]:
        """Tokens in every row (before padding), for token budgets."""
        return [int(n) for n in self.plan.row_lengths()]

    def __getitem__(self, index: int | list[int]) -> Any:
        if isinstance(index, int):
            return self.__getitems__([index])[0]
        return self.__getitems__(list(index))

    def __getitems__(self, indices: list[int]) -> list[list[dict[str, Any]]]:
        reseed_worker()
        rows = [self.plan.row(int(i)) for i in indices]
        wanted = sorted({int(example) for row in rows for example in row[:, 0]})
        fetched = self._columns[wanted] if wanted else {"input_ids": [], "labels": []}
        where = {example: k for k, example in enumerate(wanted)}
        epoch = 0 if self.epoch_counter is None else int(self.epoch_counter.value)
        out = []
        for index, row in zip(indices, rows):
            pieces = []
            for number, (example, start, end) in enumerate(row.tolist()):
                k = where[example]
                piece: dict[str, Any] = {"input_ids": fetched["input_ids"][k][start:end]}
                if self.labels:
                    piece["labels"] = fetched["labels"][k][start:end]
                if self.mlm_seed is not None:
                    piece["mlm_seed"] = derive_seed(self.mlm_seed, "mlm", self.rank, epoch, int(index), number)
                pieces.append(piece)
            out.append(pieces)
        return out
