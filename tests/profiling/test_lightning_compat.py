"""The one module that wraps Lightning internals must keep working on the supported Lightning release.

If a Lightning upgrade removes the fetch span the starvation monitor wraps, the monitor would fall
back to the coarser hook gap without a word; this test fails instead.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from stoker.profiling.lightning_compat import trainer_log_every, unwrap_fetch, wrap_fetch


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_the_fetch_span_is_wrapped_on_this_lightning_and_times_every_fetch() -> None:
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    marks: list[str] = []
    handle = wrap_fetch(trainer, lambda: marks.append("start"), lambda: marks.append("end"))
    assert handle is not None, f"Lightning {L.__version__} no longer has the train_dataloader_next span"
    loader = DataLoader(TensorDataset(torch.zeros(6, 1)), batch_size=2)
    trainer.fit(_Tiny(), train_dataloaders=loader)
    # 3 batches per epoch, each fetch bracketed, plus the fetch that finds each epoch's end.
    assert marks.count("start") == marks.count("end") >= 6
    assert marks[:2] == ["start", "end"]
    unwrap_fetch(handle)
    loop = trainer.fit_loop.epoch_loop
    assert "_on_before_fetch" not in loop.__dict__ and "_on_after_fetch" not in loop.__dict__
    assert trainer_log_every(trainer) == 50
