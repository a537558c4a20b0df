"""Comparable artefacts: every fit writes a JSON summary, and ``stoker compare`` says what changed.

The summary holds the versions, the hardware, the loader and DataModule settings and the measured
figures (throughput, starvation, per-rank rows, speed of light, epoch start-up), so two runs can be
compared setting by setting and figure by figure without re-running either.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

SUMMARY_NAME = "stoker_summary.json"
FORMAT = 1

# Figures compared by `stoker compare`, with the direction that is better.
FIGURES: dict[str, str] = {
    "samples_per_s_total": "higher", "samples_per_s": "higher", "starvation": "lower", "fetch_ms": "lower",
    "transfer_ms": "lower", "step_ms": "lower", "first_batch_s": "lower", "speed_of_light_samples_per_s": "higher",
    "headroom": "lower", "main_rss_mb": "lower", "workers_rss_mb": "lower",
}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("stoker", "torch", "lightning", "torchvision", "torchdata", "transformers", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _hardware(trainer: Any) -> dict[str, Any]:
    import torch

    from stoker.data.loader import available_cores

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return {"machine": platform.machine(), "cores": available_cores(), "gpus": gpus,
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices": trainer.num_devices,
            "accelerator": trainer.strategy.root_device.type}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None  # NaN: not measured
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def build_run_summary(trainer: Any, monitor: Any) -> dict[str, Any]:
    """The JSON-ready summary of a finished fit, from the starvation monitor and the other stoker monitors."""
    from stoker.profiling.verdicts import headroom, verdict

    run = monitor.final
    figures: dict[str, Any] = {}
    if run is not None:
        figures = {**run.mean, "samples_per_s_total": sum(r["samples_per_s"] for r in run.per_rank),
                   "headroom": headroom(run), "verdict": verdict(run.slowest_starvation),
                   "slowest_rank": run.slowest_rank, "per_rank": run.per_rank}
    figures["epoch_startup_s"] = list(monitor.clock.first_batch_s)
    figures["load_profile"] = monitor.load_profile
    figures["steady_steps"] = monitor.clock.total.steps
    for callback in trainer.callbacks:
        per_rank = getattr(callback, "final_per_rank", None)
        if per_rank:  # DataThroughputMonitor's totals, validation excluded
            figures["throughput_per_rank"] = per_rank
    datamodule = getattr(trainer, "datamodule", None)
    describe = getattr(datamodule, "describe", None)
    data = describe() if callable(describe) else {"datamodule": type(datamodule).__name__ if datamodule else None}
    keep = ("datamodule", "batch_size", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
            "image_size", "root", "dataset", "fingerprint", "max_length", "padding", "bucket_by_length")
    return _plain({
        "format": FORMAT, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": _versions(),
        "hardware": _hardware(trainer), "loader": asdict(monitor._loader),
        "data": {key: data[key] for key in keep if key in data}, "figures": figures,
    })


def summary_folder(trainer: Any) -> Path:
    """The run's log directory (the default root without a logger).

    Every rank must call it: ``Trainer.log_dir`` broadcasts rank zero's choice.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def write_run_summary(trainer: Any, monitor: Any, folder: Path, name: str = SUMMARY_NAME) -> Path:
    """Write the summary into ``folder`` (see :func:`summary_folder`); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(build_run_summary(trainer, monitor), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_run_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary from its file, or from a folder holding one (the newest one below it).

    Raises:
        FileNotFoundError: No summary there.
        ValueError: The file is not a stoker run summary.
    """
    target = Path(path)
    if target.is_dir():
        found = sorted(target.rglob(SUMMARY_NAME), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"no {SUMMARY_NAME} under {str(target)!r}; a fit with StarvationMonitor writes one "
                                    "into its log directory")
        target = found[-1]
    if not target.is_file():
        raise FileNotFoundError(f"run summary {str(target)!r} does not exist")
    data = json.loads(target.read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT or "figures" not in data:
        raise ValueError(f"{str(target)!r} is not a stoker run summary (format {FORMAT})")
    return data


def _flat(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``{"settings": [(name, a, b)], "figures": [(name, a, b, ratio, better)]}`` between two summaries."""
    settings = []
    for section in ("versions", "hardware", "loader", "data"):
        left, right = _flat(a.get(section, {})), _flat(b.get(section, {}))
        settings += [(f"{section}.{key}", left.get(key), right.get(key)) for key in sorted(set(left) | set(right))
                     if left.get(key) != right.get(key)]
    figures = []
    for name, better in FIGURES.items():
        left, right = a["figures"].get(name), b["figures"].get(name)
        if isinstance(left, (int, float)) and isinstance(right, (int, float)):
            ratio = right / left if left else float("inf") if right else 1.0
            improved = (ratio > 1) == (better == "higher") if ratio != 1 else None
            figures.append((name, left, right, ratio, improved))
    return {"settings": settings, "figures": figures}


def format_comparison(result: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """The comparison as text: what changed, then each figure with its ratio and whether it got better."""
    lines = [f"changed settings ({names[0]} -> {names[1]}):"]
    lines += [f"  {key}: {left} -> {right}" for key, left, right in result["settings"]] or ["  none"]
    lines.append(f"figures ({names[1]} / {names[0]}):")
    for name, left, right, ratio, improved in result["figures"]:
        mark = {True: "better", False: "worse", None: "same"}[improved]
        lines.append(f"  {name}: {left:.4g} -> {right:.4g} ({ratio:.2f}x, {mark})")
    return "\n".join(lines)
