"""stoker DataModules: one per file, sharing the loader policy of :class:`StokerDataModule`."""

from stoker.data.file_dataset import AudioFileDataset, ImageFileDataset
from stoker.datamodules.audio import AudioDataModule
from stoker.datamodules.audio_folder import AudioFolderDataModule
from stoker.datamodules.base import StokerDataModule
from stoker.datamodules.dali import DALIImageNetDataModule
from stoker.datamodules.image import ImageDataModule
from stoker.datamodules.image_folder import ImageFolderDataModule
from stoker.datamodules.imbalanced import ImbalancedDataModule
from stoker.datamodules.language_model import HFLanguageModelingDataModule
from stoker.datamodules.language_model_stream import HFLanguageModelingStreamDataModule
from stoker.datamodules.lm_base import HFLanguageModelingBase
from stoker.datamodules.sharded import ShardedImageDataModule
from stoker.datamodules.sharded_audio import ShardedAudioDataModule
from stoker.datamodules.source import SourceDataModule
from stoker.datamodules.text import HFTextDataModule
from stoker.datamodules.text_base import HFTextBase
from stoker.datamodules.text_stream import HFTextStreamDataModule

# The names of the media bases before they took every source; kept for code that subclasses them.
ClassFolderDataModule = SourceDataModule
ShardedDataModule = SourceDataModule



def __getattr__(name: str) -> object:
    # The embedded demo lives in stoker.demos; it stays importable from here, where recipes and examples
    # have always found it. Resolved on first use, so that importing stoker.demos first is no import cycle.
    if name == "DigitsDataModule":
        from stoker.demos.digits import DigitsDataModule

        return DigitsDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AudioDataModule",
    "AudioFileDataset",
    "AudioFolderDataModule",
    "ClassFolderDataModule",
    "DALIImageNetDataModule",
    "DigitsDataModule",
    "HFLanguageModelingBase",
    "HFLanguageModelingDataModule",
    "HFLanguageModelingStreamDataModule",
    "HFTextBase",
    "HFTextDataModule",
    "HFTextStreamDataModule",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImbalancedDataModule",
    "ShardedAudioDataModule",
    "ShardedDataModule",
    "ShardedImageDataModule",
    "SourceDataModule",
    "StokerDataModule",
]
