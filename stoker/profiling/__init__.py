"""Framework-free measurement: the step clock, GPU idle time from CUDA events, batch counting, memory,
the loader probe and tuner, per-worker attribution, the cross-rank view, run summaries and the
verdicts; plus the one module that wraps Lightning internals."""

from stoker.profiling.attribution import LoadProfile, attribution_lines
from stoker.profiling.counting import samples_in, tokens_in
from stoker.profiling.gpu_idle import CudaGapTimer
from stoker.profiling.loader_probe import find_bottlenecks, measure_loader, time_items
from stoker.profiling.memory import MemoryUsage, measure_memory
from stoker.profiling.ranks import RankAggregate, Stragglers, aggregate_ranks, find_stragglers
from stoker.profiling.run_summary import compare_runs, format_comparison, read_run_summary
from stoker.profiling.step_clock import PhaseTotals, StepClock
from stoker.profiling.tuner import Setting, TunerResult, tune_loader
from stoker.profiling.verdicts import LoaderInfo, format_summary, headroom, suggestions, verdict

__all__ = [
    "CudaGapTimer",
    "LoadProfile",
    "LoaderInfo",
    "MemoryUsage",
    "PhaseTotals",
    "RankAggregate",
    "Setting",
    "StepClock",
    "Stragglers",
    "TunerResult",
    "aggregate_ranks",
    "attribution_lines",
    "compare_runs",
    "find_bottlenecks",
    "find_stragglers",
    "format_comparison",
    "format_summary",
    "headroom",
    "measure_loader",
    "measure_memory",
    "read_run_summary",
    "samples_in",
    "suggestions",
    "time_items",
    "tokens_in",
    "tune_loader",
    "verdict",
]
