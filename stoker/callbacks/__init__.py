"""stoker Callbacks: one per file (``speed_of_light`` holds the replay the starvation monitor runs)."""

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
