"""Tokenizing text for language models: documents with an EOS between them, chats with assistant-only labels.

:class:`LMTokenize` is the batched ``datasets.map`` function of
:class:`~stoker.datamodules.language_model.HFLanguageModelingDataModule` (and of its stream). It
never truncates: rows are cut to fit later, by the packing plan, where every cut is counted.

Chats (``task="sft"``) are rendered with the tokenizer's chat template (or one given as a string).
The loss covers the assistant turns only. A template with ``{% generation %}`` markers gives the
assistant tokens directly (transformers' ``return_assistant_tokens_mask``); any other template is
rendered once per assistant turn: the text the template adds for that turn, after the generation
prompt, is the turn's span, and the tokens overlapping a span are the assistant tokens. A template
whose rendering of a conversation does not start with its rendering of the conversation's first
turns (one that rewrites earlier turns) cannot be split like that, and is refused with the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from stoker.data.text.files import is_missing, wrong_type
from stoker.data.text.hf import LONG_SEQUENCE_WARNING

Task = Literal["causal_lm", "sft", "mlm"]
TASKS: tuple[str, ...] = ("causal_lm", "sft", "mlm")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# Why a row is kept out (counted against max_bad_fraction): the ``problem`` column.
LM_PROBLEMS: tuple[str, ...] = ("missing text", "empty text", "not a conversation", "unknown role", "missing content",
                                "content not text")
PROMPT_ONLY = "prompt only"  # a chat without an assistant turn: skipped and reported, not an error
# An SFT chat truncated to a row that ends before its first assistant token: nothing to learn, skipped.
ASSISTANT_TRUNCATED = "assistant truncated"


def first_target(labels: list[int]) -> int:
    """Index of the first assistant token after position 0 (``-1``: none), from a chat's ``labels``."""
    return next((i for i, t in enumerate(labels) if i > 0 and t != -100), -1)


def target_within(first: int, capacity: int) -> bool:
    """Whether a chat whose first target is at ``first`` keeps one when truncated to ``capacity`` tokens."""
    return 0 < first < capacity
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


def resolve_chat_template(tokenizer: Any, chat_template: str | None, tokenizer_name: str) -> str:
    """The Jinja chat template to render with: the one given, else the tokenizer's.

    Raises:
        ValueError: Neither exists (the message says how to give one).
    """
    if chat_template:
        return chat_template
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one
        own = own.get("default")
    if not own:
        raise ValueError(
            f"tokenizer {tokenizer_name!r} has no chat template, which task='sft' needs to render the messages. "
            "Pass chat_template='...' (a Jinja string, e.g. \"{% for m in messages %}{{ m['role'] }}: "
            "{{ m['content'] }}\\n{% endfor %}\") or use a tokenizer that ships one"
        )
    return str(own)


def check_messages(value: Any) -> str:
    """``""`` for a usable conversation, else the problem (one of :data:`LM_PROBLEMS`), or :data:`PROMPT_ONLY`."""
    if is_missing(value):
        return "missing text"
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return "not a conversation"
    for message in value:
        if not isinstance(message, dict):
            return "not a conversation"
        if message.get("role") not in ROLES:
            return "unknown role"
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return "content not text"  # a number or a list: say so, it is not missing
        if content is None or not content.strip():
            return "missing content"
    if not any(m["role"] == "assistant" for m in value):
        return PROMPT_ONLY
    return ""


