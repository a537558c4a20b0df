"""Which attention implementations can keep packed examples apart, and what each needs from the batch.

* ``"eager"``, ``"sdpa"``, ``"flex_attention"`` take the 4-D block-diagonal mask of
  :func:`stoker.data.lm.packing.block_attention_mask` (transformers passes a 4-D mask through
  unchanged): ``"mask"``.
* Flash-attention kernels (``"flash_attention_2"``, ``"flash_attention_3"``, hub kernels named
  ``...flash...``) take the varlen boundaries ``cu_seq_lens_q/k``/``max_length_q/k`` of a flattened
  batch: ``"varlen"``. They need a CUDA device; on a CPU use SDPA or eager.
* Anything else (paged attention, custom kernels) is refused: nothing guarantees it reads either.

The model itself must take ``position_ids`` and build its masks through transformers' attention
interface (``_supports_attention_backend``): older architectures with hand-written masks would
silently turn the 4-D mask into something else.
"""

from __future__ import annotations

import inspect
from typing import Any

from stoker.data.lm.collate import Attention

MASK_ATTENTION: tuple[str, ...] = ("eager", "sdpa", "flex_attention")
# Absolute position embeddings that number positions from padding_idx + 1 (transformers' RoBERTa family).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod", "roberta-prelayernorm", "mpnet",
                     "esm")
WORKING = ("attn_implementation='sdpa' or 'eager' (any device; stoker adds a 4-D block-diagonal mask), "
           "'flash_attention_2' (CUDA; stoker passes cu_seq_lens), or packing='none'")


def find_hf_model(module: Any) -> Any:
    """The first transformers ``PreTrainedModel`` inside ``module`` (itself included), or ``None``."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - the text extra is missing
        return None
    if module is None:
        return None
    if isinstance(module, PreTrainedModel):
        return module
    modules = getattr(module, "modules", None)
    if modules is None:
        return None
    return next((m for m in modules() if isinstance(m, PreTrainedModel)), None)


def attention_kind(implementation: str) -> Attention | None:
    """``"mask"`` or ``"varlen"`` for an implementation that can keep packed examples apart, else ``None``."""
    if implementation in MASK_ATTENTION:
        return "mask"
    if "flash" in implementation and "paged" not in implementation:
        return "varlen"
    return None


def packing_attention(packing: str, attn_implementation: str, model: Any = None) -> tuple[Attention, int]:
    """``(attention kind, first position id)`` the batches of ``packing`` need for ``model``.

    Args:
        packing: ``"none"``, ``"bfd"`` or ``"padding_free"``.
        attn_implementation: ``"auto"`` (read it from ``model``; ``"sdpa"`` without one) or an implementation name.
        model: The transformers model (or a module holding one), if known.

    Raises:
        ValueError: The implementation cannot keep packed examples apart, the model takes no ``position_ids`` or
            builds its own masks, or the implementation given disagrees with the model's; the message names the
            settings that work.
    """
    hf = find_hf_model(model)
    config = getattr(hf, "config", None)
    own = getattr(config, "_attn_implementation", None)
    start = int(getattr(config, "pad_token_id", 1) or 1) + 1 if getattr(config, "model_type", "") in \
        _OFFSET_POSITIONS else 0
    if packing == "none":
        return "none", start
    chosen = own if attn_implementation == "auto" else attn_implementation
    chosen = chosen or "sdpa"
    if own is not None and attn_implementation != "auto" and own != attn_implementation:
        raise ValueError(f"attn_implementation={attn_implementation!r} was given to the DataModule, but the model "
                         f"runs {own!r}; set the same on both (LanguageModel(attn_implementation=...)) or 'auto'")
    kind = attention_kind(chosen)
    if kind is None:
        raise ValueError(f"packing={packing!r} cannot keep examples apart with attention implementation {chosen!r}: "
                         f"nothing guarantees it reads a block-diagonal mask or varlen boundaries. Use {WORKING}")
    if hf is not None:
        name = type(hf).__name__
        if "position_ids" not in inspect.signature(hf.forward).parameters:
            raise ValueError(f"{name} takes no position_ids, so packed examples cannot restart their positions; "
                             "use packing='none' (dynamic padding) or another architecture")
        if not getattr(hf, "_supports_attention_backend", False):
            raise ValueError(f"{name} builds its own attention masks (it does not use transformers' attention "
                             f"interface), so a packed row's examples would see each other; use packing='none'")
    return kind, start
