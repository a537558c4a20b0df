"""StarvationMonitor: how long the accelerator waits for data, per rank, with a verdict.

The accelerator is starved when it has finished step N and step N+1's work has not been enqueued
yet. On CUDA that gap is read from events on the GPU timeline (:mod:`stoker.profiling.gpu_idle`); on every
run the host side is split into fetch wait, host-to-device transfer and step (:mod:`stoker.profiling.step_clock`).

The fetch wait is measured exactly as Lightning's ``train_dataloader_next`` span, through the one
small module that wraps Lightning internals (:mod:`stoker.profiling.lightning_compat`); where a
Lightning release lacks that span, the gap between batch hooks is the fallback, with the transfer
then counted as fetch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from stoker.callbacks.speed_of_light import SpeedOfLight
from stoker.data.loader import available_cores
from stoker.profiling.attribution import attribution_lines
from stoker.profiling.counting import samples_in
from stoker.profiling.gpu_idle import CudaGapTimer
from stoker.profiling.lightning_compat import FetchWrap, publish, trainer_log_every, unwrap_fetch, wrap_fetch
from stoker.profiling.memory import MemoryUsage, measure_memory
from stoker.profiling.ranks import RANK_FIELDS, RankAggregate, aggregate_ranks, find_stragglers, rank_row
from stoker.profiling.run_summary import summary_folder, write_run_summary
from stoker.profiling.step_clock import PhaseTotals, StepClock
from stoker.profiling.verdicts import LoaderInfo, format_summary, headroom

# Seconds between two memory samples (see StarvationMonitor._sample_memory).
MEMORY_EVERY_S = 15.0


class StarvationMonitor(Callback):
    """Measures how long the accelerator waits for data and says what to change.

    At every log interval each rank's figures over the interval are gathered (the only collective
    this callback issues), logged through the Trainer's loggers and shown in the progress bar.
    At the end of fit the whole run is summarised on rank zero: loading speed, starvation, fetch
    and transfer time per step, each epoch's start-up, memory of the main process and its DataLoader
    workers, the speed of light, stragglers, where the workers spend their time, a verdict
    (input-bound / balanced / compute-bound) and suggestions with numbers.

    Logged metrics (``r`` is a rank, only with more than one rank):

    - ``starvation/fraction``: mean over ranks of GPU idle fraction (CUDA) or host fetch fraction (CPU)
    - ``starvation/fraction_max`` and ``starvation/slowest_rank``: the most starved rank
    - ``starvation/fetch_fraction``: host fetch wait / host step time, mean over ranks
    - ``starvation/gpu_idle_fraction``: idle / (idle + busy) on the GPU timeline (CUDA only)
    - ``starvation/fetch_ms``, ``starvation/transfer_ms``, ``starvation/step_ms``: per step, mean over ranks
      (``transfer`` is the host-to-device copy plus the DataModule's ``on_after_batch_transfer`` work, which
      on a CPU run is all of it: normalization or log-mel spectrograms, no copy)
    - ``starvation/first_batch_s``: latest first-batch latency (worker start-up), mean over ranks
    - ``starvation/speed_of_light_samples_per_sec`` and ``starvation/headroom`` (achievable over measured
      samples/s), once the speed-of-light replay ran
    - ``starvation/fetch_skew`` (worst over median rank's fetch wait) and ``starvation/slowest_node``
    - ``starvation/rank{r}``: each rank's starvation fraction
    - progress bar: ``starved`` (the ``starvation/fraction`` value)

    Args:
        log_every_n_steps: Training steps between exchanges; ``None`` follows the Trainer's.
        max_pending_events: CUDA event pairs allowed to wait for the device before the oldest is
            waited on (see :class:`stoker.profiling.gpu_idle.CudaGapTimer`).
        print_summary: Print the end-of-fit summary on rank zero.
        speed_of_light_steps: Batches kept and replayed once to measure the step with loading free
            (:mod:`stoker.callbacks.speed_of_light`; 0, the default: off).
        speed_of_light_after: Training steps of warm-up before the batches are kept.
        summary_file: Name of the run summary written into the log directory at the end of fit
            (:mod:`stoker.profiling.run_summary`, read by ``stoker compare``); ``None``: none.

    Raises:
        ValueError: When ``log_every_n_steps`` is below 1, or a speed-of-light count is negative.

    Example:
        >>> trainer = L.Trainer(callbacks=[StarvationMonitor()])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        log_every_n_steps: int | None = None,
        max_pending_events: int = 64,
        print_summary: bool = True,
        speed_of_light_steps: int = 0,
        speed_of_light_after: int = 10,
        summary_file: str | None = "stoker_summary.json",
    ) -> None:
        super().__init__()
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1 or None (the Trainer's), got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps
        self.max_pending_events = max_pending_events
        self.print_summary = print_summary
        self.clock = StepClock()
        self._gpu = CudaGapTimer(enabled=False)
        self._patched: FetchWrap | None = None
        self._every = 50
        self._steps = 0
        self._loader = LoaderInfo()
        self._memory = MemoryUsage(0.0, 0.0, 0)
        self._memory_at = -math.inf
        self.history: list[dict[str, float]] = []
        self.final: RankAggregate | None = None
        self.summary: str | None = None
        self.speed_of_light = SpeedOfLight(speed_of_light_steps, speed_of_light_after)
        self.summary_file = summary_file
        self.summary_path: str | None = None
        self.load_profile: dict[str, Any] = {}

    # ----------------------------------------------------------------- wiring
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        on_cuda = trainer.strategy.root_device.type == "cuda"
        self._gpu = CudaGapTimer(max_pending=self.max_pending_events, enabled=on_cuda)
        self._every = self.log_every_n_steps or trainer_log_every(trainer)
        if self._patched is None:
            self._patched = wrap_fetch(trainer, self.clock.fetch_start, self.clock.fetch_end)
        self.speed_of_light.attach(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._patched is not None:
            unwrap_fetch(self._patched)
            self._patched = None
        self.speed_of_light.detach()

    # ----------------------------------------------------------------- training hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The first epoch's loader iterator (and its workers) was created just before this hook.
        self.clock.epoch_start()
        cores = available_cores() // max(1, trainer.num_devices)
        self._loader = LoaderInfo.from_loader(
            _first_loader(trainer.train_dataloader), cores_per_rank=cores, on_cuda=self._gpu.enabled
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0 or self.clock.first_batch_s:
            self.clock.epoch_start()
        self._gpu.break_chain()  # the gap across an epoch boundary is start-up, reported separately

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.clock.batch_start()
        self._gpu.step_start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._gpu.step_end()
        datamodule = getattr(trainer, "datamodule", None)
        self.clock.batch_end(samples_in(batch, datamodule))
        self._steps += 1
        if self.speed_of_light.result is None and self.speed_of_light.step_done(
                trainer, pl_module, lambda b: samples_in(b, datamodule), self):
            self.clock.interrupt()  # the replay ran between two steps: neither a fetch wait nor idle time
            self._gpu.break_chain()
        if self._steps % self._every == 0:
            self._log(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation's device work and its own loader fall between two training steps: neither is
        # a training fetch wait nor accelerator idle time.
        self.clock.interrupt()
        self._gpu.break_chain()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._gpu.drain()
        self._collect_gpu()
        self._sample_memory(force=True)
        latencies = self.clock.first_batch_s
        first = sum(latencies) / len(latencies) if latencies else math.nan
        self.final = self._exchange(trainer, pl_module, self.clock.total, first)
        self.summary = format_summary(self.final, self._loader, latencies, steps=self.clock.total.steps,
                                      replay=self.speed_of_light.result)
        self.load_profile = _load_profile(trainer)
        if self.load_profile:
            self.summary += "\n" + "\n".join(attribution_lines(self.load_profile))
        if trainer.is_global_zero and self.print_summary:
            print(self.summary, flush=True)
        if self.summary_file:
            folder = summary_folder(trainer)  # a broadcast: on every rank
            if trainer.is_global_zero:
                self.summary_path = str(write_run_summary(trainer, self, folder, self.summary_file))

    # ----------------------------------------------------------------- aggregation
    def _collect_gpu(self) -> None:
        self._gpu.poll()
        idle, busy = self._gpu.take()
        if idle or busy:
            self.clock.add_gpu(idle_s=idle, busy_s=busy)

    def _sample_memory(self, *, force: bool = False) -> None:
        # psutil lists this rank's children by scanning /proc (tens of ms on a busy node), so the
        # sample is taken at most every MEMORY_EVERY_S seconds, and once more at the end.
        clock = time.perf_counter()
        if not force and clock - self._memory_at < MEMORY_EVERY_S:
            return
        self._memory_at = clock
        now = measure_memory()
        # Keep the peak: non-persistent workers are gone by the end of an epoch.
        if now.main_mb + now.workers_mb >= self._memory.main_mb + self._memory.workers_mb:
            self._memory = now

    def _exchange(self, trainer: L.Trainer, pl_module: L.LightningModule, window: PhaseTotals,
                  first_batch_s: float) -> RankAggregate:
        replayed = self.speed_of_light.result
        row = rank_row(window, first_batch_s=first_batch_s, main_rss_mb=self._memory.main_mb,
                       workers_rss_mb=self._memory.workers_mb, num_workers=self._loader.num_workers,
                       speed_of_light=replayed.samples_per_s if replayed else None, node_rank=trainer.node_rank,
                       local_rank=trainer.local_rank)
        local = torch.tensor(row, dtype=torch.float64, device=pl_module.device)
        gathered = trainer.strategy.all_gather(local)
        rows = gathered.reshape(-1, len(RANK_FIELDS)).cpu().tolist()
        return aggregate_ranks(rows)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect_gpu()
        self._sample_memory()
        latest = self.clock.first_batch_s[-1] if self.clock.first_batch_s else math.nan
        result = self._exchange(trainer, pl_module, self.clock.take_window(), latest)
        metrics = {
            "starvation/fraction": result.mean["starvation"],
            "starvation/fraction_max": result.slowest_starvation,
            "starvation/slowest_rank": float(result.slowest_rank),
            "starvation/fetch_fraction": result.mean["fetch_fraction"],
            "starvation/gpu_idle_fraction": result.mean["gpu_idle_fraction"],
            "starvation/fetch_ms": result.mean["fetch_ms"],
            "starvation/transfer_ms": result.mean["transfer_ms"],
            "starvation/step_ms": result.mean["step_ms"],
            "starvation/first_batch_s": result.mean["first_batch_s"],
            "starvation/speed_of_light_samples_per_sec": result.mean["speed_of_light_samples_per_s"],
            "starvation/headroom": headroom(result),
        }
        if len(result.per_rank) > 1:
            stragglers = find_stragglers(result)
            metrics.update({"starvation/fetch_skew": stragglers.fetch_skew,
                            "starvation/slowest_node": float(stragglers.slowest_node)})
            metrics.update({f"starvation/rank{r}": row["starvation"] for r, row in enumerate(result.per_rank)})
        metrics = {key: value for key, value in metrics.items() if value == value}  # NaN: not measured here
        self.history.append(metrics)
        publish(trainer, pl_module, metrics)
        if "starvation/fraction" in metrics:
            # One small host-to-device copy per log interval; values are identical on every rank.
            pl_module.log("starved", metrics["starvation/fraction"], prog_bar=True, logger=False,
                          on_step=True, on_epoch=False)

    # ----------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock.state_dict(), "steps": self._steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clock.load_state_dict(state_dict["clock"])
        self._steps = int(state_dict.get("steps", 0))


def _load_profile(trainer: L.Trainer) -> dict[str, Any]:
    """This rank's per-worker load figures from the DataModule (or the module a wrapper holds), if it keeps them."""
    datamodule = getattr(trainer, "datamodule", None)
    profile = getattr(datamodule, "load_profile", None) or getattr(getattr(datamodule, "datamodule", None),
                                                                   "load_profile", None)
    summary = profile.summary() if profile is not None else {}
    return summary if summary.get("workers") else {}


def _first_loader(loaders: Any) -> Any:
    """The first DataLoader among what ``trainer.train_dataloader`` returns (loader, list or dict)."""
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders
