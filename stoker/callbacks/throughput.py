"""DataThroughputMonitor: samples/s, batches/s and tokens/s per rank and over all ranks.

Built on Lightning's :class:`~lightning.fabric.utilities.throughput.Throughput` for the windowed
per-rank rates. What it adds: batches counted by the DataModule (no fixed batch size assumed),
real and padded tokens for token batches, validation time excluded from the clock, rates
summed over ranks from the real per-rank figures (``Throughput`` multiplies one rank's rate by
the world size), and no ``torch.cuda.synchronize()`` per step.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback

from stoker.profiling.counting import first_tensor, samples_in, tokens_in
from stoker.profiling.lightning_compat import publish, trainer_log_every

_FIELDS = ("samples_per_sec", "batches_per_sec", "real_tokens_per_sec", "padded_tokens_per_sec")
_TOTALS = ("samples", "batches", "real_tokens", "padded_tokens", "time_s")


class DataThroughputMonitor(Callback):
    """Logs training throughput per rank and summed over ranks; prints a summary at the end of fit.

    Samples are counted with the DataModule's ``batch_size_of`` (a plain DataLoader: the first
    tensor's leading dimension) and tokens with its ``token_counts``. The clock stops while
    validation runs. Rates are windowed over the last ``window_size`` training steps. Per-rank
    rates are gathered only at log intervals.

    The host clock is read without synchronizing the device: over a window the host cannot run
    further ahead than the device's launch queue allows, so the windowed rate converges on the
    device's (Lightning's own ThroughputMonitor synchronizes every step instead).

    Token counts are exact when batches reach ``on_train_batch_end`` on the host (CPU runs). On an
    accelerator, counting would read device tensors back every step (a synchronization), so the
    batch at each log interval is counted and stands for the window's batches.

    Logged metrics (``r`` is a rank; token metrics only for token batches):

    - ``throughput/samples_per_sec``, ``throughput/batches_per_sec``: summed over ranks
    - ``throughput/real_tokens_per_sec``, ``throughput/padded_tokens_per_sec``: summed over ranks
    - ``throughput/padding_fraction``: padded tokens that are padding, over the window
    - ``throughput/rank{r}/samples_per_sec``: each rank's rate (more than one rank)
    - ``throughput/slowest_rank``: the rank with the fewest samples/s (more than one rank)
    - progress bar: ``samples/s`` (summed over ranks)

    Args:
        window_size: Training steps in the rolling window (at least 2).
        log_every_n_steps: Training steps between logs; ``None`` follows the Trainer's.
        print_summary: Print the end-of-fit summary on rank zero.

    Raises:
        ValueError: When ``window_size`` is below 2 or ``log_every_n_steps`` below 1.
    """

    def __init__(self, *, window_size: int = 20, log_every_n_steps: int | None = None,
                 print_summary: bool = True) -> None:
        super().__init__()
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2 (a rate needs two points), got {window_size}")
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1 or None (the Trainer's), got {log_every_n_steps}")
        self.window_size = window_size
        self.log_every_n_steps = log_every_n_steps
        self.print_summary = print_summary
        self.totals: dict[str, float] = dict.fromkeys(_TOTALS, 0.0)
        self._throughput = Throughput(window_size=window_size)
        self._tokens: deque[tuple[float, float]] = deque(maxlen=window_size)
        self._every = 50
        self._t0: float | None = None
        self._paused_at: float | None = None
        self._sampled_tokens: tuple[int, int] | None = None
        self.history: list[dict[str, float]] = []
        self.summary: str | None = None
        self.final_per_rank: list[dict[str, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._every = self.log_every_n_steps or trainer_log_every(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._throughput.reset()
        self._tokens.clear()
        # A resumed run continues its clock from the checkpointed training time.
        self._t0 = time.perf_counter() - self.totals["time_s"]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._t0 is not None:
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._paused_at is not None and self._t0 is not None:
            self._t0 += time.perf_counter() - self._paused_at  # validation time does not count
            self._paused_at = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._t0 is None:
            return
        totals = self.totals
        totals["time_s"] = time.perf_counter() - self._t0
        totals["samples"] += samples_in(batch, getattr(trainer, "datamodule", None))
        totals["batches"] += 1
        log_now = int(totals["batches"]) % self._every == 0
        counts = self._token_counts(batch, getattr(trainer, "datamodule", None), log_now)
        if counts is not None:
            totals["real_tokens"] += counts[0]
            totals["padded_tokens"] += counts[1]
            self._tokens.append((totals["real_tokens"], totals["padded_tokens"]))
        # Throughput insists on samples >= batches; a batch the DataModule counts as empty would break it.
        self._throughput.update(time=totals["time_s"], batches=int(totals["batches"]),
                                samples=int(max(totals["samples"], totals["batches"])))
        if log_now:
            self._log(trainer, pl_module)

    def _token_counts(self, batch: Any, datamodule: Any, log_now: bool) -> tuple[int, int] | None:
        tensor = first_tensor(batch)
        if tensor is None or tensor.device.type == "cpu":
            return tokens_in(batch, datamodule)
        if log_now or self._sampled_tokens is None:
            self._sampled_tokens = tokens_in(batch, datamodule)
        return self._sampled_tokens

    def window_rates(self) -> dict[str, float]:
        """This rank's rates over the window; until it is full, over the run so far (NaN before any time)."""
        nan = float("nan")
        computed = self._throughput.compute()
        samples = computed.get("device/samples_per_sec", nan)
        batches = computed.get("device/batches_per_sec", nan)
        real = padded = nan
        if batches != batches:  # the window is not full yet: rates since training started
            totals, seconds = self.totals, self.totals["time_s"]
            if seconds <= 0:
                return dict(zip(_FIELDS, (nan, nan, nan, nan)))
            rates = [totals[key] / seconds for key in ("samples", "batches", "real_tokens", "padded_tokens")]
            return dict(zip(_FIELDS, (*rates[:2], *(r if totals["padded_tokens"] else nan for r in rates[2:]))))
        if len(self._tokens) >= 2:
            (real0, padded0), (real1, padded1) = self._tokens[0], self._tokens[-1]
            steps = len(self._tokens) - 1
            padded = (padded1 - padded0) / steps * batches
            real = (real1 - real0) / steps * batches
        return dict(zip(_FIELDS, (samples, batches, real, padded)))

    def _gather(self, trainer: L.Trainer, pl_module: L.LightningModule, values: list[float]) -> list[list[float]]:
        local = torch.tensor(values, dtype=torch.float64, device=pl_module.device)
        return trainer.strategy.all_gather(local).reshape(-1, len(values)).cpu().tolist()

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self._gather(trainer, pl_module, list(self.window_rates().values()))
        if any(value != value for value in rows[0][:2]):
            return  # no training time measured yet (the same on all ranks)
        summed = {name: sum(row[i] for row in rows) for i, name in enumerate(_FIELDS)}
        metrics = {f"throughput/{name}": value for name, value in summed.items() if value == value}
        if summed["padded_tokens_per_sec"] > 0:
            metrics["throughput/padding_fraction"] = 1 - summed["real_tokens_per_sec"] / summed["padded_tokens_per_sec"]
        if len(rows) > 1:
            metrics.update({f"throughput/rank{r}/samples_per_sec": row[0] for r, row in enumerate(rows)})
            metrics["throughput/slowest_rank"] = float(min(range(len(rows)), key=lambda r: rows[r][0]))
        self.history.append(metrics)
        publish(trainer, pl_module, metrics)
        pl_module.log("samples/s", summed["samples_per_sec"], prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self._gather(trainer, pl_module, [self.totals[name] for name in _TOTALS])
        self.final_per_rank = [dict(zip(_TOTALS, row)) for row in rows]
        self.summary = _format_summary(self.final_per_rank)
        if trainer.is_global_zero and self.print_summary:
            print(self.summary, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        totals = state_dict.get("totals", {})
        unknown = sorted(set(totals) - set(_TOTALS))
        if unknown:
            raise ValueError(f"unknown DataThroughputMonitor totals {unknown}; expected keys from {list(_TOTALS)}")
        self.totals.update({key: float(value) for key, value in totals.items()})


def _format_summary(per_rank: list[dict[str, float]]) -> str:
    """End-of-fit throughput over the whole run (validation excluded), per rank and summed."""
    lines = ["stoker DataThroughputMonitor summary (training time only, validation excluded)"]
    rates = []
    for rank, row in enumerate(per_rank):
        seconds = max(row["time_s"], 1e-9)
        rates.append(row["samples"] / seconds)
        text = (f"  rank {rank}: {row['samples']:.0f} samples, {row['batches']:.0f} batches in {row['time_s']:.2f} s: "
                f"{row['samples'] / seconds:.1f} samples/s, {row['batches'] / seconds:.2f} batches/s")
        if row["padded_tokens"] > 0:
            text += (f", {row['real_tokens'] / seconds:.0f} real tokens/s, {row['padded_tokens'] / seconds:.0f} "
                     f"padded tokens/s (padding {100 * (1 - row['real_tokens'] / row['padded_tokens']):.1f}%)")
        lines.append(text)
    if len(per_rank) > 1:
        slowest = min(range(len(rates)), key=lambda r: rates[r])
        lines.append(f"  all ranks: {sum(rates):.1f} samples/s; slowest rank {slowest} "
                     f"({rates[slowest]:.1f} samples/s)")
    return "\n".join(lines)
