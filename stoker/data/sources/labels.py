"""Labels as sources give them (class names, integers, lists of either, ``a;b`` strings) turned into class indices.

One set of rules for every reader (tables, Hugging Face datasets, WebDataset), so a label means
the same wherever it comes from:

* ``class_names`` given (or a ``ClassLabel``'s names): a label is one of those names, or an
  integer index into them;
* otherwise integer labels are indices, and the classes are ``"0"`` .. ``str(max)``; string labels
  are names, and the classes are the sorted distinct names;
* a missing label (``None``, NaN, ``""``, ``-1`` as Hugging Face writes "no label") or one outside the
  classes is a bad row: named, counted and left out, never a class of its own;
* multi-label: a list of names or integers, or one string of names separated by ``;``; the
  classes are collected the same way, and a row becomes the sorted tuple of its class indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

Label = int | tuple[int, ...]
MULTI_LABEL_SEPARATOR = ";"


def is_missing(value: Any) -> bool:
    """``None``, NaN (pandas' empty cell), an empty or blank string, or ``-1`` (Hugging Face's "no label")."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == -1


def _scalar(value: Any) -> Any:
    # Integral floats are integers (pandas reads an int column with gaps as float); bytes are text.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.strip() if isinstance(value, str) else value


def label_parts(value: Any, *, multi_label: bool) -> list[Any] | None:
    """The labels of one row as a list (one item unless ``multi_label``), or ``None`` when missing."""
    if multi_label:
        if isinstance(value, str):
            parts: list[Any] = [part for part in value.split(MULTI_LABEL_SEPARATOR) if part.strip()]
        elif isinstance(value, list | tuple):
            parts = list(value)
        elif is_missing(value):
            return None
        else:
            parts = [value]
        parts = [_scalar(part) for part in parts if not is_missing(part)]
        return parts or None
    if isinstance(value, list | tuple):
        return [value]  # refused by LabelMap with a hint at multi_label
    return None if is_missing(value) else [_scalar(value)]


def infer_class_names(values: Iterable[Any], *, multi_label: bool, where: str) -> list[str]:
    """The class list that raw label ``values`` imply (see the module).

    Raises:
        ValueError: Labels that mix numbers and names, negative integers, or list labels without ``multi_label``.
    """
    names: set[str] = set()
    numbers: set[int] = set()
    for value in values:
        for part in label_parts(value, multi_label=multi_label) or []:
            if isinstance(part, list | tuple):
                raise ValueError(f"{where}: a label is a list ({part!r:.60}); set multi_label=True for multi-label "
                                 "data")
            if isinstance(part, bool) or not isinstance(part, int | str):
                raise ValueError(f"{where}: a label is a {type(part).__name__} ({part!r:.60}); expected class names "
                                 "or integer class indices")
            if isinstance(part, int):
                if part < 0:
                    raise ValueError(f"{where}: label {part} is negative; class indices start at 0 (-1 means "
                                     "'no label')")
                numbers.add(part)
            else:
                names.add(part)
    if names and numbers:
        raise ValueError(f"{where}: labels mix class names ({sorted(names)[:3]}) and integers ({sorted(numbers)[:3]}); "
                         "give every label one type, or pass class_names to say what the integers mean")
    if numbers:
        return [str(i) for i in range(max(numbers) + 1)]
    return sorted(names)


class LabelMap:
    """Raw label values to class indices under fixed ``class_names`` (see the module).

    Args:
        class_names: The classes, in index order.
        multi_label: Rows hold several labels (a list, or names joined by ``;``).
    """

    def __init__(self, class_names: Sequence[str], *, multi_label: bool = False) -> None:
        self.class_names = list(class_names)
        self.multi_label = multi_label
        self._index = {name: i for i, name in enumerate(self.class_names)}

    def __call__(self, value: Any) -> tuple[Label | None, str | None]:
        """``(label, None)`` for a usable value, ``(None, reason)`` for a bad one."""
        parts = label_parts(value, multi_label=self.multi_label)
        if parts is None:
            return None, "missing label"
        indices: list[int] = []
        for part in parts:
            if isinstance(part, list | tuple):
                return None, f"label {part!r:.40} is a list (set multi_label=True for multi-label data)"
            if isinstance(part, int) and not isinstance(part, bool):
                if not 0 <= part < len(self.class_names):
                    return None, f"label {part} is outside the {len(self.class_names)} classes"
                indices.append(part)
            elif isinstance(part, str) and part in self._index:
                indices.append(self._index[part])
            elif isinstance(part, str) and part.lstrip("-").isdigit() and part not in self._index:
                number = int(part)  # "3" in a CSV is the integer 3 unless a class is named "3"
                if not 0 <= number < len(self.class_names):
                    return None, f"label {part!r} is outside the {len(self.class_names)} classes"
                indices.append(number)
            else:
                return None, f"label {part!r:.40} is not one of the class names"
        if self.multi_label:
            return tuple(sorted(set(indices))), None
        return indices[0], None

    def name_of(self, label: Label) -> str:
        """The class name(s) of a label (multi-label: names joined by ``;``)."""
        if isinstance(label, tuple):
            return MULTI_LABEL_SEPARATOR.join(self.class_names[i] for i in label)
        return self.class_names[label]


def check_class_count(class_names: Sequence[str], *, where: str, found: str) -> None:
    """Refuse fewer than two classes: a one-class classifier learns nothing.

    Args:
        class_names: The classes found.
        where: The source, for the message.
        found: What was found, e.g. ``"one class folder 'images'"``.

    Raises:
        ValueError: Zero or one class, with what was found and how to give labels.
    """
    if len(class_names) >= 2:
        return
    raise ValueError(
        f"{where}: {found}, so there is {'no class' if not class_names else 'a single class ' + repr(class_names[0])}"
        " to tell apart. Expected root/<class>/<files> with at least two class folders (or root/train/<class>/...), "
        "or a table (csv, tsv, jsonl or parquet) with a path column and a label column: pass that table as the "
        "source (path_field/label_field name its columns)"
    )
