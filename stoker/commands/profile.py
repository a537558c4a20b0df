"""``stoker profile --config RECIPE [--write FILE]``: how fast could this run go, and which loader setting gets there.

1. **Speed of light**: a short fit of the recipe's model on its DataModule with
   ``StarvationMonitor(speed_of_light_steps=K)``: K batches that reached the device are replayed with
   the loader out of the way, which gives the samples/s the model consumes when loading is free.
2. **The tuner** (:func:`stoker.profiling.tuner.tune_loader`): the training loader alone over
   ``num_workers`` 0, 1, 2, 4, ... up to the cores per local rank (and prefetch depths), stopping at
   the knee or at the model's rate, with the memory of each setting; for a map-style dataset the
   same worker counts again as loader threads (``worker_type="thread"``), recommended when they keep
   up with the processes (they spare each worker's copy of the interpreter).

It prints the curve, the recommendation and the overrides that apply it; ``--write FILE`` writes
them as a YAML to compose with ``--config``. Accepts what ``stoker fit`` accepts.

Example::

    stoker profile --config recipes/quickstart.yaml --write recipes/tuned.yaml
    stoker fit --config recipes/quickstart.yaml --config recipes/tuned.yaml
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

_DESCRIPTION = ("Measure a recipe's speed of light and tune its loader's num_workers, prefetch depth and worker "
                "type (processes or threads).")


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stoker profile`` beside the recipe's (the recipe parser and the help page read them alike)."""
    parser.add_argument("--write", type=str, default=None, help="write the recommended loader settings here as a "
                        "YAML to compose with --config")
    parser.add_argument("--batches", type=int, default=20, help="training batches measured per loader setting")
    parser.add_argument("--replay_steps", type=int, default=8, help="device batches replayed with the loader out of "
                        "the way to measure the model's speed of light")
    parser.add_argument("--warmup_steps", type=int, default=5, help="training steps run before the replay starts")


def speed_of_light(cli: Any, *, steps: int, warmup: int) -> float | None:
    """The samples/s the recipe's model consumes with loading free, from a short fit with a replay."""
    import lightning as L

    from stoker.callbacks import StarvationMonitor

    monitor = StarvationMonitor(speed_of_light_steps=steps, speed_of_light_after=warmup, print_summary=False,
                                summary_file=None)
    trainer = L.Trainer(accelerator=cli.trainer.strategy.root_device.type, devices=1, precision=cli.trainer.precision,
                        max_steps=warmup + steps + 1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[monitor])
    trainer.fit(cli.model, datamodule=cli.datamodule)
    result = monitor.speed_of_light.result
    return result.samples_per_s if result is not None else None


def tune(datamodule: Any, *, target: float | None, batches: int, ranks_per_node: int = 1) -> Any:
    """Tune the DataModule's training loader over the settings its arguments accept.

    Workers are tried up to the cores of one of the node's ``ranks_per_node`` ranks (one core stays
    with the rank's main process), as :func:`~stoker.data.loader.default_num_workers` divides them.

    Raises:
        ValueError: The DataModule takes no ``num_workers`` (its loader is not a DataLoader with workers).
    """
    from stoker.data.loader import default_num_workers
    from stoker.profiling.tuner import tune_loader

    inner = getattr(datamodule, "datamodule", datamodule)  # ImbalancedDataModule wraps the loader's owner
    accepted = set(inspect.signature(type(inner).__init__).parameters)
    if "num_workers" not in accepted or not hasattr(inner, "_num_workers"):
        raise ValueError(f"{type(inner).__name__} takes no num_workers argument: stoker profile tunes DataLoader "
                         "workers (a DALI pipeline sets its threads with num_threads)")
    from torch.utils.data import IterableDataset

    settable = tuple(name for name in ("num_workers", "prefetch_factor", "worker_type") if name in accepted)
    depths = (2, 4) if "prefetch_factor" in settable else (inner.prefetch_factor,)
    # Threads load map-style datasets; a stream keeps worker processes (see stoker.data.loader).
    map_style = not isinstance(getattr(datamodule.train_dataloader(), "dataset", None), IterableDataset)
    types = ("process", "thread") if "worker_type" in settable and map_style else ("process",)

    def make_loader(workers: int, prefetch: int, worker_type: str) -> Any:
        inner._num_workers, inner.prefetch_factor, inner.worker_type = workers, prefetch, worker_type
        return datamodule.train_dataloader()

    result = tune_loader(make_loader, datamodule.batch_size_of, max_workers=default_num_workers(ranks_per_node),
                         prefetch_factors=depths, worker_types=types, target=target, batches=batches)
    result.settable = settable
    return result


def main(argv: list[str]) -> int:
    """Run ``stoker profile``; returns 2 when the recipe or its data cannot be used."""
    from stoker.cli import recipe_cli

    cli = recipe_cli(argv, prog="stoker profile", description=_DESCRIPTION, add_arguments=add_profile_arguments)
    if isinstance(cli, int):
        return cli
    args = cli.config
    try:
        rate = speed_of_light(cli, steps=args.replay_steps, warmup=args.warmup_steps)
        result = tune(cli.datamodule, target=rate, batches=args.batches, ranks_per_node=cli.trainer.num_devices)
        if cli.trainer.strategy.root_device.type == "cpu" and result.best.num_workers:
            result.notes.append("the model trains on the CPU here, so loader workers share its cores and slow its "
                                "step: the prediction is optimistic; measure both runs and `stoker compare` them")
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker profile: error: {err}", file=sys.stderr)
        return 2
    print(result.table())
    chosen = ", ".join(f"{key}={value}" for key, value in result.values().items())
    print(f"recommended: {chosen} ({result.reason})")
    for note in result.notes:
        print(f"note: {note}")
    print("apply with: " + " ".join(result.overrides(_prefix(cli))))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(result.yaml(nested=_prefix(cli) != "data.init_args"))
        print(f"wrote {args.write}: compose it with --config")
    return 0


def _prefix(cli: Any) -> str:
    # A wrapper (ImbalancedDataModule) holds the loader's owner under init_args.datamodule.
    return "data.init_args.datamodule.init_args" if hasattr(cli.datamodule, "datamodule") else "data.init_args"
