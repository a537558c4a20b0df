"""stoker: PyTorch Lightning DataModules and Callbacks that keep the accelerator fed.

The public names below are imported on first use (PEP 562), so ``import stoker`` and the
``stoker --help`` pages cost no torch or Lightning import; ``from stoker import ImageClassifier``
works as before. Optional extras are imported only when used: ``stoker`` itself imports without
DALI, the Hugging Face stack or the audio stack installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from stoker.callbacks import (
        DataThroughputMonitor,
        MixUpCutMix,
        PredictionWriter,
        SampleGridLogger,
        StarvationMonitor,
    )
    from stoker.datamodules import (
        AudioFolderDataModule,
        ClassFolderDataModule,
        DALIImageNetDataModule,
        DigitsDataModule,
        HFLanguageModelingDataModule,
        HFLanguageModelingStreamDataModule,
        HFTextDataModule,
        HFTextStreamDataModule,
        ImageFolderDataModule,
        ImbalancedDataModule,
        ShardedAudioDataModule,
        ShardedImageDataModule,
        StokerDataModule,
    )
    from stoker.models import AudioClassifier, ImageClassifier, LanguageModel, StokerClassifier, TextClassifier
    from stoker.samplers import DistributedWeightedSampler, LengthGroupedBatchSampler, TokenBudgetBatchSampler

__version__ = "0.1.0"

# public name -> the package that exports it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("DataThroughputMonitor", "MixUpCutMix", "PredictionWriter", "SampleGridLogger",
                     "StarvationMonitor"), "stoker.callbacks"),
    **dict.fromkeys(("AudioFolderDataModule", "ClassFolderDataModule", "DALIImageNetDataModule", "DigitsDataModule",
                     "HFLanguageModelingDataModule", "HFLanguageModelingStreamDataModule", "HFTextDataModule",
                     "HFTextStreamDataModule", "ImageFolderDataModule", "ImbalancedDataModule",
                     "ShardedAudioDataModule", "ShardedImageDataModule", "StokerDataModule"), "stoker.datamodules"),
    **dict.fromkeys(("AudioClassifier", "ImageClassifier", "LanguageModel", "StokerClassifier", "TextClassifier"),
                    "stoker.models"),
    **dict.fromkeys(("DistributedWeightedSampler", "LengthGroupedBatchSampler", "TokenBudgetBatchSampler"),
                    "stoker.samplers"),
}

__all__ = [
    "AudioClassifier",
    "AudioFolderDataModule",
    "ClassFolderDataModule",
    "DALIImageNetDataModule",
    "DataThroughputMonitor",
    "DigitsDataModule",
    "DistributedWeightedSampler",
    "HFLanguageModelingDataModule",
    "HFLanguageModelingStreamDataModule",
    "HFTextDataModule",
    "HFTextStreamDataModule",
    "ImageClassifier",
    "ImageFolderDataModule",
    "ImbalancedDataModule",
    "LanguageModel",
    "LengthGroupedBatchSampler",
    "MixUpCutMix",
    "PredictionWriter",
    "SampleGridLogger",
    "ShardedAudioDataModule",
    "ShardedImageDataModule",
    "StarvationMonitor",
    "StokerClassifier",
    "StokerDataModule",
    "TextClassifier",
    "TokenBudgetBatchSampler",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name, or a subpackage (``stoker.callbacks``), on first access and keep it."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # The eager package made its subpackages attributes as a side effect; code that reads
        # `stoker.callbacks` after a bare `import stoker` keeps working.
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
