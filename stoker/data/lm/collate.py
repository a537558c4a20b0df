"""Turning planned rows of token pieces into language-model batches ``model(**batch)`` accepts.

The input is a list of rows; a row is a list of pieces ``{"input_ids", "labels"?, "mlm_seed"?}``
(one piece per row without packing). What comes out depends on the packing and on how the model's
attention keeps examples apart (see :mod:`stoker.data.lm.packing`):

* ``attention="none"`` (no packing): rows padded to the longest (a multiple of ``pad_multiple``),
  ``{"input_ids", "attention_mask", "labels"}``;
* ``attention="mask"`` (SDPA, eager, flex): ``bfd`` rows padded and stacked, ``padding_free`` pieces
  flattened into one row, with ``position_ids`` restarting at 0 per piece and a 2-D padding mask that
  the DataModule turns into the 4-D block-diagonal mask on the device (a 4-D mask on the host would
  cost ``L * L`` bytes per row in every worker and every copy);
* ``attention="varlen"`` (flash-attention kernels): every piece of the batch flattened into one row
  with ``position_ids``, ``cu_seq_lens_q/k`` and ``max_length_q/k`` and no padding at all.

Flattening is transformers' ``DataCollatorWithFlattening`` (labels ``-100`` at each piece's first
token, positions restarting per piece, the varlen boundaries). Masked-LM masking is transformers'
``DataCollatorForLanguageModeling.torch_mask_tokens``, applied per piece with a generator seeded by
the piece's ``mlm_seed`` (derived from ``(seed, "mlm", rank, epoch, row)`` by the dataset), so a
resumed run masks exactly as the uninterrupted one, whatever the worker count.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from stoker._imports import require

Attention = Literal["none", "mask", "varlen"]


class LMCollate:
    """Collate rows of pieces into a causal-LM, SFT or masked-LM batch.

    Args:
        pad_id: Token id used for padding.
        attention: ``"none"``, ``"mask"`` or ``"varlen"`` (see the module docstring).
        flatten: Put all pieces of the batch in one row (``padding_free``); ``"varlen"`` always does.
        capacity: Tokens per row: the widest a padded batch gets.
        pad_multiple: Pad widths to a multiple of this (8 suits tensor cores; 1 pads least).
        mlm: A ``DataCollatorForLanguageModeling`` whose masking is applied per piece (``None``: causal/SFT).
        special_ids: Token ids never masked (the tokenizer's special tokens).
        position_start: The position of every example's first token (2 for RoBERTa-style embeddings).
    """

    def __init__(self, *, pad_id: int, attention: Attention, flatten: bool = False, capacity: int = 2048,
                 pad_multiple: int = 8, mlm: Any = None, special_ids: list[int] | None = None,
                 position_start: int = 0) -> None:
        require("text", "LMCollate")
        from transformers import DataCollatorWithFlattening

        self.pad_id, self.attention, self.capacity = pad_id, attention, capacity
        self.flatten = flatten or attention == "varlen"
        self.pad_multiple, self.mlm, self.position_start = max(1, pad_multiple), mlm, position_start
        self.special_ids = torch.tensor(sorted(set(special_ids or [])), dtype=torch.long)
        self._flattener = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100,
                                                     return_flash_attn_kwargs=attention == "varlen",
                                                     position_ids_start=position_start)

    def __call__(self, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
        rows = [[self._piece(piece) for piece in row] for row in rows]
        if self.flatten:
            batch = self._flat([piece for row in rows for piece in row])
            if self.attention != "varlen":
                batch["attention_mask"] = torch.ones_like(batch["input_ids"])
            return batch
        return self._padded(rows)

    def _piece(self, piece: dict[str, Any]) -> dict[str, Any]:
        ids = [int(t) for t in piece["input_ids"]]
        if self.mlm is None:
            return {"input_ids": ids, "labels": list(piece.get("labels") or ids)}
        inputs = torch.tensor(ids, dtype=torch.long)[None]
        special = torch.isin(inputs, self.special_ids)
        self.mlm.generator = torch.Generator().manual_seed(int(piece["mlm_seed"]))
        masked, labels = self.mlm.torch_mask_tokens(inputs, special_tokens_mask=special)
        return {"input_ids": masked[0].tolist(), "labels": labels[0].tolist()}

    def _flat(self, pieces: list[dict[str, Any]]) -> dict[str, Any]:
        batch = dict(self._flattener([{"input_ids": p["input_ids"], "labels": p["labels"]} for p in pieces]))
        if self.mlm is not None:  # masked-LM labels are not shifted: keep every piece's own, first token included
            batch["labels"] = torch.tensor([t for p in pieces for t in p["labels"]], dtype=torch.long)[None]
        return batch

    def _padded(self, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
        flat = [self._flat(row) for row in rows]
        longest = max(int(f["input_ids"].shape[1]) for f in flat)
        width = -(-longest // self.pad_multiple) * self.pad_multiple
        width = max(longest, min(width, self.capacity))  # never wider than a row unless a row already is
        n = len(flat)
        batch = {
            "input_ids": torch.full((n, width), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
            "labels": torch.full((n, width), -100, dtype=torch.long),
        }
        positions = torch.full((n, width), self.position_start, dtype=torch.long)
        for i, f in enumerate(flat):
            size = int(f["input_ids"].shape[1])
            batch["input_ids"][i, :size] = f["input_ids"][0]
            batch["labels"][i, :size] = f["labels"][0]
            batch["attention_mask"][i, :size] = 1
            positions[i, :size] = f["position_ids"][0]
        if self.attention == "mask":  # rows of several examples; without packing the model numbers positions itself
            batch["position_ids"] = positions
        return batch
