"""stoker: PyTorch Lightning DataModules and Callbacks that keep the accelerator fed.

Optional extras are imported only when used: ``stoker`` itself imports without DALI, the
Hugging Face stack or the audio stack installed.
"""

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