def chat_tokens(tokenizer: Any, messages: list[dict[str, Any]], template: str) -> tuple[list[int], list[int]]:
    """``(input_ids, assistant_mask)`` of one conversation rendered with ``template``.

    Raises:
        ValueError: The template rewrites earlier turns when later ones are added (see the module docstring).
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if _GENERATION_TAG.search(template):
        out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(out["input_ids"]), list(out["assistant_masks"])

    def render(turns: list[dict[str, Any]], prompt: bool = False) -> str:
        if not turns:
            return ""
        return str(tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False,
                                                 add_generation_prompt=prompt))

    full = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], prompt=True), render(messages[: i + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise ValueError(
                "the chat template renders a conversation differently from its first turns (it rewrites earlier "
                "turns), so assistant spans cannot be found by rendering turn by turn. Add {% generation %} ... "
                "{% endgeneration %} around the assistant content in the template (transformers' assistant mask), "
                "or pass a chat_template that renders each turn independently"
            )
        spans.append((len(before), len(through)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < end and start < e for s, e in spans)) for start, end in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask


class LMTokenize:
    """The batched ``map`` function: documents or chats to ``input_ids`` (plus ``labels`` for chats).

    Output columns: ``input_ids``; ``length``; ``problem`` (one of :data:`LM_PROBLEMS`,
    :data:`PROMPT_ONLY`, or ``""``); ``row`` (the position in the split, with ``with_indices``);
    for ``task="sft"`` also ``labels`` (``-100`` outside assistant tokens) and ``first_target``
    (index of the first assistant token after position 0, ``-1`` when none).

    Args:
        tokenizer: A fast tokenizer.
        task: ``"causal_lm"``, ``"sft"`` or ``"mlm"``.
        field: The text (or, for SFT, messages) column.
        eos_id: Appended to every causal-LM document that does not already end with it.
        chat_template: The Jinja template for SFT (see :func:`resolve_chat_template`).
        add_special_tokens: Let the tokenizer add its own special tokens (BOS, or [CLS]/[SEP]) to documents.
        split: Split name, for error messages.
        source: Dataset name, for error messages.

    Raises:
        ValueError: Text that is not a string (naming split, row and field), or a chat template that cannot
            give assistant spans.
    """

    def __init__(self, tokenizer: Any, *, task: Task, field: str, eos_id: int | None = None,
                 chat_template: str | None = None, add_special_tokens: bool = True, split: str = "train",
                 source: str = "") -> None:
        self.tokenizer, self.task, self.field, self.eos_id = tokenizer, task, field, eos_id
        # Nothing is truncated here: the packing plan cuts rows to max_length (and counts it), so transformers'
        # "longer than the specified maximum sequence length ... indexing errors" warning would mislead.
        getattr(tokenizer, "deprecation_warnings", {})[LONG_SEQUENCE_WARNING] = True
        self.chat_template, self.add_special_tokens = chat_template, add_special_tokens
        self.split, self.source = split, source

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        values = batch[self.field]
        out = self._chats(values) if self.task == "sft" else self._documents(values, indices)
        out["length"] = [len(ids) for ids in out["input_ids"]]
        if indices is not None:
            out["row"] = list(indices)
        return out

    def _documents(self, values: list[Any], indices: list[int] | None) -> dict[str, list[Any]]:
        problems = [""] * len(values)
        texts: list[str] = []
        for i, value in enumerate(values):
            if is_missing(value) or (isinstance(value, str) and not value.strip()):
                problems[i] = "missing text" if is_missing(value) else "empty text"
            elif not isinstance(value, str):
                where = f"{self.source!r} ({self.split} split), row {indices[i] if indices else i}"
                raise ValueError(wrong_type(where, self.field, value, "text (a string)"))
            else:
                texts.append(value)
        encoded = iter(self.tokenizer(texts, add_special_tokens=self.add_special_tokens)["input_ids"]) if texts \
            else iter(())
        ids: list[list[int]] = []
        for problem in problems:
            tokens = [] if problem else list(next(encoded))
            if tokens and self.task == "causal_lm" and self.eos_id is not None and tokens[-1] != self.eos_id:
                tokens.append(self.eos_id)
            ids.append(tokens)
        return {"input_ids": ids, "problem": problems}

    def _chats(self, values: list[Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "first_target": [], "problem": []}
        assert self.chat_template is not None
        for value in values:
            problem = check_messages(value)
            ids: list[int] = []
            labels: list[int] = []
            if not problem:
                ids, mask = chat_tokens(self.tokenizer, list(value), self.chat_template)
                labels = [t if m else -100 for t, m in zip(ids, mask)]
                if all(t == -100 for t in labels[1:]):
                    problem = PROMPT_ONLY  # the assistant turns rendered to no token
            first = first_target(labels)
            out["input_ids"].append([] if problem else ids)
            out["labels"].append([] if problem else labels)
            out["first_target"].append(first if not problem else -1)
            out["problem"].append(problem)
        return out
