"""stoker DataModules: one per file, sharing the loader policy of :class:`StokerDataModule`."""

from stoker.datamodules.audio import AudioFolderDataModule
from stoker.datamodules.base import StokerDataModule
from stoker.datamodules.dali import DALIImageNetDataModule
from stoker.datamodules.digits import DigitsDataModule
from stoker.datamodules.folder import ClassFolderDataModule
from stoker.datamodules.image import ImageFileDataset, ImageFolderDataModule
from stoker.datamodules.imbalanced import ImbalancedDataModule
from stoker.datamodules.text import HFTextDataModule

__all__ = [
    "AudioFolderDataModule",
    "ClassFolderDataModule",
    "DALIImageNetDataModule",
    "DigitsDataModule",
    "HFTextDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImbalancedDataModule",
    "StokerDataModule",
]
