"""stoker DataModules: one per file, sharing the loader policy of :class:`StokerDataModule`."""

from stoker.datamodules.base import StokerDataModule
from stoker.datamodules.digits import DigitsDataModule
from stoker.datamodules.image import ImageFileDataset, ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageFileDataset", "ImageFolderDataModule", "StokerDataModule"]
