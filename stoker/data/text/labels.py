"""A text source's classes: the distinct training labels, their ids, and the labels other splits add.

Read without tokenizing anything: local files through pyarrow, a hub or saved dataset through its
features (a ``ClassLabel``'s names) or its training split's label column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stoker._imports import require
from stoker.data.cache import library_cache
from stoker.data.sources.hf import HF_PREFIX
from stoker.data.text.files import check_columns, kind_of, local_data_files, normalize_label, read_local_table
from stoker.data.text.hf import load_raw, load_saved


def label_values(source: str, label_field: str, *, subset: str | None = None, revision: str | None = None,
                 cache_dir: str | None = None, text_fields: Sequence[str] = ()) -> tuple[list[str] | None, list[Any]]:
    """``(ClassLabel names or None, distinct training label values)`` without tokenizing anything.

    Local files are read with pyarrow, one file at a time; a hub dataset's ClassLabel names come from
    its builder info (a saved dataset's from its features), and only string labels need the training
    split's label column. ``text_fields`` name the text columns when a file turns out malformed (the
    reader reads every column of a JSON file).

    Raises:
        ValueError: Labels that mix numbers and strings (the message names a row of each), or unreadable files.
    """
    require("text", "HFTextDataModule")
    local = local_data_files(source)
    if local is not None:
        builder, files = local
        values: set[Any] = set()
        kinds: dict[str, str] = {}
        for f in files.get("train", []):
            for row, value in enumerate(read_local_table(builder, f, [label_field], text_fields).column(0).to_pylist()):
                value = normalize_label(value)
                if value is not None:
                    kinds.setdefault(kind_of(value), f"{f}, row {row}")
                    values.add(value)
        if len(kinds) > 1:
            raise ValueError(f"the label column {label_field!r} mixes types: " + "; ".join(
                f"a {kind} at {where}" for kind, where in kinds.items()) + ". Give every label one type")
        return None, sorted(values, key=_label_sort_key)
    import datasets

    saved = load_saved(source)
    if saved is not None:
        features = saved["train"].features
    else:
        info = datasets.load_dataset_builder(source.removeprefix(HF_PREFIX), subset, revision=revision,
                                             cache_dir=library_cache(cache_dir, "hf")).info
        features = info.features or {}
    feature = features.get(label_field)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), []
    train = saved["train"] if saved is not None else \
        load_raw(source, subset=subset, revision=revision, cache_dir=cache_dir)["train"]
    check_columns(train.column_names, [label_field], dataset=source, split="train")
    return None, sorted({normalize_label(v) for v in train.unique(label_field)} - {None}, key=_label_sort_key)


def _label_sort_key(value: Any) -> tuple[int, Any]:
    # Integers sort numerically (so 0..K-1 keep their ids), strings alphabetically, never mixed.
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def label_mapping(class_label_names: list[str] | None, values: list[Any], class_names: list[str] | None,
                  ) -> tuple[list[str], dict[str, int] | None]:
    """``(class_names, {str(raw value): id})``; ``None`` mapping means the labels are already ClassLabel ids.

    Raises:
        ValueError: ``class_names`` given but some training labels are not among them.
    """
    if class_label_names is not None:
        names = list(class_names) if class_names is not None else class_label_names
        return names, None
    if class_names is None:
        return [str(v) for v in values], {str(v): i for i, v in enumerate(values)}
    mapping = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(v) for v in values} - set(mapping))
    if unknown:
        raise ValueError(f"training labels {unknown[:10]} are not in class_names={list(class_names)}; add them")
    return list(class_names), mapping


def unseen_labels(values: Sequence[Any], mapping: dict[str, int] | None, num_classes: int) -> list[Any]:
    """Label values of a split that training never saw (``None``/-1 = unlabelled, ignored)."""
    labels = {normalize_label(v) for v in values} - {None, -1}
    if mapping is None:
        return sorted(v for v in labels if not 0 <= int(v) < num_classes)
    return sorted((v for v in labels if str(v) not in mapping), key=_label_sort_key)
