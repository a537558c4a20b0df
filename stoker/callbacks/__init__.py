"""stoker Callbacks: one per file."""

from stoker.callbacks.mixup import MixUpCutMix
from stoker.callbacks.prediction_writer import PredictionWriter
from stoker.callbacks.sample_grid import SampleGridLogger
from stoker.callbacks.starvation import StarvationMonitor
from stoker.callbacks.throughput import DataThroughputMonitor

__all__: list[str] = [
    "DataThroughputMonitor",
    "MixUpCutMix",
    "PredictionWriter",
    "SampleGridLogger",
    "StarvationMonitor",
]
