"""Framework-free measurement: the step clock, GPU idle time from CUDA events, batch counting, memory,
the loader probe and the verdicts; plus the one module that wraps Lightning internals."""

from stoker.profiling.counting import samples_in, tokens_in
from stoker.profiling.gpu_idle import CudaGapTimer
from stoker.profiling.loader_probe import find_bottlenecks, measure_loader, time_items
from stoker.profiling.memory import MemoryUsage, measure_memory
from stoker.profiling.step_clock import PhaseTotals, RankAggregate, StepClock, aggregate_ranks
from stoker.profiling.verdicts import LoaderInfo, format_summary, suggestions, verdict

__all__ = [
    "CudaGapTimer",
    "LoaderInfo",
    "MemoryUsage",
    "PhaseTotals",
    "RankAggregate",
    "StepClock",
    "aggregate_ranks",
    "find_bottlenecks",
    "format_summary",
    "measure_loader",
    "measure_memory",
    "samples_in",
    "suggestions",
    "time_items",
    "tokens_in",
    "verdict",
]
