"""The one place stoker reaches into Hugging Face ``datasets`` internals, so that a datasets release breaks here.

* ``Dataset._fingerprint``: datasets' hash of a table's content and history, the key of its own
  caches. stoker keys its per-sample caches and the text modules' data fingerprint on it.
* ``Dataset._indices``: the indices mapping that ``select``/``shuffle`` put over the Arrow table.
  Without one, row ``i`` of the dataset is row ``i`` of ``dataset.data``, and the media readers take
  bytes straight from the Arrow arrays (about four times cheaper per sample than ``dataset[i]``).

``tests/data/test_datasets_compat.py`` fails when a datasets release renames either.
"""

from __future__ import annotations

from typing import Any


def fingerprint_of(dataset: Any) -> str:
    """datasets' content fingerprint of a ``Dataset`` (its cache key)."""
    return str(dataset._fingerprint)


def rows_are_table_rows(dataset: Any) -> bool:
    """Whether row ``i`` of ``dataset`` is row ``i`` of its Arrow table (no indices mapping on top).

    ``False`` (the safe answer) when this datasets release has no ``_indices``: callers then go
    through datasets' own row access.
    """
    return hasattr(dataset, "_indices") and dataset._indices is None and dataset.data.num_rows == len(dataset)
